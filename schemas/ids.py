"""Identifiers that become MQTT topic levels and file names: one validator each, used everywhere.

An organisation id is a lowercase dotted name (``jl.cc``, ``jl.cc.nongan``). Only
``[a-z0-9-]`` labels joined by single dots are accepted, so nothing that could escape an
MQTT topic level or a file path (``/``, ``+``, ``#``, ``$``, NUL, ``..``, whitespace,
control characters, non-ASCII look-alikes) ever gets through. The error names the first
offending thing, so an integrator knows what to change.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated

from pydantic import AfterValidator

ORG_ID_MAX = 64
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_LABEL_MAX = 32
# The whole rule in one expression (labels of 1-32, joined by single dots), for the common
# case of a valid id; the checks below run only to say what is wrong with an invalid one.
_ORG_ID_RE = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?)*"
)
_DANGEROUS = {
    "/": "'/' separates MQTT topic levels and path components",
    "+": "'+' is an MQTT single-level wildcard",
    "#": "'#' is an MQTT multi-level wildcard",
    "$": "'$' starts MQTT system topics",
    "\x00": "NUL ends strings in C and is forbidden in MQTT topics",
    "\\": "'\\' separates path components on Windows",
}
MSG_ID_BYTES = 16
_MSG_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_KID_RE = re.compile(r"^[0-9a-f]{16}$")


def check_org_id(value: str, *, what: str = "organisation id") -> str:
    """Return ``value`` if it is a valid id; raise ValueError naming the problem otherwise."""
    if isinstance(value, str) and len(value) <= ORG_ID_MAX and _ORG_ID_RE.fullmatch(value):
        return value
    raise ValueError(org_id_problem(value, what=what) or f"{what} {value!r:.80} is not valid")


def org_id_problem(value: object, *, what: str = "organisation id") -> str | None:
    """What is wrong with ``value`` as an id, in a sentence; None if nothing is."""
    if not isinstance(value, str):
        return f"{what} must be text, not {type(value).__name__}"
    shown = repr(value[:80])
    if not value:
        return f"{what} is empty"
    if len(value) > ORG_ID_MAX:
        return f"{what} {shown} is {len(value)} characters; the limit is {ORG_ID_MAX}"
    for char, why in _DANGEROUS.items():
        if char in value:
            return f"{what} {shown} contains {char!r}: {why}"
    if ".." in value:
        return f"{what} {shown} contains '..', which could climb out of a folder"
    for char in value:
        if char.isspace() or not char.isprintable():
            return f"{what} {shown} contains whitespace or a control character"
        if not char.isascii():
            return (
                f"{what} {shown} contains the non-ASCII character {char!r}; "
                "ids are ASCII so that look-alike letters cannot impersonate another id"
            )
    if value != value.lower():
        return f"{what} {shown} has capital letters; ids are lowercase"
    for label in value.split("."):
        if not label:
            return f"{what} {shown} has an empty label (leading, trailing or '..' dot)"
        if len(label) > _LABEL_MAX or not _LABEL_RE.fullmatch(label):
            return (
                f"{what} {shown} has the label {label!r}; each dot-separated label is 1-"
                f"{_LABEL_MAX} of a-z, 0-9 and '-', not starting or ending with '-'"
            )
    return None


def is_org_id(value: object) -> bool:
    try:
        check_org_id(value)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def _check_group_id(value: str) -> str:
    return check_org_id(value, what="group id")


def _check_channel_id(value: str) -> str:
    return check_org_id(value, what="channel id")


def _check_hub_id(value: str) -> str:
    return check_org_id(value, what="hub id")


def check_key_id(value: str) -> str:
    if not isinstance(value, str) or not _KID_RE.fullmatch(value):
        raise ValueError(f"key id {value!r} must be 16 lowercase hex digits")
    return value


def _check_msg_id_bytes(value: bytes) -> bytes:
    if len(value) != MSG_ID_BYTES:
        raise ValueError(f"msg_id must be {MSG_ID_BYTES} bytes, not {len(value)}")
    return value


OrgId = Annotated[str, AfterValidator(check_org_id)]
GroupId = Annotated[str, AfterValidator(_check_group_id)]
ChannelId = Annotated[str, AfterValidator(_check_channel_id)]
HubId = Annotated[str, AfterValidator(_check_hub_id)]
KeyId = Annotated[str, AfterValidator(check_key_id)]
MsgIdBytes = Annotated[bytes, AfterValidator(_check_msg_id_bytes)]


def new_msg_id() -> bytes:
    """A fresh 128-bit random message id."""
    return secrets.token_bytes(MSG_ID_BYTES)


def msg_id_text(msg_id: bytes) -> str:
    """The printed form of a msg_id: 32 lowercase hex digits (safe in topics and paths)."""
    return _check_msg_id_bytes(msg_id).hex()


def parse_msg_id(text: str) -> bytes:
    """Parse the printed form; ValueError unless exactly 32 lowercase hex digits."""
    if not isinstance(text, str) or not _MSG_ID_RE.fullmatch(text):
        raise ValueError(f"msg_id {text!r:.80} must be 32 lowercase hex digits")
    return bytes.fromhex(text)
