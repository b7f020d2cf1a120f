"""The ledger's evidence: entries as Merkle leaves, signed checkpoints, and witnessing.

A ledger entry becomes the leaf ``canon[seq, at, event, msg_id, org, detail]`` (the same
bytes the hub's hash chain covers), leaf ``seq - 1`` of an RFC 9162 tree
(:mod:`schemas.merkle`). The hub signs checkpoints of that tree::

    frame = canon{"ckpt": bin, "kid": hub_kid, "sig": bin(64), "v": 1}
    ckpt  = canon{"at": ms, "hub_id": str, "root": bin(32), "size": uint, "v": 1}
    sig   = Ed25519(hub key, "xchg/v1/ckpt\\0" || ckpt)

Spokes are the witnesses: each keeps the latest checkpoint it verified and, for every new
one, checks a consistency proof between the two (:func:`judge`). A spoke may countersign
a checkpoint it verified: ``Ed25519(spoke key, "xchg/v1/cosign\\0" || ckpt)``.
docs/wire-format.md, section 12, is the reference; this module does no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas import codec, merkle
from schemas.errors import Reason, SchemaError, SignatureError
from schemas.ids import MSG_ID_BYTES, check_key_id, check_org_id
from schemas.keys import SigningKey, verify_signature

DOMAIN_CHECKPOINT = b"xchg/v1/ckpt\x00"
DOMAIN_COSIGN = b"xchg/v1/cosign\x00"
RESTORED_EVENT = "ledger.restored"  # the entry a hub writes after its store was restored

CHECKPOINT_FRAME_LIMITS = codec.Limits("checkpoint frame", 1024, 64, 512, 16, 16, 1)
CHECKPOINT_LIMITS = codec.Limits("checkpoint", 512, 64, 32, 16, 16, 1)
LEAF_LIMITS = codec.Limits("ledger entry", 2 * 1024 * 1024, 2 * 1024 * 1024, 16, 16, 1, 1)
PATH_MAX = 64  # hashes in one proof: 2 * 63 would be a tree of 2**63 leaves


# ---------------------------------------------------------------- entries


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry as it is hashed (``detail`` is its JSON text, as stored)."""

    seq: int
    at: int
    event: str
    msg_id: bytes | None
    org: str | None
    detail: str

    @property
    def index(self) -> int:
        return self.seq - 1

    def leaf(self) -> bytes:
        return codec.encode([self.seq, self.at, self.event, self.msg_id, self.org, self.detail])

    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.leaf())

    def details(self) -> dict[str, Any]:
        """The detail as a mapping ({} if it is not a JSON object)."""
        try:
            value = json.loads(self.detail)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @classmethod
    def from_leaf(cls, leaf: bytes) -> Entry:
        value = codec.decode(leaf, LEAF_LIMITS)
        match value:
            case (int() as seq, int() as at, str() as event, None | bytes() as msg_id,
                  None | str() as org, str() as detail) if seq >= 1 and at >= 0 and (
                msg_id is None or len(msg_id) == MSG_ID_BYTES
            ):  # fmt: skip
                return cls(seq, at, event, msg_id, org, detail)
        raise SchemaError(
            Reason.SCHEMA_INVALID, "ledger entry: not [seq, at, event, msg_id, org, detail]"
        )


# ---------------------------------------------------------------- checkpoints


@dataclass(frozen=True, slots=True)
class Checkpoint:
    hub_id: str
    size: int
    root: bytes
    at: int

    def body(self) -> bytes:
        """The exact bytes signed (canonical, so equal values give equal bytes)."""
        return codec.encode(
            {"v": 1, "hub_id": self.hub_id, "size": self.size, "root": self.root, "at": self.at}
        )


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    kid: str
    sig: bytes
    body: bytes  # the signed ckpt bytes as received
    frame: bytes

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root

    @property
    def at(self) -> int:
        return self.checkpoint.at


def sign_checkpoint(checkpoint: Checkpoint, key: SigningKey) -> bytes:
    body = checkpoint.body()
    sig = key.sign(DOMAIN_CHECKPOINT, body)
    return codec.encode({"v": 1, "ckpt": body, "kid": key.kid, "sig": sig})


def read_checkpoint(frame: bytes) -> SignedCheckpoint:
    """Decode a checkpoint frame and its record; the signature is NOT checked here."""
    outer = codec.decode_frame(
        frame, CHECKPOINT_FRAME_LIMITS, {"ckpt": bytes, "kid": str, "sig": bytes}
    )
    body, kid, sig = outer["ckpt"], outer["kid"], outer["sig"]
    inner = codec.decode_frame(
        body, CHECKPOINT_LIMITS, {"hub_id": str, "size": int, "root": bytes, "at": int}
    )
    try:
        check_key_id(kid)
        check_org_id(inner["hub_id"], what="checkpoint hub_id")
    except ValueError as exc:
        raise SchemaError(Reason.SCHEMA_INVALID, f"checkpoint: {exc}") from exc
    size, root, at = inner["size"], inner["root"], inner["at"]
    if (
        len(sig) != 64
        or len(root) != merkle.HASH_SIZE
        or not 0 <= size < 2**63
        or not 0 <= at < 2**63
    ):
        raise SchemaError(
            Reason.SCHEMA_INVALID, "checkpoint: sig is 64 bytes, root 32, size and at 0..2^63-1"
        )
    return SignedCheckpoint(Checkpoint(inner["hub_id"], size, root, at), kid, sig, body, frame)


