"""``hubctl find``: messages looked up without a msg_id, by sender, recipient, 发文字号 and
the time the hub received them, each with its recipients' states.

Read-only like every question in :mod:`hubd.ops.query`. An answer holds the msg_id, the
times, the sender, the labels (classification, precedence, 文种) and per recipient the
delivery's state: never a title, a signatory or a document number (the number is asked
for, never printed), and the stored frame is never decoded. Only documents below 秘密 have
their 发文字号 in the store (:func:`hubd.engine.rows.findable_doc_number` says why), so a
search by number never finds a state secret, and the answer says so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select

from hubd.core.states import DeliveryState, MessageState
from hubd.ops.query import LABEL_OF_RANK, PRECEDENCE_OF_RANK, Read
from hubd.store import tables as t
from schemas.ids import msg_id_text
from schemas.labels import Classification, Precedence

UNNUMBERED_NOTE = (
    "documents classified 秘密 and above are not found by 发文字号: the hub keeps no number "
    "for them (nor for a number not of the form 机关代字〔年份〕序号号, nor for messages "
    "stored before hubd kept numbers); find them with --from, "
    "--to, --since and --until"
)


@dataclass(frozen=True, slots=True)
class Search:
    """What the operator asked for; every part optional, all of them must hold."""

    sender: str | None = None
    recipient: str | None = None
    doc_number: str | None = None
    since: int | None = None  # received at or after (ms)
    until: int | None = None  # received before (ms)

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.sender,
            "to": self.recipient,
            "by_doc_number": self.doc_number is not None,  # the number itself is not echoed
            "since": self.since,
            "until": self.until,
        }


@dataclass(frozen=True, slots=True)
class RecipientState:
    recipient: str
    channel: str
    state: DeliveryState
    attempts: int
    updated_at: int

    def as_json(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "channel": self.channel,
            "state": self.state.value,
            "attempts": self.attempts,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Found:
    """One stored message: what an operator may see of it."""

    msg_id: bytes
    received_at: int
    created_at: int  # the sender's clock
    sender: str
    classification: Classification
    precedence: Precedence
    doc_type: str
    state: MessageState
    reason: str | None
    expires_at: int | None
    recipients: tuple[RecipientState, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "msg_id": msg_id_text(self.msg_id),
            "received_at": self.received_at,
            "created_at": self.created_at,
            "sender": self.sender,
            "classification": self.classification.name,
            "precedence": self.precedence.name,
            "doc_type": self.doc_type,
            "state": self.state.value,
            "reason": self.reason,
            "expires_at": self.expires_at,
            "recipients": [r.as_json() for r in self.recipients],
        }


@dataclass(frozen=True, slots=True)
class Findings:
    at: int
    search: Search
    total: int
    items: tuple[Found, ...]  # the most recently received first

    @property
    def note(self) -> str | None:
        return UNNUMBERED_NOTE if self.search.doc_number is not None else None

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "search": self.search.as_json(),
            "total": self.total,
            "shown": len(self.items),
            "messages": [f.as_json() for f in self.items],
            "note": self.note,
        }


async def find(read: Read, search: Search, *, now: int, limit: int) -> Findings:
    """Messages matching ``search``, the most recently received first, at most ``limit``.

    Each part uses an index (tables.py): the number, (sender, time), (recipient, time) or
    the time alone, so a search stays fast on a store of millions of messages."""
    m, d = t.messages, t.deliveries
    where: list[ColumnElement[bool]] = []
    if search.sender is not None:
        where.append(m.c.sender == search.sender)
    if search.doc_number is not None:
        where.append(m.c.doc_number == search.doc_number)
    if search.recipient is not None:
        # A delivery's created_at is its message's received_at: the time is on the index.
        to = select(d.c.msg_id).where(d.c.recipient == search.recipient)
        if search.since is not None:
            to = to.where(d.c.created_at >= search.since)
        if search.until is not None:
            to = to.where(d.c.created_at < search.until)
        where.append(m.c.msg_id.in_(to))
    if search.since is not None:
        where.append(m.c.received_at >= search.since)
    if search.until is not None:
        where.append(m.c.received_at < search.until)
    total = await read(select(func.count()).select_from(m).where(*where))
    rows = await read(
        select(
            m.c.msg_id,
            m.c.received_at,
            m.c.created_at,
            m.c.sender,
            m.c.classification,
            m.c.precedence,
            m.c.doc_type,
            m.c.state,
            m.c.reason,
            m.c.expires_at,
        )
        .where(*where)
        .order_by(m.c.received_at.desc(), m.c.msg_id)
        .limit(limit)
    )
    states: dict[bytes, list[RecipientState]] = defaultdict(list)
    if rows:
        for r in await read(
            select(d.c.msg_id, d.c.recipient, d.c.channel, d.c.state, d.c.attempts, d.c.updated_at)
            .where(d.c.msg_id.in_([bytes(r.msg_id) for r in rows]))
            .order_by(d.c.msg_id, d.c.recipient)
        ):
            states[bytes(r.msg_id)].append(
                RecipientState(
                    r.recipient,
                    r.channel,
                    DeliveryState(r.state),
                    int(r.attempts),
                    int(r.updated_at),
                )
            )
    items = tuple(
        Found(
            msg_id=bytes(r.msg_id),
            received_at=int(r.received_at),
            created_at=int(r.created_at),
            sender=r.sender,
            classification=LABEL_OF_RANK[int(r.classification)],
            precedence=PRECEDENCE_OF_RANK[int(r.precedence)],
            doc_type=r.doc_type,
            state=MessageState(r.state),
            reason=r.reason,
            expires_at=None if r.expires_at is None else int(r.expires_at),
            recipients=tuple(states.get(bytes(r.msg_id), ())),
        )
        for r in rows
    )
    return Findings(now, search, int(total[0][0]), items)
