"""The admin socket's protocol: one JSON object per line, each way (pure: no I/O).

A request is ``{"version": 1, "op": OP, "args": {...}}`` and the answer is
``{"version": 1, "ok": true, "result": {...}}`` or ``{"version": 1, "ok": false, "error":
{"code": CODE, "message": SENTENCE}}``. Every line has a hard size limit
(:data:`MAX_REQUEST`, :data:`MAX_ANSWER`), checked before a byte of it is decoded; the op
comes from a closed set (:class:`Op`); the arguments are validated as the rest of the hub
validates input (msg ids as 32 lowercase hex digits, organisation ids through
:mod:`schemas.ids`), and every refusal is a sentence naming the rule and the value.

The server is :mod:`hubd.admin.server`, the hub's answers :mod:`hubd.admin.ops`, the client
:mod:`hubd.admin.client` (hubctl).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from schemas.errors import XchgError
from schemas.ids import OrgId, parse_msg_id
from schemas.model import describe

VERSION = 1
MAX_REQUEST = 4096  # bytes of one request line, its newline included
MAX_ANSWER = 1 << 20  # bytes of one answer line, its newline included


class Op(StrEnum):
    """What hubctl may ask the running hub: nothing else is understood."""

    PRESENCE = "presence"  # who is online on which channel, since when
    REDELIVER = "redeliver"  # DEAD deliveries back to PENDING, delivered at once
    DIRECTORY_PUBLISH = "directory.publish"  # re-read, re-verify, republish (as SIGHUP)

    @property
    def mutating(self) -> bool:
        """Changes the hub's state: logged with the peer's credentials and audited."""
        return self is not Op.PRESENCE


class ProtocolError(XchgError):
    """A line that breaks the protocol. ``code`` is stable; the message is a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class HubRefusedError(XchgError):
    """The hub understood the request and will not do it (``code``, a sentence)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ------------------------------------------------------------------ requests


def _msg_id(value: str) -> str:
    parse_msg_id(value)  # ValueError naming the value unless 32 lowercase hex digits
    return value


MsgIdText = Annotated[str, AfterValidator(_msg_id)]


class _Args(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class NoArgs(_Args):
    """presence and directory.publish take no arguments."""


class RedeliverArgs(_Args):
    """``msg_id`` (one message, every dead delivery of it or the one to ``to``) or
    ``dead`` (every dead letter, or those to ``to``)."""

    msg_id: MsgIdText | None = None
    dead: bool = False
    to: OrgId | None = None

    @model_validator(mode="after")
    def _one_target(self) -> RedeliverArgs:
        if (self.msg_id is None) == (not self.dead):
            raise ValueError(
                "give either msg_id (one message) or dead = true (every dead letter), "
                "not both and not neither"
            )
        return self

    @property
    def msg_id_bytes(self) -> bytes | None:
        return None if self.msg_id is None else bytes.fromhex(self.msg_id)


_ARGS: dict[Op, type[_Args]] = {
    Op.PRESENCE: NoArgs,
    Op.REDELIVER: RedeliverArgs,
    Op.DIRECTORY_PUBLISH: NoArgs,
}


@dataclass(frozen=True, slots=True)
class Request:
    op: Op
    args: _Args


def parse_request(line: bytes) -> Request:
    """One request line, validated; ProtocolError naming the rule and the value otherwise."""
    if len(line) > MAX_REQUEST:
        raise ProtocolError(
            "request.too_large",
            f"the request is {len(line)} bytes; the limit is {MAX_REQUEST} bytes per line",
        )
    data = _json_object(line, "request")
    version = data.get("version")
    if type(version) is not int or version != VERSION:
        raise ProtocolError(
            "request.version",
            f"version {version!r} is not spoken here; this hub speaks version {VERSION} "
            "(use the hubctl of the same release as the hub)",
        )
    unknown = sorted(set(data) - {"version", "op", "args"})
    if unknown:
        raise ProtocolError(
            "request.unknown_field",
            f"the request has the field {unknown[0]!r}; a request has version, op and args",
        )
    raw_op = data.get("op")
    try:
        op = Op(str(raw_op))
    except ValueError:
        raise ProtocolError(
            "request.op",
            f"op {str(raw_op)[:64]!r} is not one of {', '.join(o.value for o in Op)}",
        ) from None
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(
            "request.args", f"args of {op.value} must be an object, not {args!r:.80}"
        )
    try:
        return Request(op, _ARGS[op].model_validate(args))
    except ValidationError as exc:
        problem = describe(exc).replace("Value error, ", "")
        raise ProtocolError("request.args", f"{op.value}: {problem}") from exc


def encode_request(op: Op, **args: Any) -> bytes:
    """A request line (the client's side); validated as the hub will validate it."""
    line = _line({"version": VERSION, "op": op.value, "args": args})
    parse_request(line.rstrip(b"\n"))  # the client refuses what the hub would refuse
    return line


# ------------------------------------------------------------------ answers


def encode_result(result: dict[str, Any]) -> bytes:
    """An answer line; one that would exceed :data:`MAX_ANSWER` becomes an error line."""
    line = _line({"version": VERSION, "ok": True, "result": result})
    if len(line) > MAX_ANSWER:
        return encode_error(
            "answer.too_large",
            f"the answer is {len(line)} bytes, over the {MAX_ANSWER}-byte limit; ask for less "
            "(a smaller --limit, or one organisation with --to)",
        )
    return line


def encode_error(code: str, message: str) -> bytes:
    return _line({"version": VERSION, "ok": False, "error": {"code": code, "message": message}})


def parse_answer(line: bytes) -> dict[str, Any]:
    """The result of an answer line; HubRefusedError for the hub's refusal, ProtocolError for a
    line that is not an answer."""
    if len(line) > MAX_ANSWER:
        raise ProtocolError(
            "answer.too_large", f"the answer exceeds the {MAX_ANSWER}-byte limit per line"
        )
    data = _json_object(line, "answer")
    if data.get("version") != VERSION or type(data.get("ok")) is not bool:
        raise ProtocolError(
            "answer.malformed",
            f"the answer is not a version {VERSION} admin answer; is this a govxchg hub?",
        )
    if data["ok"]:
        result = data.get("result")
        if not isinstance(result, dict):
            raise ProtocolError("answer.malformed", "the answer has no result object")
        return result
    error = data.get("error")
    if not isinstance(error, dict):
        raise ProtocolError("answer.malformed", "the refusal has no error object")
    raise HubRefusedError(str(error.get("code", "unknown")), str(error.get("message", "")))


def _json_object(line: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except RecursionError:  # '[[[[...' nested deeper than the decoder goes
        raise ProtocolError(f"{what}.too_deep", f"the {what} is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(
            f"{what}.not_json", f"the {what} is not one line of JSON (UTF-8): {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError(
            f"{what}.not_an_object", f"the {what} must be a JSON object, not {type(data).__name__}"
        )
    return data


def _line(value: dict[str, Any]) -> bytes:
    # ensure_ascii: one line whatever the text holds (a U+2028 in a name cannot split it)
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