def verify_checkpoint(frame: bytes, public: bytes) -> SignedCheckpoint:
    """Read a checkpoint frame and check its signature with the hub's ``public`` key."""
    signed = read_checkpoint(frame)
    if not verify_signature(public, DOMAIN_CHECKPOINT, signed.body, signed.sig):
        raise SignatureError(
            Reason.LEDGER_BAD_SIGNATURE,
            f"checkpoint of size {signed.size} does not verify with the hub key {signed.kid}",
        )
    return signed


def cosign(signed: SignedCheckpoint, key: SigningKey) -> bytes:
    """A witness's countersignature over the checkpoint it verified."""
    return key.sign(DOMAIN_COSIGN, signed.body)


def verify_cosignature(signed: SignedCheckpoint, public: bytes, sig: bytes) -> bool:
    return verify_signature(public, DOMAIN_COSIGN, signed.body, sig)


# ---------------------------------------------------------------- proofs on the wire


def pack_path(path: Sequence[bytes]) -> bytes:
    """A proof travels as one bin: its hashes concatenated (RFC 9162 keeps them apart)."""
    return b"".join(path)


def unpack_path(data: bytes) -> list[bytes]:
    size = merkle.HASH_SIZE
    if len(data) % size or len(data) > PATH_MAX * size:
        raise SchemaError(
            Reason.SCHEMA_INVALID,
            f"a proof is a whole number of 32-byte hashes, at most {PATH_MAX}; "
            f"got {len(data)} bytes",
        )
    return [data[i : i + size] for i in range(0, len(data), size)]


@dataclass(frozen=True, slots=True)
class RestoreProof:
    """The hub's signed statement that its store was restored, and where it sits."""

    entry: Entry
    path: list[bytes]  # inclusion of the entry in the newer checkpoint

    @property
    def restored_size(self) -> int | None:
        value = self.entry.details().get("restored_size")
        return value if type(value) is int and value >= 0 else None


# ---------------------------------------------------------------- witnessing


@dataclass(frozen=True, slots=True)
class Consistent:
    """The newer checkpoint extends the held one (or is an older prefix of it)."""

    keep: SignedCheckpoint  # the later of the two: what the witness holds next


@dataclass(frozen=True, slots=True)
class Restored:
    """The hub says, in a signed entry, that it lost ``[lost_from, lost_to)``."""

    keep: SignedCheckpoint
    lost_from: int
    lost_to: int
    entry: Entry


@dataclass(frozen=True, slots=True)
class Fork:
    """Two checkpoints of one hub that no single history explains: evidence."""

    held: SignedCheckpoint
    new: SignedCheckpoint
    why: str


Judgement = Consistent | Restored | Fork


def judge(
    held: SignedCheckpoint,
    new: SignedCheckpoint,
    proof: Sequence[bytes] | None,
    restore: RestoreProof | None = None,
) -> Judgement:
    """Whether ``new`` (signature already verified) continues the history ``held`` showed.

    ``proof`` is the hub's consistency proof from the smaller of the two sizes to the
    larger (None when the hub could not give one); ``restore`` its restore statement, if
    it has one. A checkpoint older than the held one (a late copy on another channel) is
    consistent when the held one extends it.
    """
    if new.checkpoint.hub_id != held.checkpoint.hub_id:
        return Fork(
            held,
            new,
            f"checkpoints of two hubs: {held.checkpoint.hub_id} and {new.checkpoint.hub_id}",
        )
    small, large = (held, new) if held.size <= new.size else (new, held)
    if held.size == new.size and held.root != new.root:
        return _restored(held, new, restore) or Fork(
            held, new, f"two different roots for the same size {new.size}"
        )
    if proof is not None and merkle.verify_consistency(
        small.size, large.size, small.root, large.root, proof
    ):
        if large is held and new.at > held.at:
            # the hub signed a smaller tree after a larger one: it went back
            return _restored(held, new, restore) or Fork(
                held, new, f"the hub signed size {new.size} after size {held.size}"
            )
        return Consistent(large)
    return _restored(held, new, restore) or Fork(
        held,
        new,
        f"no valid consistency proof from size {small.size} to size {large.size}"
        if proof is not None
        else f"the hub could not prove size {large.size} extends size {small.size}",
    )


def _restored(
    held: SignedCheckpoint, new: SignedCheckpoint, restore: RestoreProof | None
) -> Restored | None:
    """Accept a lost range only as the hub's own signed, included statement that covers it.

    The statement sits right after the restored ledger's last entry (``hubctl audit
    restored`` writes it as entry ``restored_size + 1``): one placed anywhere else would let
    a hub disown entries it never lost. That the restored ledger keeps the history up to
    ``restored_size`` which the witness saw is checked by the witness (it needs a proof
    from a checkpoint it logged; docs/wire-format.md 12.3)."""
    if restore is None or new.at <= held.at or restore.entry.event != RESTORED_EVENT:
        return None
    lost_from = restore.restored_size
    entry = restore.entry
    if lost_from is None or lost_from >= held.size or entry.at <= held.at or entry.at > new.at:
        return None
    if entry.seq != lost_from + 1:
        return None
    if not merkle.verify_inclusion(
        entry.index, new.size, entry.leaf_hash(), restore.path, new.root
    ):
        return None
    return Restored(new, lost_from, held.size, entry)
