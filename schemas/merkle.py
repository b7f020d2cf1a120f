"""RFC 9162 Merkle tree hashing, proofs and their verification (section 2.1), pure.

The ledger is a Merkle tree over its entries in insertion order: a leaf hashes as
``SHA-256(0x00 || leaf)``, a node as ``SHA-256(0x01 || left || right)``, the root of
``n > 1`` leaves splits them at ``k``, the largest power of two below ``n``, and the
empty tree's root is ``SHA-256("")``. Inclusion and consistency proofs are RFC 9162's
PATH and PROOF; their verifiers are the RFC's algorithms (2.1.3.2 and 2.1.4.2).

The tree is kept incrementally: :class:`Frontier` holds the roots of the perfect subtrees
along its right edge (one per set bit of the size), so an append costs one leaf hash and
on average one node hash, and the root of any size is at most ``log2(n)`` hashes away.
Proofs are computed from the hashes of *perfect* subtrees (aligned, ``2**level`` leaves),
which the hub stores as the tree grows; :func:`needed` says which ones a proof reads, so
a store can fetch them in one query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Coord = tuple[int, int]  # (level, index): the perfect subtree of leaves [index << level, ...)
NodeSource = Callable[[int, int], bytes]


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# ---------------------------------------------------------------- the growing tree


@dataclass(frozen=True, slots=True)
class NewNode:
    """A perfect subtree completed by an append (level >= 1; leaves are level 0)."""

    level: int
    index: int
    hash: bytes


class Frontier:
    """The right edge of a tree: enough to append and to compute the root, nothing more."""

    __slots__ = ("_peaks", "size")

    def __init__(self, size: int = 0, peaks: Sequence[bytes] = ()) -> None:
        if len(peaks) != size.bit_count():
            raise ValueError(
                f"a tree of {size} leaves has {size.bit_count()} peaks, not {len(peaks)}"
            )
        self.size = size
        self._peaks = list(peaks)  # largest (leftmost) subtree first

    @staticmethod
    def peak_coords(size: int) -> list[Coord]:
        """The perfect subtrees that make up a tree of ``size`` leaves, leftmost first."""
        coords: list[Coord] = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                coords.append((level, start >> level))
                start += 1 << level
        return coords

    def append(self, leaf_digest: bytes) -> list[NewNode]:
        """Add one leaf (its hash); return the subtrees of level >= 1 it completed."""
        made: list[NewNode] = []
        digest, index, level = leaf_digest, self.size, 0
        while index & 1:  # the peak to the left is as large as this one: merge
            digest = node_hash(self._peaks.pop(), digest)
            index >>= 1
            level += 1
            made.append(NewNode(level, index, digest))
        self._peaks.append(digest)
        self.size += 1
        return made

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        digest = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            digest = node_hash(peak, digest)
        return digest

    def copy(self) -> Frontier:
        return Frontier(self.size, self._peaks)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The root over leaf *hashes*, from scratch (for audits and tests)."""
    frontier = Frontier()
    for digest in leaves:
        frontier.append(digest)
    return frontier.root()


class WholeTree:
    """Every perfect subtree's hash of a tree held whole in memory (a directory, a
    document's recipients): its root and any leaf's inclusion proof, without a store."""

    __slots__ = ("levels",)

    def __init__(self, digests: Sequence[bytes]) -> None:
        self.levels = [list(digests)]  # levels[0]: the leaf hashes
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def root(self) -> bytes:
        return root_of(self.levels[0])

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def proof(self, index: int) -> list[bytes]:
        return inclusion_proof(index, self.size, self.node)


# ---------------------------------------------------------------- proofs


def subtree(start: int, n: int, node: NodeSource) -> bytes:
    """MTH(D[start:start+n]) from perfect subtrees (start is a multiple of n's split)."""
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        return node(level, start >> level)
    k = _split(n)
    return node_hash(subtree(start, k, node), subtree(start + k, n - k, node))


def _path(m: int, start: int, n: int, node: NodeSource) -> list[bytes]:
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, start, k, node), subtree(start + k, n - k, node)]
    return [*_path(m - k, start + k, n - k, node), subtree(start, k, node)]


def _subproof(
    m: int,
    start: int,
    n: int,
    whole: bool,  # noqa: FBT001 - RFC 9162's SUBPROOF(m, D, b)
    node: NodeSource,
) -> list[bytes]:
    if m == n:
        return [] if whole else [subtree(start, n, node)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, start, k, whole, node), subtree(start + k, n - k, node)]
    return [*_subproof(m - k, start + k, n - k, False, node), subtree(start, k, node)]


def inclusion_proof(index: int, size: int, node: NodeSource) -> list[bytes]:
    """RFC 9162 PATH(index, D[0:size])."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    return _path(index, 0, size, node)


def consistency_proof(old: int, new: int, node: NodeSource) -> list[bytes]:
    """RFC 9162 PROOF(old, D[0:new]); empty when old is 0 or equal to new."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from {old} leaves to {new}")
    if old in (0, new):
        return []
    return _subproof(old, 0, new, True, node)


def needed(compute: Callable[[NodeSource], object]) -> set[Coord]:
    """The perfect subtrees ``compute`` reads: run it once on placeholders."""
    seen: set[Coord] = set()

    def record(level: int, index: int) -> bytes:
        seen.add((level, index))
        return bytes(HASH_SIZE)

    compute(record)
    return seen


# ---------------------------------------------------------------- verification (RFC 9162)


def root_from_inclusion(
    index: int, size: int, leaf_digest: bytes, proof: Sequence[bytes]
) -> bytes | None:
    """The root that ``proof`` leads to from the leaf, or None if it is malformed."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf_digest
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    index: int, size: int, leaf_digest: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    return root_from_inclusion(index, size, leaf_digest, proof) == root


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: the tree of ``new`` leaves extends the tree of ``old`` leaves."""
    if not 0 <= old <= new:
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof  # every tree extends the empty one
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
