"""Ingest: everything that arrives on the up and presence topics.

For every envelope, in this order (issue 3, section 2): total size and header decode with
limits -> the signature, with the directory key of the sender -> the topic's owner, the
header's sender and the verifying key are one -> then :func:`hubd.core.admit.admit`
decides, in the order written there once (gating, a resend of a stored message, freshness,
the disk, the document rules, the body) -> durable write -> signed ACCEPTED, or a signed
REJECTED that names the rule and values. A message that arrived on a channel whose ceiling
is below its label is quarantined: stored, never forwarded, logged as a security event, and
the sender gets REJECTED.

This module is the shell: it reads the brokers' messages, runs the passes and the tasks,
commits, and hands each kind of message to its piece of :mod:`hubd.engine` (envelopes,
chunked bodies, receipt batches, presence), which asks the pure core and carries out what it
says.

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
import functools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import structlog

from hubd.core.admit import Path
from hubd.engine.answers import Answers, RejectedEntry
from hubd.engine.arrival import Arrival, Slow, Step, Then
from hubd.engine.chunks import Chunks
from hubd.engine.dirdesk import DirectoryDesk
from hubd.engine.dispatch import Dispatcher, Publish
from hubd.engine.envelopes import Envelopes
from hubd.engine.handover import HandOver
from hubd.engine.hopstream import HopStreams
from hubd.engine.issuer import ReceiptIssuer
from hubd.engine.ledgerdesk import LedgerDesk
from hubd.engine.presence import Presence
from hubd.engine.receipt_intake import ReceiptIntake
from hubd.store.db import Store
from hubd.store.leases import LeaseLostError
from hubd.store.spool import BodySpool
from hubd.store.writes import Operation, RecordReceipts, owners
from schemas import topics, transport
from schemas.directory import Directory
from schemas.envelope import VerifiedEnvelope, verify_envelope
from schemas.errors import PeerError, StoreError, XchgError

log = structlog.get_logger("hubd.ingest")

SLOT_CHECKS: Final = 2  # large groups' envelopes checked at once (memory, the thread pool)


def topic_owner(org: str, directory: Directory) -> str | None:
    """The sender an envelope on ``org``'s up topic must have: ``org`` itself, or anyone
    when ``org`` is a neighbour hub relaying (hubd.core.hops judges whom it may relay for)."""
    return None if directory.relaying(org) else org


def with_parts(
    frame: bytes, directory: Directory, owner: str, slots: bytes | None
) -> VerifiedEnvelope:
    """The envelope that came on ``owner``'s up topic, verified with its slots, every
    recipient's part made (blocking)."""
    relaying = directory.relaying(owner)
    envelope = verify_envelope(
        frame,
        directory,
        expected_sender=None if relaying else owner,
        slots=slots,
        relayed_by=owner if relaying else None,
    )
    if envelope.slots is not None:
        for slot in envelope.slots.slots:
            envelope.part_for(slot.org)
    return envelope


MAX_PASS: Final = 2000  # arrivals checked in one pass (one store submission) ...
PASS_BUDGET: Final = 0.01  # ... or this many seconds of checking, whichever comes first
COMMITS_IN_FLIGHT: Final = 8  # passes handed to the store and not yet durable
# Intake bound: above this much waiting, the hub stops reading from its brokers (TCP pushes
# back to the broker, which holds or drops; senders resend what holds no ACCEPTED) and reads
# again below half of it. A 1 GiB upload arrives faster than a disk takes it; 8 MB is still
# thousands of small documents, more than one pass takes.
BACKLOG_BYTES: Final = 8 * 1024 * 1024
BACKLOG_MESSAGES: Final = 20_000


