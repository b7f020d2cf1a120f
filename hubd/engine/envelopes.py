"""Envelopes in: the facts :func:`hubd.core.admit.admit` decides on, the store's answers to
its questions, and what follows its decision (storing, answering, delivering).

An inline envelope is decided without awaiting anything when it can be: most are, and go
to the store with the rest of their pass. One that needs the store (a 批复's 请示; a refusal
that must first rule out a resend of a stored message) takes the slow way, in a task of its
own, through the same :func:`~hubd.core.admit.admit`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import replace

import structlog
from sqlalchemy import Connection, select

from hubd.core.admit import (
    NOT_ASKED,
    Admit,
    CaseFacts,
    Facts,
    Lookup,
    NeedLookup,
    Path,
    Quarantine,
    Refuse,
    Resend,
    Stored,
    admit,
    disk_need,
)
from hubd.core.states import MessageState
from hubd.engine.answers import Answers
from hubd.engine.arrival import Arrival, Slow, Step
from hubd.engine.dispatch import Dispatcher
from hubd.engine.jobs import Job, Payload
from hubd.engine.rows import Storing, new_message
from hubd.store import rulefacts as rulecheck
from hubd.store import tables as t
from hubd.store.db import Store
from hubd.store.writes import Duplicate
from schemas import transport
from schemas.directory import Directory
from schemas.envelope import VerifiedEnvelope
from schemas.errors import PeerError, UsageError
from schemas.receipts import ReceiptStatus

log = structlog.get_logger("hubd.ingest")
security = structlog.get_logger("hubd.security")

Decided = Admit | Quarantine | Refuse | Resend


class Envelopes:
    def __init__(
        self,
        *,
        directory: Callable[[], Directory],
        store: Store,
        dispatcher: Dispatcher,
        answers: Answers,
        max_skew_ms: int,
        disk_low: Callable[[int], str | None],
    ) -> None:
        self._directory, self._store, self._dispatcher = directory, store, dispatcher
        self._answers, self._max_skew_ms, self._disk_low = answers, max_skew_ms, disk_low

    def facts(
        self,
        arrival: Arrival,
        envelope: VerifiedEnvelope,
        path: Path,
        *,
        channel: str | None = None,
        body: bytes | None = None,
        spooled: PeerError | None = None,
        under_way: bool = False,
    ) -> Facts:
        """What the hub knows of ``envelope`` now, without asking the store."""
        directory = self._directory()
        return Facts(
            envelope,
            path,
            arrival.channel if channel is None else channel,
            directory,
            arrival.at,
            self._max_skew_ms,
            body=body,
            spooled=spooled,
            under_way=under_way,
            disk_low=None if path is Path.END else self._disk_low(disk_need(path, envelope)),
            peer=arrival.org if directory.relaying(arrival.org) else None,
        )

    async def decide(self, facts: Facts) -> tuple[Decided, Facts]:
        """:func:`admit`'s decision, with the store asked whatever it needs first; and the
        facts it was made on (what the store said among them). A large group's envelope is
        judged in a worker thread (the rules and gating for 10,000 recipients: half a
        second); admit is pure, so where it runs changes nothing else."""
        while True:
            if facts.envelope.slots is not None:
                outcome = await asyncio.to_thread(admit, facts)
            else:
                outcome = admit(facts)
            if not isinstance(outcome, NeedLookup):
                return outcome, facts
            facts = await self._look_up(outcome.what, facts)

    async def _look_up(self, what: Lookup, facts: Facts) -> Facts:
        header = facts.envelope.header
        match what:
            case Lookup.STORED if facts.stored is NOT_ASKED:
                return replace(facts, stored=await self._stored_as(facts.envelope))
            case Lookup.REQUEST if facts.request is NOT_ASKED:
                referenced = await rulecheck.look_up(self._store.read, header.in_reply_to)
                return replace(facts, request=referenced)
            case Lookup.CASE if facts.case is NOT_ASKED and header.terms is not None:
                held = await self._store.read_sync(
                    case_facts, header.terms.case, header.in_reply_to
                )
                return replace(facts, case=held)
        raise UsageError(f"admit asked again for {what}, which it was given")

    async def _stored_as(self, envelope: VerifiedEnvelope) -> Stored | None:
        """What the store holds under the envelope's msg_id (None: nothing)."""
        rows = await self._store.read(
            select(t.messages.c.frame_sha256, t.messages.c.state).where(
                t.messages.c.msg_id == envelope.header.msg_id
            )
        )
        if not rows:
            return None
        return Stored(same=bytes(rows[0][0]) == envelope.digest, state=MessageState(rows[0][1]))

    # ------------------------------------------------------------ inline bodies

    def inline_now(
        self, arrival: Arrival, message: transport.EnvelopeMsg, envelope: VerifiedEnvelope
    ) -> Step:
        """An envelope with its body: decided now, or the slow rest when it needs the store."""
        assert message.body is not None  # noqa: S101 - the intake sends only inline bodies
        facts = self.facts(arrival, envelope, Path.INLINE, body=message.body)
        outcome = admit(facts)
        if isinstance(outcome, NeedLookup):
            return Slow(functools.partial(self.inline_slowly, arrival, message.body, facts))
        if not isinstance(outcome, Admit | Quarantine):
            self.answer(arrival, envelope, outcome)
            return None
        payload = Payload(envelope.frame, message.body, None, len(message.body))
        storing = Storing(arrival, envelope, outcome, payload)
        return new_message(storing), functools.partial(self.stored, storing)

    async def inline_slowly(self, arrival: Arrival, body: bytes, facts: Facts) -> None:
        """An inline envelope the quick path could not settle (the checks that need the
        store), or a large group's, which takes no quick path."""
        envelope = facts.envelope
        outcome, _ = await self.decide(facts)
        if isinstance(outcome, Admit | Quarantine):
            payload = Payload(envelope.frame, body, None, len(body))
            await self.store(arrival, envelope, outcome, payload)
        else:
            self.answer(arrival, envelope, outcome)

    # ------------------------------------------------------------ after the decision

    def answer(
        self, arrival: Arrival, envelope: VerifiedEnvelope, outcome: Refuse | Resend
    ) -> None:
        if isinstance(outcome, Refuse):
            self._answers.refuse(arrival, envelope, outcome)
        else:
            self._answers.resend(arrival, envelope, outcome)

    async def store(
        self,
        arrival: Arrival,
        envelope: VerifiedEnvelope,
        outcome: Admit | Quarantine,
        payload: Payload,
    ) -> None:
        storing = Storing(arrival, envelope, outcome, payload)
        self.stored(storing, await self._store.submit(new_message(storing)))

    def stored(self, storing: Storing, result: object) -> None:
        """The message is durable (or was already): answer the sender, start delivering."""
        arrival, envelope, outcome = storing.arrival, storing.envelope, storing.outcome
        header = envelope.header
        answers = self._answers
        if isinstance(result, Duplicate):
            answers.stored_already(arrival, envelope, Stored(result.same, result.state))
            return
        fields = answers.fields(envelope, arrival)
        if isinstance(outcome, Quarantine):
            answers.counts["quarantined"] += 1
            security.error("message.quarantined", reason=outcome.reason.value, **fields)
            answers.issue(
                arrival,
                envelope,
                ReceiptStatus.REJECTED,
                outcome.reason.value,
                outcome.detail,
                label=answers.ceiling(arrival.channel),
            )
            return
        answers.counts["accepted"] += 1
        log.info("message.accepted", recipients=len(outcome.routes), **fields)
        for finding in outcome.warnings:
            log.warning("rule.warned", rule=finding.rule.id, article=finding.rule.article, **fields)
        answers.issue(arrival, envelope, ReceiptStatus.ACCEPTED)
        for route in outcome.routes:
            self._dispatcher.add(
                Job(
                    msg_id=header.msg_id,
                    recipient=route.recipient,
                    channel=route.channel,
                    precedence=header.precedence,
                    classification=header.classification,
                    sender=header.sender,
                    origin=arrival.channel,
                    expires_at=header.expires_at,
                    payload=storing.payload,
                    accepted_at=arrival.at,
                    part=envelope.part_on_way(route.recipient, route.via),
                )
            )


def case_facts(conn: Connection, case: str | None, in_reply_to: bytes | None) -> CaseFacts:
    """What the store holds of an accepted petition case (core.admit.CaseFacts)."""
    m = t.messages.c
    earlier = None
    if in_reply_to is not None:
        row = conn.execute(
            select(m.sender, m.done_by).where(
                m.msg_id == in_reply_to,
                m.case_no == case,
                m.state == MessageState.ACCEPTED.value,
            )
        ).first()
        if row is not None:
            earlier = (row[0], None if row[1] is None else int(row[1]))
    return CaseFacts(case_parties(conn, case), earlier)


def case_parties(conn: Connection, case: str | None) -> frozenset[str] | None:
    """The organisations an accepted petition case has passed through (None: a new case)."""
    m, d = t.messages.c, t.deliveries.c
    accepted = (m.case_no == case, m.state == MessageState.ACCEPTED.value)
    senders = {r for (r,) in conn.execute(select(m.sender).where(*accepted).distinct())}
    if not senders:
        return None
    ids = select(m.msg_id).where(*accepted)
    recipients = {
        r for (r,) in conn.execute(select(d.recipient).where(d.msg_id.in_(ids)).distinct())
    }
    return frozenset(senders | recipients)
