"""A large group's recipients outside the signed header: one slot per recipient in a Merkle
tree whose root the header signs (docs/wire-format.md, section 4a).

An envelope to at most :data:`INLINE_MAX` recipients names them, and carries their sealed
file keys, in its signed header (header ``v`` 1). One to more (up to :data:`MAX_SLOTS`)
carries in the header only ``recipients = {root, count}`` (header ``v`` 2), and each
recipient's slot::

    slot = canon{"org": id, "role": "to" | "cc", "copy_no": 份号 | nil, "kid": kid, "box": bin80}
    leaf = SHA-256(0x00 || "xchg/v1/slot\\0" || slot)        # RFC 9162 leaf, domain-separated

The slots are sorted by ``org`` (strictly: nobody twice) and hashed into an RFC 9162 tree
(schemas.merkle) whose root and size the sender signs. The sender hands the hub every slot
once (:meth:`Recipients.blob`); the hub checks them against the signed root, keeps each
recipient's slot with its inclusion proof (:meth:`Recipients.part`), and sends each
recipient the signed frame, the body, and only its own part. A recipient checks its part
against the root (:func:`read_part`): bytes per recipient grow with log2 of the group (32
bytes a doubling), not with the group.

Pure: no I/O. Limits on every decode.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Final, Literal

from pydantic import Field

from schemas import codec
from schemas.errors import EnvelopeError, PeerError, Reason
from schemas.ids import KeyId, OrgId
from schemas.merkle import HASH_SIZE, WholeTree, leaf_hash, root_from_inclusion
from schemas.model import MAX_WIRE_INT, WireModel

DOMAIN_SLOT: Final = b"xchg/v1/slot\x00"
INLINE_MAX: Final = 16  # an envelope to more recipients carries them as slots (header v2)
MAX_SLOTS: Final = 20_000  # recipients of one envelope with slots: the hub takes them whole
SEALED_BOX_BYTES: Final = 80
COPY_PATTERN: Final = r"^[0-9]{6}$"  # 份号, as in the header's copy_numbers
SLOT_MAX_BYTES: Final = 256  # a slot is at most ~200 bytes (a 64-byte id, 16-hex kid, 80 box)
PROOF_MAX: Final = 32  # hashes in one slot's inclusion proof (2**32 leaves)
SLOT_LIMITS: Final = codec.Limits("recipient slot", SLOT_MAX_BYTES, 64, SEALED_BOX_BYTES, 1, 5, 1)
SLOTS_MAX_BYTES: Final = 5 * 1024 * 1024  # MAX_SLOTS of SLOT_MAX_BYTES, as bin in an array
SLOTS_LIMITS: Final = codec.Limits(
    "recipient slots", SLOTS_MAX_BYTES, 1, SLOT_MAX_BYTES, MAX_SLOTS, 1, 1
)
PART_MAX_BYTES: Final = 32 + SLOT_MAX_BYTES + PROOF_MAX * HASH_SIZE
PART_LIMITS: Final = codec.Limits(
    "recipient part", PART_MAX_BYTES, 1, PROOF_MAX * HASH_SIZE, 3, 1, 1
)


class Slot(WireModel):
    """One recipient of an envelope with slots: its role, 份号 and sealed file key."""

    org: OrgId
    role: Literal["to", "cc"]
    copy_no: Annotated[str, Field(pattern=COPY_PATTERN)] | None
    kid: KeyId
    box: Annotated[bytes, Field(min_length=SEALED_BOX_BYTES, max_length=SEALED_BOX_BYTES)]


class SlotsRef(WireModel):
    """What the signed header says of its slots: the tree's root and how many there are."""

    root: Annotated[bytes, Field(min_length=HASH_SIZE, max_length=HASH_SIZE)]
    count: Annotated[int, Field(ge=INLINE_MAX + 1, le=MAX_SLOTS)]


def slot_bytes(slot: Slot) -> bytes:
    return codec.encode(slot.to_wire())


def slot_digest(raw: bytes) -> bytes:
    return leaf_hash(DOMAIN_SLOT + raw)


def _bad(detail: str) -> EnvelopeError:
    return EnvelopeError(Reason.ENV_BAD_SLOTS, detail)


def _read_slot(raw: bytes, where: str) -> Slot:
    try:
        return Slot.from_wire(codec.decode_map(raw, SLOT_LIMITS), what=where)
    except PeerError as exc:
        raise _bad(f"{where} does not read as a slot: {exc.message}") from exc


