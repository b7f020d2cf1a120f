"""Stored deliveries as the dispatcher's Jobs: one conversion for every way back in.

The hub reloads every awaited delivery at start (:meth:`hubd.daemon.Hub._reload_jobs`), and
a redelivery (:mod:`hubd.ops.redeliver`) hands the running dispatcher the deliveries it moved
back to PENDING; both read the same columns and build the same :class:`~hubd.engine.dispatch.Job`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, case, select

from hubd.core.states import DeliveryState
from hubd.engine.jobs import Job, Payload
from hubd.store import tables as t
from hubd.store.bodyref import body_ref
from schemas.labels import Classification, Precedence

_LABELS = {c.rank: c for c in Classification}
_PRECEDENCES = {p.rank: p for p in Precedence}


def job_query(*where: ColumnElement[bool]) -> Select[Any]:
    """Deliveries joined with their messages: every column a Job needs."""
    d, m = t.deliveries, t.messages
    return (
        select(
            d.c.msg_id,
            d.c.recipient,
            d.c.channel,
            d.c.state,
            d.c.attempts,
            d.c.slot,
            # every slot, only for a copy that goes on through another hub (no slot of its own)
            case((d.c.slot.is_(None), m.c.slots), else_=None).label("slots"),
            m.c.precedence,
            m.c.classification,
            m.c.sender,
            m.c.arrival_channel,
            m.c.expires_at,
            m.c.frame,
            m.c.body,
            m.c.body_path,
            m.c.body_size,
            m.c.received_at,
        )
        .join(m, m.c.msg_id == d.c.msg_id)
        .where(*where)
    )


def jobs_from_rows(rows: Sequence[Any]) -> list[Job]:
    """One Job per row; the recipients of one message share its Payload."""
    payloads: dict[bytes, Payload] = {}
    jobs = []
    for r in rows:
        msg_id = bytes(r.msg_id)
        payload = payloads.get(msg_id)
        if payload is None:
            payload = payloads[msg_id] = Payload(
                bytes(r.frame),
                None if r.body is None else bytes(r.body),
                body_ref(r.body_path),
                int(r.body_size),
            )
        jobs.append(
            Job(
                msg_id=msg_id,
                recipient=r.recipient,
                channel=r.channel,
                precedence=_PRECEDENCES[int(r.precedence)],
                classification=_LABELS[int(r.classification)],
                sender=r.sender,
                origin=r.arrival_channel,
                expires_at=r.expires_at,
                payload=payload,
                state=DeliveryState(r.state),
                attempts=int(r.attempts),
                accepted_at=int(r.received_at),
                part=_part(r),
            )
        )
    return jobs


def _part(row: Any) -> bytes | None:
    """The recipient's own slot, or every slot for a copy handed to another hub."""
    if row.slot is not None:
        return bytes(row.slot)
    return None if row.slots is None else bytes(row.slots)
