"""What travels in one MQTT message on the up and down topics (docs/wire-format.md, 11).

Each payload is a canonical msgpack array whose first element names its kind:

- ``["env", frame, body]``: an envelope frame with its whole body (small documents);
- ``["env", frame, nil]``: an envelope frame whose body follows in ``chunk`` messages;
- ``["env", frame, body | nil, slots]``: an envelope whose header signs its recipients'
  slots (schemas.slots): up to the hub, every slot (``Recipients.blob``); down to a
  recipient, only its own with its proof (``Recipients.part``);
- ``["chunk", msg_id, offset, data]``: body bytes ``[offset, offset+len(data))``;
- ``["rcpt", frame, seq]``: a signed receipt batch; ``seq`` numbers the batches the hub
  sends one organisation on one channel (0 for batches a spoke sends the hub);
- ``["resume", msg_id, offset]``: "I hold the first ``offset`` body bytes of msg_id; send
  the rest" (the receiver of a chunked body asks for what it misses);
- ``["hello", seq]``: a spoke that (re)connected: "the last numbered receipt batch I hold
  on this channel is ``seq``; send what follows, and what waits for me";
- ``["ask-hello"]``: the hub to a spoke it sees online but never heard a hello from (its
  hello was lost while the hub was away from the broker): "say hello again".
- ``["dir-get", ask, version, keys]``: a spoke asks for directory entries (``keys``: the
  canonical array of keys, schemas.dirtree), holding the root of ``version`` (0: none);
- ``["dir-entries", ask, answer]``: the hub's answer to ask number ``ask``: the entries
  with their inclusion proofs, the absent keys with their neighbours (schemas.dirtree).

The ledger's evidence (schemas.ledger; docs/wire-format.md, section 12):

- ``["ckpt", frame, prev_size, proof]``: a signed checkpoint, retained on the channel's
  ledger topic, with the consistency proof from the checkpoint published before it;
- ``["consistency", old, new]`` / ``["consistent", old, new, proof, leaf, path]``: a
  witness asks for a consistency proof between two sizes; the hub answers with it (nil if
  it cannot) and, when its store was restored, with its signed restore entry and that
  entry's inclusion proof;
- ``["prove", msg_id, after]`` / ``["proof", msg_id, ckpt, entries, more, refusal]``: the
  ledger entries of a message (after entry ``after``) with their inclusion proofs;
- ``["cosign", size, kid, sig]``: a witness countersigns the checkpoint of that size.

Large bodies are cut into chunks of at most :data:`CHUNK_BYTES` so that no MQTT message
exceeds a broker's packet limit and so that chunks of different messages interleave.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import codec
from schemas.errors import DecodeError, Reason
from schemas.ids import MSG_ID_BYTES
from schemas.slots import SLOTS_MAX_BYTES

INLINE_BODY_MAX = 256 * 1024  # bodies up to this size travel inside the env message
CHUNK_BYTES = 256 * 1024  # body bytes per chunk message
# An envelope message holds a frame, an inline body and (up) a large group's slots. Only the
# slots may be as large as SLOTS_MAX_BYTES: every other bin of a message is held to BIN_MAX
# by decode() (what the limits allowed before slots: a frame and an inline body).
TRANSPORT_LIMITS = codec.Limits("transport message", 6 * 1024 * 1024, 64, SLOTS_MAX_BYTES, 8, 1, 2)
BIN_MAX = codec.FRAME_LIMITS.max_size + INLINE_BODY_MAX
_LARGEST_ENVELOPE = codec.FRAME_LIMITS.max_size + INLINE_BODY_MAX + SLOTS_MAX_BYTES + 1024
if TRANSPORT_LIMITS.max_size < _LARGEST_ENVELOPE:
    raise AssertionError("TRANSPORT_LIMITS must hold a frame, an inline body and every slot")


@dataclass(frozen=True, slots=True)
class EnvelopeMsg:
    frame: bytes
    body: bytes | None  # None: the body follows in chunks
    slots: bytes | None = None  # a v2 header's slots: all of them up, one part down


@dataclass(frozen=True, slots=True)
class ChunkMsg:
    msg_id: bytes
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ReceiptsMsg:
    frame: bytes
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ResumeMsg:
    msg_id: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class HelloMsg:
    last_seq: int


@dataclass(frozen=True, slots=True)
class AskHelloMsg:
    pass


@dataclass(frozen=True, slots=True)
class CheckpointMsg:
    frame: bytes
    prev_size: int  # the size of the checkpoint published before this one (0: none)
    proof: bytes  # schemas.ledger.pack_path: consistency from prev_size to this one


@dataclass(frozen=True, slots=True)
class ConsistencyAsk:
    old: int
    new: int


@dataclass(frozen=True, slots=True)
class ConsistencyMsg:
    old: int
    new: int
    proof: bytes | None  # None: the hub cannot prove it (its tree no longer reaches ``new``)
    restore_leaf: bytes | None = None  # the hub's ledger.restored entry, when it has one
    restore_path: bytes | None = None  # its inclusion proof in the checkpoint of size ``new``


@dataclass(frozen=True, slots=True)
class ProveAsk:
    msg_id: bytes
    after: int  # entries with seq above this one (0: from the start)


@dataclass(frozen=True, slots=True)
class ProofMsg:
    msg_id: bytes
    checkpoint: bytes | None  # the signed checkpoint every proof leads to
    entries: bytes | None  # canonical array of [leaf, path] (PROOF_ENTRIES_LIMITS)
    more: bool  # more entries follow: ask again after the last seq
    refusal: str | None = None  # a reason code when the hub will not prove (then all nil)


@dataclass(frozen=True, slots=True)
class DirGetMsg:
    ask: int  # the spoke's number for this request, echoed in the answer
    version: int  # the root version the spoke holds; 0 for none
    keys: bytes  # canonical array of keys (schemas.dirtree.encode_ask)


@dataclass(frozen=True, slots=True)
class DirEntriesMsg:
    ask: int
    answer: bytes  # schemas.dirtree.encode_answer


@dataclass(frozen=True, slots=True)
class CosignMsg:
    size: int
    kid: str
    sig: bytes


TransportMsg = (
    EnvelopeMsg
    | ChunkMsg
    | ReceiptsMsg
    | ResumeMsg
    | HelloMsg
    | AskHelloMsg
    | CheckpointMsg
    | ConsistencyAsk
    | ConsistencyMsg
    | ProveAsk
    | ProofMsg
    | CosignMsg
    | DirGetMsg
    | DirEntriesMsg
)
PROOF_ENTRIES_LIMITS = codec.Limits(
    "ledger proof entries", 700 * 1024, 8, 700 * 1024, 5000, 1, 2
)  # fmt: skip


def encode(message: TransportMsg) -> bytes:
    match message:
        case EnvelopeMsg(frame, body, None):
            return codec.encode(["env", frame, body])
        case EnvelopeMsg(frame, body, slots):
            return codec.encode(["env", frame, body, slots])
        case ChunkMsg(msg_id, offset, data):
            return codec.encode(["chunk", msg_id, offset, data])
        case ReceiptsMsg(frame, seq):
            return codec.encode(["rcpt", frame, seq])
        case ResumeMsg(msg_id, offset):
            return codec.encode(["resume", msg_id, offset])
        case HelloMsg(last_seq):
            return codec.encode(["hello", last_seq])
        case AskHelloMsg():
            return codec.encode(["ask-hello"])
        case CheckpointMsg(frame, prev_size, proof):
            return codec.encode(["ckpt", frame, prev_size, proof])
        case ConsistencyAsk(old, new):
            return codec.encode(["consistency", old, new])
        case ConsistencyMsg(old, new, proof, leaf, path):
            return codec.encode(["consistent", old, new, proof, leaf, path])
        case ProveAsk(msg_id, after):
            return codec.encode(["prove", msg_id, after])
        case ProofMsg(msg_id, checkpoint, entries, more, refusal):
            return codec.encode(["proof", msg_id, checkpoint, entries, more, refusal])
        case CosignMsg(size, kid, sig):
            return codec.encode(["cosign", size, kid, sig])
        case DirGetMsg(ask, version, keys):
            return codec.encode(["dir-get", ask, version, keys])
        case DirEntriesMsg(ask, answer):
            return codec.encode(["dir-entries", ask, answer])


def _bad(what: str) -> DecodeError:
    return DecodeError(Reason.SCHEMA_INVALID, f"transport message: {what}")


def is_envelope(payload: bytes) -> bool:
    """Whether ``payload`` is (canonically) an envelope message, by its first bytes
    (``["env", ...]``, three or four elements), decoding nothing: for who only sorts
    messages; it says nothing of their validity."""
    return payload[:1] in (b"\x93", b"\x94") and payload[1:5] == b"\xa3env"


def decode(payload: bytes) -> TransportMsg:
    """Decode one MQTT payload; DecodeError (with a reason) for anything else."""
    value = codec.decode(payload, TRANSPORT_LIMITS)
    if type(value) is not tuple or not value or type(value[0]) is not str:
        raise _bad("must be an array starting with its kind")
    held = value[1:3] if value[0] == "env" else value[1:]  # an envelope's slots: SLOTS_LIMITS
    for item in held:
        if type(item) is bytes and len(item) > BIN_MAX:
            raise DecodeError(
                Reason.DECODE_TOO_LARGE,
                f"transport message: a {value[0]!r:.20} field of {len(item)} bytes; the limit "
                f"is {BIN_MAX} (only a large group's slots may be longer)",
            )
    match value:
        case ("env", bytes() as frame, None | bytes() as body):
            return EnvelopeMsg(frame, body)
        case ("env", bytes() as frame, None | bytes() as body, bytes() as slots) if slots:
            return EnvelopeMsg(frame, body, slots)
        case ("chunk", bytes() as msg_id, int() as offset, bytes() as data) if (
            _is_msg_id(msg_id) and _is_offset(offset) and data
        ):
            return ChunkMsg(msg_id, offset, data)
        case ("rcpt", bytes() as frame, int() as seq) if _is_offset(seq):
            return ReceiptsMsg(frame, seq)
        case ("resume", bytes() as msg_id, int() as offset) if _is_msg_id(msg_id) and _is_offset(
            offset
        ):
            return ResumeMsg(msg_id, offset)
        case ("hello", int() as seq) if _is_offset(seq):
            return HelloMsg(seq)
        case ("ask-hello",):
            return AskHelloMsg()
        case ("ckpt", bytes() as frame, int() as prev, bytes() as proof) if _is_offset(prev):
            return CheckpointMsg(frame, prev, proof)
        case ("consistency", int() as old, int() as new) if _is_offset(old) and _is_offset(new):
            return ConsistencyAsk(old, new)
        case ("consistent", int() as old, int() as new, None | bytes() as proof,
              None | bytes() as leaf, None | bytes() as path) if (
            _is_offset(old) and _is_offset(new) and (leaf is None) == (path is None)
        ):  # fmt: skip
            return ConsistencyMsg(old, new, proof, leaf, path)
        case ("prove", bytes() as msg_id, int() as after) if _is_msg_id(msg_id) and _is_offset(
            after
        ):
            return ProveAsk(msg_id, after)
        case ("proof", bytes() as msg_id, None | bytes() as ckpt, None | bytes() as entries,
              bool() as more, None | str() as refusal) if _is_msg_id(msg_id) and (
            (refusal is None) == (ckpt is not None)
        ):  # fmt: skip
            return ProofMsg(msg_id, ckpt, entries, more, refusal)
        case ("cosign", int() as size, str() as kid, bytes() as sig) if _is_offset(size):
            return CosignMsg(size, kid, sig)
        case ("dir-get", int() as ask, int() as version, bytes() as keys) if (
            _is_offset(ask) and _is_offset(version) and keys
        ):
            return DirGetMsg(ask, version, keys)
        case ("dir-entries", int() as ask, bytes() as answer) if _is_offset(ask) and answer:
            return DirEntriesMsg(ask, answer)
    raise _bad(f"a {value[0]!r:.20} message with these {len(value) - 1} fields is not defined")


def _is_msg_id(value: object) -> bool:
    return type(value) is bytes and len(value) == MSG_ID_BYTES


def _is_offset(value: int) -> bool:
    return type(value) is int and 0 <= value < 2**53  # not a bool


def encode_proof_entries(entries: list[tuple[bytes, bytes]]) -> bytes:
    """``[[leaf, packed path], ...]`` for a ProofMsg."""
    return codec.encode([list(pair) for pair in entries])


def decode_proof_entries(data: bytes) -> list[tuple[bytes, bytes]]:
    value = codec.decode(data, PROOF_ENTRIES_LIMITS)
    if type(value) is not tuple or not all(
        type(item) is tuple and len(item) == 2 and all(type(x) is bytes for x in item)
        for item in value
    ):
        raise _bad("proof entries must be an array of [leaf, path] pairs")
    return [(item[0], item[1]) for item in value]