@dataclass(frozen=True, slots=True)
class Recipients:
    """Every slot of one envelope, checked against its root: the sender's and the hub's view."""

    slots: tuple[Slot, ...]
    raw: tuple[bytes, ...]
    tree: WholeTree

    @classmethod
    def seal(cls, slots: Iterable[Slot]) -> Recipients:
        """The sender's: its slots, sorted by organisation; nobody twice."""
        ordered = sorted(slots, key=lambda s: s.org)
        for before, after in itertools.pairwise(ordered):
            if before.org == after.org:
                raise EnvelopeError(
                    Reason.ENV_DUPLICATE_RECIPIENT,
                    f"recipient {after.org} is named more than once across to and cc",
                )
        if not INLINE_MAX < len(ordered) <= MAX_SLOTS:
            raise EnvelopeError(
                Reason.ENV_TOO_MANY_RECIPIENTS,
                f"{len(ordered)} recipients; an envelope with slots carries "
                f"{INLINE_MAX + 1} to {MAX_SLOTS}",
            )
        raw = tuple(slot_bytes(s) for s in ordered)
        return cls(tuple(ordered), raw, WholeTree([slot_digest(r) for r in raw]))

    @classmethod
    def read(cls, blob: bytes, ref: SlotsRef) -> Recipients:
        """The hub's: the sender's slots (``blob``) against the signed ``ref``. Every slot
        must decode, they must be strictly sorted by organisation, and they must be exactly
        the ``count`` leaves of the tree whose ``root`` the sender signed."""
        try:
            items = codec.decode(blob, SLOTS_LIMITS)
        except PeerError as exc:
            raise _bad(f"the recipients' slots do not decode: {exc.message}") from exc
        if type(items) is not tuple or not all(type(r) is bytes for r in items):
            raise _bad("the recipients' slots must be an array of bin")
        if len(items) != ref.count:
            raise _bad(f"{len(items)} slots arrived; the signed header counts {ref.count}")
        slots = tuple(_read_slot(r, f"slot {i}") for i, r in enumerate(items))
        for i in range(1, len(slots)):
            if slots[i - 1].org >= slots[i].org:
                raise _bad(
                    f"slot {i} ({slots[i].org}) is not after slot {i - 1} ({slots[i - 1].org}); "
                    "slots are sorted by organisation and name each one once"
                )
        tree = WholeTree([slot_digest(r) for r in items])
        if tree.root() != ref.root:
            raise _bad(
                "the recipients' slots do not hash to the root the sender signed; "
                "they were altered, or belong to another envelope"
            )
        return cls(slots, items, tree)

    @property
    def ref(self) -> SlotsRef:
        return SlotsRef(root=self.tree.root(), count=len(self.slots))

    def blob(self) -> bytes:
        """Every slot, as the sender hands them to the hub."""
        return codec.encode(list(self.raw))

    def index(self, org: str) -> int | None:
        lo, hi = 0, len(self.slots)
        while lo < hi:  # sorted by org (seal, read)
            mid = (lo + hi) // 2
            if self.slots[mid].org < org:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(self.slots) and self.slots[lo].org == org else None

    def part(self, org: str) -> bytes:
        """What recipient ``org`` receives beside the frame: its slot and inclusion proof."""
        i = self.index(org)
        if i is None:
            raise _bad(f"{org} holds no slot in this envelope")
        return codec.encode([i, self.raw[i], b"".join(self.tree.proof(i))])


def _unpack_part(part: bytes) -> tuple[int, bytes, bytes]:
    try:
        value = codec.decode(part, PART_LIMITS)
    except PeerError as exc:
        raise _bad(f"the recipient's slot does not decode: {exc.message}") from exc
    match value:
        case (int() as index, bytes() as raw, bytes() as path) if (
            type(index) is int and 0 <= index < MAX_WIRE_INT and len(path) % HASH_SIZE == 0
        ):
            return index, raw, path
    raise _bad("the recipient's slot must be [index, slot, proof]")


def stored_slot(part: bytes) -> Slot:
    """The slot of a part the hub checked before it stored it (its proof is not checked
    again: the hub's store, like its frames, holds what verified)."""
    _, raw, _ = _unpack_part(part)
    return _read_slot(raw, "a stored slot")


def read_part(part: bytes, ref: SlotsRef, me: str) -> Slot:
    """A recipient's: its own slot, proven under the signed ``ref`` and naming ``me``."""
    index, raw, path = _unpack_part(part)
    slot = _read_slot(raw, "the recipient's slot")
    proof = [path[i : i + HASH_SIZE] for i in range(0, len(path), HASH_SIZE)]
    if root_from_inclusion(index, ref.count, slot_digest(raw), proof) != ref.root:
        raise _bad(
            f"the slot for {slot.org} does not prove into the recipients' root the sender "
            "signed; it was altered, or belongs to another envelope"
        )
    if slot.org != me:
        raise EnvelopeError(
            Reason.ENV_NOT_A_RECIPIENT,
            f"the slot delivered is {slot.org}'s, not {me}'s; the hub sent another "
            "recipient's part",
        )
    return slot
