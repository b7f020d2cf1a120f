"""``hubctl trace``: one message's life from the store and the audit ledger.

Like every question in :mod:`hubd.ops.query`, read-only and printed by nobody here; the
stored frame is never decoded, so no title, number or signatory can reach an answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from hubd.core.states import MessageState
from hubd.ops.query import (
    LABEL_OF_RANK,
    PRECEDENCE_OF_RANK,
    Delivery,
    Read,
    deliveries_query,
    delivery_of,
    plain,
)
from hubd.store import tables as t
from schemas.clock import ms_to_text
from schemas.ids import msg_id_text
from schemas.labels import Classification, Precedence


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """The columns of a stored message an operator may see (no frame, no body)."""

    sender: str
    classification: Classification
    precedence: Precedence
    doc_type: str
    created_at: int  # the sender's clock
    expires_at: int | None
    received_at: int
    arrival_channel: str
    state: MessageState
    reason: str | None  # why it is quarantined
    body_size: int
    purged_at: int | None = None  # when retention removed its content (hubd.engine.retention)


@dataclass(frozen=True, slots=True)
class Step:
    """One entry of the audit ledger about the message."""

    seq: int
    at: int
    event: str
    org: str | None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {**plain(self), "time": ms_to_text(self.at, precise=True)}


@dataclass(frozen=True, slots=True)
class Trace:
    at: int
    msg_id: bytes
    message: StoredMessage | None  # None: only the ledger knows it (a store restored in part)
    deliveries: tuple[Delivery, ...]
    steps: tuple[Step, ...]  # in time order; entries of the same millisecond in ledger order

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "msg_id": msg_id_text(self.msg_id),
            "message": None if self.message is None else plain(self.message),
            "deliveries": [d.as_json(self.at) for d in self.deliveries],
            "timeline": [s.as_json() for s in self.steps],
        }


async def trace(read: Read, msg_id: bytes, *, now: int) -> Trace | None:
    """The life of one message from the audit ledger; None if the store never held it."""
    m, d, a = t.messages, t.deliveries, t.audit
    rows = await read(
        select(
            m.c.sender,
            m.c.classification,
            m.c.precedence,
            m.c.doc_type,
            m.c.created_at,
            m.c.expires_at,
            m.c.received_at,
            m.c.arrival_channel,
            m.c.state,
            m.c.reason,
            m.c.body_size,
            m.c.purged_at,
        ).where(m.c.msg_id == msg_id)
    )
    message = None
    if rows:
        r = rows[0]
        message = StoredMessage(
            sender=r.sender,
            classification=LABEL_OF_RANK[int(r.classification)],
            precedence=PRECEDENCE_OF_RANK[int(r.precedence)],
            doc_type=r.doc_type,
            created_at=int(r.created_at),
            expires_at=None if r.expires_at is None else int(r.expires_at),
            received_at=int(r.received_at),
            arrival_channel=r.arrival_channel,
            state=MessageState(r.state),
            reason=r.reason,
            body_size=int(r.body_size),
            purged_at=None if r.purged_at is None else int(r.purged_at),
        )
    deliveries = await read(deliveries_query().where(d.c.msg_id == msg_id).order_by(d.c.recipient))
    ledger = await read(
        select(a.c.seq, a.c.at, a.c.event, a.c.org, a.c.detail)
        .where(a.c.msg_id == msg_id)
        # Time order, not ledger order: a receipt batch or a dispatcher flush may be committed
        # (and so numbered) after a later event of the same message. Within one millisecond
        # the ledger's order decides, which is the order the hub committed them in.
        .order_by(a.c.at, a.c.seq)
    )
    if message is None and not ledger:
        return None
    return Trace(
        at=now,
        msg_id=msg_id,
        message=message,
        deliveries=tuple(delivery_of(r) for r in deliveries),
        steps=tuple(Step(int(r.seq), int(r.at), r.event, r.org, _detail(r.detail)) for r in ledger),
    )


def _detail(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"unreadable": raw[:200]}
    return value if isinstance(value, dict) else {"value": value}