class Ingest:
    """The intake's shell: reads what the brokers deliver, runs the passes and the slow
    tasks, and commits; the pieces of :mod:`hubd.engine` decide (through the core) and answer."""

    def __init__(
        self,
        *,
        directory: Callable[[], Directory],
        store: Store,
        spool: BodySpool,
        dispatcher: Dispatcher,
        issuer: ReceiptIssuer,
        send: Publish,
        clock: Callable[[], int],
        max_skew_ms: int,
        workers: int = 64,
    ) -> None:
        self._directory, self._store, self._dispatcher = directory, store, dispatcher
        self._queue: deque[Arrival] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._workers = workers
        self._slow_running = 0  # slow messages with a task of their own now
        self._parked: deque[tuple[Arrival, Slow]] = deque()  # and waiting for one
        self._commits = asyncio.Semaphore(COMMITS_IN_FLIGHT)
        self._slot_checks = asyncio.Semaphore(SLOT_CHECKS)
        self._committing = 0  # passes handed to the store whose answers are not all out
        self._tasks: asyncio.TaskGroup | None = None
        self._backlog_bytes = 0
        self.reading = True  # False while the backlog holds the brokers off
        self.on_backlog: Callable[[bool], None] = lambda _reading: None  # the hub pauses links
        # Why a new message with a body of n bytes is refused now (the disk watermark, set
        # by the hub: hubd.engine.diskwatch); None to take it.
        self.disk_low: Callable[[int], str | None] = lambda _need: None
        self._read = 0  # messages read from the brokers so far: an Arrival's n
        self.intake_open = True
        self.turned_away = 0  # messages that arrived while draining
        self.ledger: LedgerDesk | None = None  # answers witnesses (set by the hub)
        self.dirdesk: DirectoryDesk | None = None  # answers directory requests (set by the hub)
        # REJECTED receipts wait for their ledger entries (Answers.rejections): a pass takes
        # them into its own commit; rejections made outside a pass are committed together
        # soon after.
        self._in_pass = False
        self._flush_due = False
        self._answers = Answers(
            directory=directory, issuer=issuer, clock=clock, queued=self._rejection_queued
        )
        self.counts = self._answers.counts
        # Replicas: whether this one owns an organisation's up topic now (None: a lone hub)
        self.owns: Callable[[str], bool] | None = None
        self.not_ours = 0  # up messages left to the replica that owns their sender
        self.handover: HandOver | None = None  # ... and held a moment (set with owns)
        self._envelopes = Envelopes(
            directory=directory,
            store=store,
            dispatcher=dispatcher,
            answers=self._answers,
            max_skew_ms=max_skew_ms,
            disk_low=self._disk_refuses,
        )
        self._chunks = Chunks(
            spool=spool, envelopes=self._envelopes, answers=self._answers, send=send
        )
        self._receipts = ReceiptIntake(
            directory=directory, store=store, dispatcher=dispatcher, issuer=issuer, clock=clock
        )
        self._presence = Presence(
            directory=directory, dispatcher=dispatcher, issuer=issuer, send=send, clock=clock
        )
        self._clock = clock

    def use_streams(self, streams: HopStreams) -> None:
        """Neighbour hubs' numbered receipts (hubd.engine.hopstream): counted, and asked for."""
        self._presence.streams = self._receipts.streams = streams

    def _disk_refuses(self, need: int) -> str | None:
        return self.disk_low(need)  # looked up each time: the hub sets disk_low after start

    # ------------------------------------------------------------ from the broker

    def on_message(self, topic: str, payload: bytes) -> None:
        """The transport's sink: called for every message, on the event loop, without awaits."""
        where = topics.parse(topic)
        if where is None:
            log.warning("message.unknown_topic", topic=topic[:120])
            return
        self._read += 1
        if where.kind is topics.Kind.PRESENCE:
            self._presence.on_presence(where.channel, where.org, payload, self._read)
            return
        if where.kind is topics.Kind.UP:
            upstream = self._directory().upstream
            if upstream is not None and where.org == upstream.id:
                # the hub above speaks only on the uplink, never on this hub's brokers
                log.warning("message.refused", org=where.org, reason="federation.wrong_hop")
                return
            if self.owns is not None and not self.owns(where.org):
                # A replica that does not own the sender leaves it to the one that does
                # (every replica reads every up topic; docs/architecture.md, "Replicas"),
                # and holds it a moment in case the sender's bucket is changing hands.
                self.not_ours += 1
                if self.handover is not None:
                    self.handover.hold(
                        Arrival(where.channel, where.org, payload, self._clock(), self._read)
                    )
                return
            self._take(Arrival(where.channel, where.org, payload, self._clock(), self._read))

    def on_relayed(self, channel: str, peer: str, payload: bytes) -> None:
        """What the upstream hub sends this one on its uplink (hubd.engine.uplink): taken in
        like a spoke's message, from ``peer``, the upstream."""
        self._read += 1
        self._take(Arrival(channel, peer, payload, self._clock(), self._read))

    def _take(self, arrival: Arrival) -> None:
        if not self.intake_open:
            # Draining: the sender holds no ACCEPTED for it and will send it again.
            self.turned_away += 1
            return
        self._queue.append(arrival)
        self._backlog_bytes += len(arrival.payload)
        if self.reading and (
            self._backlog_bytes > BACKLOG_BYTES or len(self._queue) > BACKLOG_MESSAGES
        ):
            self.reading = False
            log.info("ingest.backlog", messages=len(self._queue), bytes=self._backlog_bytes)
            self.on_backlog(False)
        self._wake()

    def gained(self) -> None:
        """This replica's buckets grew: take in what it held of their senders."""
        if self.handover is None or self.owns is None or not self.intake_open:
            return
        taken = self.handover.take(self.owns, self._clock())
        for arrival in taken:
            self._queue.append(arrival)
            self._backlog_bytes += len(arrival.payload)
        if taken:
            log.info("replica.held_taken", messages=len(taken))
            self._wake()

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
            and not self._answers.rejections
        )

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            tasks.create_task(self._close_on(stop), name="hubd.ingest.stop")
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
        self._presence.hellos.summarise()  # hellos counted in a storm, before the hub stops

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
        for op, done in self._answers.rejections:  # this pass's, and any since the last commit
            ops.append(op)
            then.append(done)
        self._answers.rejections = []
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
                self._answers.reject_unreadable(arrival, exc)
                continue
            try:
                step = self._triage(arrival, message)
            except Exception:  # one message must never stop the hub (logged)
                log.exception("message.failed", org=arrival.org, channel=arrival.channel)
                continue
            if isinstance(step, Slow):
                self._start_slow(arrival, step)
            elif isinstance(step, tuple):
                ops.append(step[0])
                then.append(step[1])
            if loop.time() > until:
                break

    def _start_slow(self, arrival: Arrival, slow: Slow) -> None:
        if self._slow_running >= self._workers:
            self._parked.append((arrival, slow))
            self._backlog_bytes += len(arrival.payload)  # still waiting: it counts
            return
        assert self._tasks is not None  # noqa: S101 - run() set it
        self._slow_running += 1
        self._tasks.create_task(self._slowly(arrival, slow))

    async def _commit(self, ops: Sequence[Operation], then: Sequence[Then]) -> None:
        try:
            parts = self._parts(ops)
            try:
                outcomes = await self._store.submit_parts([[ops[i] for i in p] for p in parts])
            except XchgError as exc:  # the store is closing: nothing was taken
                outcomes = [exc] * len(parts)
            results: dict[int, object] = {}
            failed: dict[type, list[tuple[list[int], XchgError]]] = {}
            for part, outcome in zip(parts, outcomes, strict=True):
                if isinstance(outcome, XchgError):
                    failed.setdefault(type(outcome), []).append((part, outcome))
                else:
                    results.update(zip(part, outcome, strict=True))
            for how in failed.values():  # one line per kind of failure, not per part
                self._not_stored(ops, then, how)
            for i in sorted(results):  # in the order the pass checked them
                try:
                    then[i](results[i])
                except Exception:  # one message must never stop the hub (logged)
                    log.exception("message.failed", operations=1)
        finally:
            self._committing -= 1
            self._commits.release()

    def _parts(self, ops: Sequence[Operation]) -> list[list[int]]:
        """The pass's operations as the store is to take them: all in one; on a store shared
        by replicas one part per owner (what owns no organisation, a refusal's ledger entry,
        in a part of its own), so an organisation whose lease moved fails alone. The parts
        go into one group commit together (:meth:`Store.submit_parts`)."""
        if self._store.fence_for is None:
            return [list(range(len(ops)))]
        parts: dict[frozenset[str], list[int]] = {}
        for i, op in enumerate(ops):
            parts.setdefault(frozenset(owners([op])), []).append(i)
        return list(parts.values())

    def _not_stored(
        self,
        ops: Sequence[Operation],
        then: Sequence[Then],
        failed: Sequence[tuple[list[int], XchgError]],
    ) -> None:
        """Parts the store did not take, all failed the same way: nothing was answered, and
        each sender resends what it holds no receipt for."""
        lost = [ops[i] for part, _ in failed for i in part]
        exc = failed[0][1]
        if isinstance(exc, LeaseLostError):  # to the replica that owns it now
            orgs = sorted(owners(lost))
            log.warning("message.owner_moved", operations=len(lost), orgs=orgs, error=str(exc))
        elif isinstance(exc, StoreError):  # the store logged why, once
            log.error("message.not_stored", operations=len(lost), error=str(exc)[:300])
        else:
            log.error("message.failed", operations=len(lost), error=str(exc)[:300])
        refused = [then[i] for part, _ in failed for i in part if isinstance(ops[i], RejectedEntry)]
        if refused:  # a refusal is answered all the same: it changes nothing
            log.error("audit.write_failed", events=["message.rejected"] * len(refused))
        for op in lost:
            if isinstance(op, RecordReceipts):
                self._receipts.unsettle(op)
        for done in refused:
            done(None)

    async def _slowly(self, arrival: Arrival, slow: Slow) -> None:
        try:
            await slow.work()
        except LeaseLostError as exc:  # the sender resends it to the replica that owns it now
            log.warning("message.owner_moved", org=arrival.org, error=str(exc))
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
                return self._receipts.now(arrival, message)
            case transport.HelloMsg():
                return self._presence.hello_now(arrival, message)
            case transport.ResumeMsg(msg_id, offset):
                self._dispatcher.resume(msg_id, arrival.org, offset)
                return None
            case transport.ChunkMsg():
                return self._chunks.chunk_now(arrival, message)
            case transport.DirGetMsg():
                dirdesk = self.dirdesk
                if dirdesk is not None and self._directory().has_topic(arrival.org):
                    dirdesk.answer_now(arrival, message)
                return None
            case transport.ConsistencyAsk() | transport.ProveAsk() | transport.CosignMsg():
                desk = self.ledger
                if desk is None or self._directory().org(arrival.org) is None:
                    return None
                return Slow(functools.partial(desk.answer, arrival.channel, arrival.org, message))
        return None  # what the hub sends (checkpoints, proofs) is not for it to receive

    def _envelope_now(self, arrival: Arrival, message: transport.EnvelopeMsg) -> Step:
        """An envelope: verified, then decided by the core (hubd.core.admit) on the way its
        body comes: inline, or in chunks after this head."""
        if message.slots is not None:  # up to 20,000 slots to check: not on the event loop
            return Slow(functools.partial(self._envelope_with_slots, arrival, message))
        directory = self._directory()
        try:
            envelope = verify_envelope(
                message.frame,
                directory,
                expected_sender=topic_owner(arrival.org, directory),
                relayed_by=arrival.org if directory.relaying(arrival.org) else None,
            )
        except PeerError as exc:
            self._answers.reject_unreadable(arrival, exc, frame=message.frame)
            return None
        if message.body is None:  # the body follows in chunks
            return self._chunks.head_now(arrival, envelope)
        return self._envelopes.inline_now(arrival, message, envelope)

    async def _envelope_with_slots(self, arrival: Arrival, message: transport.EnvelopeMsg) -> None:
        """A large group's envelope: its slots checked and every recipient's part (slot and
        proof) made in a worker thread (a fifth of a second for 10,000), at most
        SLOT_CHECKS at a time (each holds its slots decoded: ~33 MB for 20,000); then the
        slow way of any envelope, judged in a worker thread too (Envelopes.decide)."""
        waiting = len(arrival.payload)
        self._backlog_bytes += waiting  # held while it waits its turn: the intake bound counts it
        try:
            async with self._slot_checks:
                self._backlog_bytes -= waiting
                waiting = 0
                if not self.reading:
                    self._drained_some()
                directory = self._directory()
                envelope = await asyncio.to_thread(
                    with_parts,
                    message.frame,
                    directory,
                    arrival.org,
                    message.slots,
                )
        except PeerError as exc:
            self._answers.reject_unreadable(arrival, exc, frame=message.frame)
            return
        finally:
            self._backlog_bytes -= waiting  # cancelled while waiting (the hub stopping)
        if message.body is None:
            await self._chunks.head_slowly(arrival, envelope)
        else:
            facts = self._envelopes.facts(arrival, envelope, Path.INLINE, body=message.body)
            await self._envelopes.inline_slowly(arrival, message.body, facts)

    # ------------------------------------------------------------ refusals' ledger entries

    def _rejection_queued(self) -> None:
        """A refusal waits for its ledger entry: a pass takes it into its own commit; one
        made outside a pass (slow work, a duplicate) is committed soon, with any others."""
        if not self._in_pass and not self._flush_due and self._tasks is not None:
            self._flush_due = True
            self._tasks.create_task(self._flush_rejections())

    async def _flush_rejections(self) -> None:
        """Commit the refusals made outside a pass (slow work, a duplicate), together."""
        await asyncio.sleep(0)  # let the refusals of this turn of the loop join
        self._flush_due = False
        answers = self._answers
        if not answers.rejections:
            return  # a pass took them
        batch, answers.rejections = answers.rejections, []
        await self._commits.acquire()
        self._committing += 1
        await self._commit([op for op, _ in batch], [done for _, done in batch])
