"""Ingest: everything that arrives on the up and presence topics.

For every envelope, in this order (issue 3, section 2): total size and header decode with
limits -> the signature, with the directory key of the sender -> the topic's owner, the
header's sender and the verifying key are one -> replay (created_at within the skew; the
msg_id unique in the store) -> gating (:mod:`hubd.router`) -> the body's size and hash ->
durable write -> signed ACCEPTED, or a signed REJECTED that names the rule and values.
A message that arrived on a channel whose ceiling is below its label is quarantined:
stored, never forwarded, logged as a security event, and the sender gets REJECTED.

A fixed pool of workers takes messages from one queue, so a burst becomes many
concurrent store writes that share a group commit.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import select

from hubd import router, rulecheck
from hubd import tables as t
from hubd.audit import AuditEvent
from hubd.dispatch import Dispatcher, Job, Payload, Send
from hubd.issuer import ReceiptIssuer
from hubd.spool import Spool, Transfer
from hubd.states import DeliveryState, Event
from hubd.store import Duplicate, NewMessage, RecordReceipts, Store
from schemas import topics, transport
from schemas.directory import Directory
from schemas.envelope import VerifiedEnvelope, check_freshness, verify_envelope
from schemas.errors import PeerError, Reason, XchgError
from schemas.ids import msg_id_text
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus, verify_receipts
from schemas.rules import Evaluation, Finding
from schemas.seal import BodyChecker

log = structlog.get_logger("hubd.ingest")
security = structlog.get_logger("hubd.security")


@dataclass(frozen=True, slots=True)
class Arrival:
    channel: str
    org: str
    payload: bytes
    at: int


class Ingest:
    def __init__(
        self,
        *,
        directory: Callable[[], Directory],
        store: Store,
        spool: Spool,
        dispatcher: Dispatcher,
        issuer: ReceiptIssuer,
        send: Send,
        clock: Callable[[], int],
        max_skew_ms: int,
        workers: int = 64,
    ) -> None:
        self._directory, self._store, self._spool = directory, store, spool
        self._dispatcher, self._issuer, self._send, self._clock = dispatcher, issuer, send, clock
        self._max_skew_ms, self._workers = max_skew_ms, workers
        self._queue: deque[Arrival] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self.counts: dict[str, int] = {"accepted": 0, "rejected": 0, "quarantined": 0}
        self.intake_open = True
        self.turned_away = 0  # messages that arrived while draining

    # ------------------------------------------------------------ from the broker

    def on_message(self, topic: str, payload: bytes) -> None:
        """The transport's sink: called for every message, on the event loop, without awaits."""
        where = topics.parse(topic)
        if where is None:
            log.warning("message.unknown_topic", topic=topic[:120])
            return
        if where.kind is topics.Kind.PRESENCE:
            online = payload == topics.ONLINE
            self._dispatcher.set_online(where.channel, where.org, online=online)
            log.info(
                "spoke.online" if online else "spoke.offline", org=where.org, channel=where.channel
            )
            return
        if where.kind is topics.Kind.UP:
            if not self.intake_open:
                # Draining: the sender holds no ACCEPTED for it and will send it again.
                self.turned_away += 1
                return
            self._queue.append(Arrival(where.channel, where.org, payload, self._clock()))
            while self._idle:
                waiter = self._idle.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            for n in range(self._workers):
                tasks.create_task(self._worker(stop), name=f"hubd.ingest{n}")
            await stop.wait()
            self.intake_open = False
            for waiter in self._idle:
                if not waiter.done():
                    waiter.set_result(None)

    async def _worker(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._queue:
                arrival = self._queue.popleft()
                try:
                    await self.handle(arrival)
                except XchgError:
                    log.exception("message.failed", org=arrival.org, channel=arrival.channel)
                continue
            if stop.is_set():
                return  # the queue is drained
            waiter: asyncio.Future[None] = loop.create_future()
            self._idle.append(waiter)
            await waiter

    # ------------------------------------------------------------ one message

    async def handle(self, arrival: Arrival) -> None:
        try:
            message = transport.decode(arrival.payload)
        except PeerError as exc:
            self._reject_unreadable(arrival, exc)
            return
        match message:
            case transport.EnvelopeMsg():
                await self._envelope(arrival, message)
            case transport.ChunkMsg():
                await self._chunk(arrival, message)
            case transport.ReceiptsMsg():
                await self._receipts(arrival, message)
            case transport.HelloMsg(last_seq):
                self._dispatcher.set_online(arrival.channel, arrival.org, online=True)
                log.info("spoke.hello", org=arrival.org, channel=arrival.channel, last_seq=last_seq)
                await self._issuer.replay(arrival.org, arrival.channel, last_seq)
            case transport.ResumeMsg(msg_id, offset):
                self._dispatcher.resume(msg_id, arrival.org, offset)

    async def _envelope(self, arrival: Arrival, message: transport.EnvelopeMsg) -> None:
        directory = self._directory()
        try:
            envelope = verify_envelope(message.frame, directory, expected_sender=arrival.org)
        except PeerError as exc:
            self._reject_unreadable(arrival, exc, frame=message.frame)
            return
        header = envelope.header
        decision = router.decide(header, arrival.channel, directory)
        if isinstance(decision, router.Reject):
            self._reject(
                arrival, envelope, decision.reason, decision.detail, retriable=decision.retriable
            )
            return
        if message.body is None:  # the body follows in chunks
            transfer = self._spool.get(header.msg_id)
            if transfer is None:
                if await self._known(envelope, arrival):
                    return
                try:
                    check_freshness(header, now=arrival.at, max_skew_ms=self._max_skew_ms)
                except PeerError as exc:
                    self._reject(arrival, envelope, exc.reason, exc.message)
                    return
                # The header says all the rules need: refuse before a byte of body is spooled.
                if isinstance(decision, router.Accept):
                    evaluation = await rulecheck.judge(header, directory, self._store.read)
                    if not evaluation.ok:
                        self._refuse(arrival, envelope, evaluation)
                        return
                transfer = self._spool.begin(envelope, arrival.channel, arrival.org)
            transfer.channel = arrival.channel  # a resend may come on another connection
            await self._send_resume(transfer)
            return
        try:
            check_freshness(header, now=arrival.at, max_skew_ms=self._max_skew_ms)
        except PeerError as exc:
            if not await self._known(envelope, arrival):  # a resend of a stored message is fine
                self._reject(arrival, envelope, exc.reason, exc.message)
            return
        warnings: tuple[Finding, ...] = ()
        if isinstance(decision, router.Accept):
            evaluation = await rulecheck.judge(header, directory, self._store.read)
            if not evaluation.ok:
                # a resend of a message stored before the rules changed keeps its answer
                if not await self._known(envelope, arrival):
                    self._refuse(arrival, envelope, evaluation)
                return
            warnings = evaluation.warnings
        checker = BodyChecker(envelope.body)
        try:
            checker.feed(message.body)
            checker.close()
        except PeerError as exc:
            self._reject(arrival, envelope, exc.reason, exc.message)
            return
        await self._store_message(
            arrival,
            envelope,
            decision,
            Payload(message.frame, message.body, None, len(message.body)),
            warnings,
        )

    async def _send_resume(self, transfer: Transfer) -> None:
        resume = transport.ResumeMsg(transfer.msg_id, transfer.received)
        await self._send(transfer.channel, transfer.org, transport.encode(resume))

    async def _known(self, envelope: VerifiedEnvelope, arrival: Arrival) -> bool:
        """True (and the sender answered again) if this msg_id is already stored."""
        rows = await self._store.read(
            select(t.messages.c.frame_sha256, t.messages.c.state).where(
                t.messages.c.msg_id == envelope.header.msg_id
            )
        )
        if not rows:
            return False
        self._answer_duplicate(
            arrival,
            envelope,
            Duplicate(same=bytes(rows[0][0]) == envelope.digest, state=rows[0][1]),
        )
        return True

    async def _chunk(self, arrival: Arrival, chunk: transport.ChunkMsg) -> None:
        transfer = self._spool.get(chunk.msg_id)
        if transfer is None or transfer.org != arrival.org:
            return  # not under way (finished, refused, or never announced): the head comes first
        try:
            appended = self._spool.append(transfer, chunk.offset, chunk.data)
        except PeerError as exc:
            self._spool.discard(transfer)
            self._reject(arrival, transfer.envelope, exc.reason, exc.message)
            return
        if not appended:
            if chunk.offset > transfer.received:  # a gap: ask for what is missing
                await self._send_resume(transfer)
            return
        if not transfer.complete:
            return
        try:
            body_path = await asyncio.to_thread(self._spool.finish, transfer)  # fsync off-loop
        except PeerError as exc:
            self._spool.discard(transfer)
            self._reject(arrival, transfer.envelope, exc.reason, exc.message)
            return
        try:
            # Gating and the rules again, with the directory of now: it may have changed
            # while the body came (or the transfer was resumed from the spool after a
            # restart). The rules were checked when the head arrived, so a refusal here is
            # rare, and the verdict gives the warnings of the message as it is stored.
            header, directory = transfer.envelope.header, self._directory()
            decision = router.decide(header, transfer.channel, directory)
            if isinstance(decision, router.Reject):
                body_path.unlink(missing_ok=True)
                self._reject(arrival, transfer.envelope, decision.reason, decision.detail)
                return
            warnings: tuple[Finding, ...] = ()
            if isinstance(decision, router.Accept):
                evaluation = await rulecheck.judge(header, directory, self._store.read)
                if not evaluation.ok:
                    body_path.unlink(missing_ok=True)
                    self._refuse(arrival, transfer.envelope, evaluation)
                    return
                warnings = evaluation.warnings
            size = transfer.envelope.body.size
            await self._store_message(
                arrival,
                transfer.envelope,
                decision,
                Payload(transfer.envelope.frame, None, body_path, size),
                warnings,
            )
        finally:
            self._spool.forget(transfer)

    async def _store_message(
        self,
        arrival: Arrival,
        envelope: VerifiedEnvelope,
        decision: router.Accept | router.Quarantine,
        payload: Payload,
        warnings: tuple[Finding, ...] = (),
    ) -> None:
        header = envelope.header
        quarantine = decision if isinstance(decision, router.Quarantine) else None
        routes = decision.routes if isinstance(decision, router.Accept) else ()
        quarantined = quarantine is not None
        state = "QUARANTINED" if quarantined else "ACCEPTED"
        row = {
            "msg_id": header.msg_id,
            "sender": header.sender,
            "classification": header.classification.rank,
            "precedence": header.precedence.rank,
            "doc_type": header.doc_type.name,
            "created_at": header.created_at,
            "expires_at": header.expires_at,
            "received_at": arrival.at,
            "arrival_channel": arrival.channel,
            "state": state,
            "reason": None if quarantine is None else quarantine.reason.value,
            "frame": envelope.frame,
            "frame_sha256": envelope.digest,
            "body_size": payload.body_size,
            "body": payload.body,
            "body_path": None if payload.body_path is None else str(payload.body_path),
        }
        deliveries = [
            {
                "msg_id": header.msg_id,
                "recipient": r.recipient,
                "channel": r.channel,
                "precedence": header.precedence.rank,
                "state": DeliveryState.PENDING.value,
                "attempts": 0,
                "expires_at": header.expires_at,
                "created_at": arrival.at,
                "updated_at": arrival.at,
            }
            for r in routes
        ]
        detail = {
            "channel": arrival.channel,
            "classification": header.classification.name,
            "precedence": header.precedence.name,
            "doc_type": header.doc_type.name,
            "recipients": list(header.recipients),
            "routes": {r.recipient: r.channel for r in routes},
            "body_size": payload.body_size,
            "frame_sha256": envelope.digest.hex(),
        }
        if warnings:  # rules in warn mode that the document breaks (ids and articles only)
            detail["rule_warnings"] = [
                {"rule": f.rule.id, "article": f.rule.article} for f in warnings
            ]
        event = "message.quarantined" if quarantined else "message.accepted"
        audit = [AuditEvent(event, arrival.at, header.msg_id, header.sender, detail)]
        result = await self._store.submit(NewMessage(row, deliveries, audit))
        if isinstance(result, Duplicate):
            self._answer_duplicate(arrival, envelope, result)
            return
        fields = self._fields(envelope, arrival)
        if quarantine is not None:
            self.counts["quarantined"] += 1
            security.error("message.quarantined", reason=quarantine.reason.value, **fields)
            self._issue(
                arrival,
                envelope,
                ReceiptStatus.REJECTED,
                quarantine.reason.value,
                quarantine.detail,
                label=self._ceiling(arrival.channel),
            )
            return
        self.counts["accepted"] += 1
        log.info("message.accepted", recipients=len(routes), **fields)
        for finding in warnings:
            log.warning("rule.warned", rule=finding.rule.id, article=finding.rule.article, **fields)
        self._issue(arrival, envelope, ReceiptStatus.ACCEPTED)
        for route in routes:
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
                    payload=payload,
                    accepted_at=arrival.at,
                )
            )

    def _answer_duplicate(
        self, arrival: Arrival, envelope: VerifiedEnvelope, dup: Duplicate
    ) -> None:
        if not dup.same:
            self._reject(
                arrival,
                envelope,
                Reason.REPLAY_DUPLICATE,
                f"msg_id {envelope.header.msg_id_text} was already used for another message; "
                "every message needs a fresh random msg_id",
            )
            return
        if dup.state == "ACCEPTED":
            self._issue(arrival, envelope, ReceiptStatus.ACCEPTED)  # the sender missed it
        else:
            self._issue(
                arrival,
                envelope,
                ReceiptStatus.REJECTED,
                Reason.POLICY_ARRIVAL_CHANNEL.value,
                "this message is quarantined: it arrived on a channel below its label",
                label=self._ceiling(arrival.channel),
            )
        log.info("message.duplicate", **self._fields(envelope, arrival))

    # ------------------------------------------------------------ receipts in

    async def _receipts(self, arrival: Arrival, message: transport.ReceiptsMsg) -> None:
        directory = self._directory()
        try:
            verified = verify_receipts(message.frame, directory, expected_issuer=arrival.org)
        except PeerError as exc:
            log.warning(
                "receipt.refused",
                org=arrival.org,
                channel=arrival.channel,
                reason=exc.reason.value,
                detail=exc.message,
            )
            _flag_revoked(arrival, exc, "receipt batch")
            return
        batch = verified.batch
        now = self._clock()
        senders: set[tuple[str, str]] = set()
        rows: list[dict[str, object]] = []
        audit: list[AuditEvent] = []
        batch_sha256 = hashlib.sha256(message.frame).digest()
        origins = {  # from the deliveries in memory; the store only for the others
            e.msg_id: (job.sender, job.origin, job.classification)
            for e in batch.entries
            if e.msg_id is not None
            and e.recipient is not None
            and (job := self._dispatcher.job(e.msg_id, e.recipient)) is not None
        }
        missing = [
            e.msg_id for e in batch.entries if e.msg_id is not None and e.msg_id not in origins
        ]
        if missing:
            origins.update(await self._origins(missing))
        confirmations: list[tuple[bytes, str, Event]] = []
        for entry in batch.entries:
            if entry.msg_id is None or entry.recipient is None:
                continue
            event = (
                Event.SIGNED_FOR if entry.status is ReceiptStatus.SIGNED_FOR else Event.DELIVERED
            )
            origin = origins.get(entry.msg_id)
            if origin is None:
                log.warning(
                    "receipt.unknown_message", org=arrival.org, msg_id=msg_id_text(entry.msg_id)
                )
                continue
            sender, channel, label = origin
            if entry.classification < label:
                security.error(
                    "receipt.downgraded",
                    org=arrival.org,
                    msg_id=msg_id_text(entry.msg_id),
                    label=label.name,
                    claimed=entry.classification.name,
                )
                continue
            confirmations.append((entry.msg_id, entry.recipient, event))
            senders.add((sender, channel))
            rows.append(
                {
                    "msg_id": entry.msg_id,
                    "recipient": entry.recipient,
                    "status": entry.status.value,
                    "issuer": batch.issuer,
                    "at": entry.at,
                    "subject": entry.subject,
                    "batch_sha256": batch_sha256,
                }
            )
            audit.append(
                AuditEvent(
                    f"receipt.{entry.status.value.lower()}",
                    now,
                    entry.msg_id,
                    entry.recipient,
                    {"issuer": batch.issuer},
                )
            )
        if not rows:
            return
        # The rows and the numbered copy for the sender are one commit: a crash cannot keep
        # one without the other, so a sender's hello can always have it sent again.
        forward = next(iter(senders)) if len(senders) == 1 else None
        seq = await self._store.submit(
            RecordReceipts(batch_sha256, batch.issuer, message.frame, now, rows, audit, forward)
        )
        for msg_id, recipient, event in confirmations:  # only once it is durable
            self._dispatcher.confirmed(msg_id, recipient, event, now)
        if forward is not None:
            await self._issuer.send_numbered(forward[0], forward[1], message.frame, seq)
        else:
            log.warning("receipt.mixed_batch", org=arrival.org, senders=len(senders))

    async def _origins(self, msg_ids: list[bytes]) -> dict[bytes, tuple[str, str, Classification]]:
        """(sender, arrival channel, label) of each message, from the store."""
        if not msg_ids:
            return {}
        rows = await self._store.read(
            select(
                t.messages.c.msg_id,
                t.messages.c.sender,
                t.messages.c.arrival_channel,
                t.messages.c.classification,
            ).where(t.messages.c.msg_id.in_(msg_ids))
        )
        ranks = {c.rank: c for c in Classification}
        return {bytes(r[0]): (r[1], r[2], ranks[int(r[3])]) for r in rows}

    # ------------------------------------------------------------ receipts out

    def _fields(self, envelope: VerifiedEnvelope, arrival: Arrival) -> dict[str, object]:
        header = envelope.header
        return {
            "msg_id": header.msg_id_text,
            "sender": header.sender,
            "classification": header.classification.name,
            "precedence": header.precedence.name,
            "channel": arrival.channel,
        }

    def _issue(
        self,
        arrival: Arrival,
        envelope: VerifiedEnvelope,
        status: ReceiptStatus,
        reason: str | None = None,
        detail: str | None = None,
        *,
        retriable: bool = False,
        label: Classification | None = None,
    ) -> None:
        entry = ReceiptEntry(
            msg_id=envelope.header.msg_id,
            recipient=None,
            status=status,
            at=self._clock(),
            subject=envelope.digest,
            classification=envelope.header.classification if label is None else label,
            reason=reason,
            detail=detail,
            retriable=retriable,
        )
        self._issuer.issue(arrival.org, arrival.channel, entry, durable=False)

    def _reject(
        self,
        arrival: Arrival,
        envelope: VerifiedEnvelope,
        reason: Reason,
        detail: str,
        *,
        retriable: bool = False,
    ) -> None:
        self.counts["rejected"] += 1
        log.warning(
            "message.rejected",
            reason=reason.value,
            detail=detail,
            **self._fields(envelope, arrival),
        )
        self._issue(
            arrival, envelope, ReceiptStatus.REJECTED, reason.value, detail, retriable=retriable
        )

    def _refuse(self, arrival: Arrival, envelope: VerifiedEnvelope, evaluation: Evaluation) -> None:
        """REJECTED for the document rules: the receipt names every finding, both languages;
        the log names only the rules. A finding quotes the sender's own fields (the document
        number, in any escaping), so no finding text is ever logged."""
        self.counts["rejected"] += 1
        refusals = evaluation.refusals
        log.warning(
            "message.rejected",
            reason=refusals[0].rule.reason,
            rules=list(dict.fromkeys(f.rule.id for f in refusals)),
            **self._fields(envelope, arrival),
        )
        self._issue(
            arrival,
            envelope,
            ReceiptStatus.REJECTED,
            refusals[0].rule.reason,
            evaluation.refusal_text(),
        )

    def _ceiling(self, channel_id: str) -> Classification:
        """The highest label ``channel_id`` may carry (TOP_SECRET if it is unknown).

        A quarantine notice goes back on the channel the leak came in on, labelled with
        that channel's ceiling: it carries the msg_id and hash, nothing of the content,
        and the sender must learn to stop resending.
        """
        channel = self._directory().channel(channel_id)
        return Classification.TOP_SECRET if channel is None else channel.ceiling

    def _reject_unreadable(
        self, arrival: Arrival, exc: PeerError, *, frame: bytes | None = None
    ) -> None:
        """A REJECTED for bytes we could not authenticate: it speaks of their hash."""
        _flag_revoked(arrival, exc, "envelope")
        self.counts["rejected"] += 1
        data = frame if frame is not None else arrival.payload
        log.warning(
            "message.rejected",
            sender=arrival.org,
            channel=arrival.channel,
            reason=exc.reason.value,
            detail=exc.message,
        )
        label = self._ceiling(arrival.channel)
        entry = ReceiptEntry(
            msg_id=None,
            recipient=None,
            status=ReceiptStatus.REJECTED,
            at=self._clock(),
            subject=hashlib.sha256(data).digest(),
            classification=label,  # unknown: treat it as the most its channel may carry
            reason=exc.reason.value,
            detail=exc.message[:2000],
            retriable=False,
        )
        self._issuer.issue(arrival.org, arrival.channel, entry, durable=False)


def _flag_revoked(arrival: Arrival, exc: PeerError, what: str) -> None:
    """A revoked key presented: a security event (after a compromise, it is the thief)."""
    if exc.reason is Reason.SIG_KEY_REVOKED:
        security.error(
            "key.revoked_used",
            org=arrival.org,
            channel=arrival.channel,
            what=what,
            detail=exc.message,
        )


def payload_from_row(frame: bytes, body: bytes | None, body_path: str | None, size: int) -> Payload:
    return Payload(frame, body, None if body_path is None else Path(body_path), size)
