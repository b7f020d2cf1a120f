"""Ingest: everything that arrives on the up and presence topics.

For every envelope, in this order (issue 3, section 2): total size and header decode with
limits -> the signature, with the directory key of the sender -> the topic's owner, the
header's sender and the verifying key are one -> replay (created_at within the skew; the
msg_id unique in the store) -> gating (:mod:`schemas.gating`) -> the body's size and hash ->
durable write -> signed ACCEPTED, or a signed REJECTED that names the rule and values.
A message that arrived on a channel whose ceiling is below its label is quarantined:
stored, never forwarded, logged as a security event, and the sender gets REJECTED.

Work is done in passes over everything that arrived since the last one. Most messages
(an envelope with its body inline, a receipt batch about deliveries the hub holds) are
checked without awaiting anything, and the whole pass goes to the store as one submission:
one group commit, one wake-up, then the ACCEPTED receipts and the deliveries. The rest
(chunked bodies, a 批复 whose 请示 must be looked up, a resend the store must recognise,
receipts about deliveries no longer in memory, a spoke's hello) each get a task of their
own, at most ``workers`` at a time, and take the long way through the same checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from sqlalchemy import select

from hubd.core.states import DeliveryState, Event, receipt_event
from hubd.engine.dispatch import Dispatcher, Job, Payload, Publish
from hubd.engine.issuer import ReceiptIssuer
from hubd.engine.ledgerdesk import LedgerDesk
from hubd.store import rulefacts as rulecheck
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.db import (
    AppendAudit,
    DeliveryUpdate,
    Duplicate,
    NewMessage,
    Operation,
    RecordReceipts,
    Store,
)
from hubd.store.spool import Spool, Transfer
from schemas import gating as router
from schemas import topics, transport
from schemas.directory import Directory
from schemas.envelope import VerifiedEnvelope, check_freshness, verify_envelope
from schemas.errors import PeerError, Reason, XchgError
from schemas.ids import msg_id_text
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus, VerifiedReceipts, verify_receipts
from schemas.rules import Evaluation, Finding
from schemas.seal import BodyChecker

log = structlog.get_logger("hubd.engine.intake")
security = structlog.get_logger("hubd.security")


MAX_PASS: Final = 2000  # arrivals checked in one pass (one store submission) ...
PASS_BUDGET: Final = 0.01  # ... or this many seconds of checking, whichever comes first
COMMITS_IN_FLIGHT: Final = 8  # passes handed to the store and not yet durable
# Intake bound: above this much waiting, the hub stops reading from its brokers (TCP pushes
# back to the broker, which holds or drops; senders resend what holds no ACCEPTED) and reads
# again below half of it. A 1 GiB upload arrives faster than a disk takes it; 8 MB is still
# thousands of small documents, more than one pass takes.
HELLO_GRACE: Final = 3.0  # seconds a spoke seen online has to say hello before it is asked
BACKLOG_BYTES: Final = 8 * 1024 * 1024
BACKLOG_MESSAGES: Final = 20_000


@dataclass(frozen=True, slots=True)
class Arrival:
    channel: str
    org: str
    payload: bytes
    at: int
    n: int  # its place among the messages read from the brokers (presence counts too)


@dataclass(frozen=True, slots=True)
class _Slow:
    """A message that has to await something: ``work`` runs in a task of its own, and
    picks up where the quick path stopped (nothing is verified twice)."""

    work: Callable[[], Awaitable[None]]


Then = Callable[[Any], None]  # what to do once the operation's result is durable
Step = tuple[Operation, Then] | _Slow | None  # None: answered already (refused, say)


@dataclass(slots=True)
class _RejectedEntry(AppendAudit):
    """The ledger entry of a REJECTED the hub signs (wire-format 12.4): its receipt goes out
    once the entry is committed, or, should the commit fail, all the same."""


@dataclass(frozen=True, slots=True)
class _Storing:
    """A verified message on its way into the store, and what it takes to answer it."""

    arrival: Arrival
    envelope: VerifiedEnvelope
    decision: router.Accept | router.Quarantine
    payload: Payload
    warnings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class _ReceiptPlan:
    op: RecordReceipts
    confirmations: list[tuple[bytes, str, Event]]
    forward: tuple[str, str] | None
    senders: int  # the original senders the batch speaks to (one, unless a spoke mixed them)


class Ingest:
    def __init__(
        self,
        *,
        directory: Callable[[], Directory],
        store: Store,
        spool: Spool,
        dispatcher: Dispatcher,
        issuer: ReceiptIssuer,
        send: Publish,
        clock: Callable[[], int],
        max_skew_ms: int,
        workers: int = 64,
    ) -> None:
        self._directory, self._store, self._spool = directory, store, spool
        self._dispatcher, self._issuer, self._send, self._clock = dispatcher, issuer, send, clock
        self._max_skew_ms = max_skew_ms
        self._queue: deque[Arrival] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._workers = workers
        self._slow_running = 0  # slow messages with a task of their own now
        self._parked: deque[tuple[Arrival, _Slow]] = deque()  # and waiting for one
        self._commits = asyncio.Semaphore(COMMITS_IN_FLIGHT)
        self._committing = 0  # passes handed to the store whose answers are not all out
        self._tasks: asyncio.TaskGroup | None = None
        self._backlog_bytes = 0
        self.reading = True  # False while the backlog holds the brokers off
        self.on_backlog: Callable[[bool], None] = lambda _reading: None  # the hub pauses links
        # Why a new message with a body of n bytes is refused now (the disk watermark, set
        # by the hub: hubd.engine.diskwatch); None to take it.
        self.disk_low: Callable[[int], str | None] = lambda _need: None
        self._read = 0  # messages read from the brokers so far: an Arrival's n
        # Where each spoke's last "offline" came among them: a hello read before it (queued
        # for the next pass while the will is handled on arrival) must not revive the spoke.
        self._offline_at: dict[tuple[str, str], int] = {}
        self._hello_at: dict[tuple[str, str], int] = {}  # when (place in the read order)
        self.counts: dict[str, int] = {"accepted": 0, "rejected": 0, "quarantined": 0}
        self.intake_open = True
        self.turned_away = 0  # messages that arrived while draining
        self.ledger: LedgerDesk | None = None  # answers witnesses (set by the hub)
        # REJECTED receipts waiting for their ledger entries: a pass takes them into its own
        # commit; rejections made outside a pass are committed together soon after.
        self._rejections: list[tuple[Operation, Then]] = []
        self._in_pass = False
        self._flush_due = False

    # ------------------------------------------------------------ from the broker

    def on_message(self, topic: str, payload: bytes) -> None:
        """The transport's sink: called for every message, on the event loop, without awaits."""
        where = topics.parse(topic)
        if where is None:
            log.warning("message.unknown_topic", topic=topic[:120])
            return
        self._read += 1
        if where.kind is topics.Kind.PRESENCE:
            if self._directory().org(where.org) is None:
                # Not an organisation of the directory (the broker's ACL should have stopped
                # it): nothing to deliver to it, and nothing is kept for it.
                log.warning("presence.refused", org=where.org, channel=where.channel)
                return
            online = payload == topics.ONLINE
            if not online:
                self._offline_at[(where.channel, where.org)] = self._read
            else:
                self._expect_hello(where.channel, where.org)
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
            self._queue.append(
                Arrival(where.channel, where.org, payload, self._clock(), self._read)
            )
            self._backlog_bytes += len(payload)
            if self.reading and (
                self._backlog_bytes > BACKLOG_BYTES or len(self._queue) > BACKLOG_MESSAGES
            ):
                self.reading = False
                log.info("ingest.backlog", messages=len(self._queue), bytes=self._backlog_bytes)
                self.on_backlog(False)
            self._wake()

    def _expect_hello(self, channel: str, org: str) -> None:
        """A spoke is online: its hello should follow. If none comes (it was sent while this
        hub was away from the broker, and the receipts it would replay stay unsent for
        ever), ask for one: the hub closes that gap itself after its own (re)connect."""
        seen = self._read
        asyncio.get_running_loop().call_later(HELLO_GRACE, self._hello_due, channel, org, seen)

    def _hello_due(self, channel: str, org: str, online_at: int) -> None:
        key = (channel, org)
        if self._hello_at.get(key, 0) > online_at or self._offline_at.get(key, 0) > online_at:
            return  # it said hello (or went away) after it came online
        log.info("spoke.hello_asked", org=org, channel=channel)
        self._send(channel, org, transport.encode(transport.AskHelloMsg()))

    def _drained_some(self) -> None:
        if not self.reading and (
            self._backlog_bytes <= BACKLOG_BYTES // 2 and len(self._queue) <= BACKLOG_MESSAGES // 2
        ):
            self.reading = True
            self.on_backlog(True)

    @property
    def queued(self) -> int:
        """Arrivals waiting to be checked (and slow ones waiting for a task)."""
        return len(self._queue) + len(self._parked)

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing being checked, stored or answered."""
        return (
            not self.queued
            and not self._slow_running
            and not self._committing
            and not self._rejections
        )

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            tasks.create_task(self._close_on(stop), name="hubd.engine.intake.stop")
            while True:
                while self._queue:
                    await self._pass()
                    # Let the loop breathe between passes: acknowledgements, the dispatcher's
                    # pump, timers and the commit just handed over all run on it.
                    await asyncio.sleep(0)
                if not self.intake_open and not self._parked:
                    break  # stopped, and everything that came before is handed over
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
        # the task group waited for every commit and slow message still under way

    async def _close_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.intake_open = False
        self._wake()

    async def _pass(self) -> None:
        """Check what has arrived; hand the quick ones to the store together.

        A pass ends after MAX_PASS arrivals or PASS_BUDGET seconds, whichever comes first,
        so a deep queue never holds the event loop for long. It never waits for a slow
        message: those beyond the task limit are parked, and each finishing one starts the
        next (:meth:`_slowly`).
        """
        ops: list[Operation] = []
        then: list[Then] = []
        loop = asyncio.get_running_loop()
        until = loop.time() + PASS_BUDGET
        self._in_pass = True
        try:
            self._check_arrivals(ops, then, until)
        finally:
            self._in_pass = False
        for op, done in self._rejections:  # this pass's and any made since the last commit
            ops.append(op)
            then.append(done)
        self._rejections = []
        if not self.reading:
            self._drained_some()
        if ops:
            await self._commits.acquire()
            assert self._tasks is not None  # noqa: S101 - run() set it
            self._committing += 1
            self._tasks.create_task(self._commit(ops, then))

    def _check_arrivals(self, ops: list[Operation], then: list[Then], until: float) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(min(len(self._queue), MAX_PASS)):
            arrival = self._queue.popleft()
            self._backlog_bytes -= len(arrival.payload)
            try:
                message = transport.decode(arrival.payload)
            except PeerError as exc:
                self._reject_unreadable(arrival, exc)
                continue
            try:
                step = self._triage(arrival, message)
            except Exception:  # one message must never stop the hub (logged)
                log.exception("message.failed", org=arrival.org, channel=arrival.channel)
                continue
            if isinstance(step, _Slow):
                self._start_slow(arrival, step)
            elif isinstance(step, tuple):
                ops.append(step[0])
                then.append(step[1])
            if loop.time() > until:
                break

    def _start_slow(self, arrival: Arrival, slow: _Slow) -> None:
        if self._slow_running >= self._workers:
            self._parked.append((arrival, slow))
            self._backlog_bytes += len(arrival.payload)  # still waiting: it counts
            return
        assert self._tasks is not None  # noqa: S101 - run() set it
        self._slow_running += 1
        self._tasks.create_task(self._slowly(arrival, slow))

    async def _commit(self, ops: Sequence[Operation], then: Sequence[Then]) -> None:
        try:
            try:
                results = await self._store.submit_many(ops)
            except XchgError:
                # Nothing was answered: each sender resends what it holds no receipt for.
                log.exception("message.failed", operations=len(ops))
                refused = [(op, done) for op, done in zip(ops, then, strict=True)
                           if isinstance(op, _RejectedEntry)]  # fmt: skip
                if refused:  # a refusal is answered all the same: it changes nothing
                    log.error("audit.write_failed", events=["message.rejected"] * len(refused))
                for op in ops:
                    if isinstance(op, RecordReceipts):
                        self._unsettle(op)
                for _op, done in refused:
                    done(None)
                return
            for done, result in zip(then, results, strict=True):
                try:
                    done(result)
                except Exception:  # one message must never stop the hub (logged)
                    log.exception("message.failed", operations=1)
        finally:
            self._committing -= 1
            self._commits.release()

    async def _slowly(self, arrival: Arrival, slow: _Slow) -> None:
        try:
            await slow.work()
        except Exception:  # one message must never stop the hub (logged)
            log.exception("message.failed", org=arrival.org, channel=arrival.channel)
        finally:
            self._slow_running -= 1
            if self._parked:
                parked, parked_slow = self._parked.popleft()
                self._backlog_bytes -= len(parked.payload)
                self._start_slow(parked, parked_slow)
                if not self.reading:
                    self._drained_some()
            elif not self.intake_open:
                self._wake()  # run() may be waiting for the last of them

    def _triage(self, arrival: Arrival, message: transport.TransportMsg) -> Step:
        """Handle ``message`` now if nothing needs awaiting; else the slow work that remains."""
        match message:
            case transport.EnvelopeMsg():
                return self._envelope_now(arrival, message)
            case transport.ReceiptsMsg():
                return self._receipts_now(arrival, message)
            case transport.HelloMsg():
                if self._directory().org(arrival.org) is None:
                    log.warning("presence.refused", org=arrival.org, channel=arrival.channel)
                    return None  # nothing is kept for an organisation outside the directory
                if arrival.n < self._offline_at.get((arrival.channel, arrival.org), 0):
                    # Its will (or its goodbye) was read after it: the spoke is gone, and
                    # says hello again when it returns.
                    log.info("spoke.hello_outdated", org=arrival.org, channel=arrival.channel)
                    return None
                self._dispatcher.set_online(arrival.channel, arrival.org, online=True)
                self._hello_at[(arrival.channel, arrival.org)] = arrival.n
                return _Slow(functools.partial(self._hello, arrival, message.last_seq))
            case transport.ResumeMsg(msg_id, offset):
                self._dispatcher.resume(msg_id, arrival.org, offset)
                return None
            case transport.ChunkMsg():
                return self._chunk_now(arrival, message)
            case transport.ConsistencyAsk() | transport.ProveAsk() | transport.CosignMsg():
                desk = self.ledger
                if desk is None or self._directory().org(arrival.org) is None:
                    return None
                return _Slow(functools.partial(desk.answer, arrival.channel, arrival.org, message))
        return None  # what the hub sends (checkpoints, proofs) is not for it to receive

    async def _hello(self, arrival: Arrival, last_seq: int) -> None:
        log.info("spoke.hello", org=arrival.org, channel=arrival.channel, last_seq=last_seq)
        await self._issuer.replay(arrival.org, arrival.channel, last_seq)  # what it missed

    def _chunk_now(self, arrival: Arrival, chunk: transport.ChunkMsg) -> Step:
        """Body bytes go to the spool file at once (in arrival order); slow work only for
        the chunk that completes a body (fsync, checks, store) or one that reveals a gap."""
        transfer = self._spool.get(chunk.msg_id)
        if transfer is None or transfer.org != arrival.org:
            return None  # not under way (finished, refused, or never announced)
        try:
            appended = self._spool.append(transfer, chunk.offset, chunk.data)
        except PeerError as exc:
            self._spool.discard(transfer)
            self._reject(arrival, transfer.envelope, exc.reason, exc.message)
            return None
        except OSError as exc:  # the spool's disk (full, or failing): refuse, retriable
            self._spool_failed(arrival, transfer, exc)
            return None
        if (not appended and chunk.offset > transfer.received) or (appended and transfer.complete):
            return _Slow(functools.partial(self._chunk, arrival, chunk))  # a gap, or the end
        return None

    def _spool_failed(self, arrival: Arrival, transfer: Transfer, exc: OSError) -> None:
        with contextlib.suppress(OSError):
            self._spool.discard(transfer)
        self._spool.forget(transfer)
        reason = Reason.HUB_DISK_LOW if exc.errno == errno.ENOSPC else Reason.HUB_BUSY
        self._reject(
            arrival,
            transfer.envelope,
            reason,
            f"the hub could not write the body to its spool ({exc.strerror}); nothing of it "
            "is kept. Send it again later; the hub operator is told",
            retriable=True,
        )

    # ------------------------------------------------------------ one message

    def _envelope_now(self, arrival: Arrival, message: transport.EnvelopeMsg) -> Step:
        """An envelope: every check without awaiting; the slow rest when one needs the store
        (a 批复's 请示; a refusal that must first rule out a resend of a stored one) or the
        body follows in chunks."""
        directory = self._directory()
        try:
            envelope = verify_envelope(message.frame, directory, expected_sender=arrival.org)
        except PeerError as exc:
            self._reject_unreadable(arrival, exc, frame=message.frame)
            return None
        header = envelope.header
        decision = router.decide(header, arrival.channel, directory)
        if isinstance(decision, router.Reject):
            self._reject(
                arrival, envelope, decision.reason, decision.detail, retriable=decision.retriable
            )
            return None
        body = message.body
        if body is None:  # the body follows in chunks
            return _Slow(functools.partial(self._head, arrival, envelope, decision))
        rest = functools.partial(self._envelope_checked, arrival, message, envelope, decision)
        slow = _Slow(rest)
        try:
            check_freshness(header, now=arrival.at, max_skew_ms=self._max_skew_ms)
        except PeerError:
            return slow  # refused unless it is a resend of a message already stored
        warnings: tuple[Finding, ...] = ()
        if isinstance(decision, router.Accept):
            if self.disk_low(0) is not None:
                return slow  # refused below the disk watermark, unless it is already stored
            evaluation = rulecheck.judge_now(header, directory)
            if evaluation is None or not evaluation.ok:
                return slow  # a 批复's 请示 to look up, or a refusal to check against the store
            warnings = evaluation.warnings
        checker = BodyChecker(envelope.body)
        try:
            checker.feed(body)
            checker.close()
        except PeerError as exc:
            self._reject(arrival, envelope, exc.reason, exc.message)
            return None
        payload = Payload(message.frame, body, None, len(body))
        storing = _Storing(arrival, envelope, decision, payload, warnings)
        return self._new_message(storing), functools.partial(self._stored, storing)

    async def _head(
        self,
        arrival: Arrival,
        envelope: VerifiedEnvelope,
        decision: router.Accept | router.Quarantine,
    ) -> None:
        """The head of a chunked body: begin (or continue) its transfer and ask for the rest."""
        header, directory = envelope.header, self._directory()
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
                low = self.disk_low(envelope.body.size)
                if low is not None:
                    self._reject(arrival, envelope, Reason.HUB_DISK_LOW, low, retriable=True)
                    return
                evaluation = await rulecheck.judge(header, directory, self._store.read)
                if not evaluation.ok:
                    self._refuse(arrival, envelope, evaluation)
                    return
            transfer = self._spool.begin(envelope, arrival.channel, arrival.org)
        transfer.channel = arrival.channel  # a resend may come on another connection
        await self._send_resume(transfer)

    async def _envelope_checked(
        self,
        arrival: Arrival,
        message: transport.EnvelopeMsg,
        envelope: VerifiedEnvelope,
        decision: router.Accept | router.Quarantine,
    ) -> None:
        """An inline envelope the quick path could not settle: the checks that need the store."""
        header, directory = envelope.header, self._directory()
        assert message.body is not None  # noqa: S101 - only inline bodies come here
        try:
            check_freshness(header, now=arrival.at, max_skew_ms=self._max_skew_ms)
        except PeerError as exc:
            if not await self._known(envelope, arrival):  # a resend of a stored message is fine
                self._reject(arrival, envelope, exc.reason, exc.message)
            return
        warnings: tuple[Finding, ...] = ()
        if isinstance(decision, router.Accept):
            low = self.disk_low(0)
            if low is not None:
                if not await self._known(envelope, arrival):  # a stored one is answered again
                    self._reject(arrival, envelope, Reason.HUB_DISK_LOW, low, retriable=True)
                return
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
        """Ask the sender for the rest; handed to the connection, not waited for (a slow
        task must never wait on a broker the intake may be holding off)."""
        resume = transport.ResumeMsg(transfer.msg_id, transfer.received)
        self._send(transfer.channel, transfer.org, transport.encode(resume))

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
        """After :meth:`_chunk_now` spooled it: ask for a gap, or finish a complete body."""
        transfer = self._spool.get(chunk.msg_id)
        if transfer is None or transfer.org != arrival.org or transfer.finishing:
            return  # finished, refused, or another task is finishing it
        if not transfer.complete:
            if chunk.offset > transfer.received:  # a gap: ask for what is missing
                await self._send_resume(transfer)
            return
        transfer.finishing = True  # before any await: a body is finished (and stored) once
        try:
            body_path = await asyncio.to_thread(self._spool.finish, transfer)  # fsync off-loop
        except PeerError as exc:
            self._spool.discard(transfer)
            self._spool.forget(transfer)
            self._reject(arrival, transfer.envelope, exc.reason, exc.message)
            return
        except OSError as exc:
            self._spool_failed(arrival, transfer, exc)
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
        storing = _Storing(arrival, envelope, decision, payload, warnings)
        self._stored(storing, await self._store.submit(self._new_message(storing)))

    @staticmethod
    def _new_message(storing: _Storing) -> NewMessage:
        arrival, envelope, decision = storing.arrival, storing.envelope, storing.decision
        payload, warnings = storing.payload, storing.warnings
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
        return NewMessage(row, deliveries, audit)

    def _stored(self, storing: _Storing, result: object) -> None:
        """The message is durable (or was already): answer the sender, start delivering."""
        arrival, envelope, decision = storing.arrival, storing.envelope, storing.decision
        payload, warnings = storing.payload, storing.warnings
        header = envelope.header
        quarantine = decision if isinstance(decision, router.Quarantine) else None
        routes = decision.routes if isinstance(decision, router.Accept) else ()
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

    def _verified_receipts(
        self, arrival: Arrival, message: transport.ReceiptsMsg
    ) -> VerifiedReceipts | None:
        try:
            return verify_receipts(message.frame, self._directory(), expected_issuer=arrival.org)
        except PeerError as exc:
            log.warning(
                "receipt.refused",
                org=arrival.org,
                channel=arrival.channel,
                reason=exc.reason.value,
                detail=exc.message,
            )
            _flag_revoked(arrival, exc, "receipt batch")
            return None

    def _receipts_now(self, arrival: Arrival, message: transport.ReceiptsMsg) -> Step:
        """A receipt batch about deliveries the dispatcher holds; slow work if it speaks of
        messages only the store knows (a 签收 days later, or after a restart)."""
        verified = self._verified_receipts(arrival, message)
        if verified is None:
            return None
        origins = {  # from the deliveries in memory ...
            e.msg_id: (job.sender, job.origin, job.classification)
            for e in verified.batch.entries
            if e.msg_id is not None
            and e.recipient is not None
            and (job := self._dispatcher.job(e.msg_id, e.recipient)) is not None
        }
        entries = verified.batch.entries
        missing = [e.msg_id for e in entries if e.msg_id is not None and e.msg_id not in origins]
        if missing:  # ... and the store for the others
            looked_up = self._receipts_looked_up
            return _Slow(functools.partial(looked_up, arrival, message, verified, origins, missing))
        plan = self._receipt_plan(arrival, message, verified, origins)
        if plan is None:
            return None
        return plan.op, functools.partial(self._receipts_recorded, arrival, message, plan)

    async def _receipts_looked_up(
        self,
        arrival: Arrival,
        message: transport.ReceiptsMsg,
        verified: VerifiedReceipts,
        origins: dict[bytes, tuple[str, str, Classification]],
        missing: list[bytes],
    ) -> None:
        origins.update(await self._origins(missing))
        plan = self._receipt_plan(arrival, message, verified, origins)
        if plan is not None:
            try:
                seq = await self._store.submit(plan.op)
            except XchgError:
                self._unsettle(plan.op)
                raise
            self._receipts_recorded(arrival, message, plan, seq)

    def _unsettle(self, op: RecordReceipts) -> None:
        """A receipt batch was not stored: its deliveries go on as before (retried, and
        free to expire or be given up)."""
        for update in op.updates:
            self._dispatcher.unsettled(update.msg_id, update.recipient)

    def _receipt_plan(
        self,
        arrival: Arrival,
        message: transport.ReceiptsMsg,
        verified: VerifiedReceipts,
        origins: dict[bytes, tuple[str, str, Classification]],
    ) -> _ReceiptPlan | None:
        """The rows, audit entries and delivery states a verified batch yields."""
        batch = verified.batch
        now = self._clock()
        senders: set[tuple[str, str]] = set()
        rows: list[dict[str, object]] = []
        audit: list[AuditEvent] = []
        updates: list[DeliveryUpdate] = []
        batch_sha256 = hashlib.sha256(message.frame).digest()
        confirmations: list[tuple[bytes, str, Event]] = []
        for entry in batch.entries:
            event = receipt_event(entry.status)
            if entry.msg_id is None or entry.recipient is None or event is None:
                continue
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
            updates.append(self._dispatcher.settle(entry.msg_id, entry.recipient, event, now))
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
                    {"issuer": batch.issuer, "batch_sha256": batch_sha256.hex()},
                )
            )
        if not rows:
            return None
        # The rows, the delivery states and the numbered copy for the sender are one commit:
        # a crash cannot keep one without the others, so a sender's hello can always have it
        # sent again.
        forward = next(iter(senders)) if len(senders) == 1 else None
        op = RecordReceipts(
            batch_sha256, batch.issuer, message.frame, now, rows, audit, forward, updates
        )
        return _ReceiptPlan(op, confirmations, forward, len(senders))

    def _receipts_recorded(
        self, arrival: Arrival, message: transport.ReceiptsMsg, plan: _ReceiptPlan, seq: object
    ) -> None:
        """The batch is durable: close the deliveries and pass it on to the sender."""
        now = plan.op.received_at
        for msg_id, recipient, event in plan.confirmations:
            self._dispatcher.confirmed(msg_id, recipient, event, now)
        if plan.forward is not None:
            assert isinstance(seq, int)  # noqa: S101 - the store numbers a forwarded batch
            self._issuer.send_numbered(plan.forward[0], plan.forward[1], message.frame, seq)
        else:
            log.warning("receipt.mixed_batch", org=arrival.org, senders=plan.senders)

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
        refused: bool = False,
    ) -> None:
        """Answer the sender; a refusal (``refused``) only once its ledger entry is in."""
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
        if refused:
            self._issue_rejected(arrival, entry)
            return
        self._issuer.issue(arrival.org, arrival.channel, entry, durable=False)

    def _issue_rejected(self, arrival: Arrival, entry: ReceiptEntry) -> None:
        """Sign and send a REJECTED once its ``message.rejected`` entry is in the ledger
        (wire-format 12.4). Its detail is the machine reason only: the receipt's sentence
        may quote the sender's own fields (a rule's finding quotes the document number)."""
        event = AuditEvent(
            "message.rejected",
            entry.at,
            entry.msg_id,
            arrival.org,
            {
                "channel": arrival.channel,
                "reason": entry.reason,
                "frame_sha256": entry.subject.hex(),
                "retriable": entry.retriable,
            },
        )
        send = functools.partial(self._rejection_recorded, arrival, entry)
        self._rejections.append((_RejectedEntry([event]), send))
        if not self._in_pass and not self._flush_due and self._tasks is not None:
            self._flush_due = True
            self._tasks.create_task(self._flush_rejections())

    def _rejection_recorded(self, arrival: Arrival, entry: ReceiptEntry, _result: object) -> None:
        self._issuer.issue(arrival.org, arrival.channel, entry, durable=False)

    async def _flush_rejections(self) -> None:
        """Commit the refusals made outside a pass (slow work, a duplicate), together."""
        await asyncio.sleep(0)  # let the refusals of this turn of the loop join
        self._flush_due = False
        if not self._rejections:
            return  # a pass took them
        batch, self._rejections = self._rejections, []
        await self._commits.acquire()
        self._committing += 1
        await self._commit([op for op, _ in batch], [done for _, done in batch])

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
            arrival,
            envelope,
            ReceiptStatus.REJECTED,
            reason.value,
            detail,
            retriable=retriable,
            refused=True,
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
            refused=True,
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
        self._issue_rejected(arrival, entry)


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
