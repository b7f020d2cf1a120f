"""The facts the document rules (行文规则) need from the hub's store.

The rules are pure code shared with the spokes (:mod:`schemas.rules`); the hub's check is
the authoritative one because only the hub can answer the one question a spoke cannot:
is the 请示 a 批复 answers really a request its recipient sent to its sender? This module
reads that from the store (a message the hub accepted; a quarantined one does not count)
by decoding the stored frame's header, which was verified when it was stored.

Used by :mod:`hubd.engine.envelopes` (for :func:`hubd.core.admit.admit`, which judges) and by
``hubctl route`` (read-only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from sqlalchemy import Select, select

from hubd.core.states import MessageState
from hubd.store import tables as t
from schemas import codec
from schemas.envelope import Header, read_frame_sender
from schemas.errors import XchgError
from schemas.rules import Referenced
from schemas.slots import stored_slot

log = structlog.get_logger("hubd.rules")

Read = Callable[[Select[Any]], Awaitable[Sequence[Any]]]


def referenced_query(msg_id: bytes) -> Select[Any]:
    """The stored frame of ``msg_id`` if the hub accepted it (not quarantined) and still
    holds it (retention keeps a 请示's frame; any other purged message has none)."""
    return select(t.messages.c.frame).where(
        t.messages.c.msg_id == msg_id,
        t.messages.c.state == MessageState.ACCEPTED.value,
        t.messages.c.frame.is_not(None),
    )


def stored_header(frame: bytes) -> Header:
    """The header of a frame from the store.

    The signature is not checked again: the frame was verified before it was stored, and
    the key that signed it may have expired since.
    """
    _, _, hdr, _ = read_frame_sender(frame)
    core = codec.decode_map(hdr, codec.HDR_LIMITS)["core"]
    return Header.from_wire(codec.decode_map(core, codec.HEADER_LIMITS), what="stored header")


def referenced_from(rows: Sequence[Any]) -> Referenced | None:
    """The stored message as the rules see it; None if there is none, or if its frame no
    longer reads as a header (stored by an older hub, say): a 批复 to it is refused as to an
    unknown message rather than failing the ingest worker (and so the hub)."""
    if not rows:
        return None
    try:
        header = stored_header(bytes(rows[0][0]))
    except (XchgError, KeyError, TypeError, ValueError) as exc:
        log.error("store.unreadable_frame", problem=str(exc)[:300])
        return None
    return Referenced(header.msg_id, header.sender, header.doc_type, header.to)


async def look_up(read: Read, in_reply_to: bytes | None) -> Referenced | None:
    """What the store holds under a 批复's ``in_reply_to`` (None: nothing accepted)."""
    if in_reply_to is None:
        return None
    referenced = referenced_from(await read(referenced_query(in_reply_to)))
    if referenced is None or referenced.to:
        return referenced
    # A header that names nobody signs its recipients' slots (schemas.slots; a 请示 with
    # many copies): each delivery kept its recipient's slot, which says who was primary.
    parts = await read(
        select(t.deliveries.c.slot).where(
            t.deliveries.c.msg_id == in_reply_to, t.deliveries.c.slot.is_not(None)
        )
    )
    try:
        slots = [stored_slot(bytes(row[0])) for row in parts]
    except XchgError as exc:
        log.error("store.unreadable_slot", problem=str(exc)[:300])
        return referenced
    return dataclasses.replace(referenced, to=tuple(sorted(s.org for s in slots if s.role == "to")))
