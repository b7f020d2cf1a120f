"""Stored deliveries as the dispatcher's Jobs: one conversion for every way back in.

The hub reloads every awaited delivery at start (:meth:`hubd.daemon.Hub._reload_jobs`), and
a redelivery (:mod:`hubd.ops.redeliver`) hands the running dispatcher the deliveries it moved
back to PENDING; both read the same columns and build the same :class:`~hubd.engine.dispatch.Job`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, select

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
                part=None if r.slot is None else bytes(r.slot),
            )
        )
    return jobs


Read = Callable[[Any], Awaitable[Sequence[Any]]]


async def load_jobs(read: Read, *where: ColumnElement[bool]) -> list[Job]:
    """The Jobs of the deliveries ``where`` says. A large group's copy that goes on through
    another hub carries every slot (its row has no slot of its own): read once per message
    from the message and shared by its jobs, not once per row (a notice to thousands of
    counties behind other hubs would read its megabytes thousands of times)."""
    jobs = jobs_from_rows(await read(job_query(*where)))
    bare = sorted({j.msg_id for j in jobs if j.part is None})
    if bare:
        m = t.messages.c
        rows = await read(select(m.msg_id, m.slots).where(m.msg_id.in_(bare), m.slots.is_not(None)))
        slots = {bytes(r[0]): bytes(r[1]) for r in rows}
        for job in jobs:
            if job.part is None:
                job.part = slots.get(job.msg_id)
    return jobs
