"""What travels in one MQTT message on the up and down topics (docs/wire-format.md, 11).

Each payload is a canonical msgpack array whose first element names its kind:

- ``["env", frame, body]``: an envelope frame with its whole body (small documents);
- ``["env", frame, nil]``: an envelope frame whose body follows in ``chunk`` messages;
- ``["chunk", msg_id, offset, data]``: body bytes ``[offset, offset+len(data))``;
- ``["rcpt", frame, seq]``: a signed receipt batch; ``seq`` numbers the batches the hub
  sends one organisation on one channel (0 for batches a spoke sends the hub);
- ``["resume", msg_id, offset]``: "I hold the first ``offset`` body bytes of msg_id; send
  the rest" (the receiver of a chunked body asks for what it misses);
- ``["hello", seq]``: a spoke that (re)connected: "the last numbered receipt batch I hold
  on this channel is ``seq``; send what follows, and what waits for me".

Large bodies are cut into chunks of at most :data:`CHUNK_BYTES` so that no MQTT message
exceeds a broker's packet limit and so that chunks of different messages interleave.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import codec
from schemas.errors import DecodeError, Reason
from schemas.ids import MSG_ID_BYTES

INLINE_BODY_MAX = 256 * 1024  # bodies up to this size travel inside the env message
CHUNK_BYTES = 256 * 1024  # body bytes per chunk message
TRANSPORT_LIMITS = codec.Limits(
    "transport message", codec.FRAME_LIMITS.max_size + INLINE_BODY_MAX + 1024, 16,
    codec.FRAME_LIMITS.max_size + INLINE_BODY_MAX, 8, 1, 2,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class EnvelopeMsg:
    frame: bytes
    body: bytes | None  # None: the body follows in chunks


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


TransportMsg = EnvelopeMsg | ChunkMsg | ReceiptsMsg | ResumeMsg | HelloMsg


def encode(message: TransportMsg) -> bytes:
    match message:
        case EnvelopeMsg(frame, body):
            return codec.encode(["env", frame, body])
        case ChunkMsg(msg_id, offset, data):
            return codec.encode(["chunk", msg_id, offset, data])
        case ReceiptsMsg(frame, seq):
            return codec.encode(["rcpt", frame, seq])
        case ResumeMsg(msg_id, offset):
            return codec.encode(["resume", msg_id, offset])
        case HelloMsg(last_seq):
            return codec.encode(["hello", last_seq])


def _bad(what: str) -> DecodeError:
    return DecodeError(Reason.SCHEMA_INVALID, f"transport message: {what}")


def decode(payload: bytes) -> TransportMsg:
    """Decode one MQTT payload; DecodeError (with a reason) for anything else."""
    value = codec.decode(payload, TRANSPORT_LIMITS)
    if type(value) is not tuple or not value or type(value[0]) is not str:
        raise _bad("must be an array starting with its kind")
    match value:
        case ("env", bytes() as frame, None | bytes() as body):
            return EnvelopeMsg(frame, body)
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
    raise _bad(f"a {value[0]!r:.20} message with these {len(value) - 1} fields is not defined")


def _is_msg_id(value: object) -> bool:
    return type(value) is bytes and len(value) == MSG_ID_BYTES


def _is_offset(value: int) -> bool:
    return type(value) is int and 0 <= value < 2**53  # not a bool
