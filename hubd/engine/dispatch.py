"""Delivery: precedence-ordered publishing, retries, expiry and dead letters.

Work waits in real queues, not in a sort at the end: a heap of ready deliveries ordered by
precedence (FLASH first) then arrival, a heap of timers (retries, expiries), and per
recipient a parking place while it is offline. At most ``publish_window`` publishes are
unacknowledged at once; whenever a slot frees, the pump hands the most urgent ready item to
the connection. Nothing waits inside the MQTT client's own queue, so a FLASH notice
overtakes a backlog of thousands of routine documents at the next free slot. Large bodies
go out chunk by chunk, each chunk a new ready item, so chunks of different messages
interleave and precedence still holds.

The pump is a plain function the loop runs when work arrives or a PUBACK frees a slot, not
a task per slot (docs/architecture.md, "How the hot path is built").

What a due timer does (retry, give up, expire, wait for a receipt being stored) is decided
by :mod:`hubd.core.timers`, on the clock the dispatcher is given; this module keeps the
timers and carries the decision out. State changes go through :mod:`hubd.core.states` and reach
the store in batches. A SENT that the recipient's DELIVERED overtakes before the next flush
is never written (the receipt's own commit records the final state; the store refuses to
move a delivery backwards anyway). A delivery leaves memory once the recipient's DELIVERED
(or SIGNED_FOR) arrives, or it expires or dies. On start the hub reloads every delivery
still awaited.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import assert_never

import structlog

from hubd.core.states import DeliveryState, Event, next_state
from hubd.core.timers import (
    RETRY_JITTER,
    Expire,
    GiveUp,
    PhaseEvent,
    Retry,
    Stale,
    TimerKind,
    Wait,
    Wake,
    on_timer,
    retry_delay_ms,
)
from hubd.engine.jobs import (
    DispatchSettings,
    Job,
    JobTable,
    Key,
    Latency,
    Outcome,
    OutcomeWrites,
    log_confirmed,
)
from hubd.engine.presencebook import PresenceBook
from hubd.engine.storedchunks import StoredChunks
from hubd.store.audit import AuditEvent
from hubd.store.bodyref import StoredBody
from hubd.store.db import Store
from hubd.store.rowwriter import KEEP_ATTEMPTS
from hubd.store.writes import DeliveryUpdate, Operation, UpdateDeliveries
from runtime.clock import now_ms
from schemas import transport
from schemas.errors import StoreError
from schemas.ids import msg_id_text
from schemas.labels import Classification, Precedence

log = structlog.get_logger("hubd.dispatch")

# (channel, org, payload): hands the payload to the connection at once (in call order) and
# returns a future of the broker's PUBACK (False: not connected, or no ack in time).
Publish = Callable[[str, str, bytes], "asyncio.Future[bool]"]
Clock = Callable[[], int]  # milliseconds since the Unix epoch (runtime.clock.now_ms)
NOT_MINE_MS = 1_000  # replicas: a job whose lease ran out by the local clock, looked at again
FLUSH_INTERVAL = 0.05  # seconds between batched state writes (SENT is nobody's promise)


@dataclass(order=True, slots=True)
class _Timer:
    due: int
    seq: int
    key: Key = field(compare=False)
    kind: TimerKind = field(compare=False)


class Dispatcher:
    """Owns every delivery the hub still has to make."""

    def __init__(
        self,
        store: Store,
        publish: Publish,
        settings: DispatchSettings,
        outcome: Outcome,
        *,
        latency: Latency | None = None,
        clock: Clock = now_ms,
        outcomes: OutcomeWrites | None = None,
    ) -> None:
        self._store, self._publish, self._settings = store, publish, settings
        self._outcomes = outcomes
        self.timer_settings = settings.timers()  # what the policy reads, built once
        self._outcome, self._latency, self._clock = outcome, latency, clock
        self._jobs = JobTable()
        self._ready: list[tuple[int, int, Key, Job]] = []  # the job itself: a key may be reused
        self._in_flight = 0  # publishes handed to the connection and not yet acknowledged
        self._pump_scheduled = False
        self._running = False  # the pump only hands out work between run() and stop
        self._drained = asyncio.Event()  # set whenever nothing is in flight
        self._drained.set()
        self._timers: list[_Timer] = []
        self._timer_event = asyncio.Event()
        self._parked: dict[tuple[str, str], set[Key]] = defaultdict(set)
        self.spokes = PresenceBook(clock)  # who is online where, and how sure the hub is
        self._counter = itertools.count()
        self._updates: dict[Key, DeliveryUpdate] = {}  # the latest change per delivery
        self._audit: list[AuditEvent] = []
        self._flush_event = asyncio.Event()
        self._stored = StoredChunks(store, publish)  # bodies kept in the store (replicas)
        # Since start, for /metrics: publishes, retries fired, deliveries expired or dead.
        self.published = 0
        self.retries = 0
        self.expired = 0
        self.dead = 0
        # Replicas: whether this one owns a recipient now (None: a lone hub delivers to all)
        self.owns: Callable[[str], bool] | None = None
        self.hop: Callable[[str], str] = str  # who takes a recipient's copy: itself, or its hub

    # ------------------------------------------------------------------ inputs

    def add(self, job: Job) -> None:
        """A new (or reloaded) delivery; left to its replica if another owns the recipient."""
        if self.owns is not None and not self.owns(job.recipient):
            return
        self._jobs[job.key] = job
        job.to_hub = self.hop(job.recipient) != job.recipient
        if job.expires_at is not None:
            self._timer(job.expires_at, job.key, TimerKind.EXPIRE)
        self._route(job)

    def _mine(self, job: Job) -> bool:
        """Whether this hub may still act on ``job``: a replica whose lease on the recipient
        ran out (by its own clock, before its next lease round drops the job) neither
        publishes, retries, expires nor gives up on it: the new owner does."""
        return self.owns is None or self.owns(job.recipient)

    def drop(self, gone: Callable[[str], bool]) -> int:
        """Forget every delivery to a recipient for which ``gone`` says yes (another replica
        owns it now and loads them from the store), with their unwritten changes (a flush
        refused for a lost lease then goes through); returns how many."""
        keys = [key for key, job in self._jobs.items() if gone(job.recipient)]
        for key in keys:
            del self._jobs[key]
        for where in [w for w in self._parked if gone(w[1])]:
            del self._parked[where]
        self._updates = {k: u for k, u in self._updates.items() if not gone(u.recipient)}
        self._audit = [a for a in self._audit if a.org is None or not gone(a.org)]
        if self._outcomes is not None:  # an EXPIRED not yet written goes with its state
            self._outcomes.drop_outcomes(gone)
        return len(keys)

    def forget(self, msg_id: bytes, recipients: Iterable[str]) -> int:
        """Stop delivering ``msg_id`` to ``recipients`` (recalled: hubd.engine.flows); a
        publish in flight finds its job gone. Returns how many this hub was delivering."""
        gone = [job for r in recipients if (job := self._jobs.pop((msg_id, r), None))]
        for job in gone:
            self._updates.pop(job.key, None)
            self._parked.get((job.channel, self.hop(job.recipient)), set()).discard(job.key)
        return len(gone)

    def set_online(self, channel: str, org: str, *, online: bool) -> None:
        """A spoke's presence on one channel changed."""
        where = (channel, org)
        self.spokes.set(channel, org, online=online)
        if not online:
            return
        for key in self._parked.pop(where, set()):
            job = self._jobs.get(key)
            if job is not None and job.state.awaiting:
                self._push(job)

    def is_online(self, channel: str, org: str) -> bool:
        return self.spokes.is_online(channel, org)

    def presence(self, channel: str, org: str) -> tuple[bool, int] | None:
        """(online, since when in ms) for a spoke on a channel as last heard; None if never
        heard of. What to show of it: ``spokes.state``."""
        return self.spokes.last_heard(channel, org)

    def settle(self, msg_id: bytes, recipient: str, event: Event, at: int) -> DeliveryUpdate:
        """The state change a recipient's DELIVERED or SIGNED_FOR makes, to be stored in the
        same commit as the receipt; :meth:`confirmed` applies it once that is durable."""
        job = self._jobs.get((msg_id, recipient))
        if job is None:
            # 签收 usually comes long after DELIVERED closed the job (often after a restart):
            # the stored delivery still moves on, where the state table allows it (the store
            # moves a row only from the table's sources of the state the event leads to).
            state = next_state(DeliveryState.SENT, event)
            return DeliveryUpdate(msg_id, recipient, state, KEEP_ATTEMPTS, at)
        if not job.receipts_storing:
            job.settling_since = self._clock()
            job.move(PhaseEvent.SETTLE)
        job.receipts_storing += 1
        return DeliveryUpdate(msg_id, recipient, next_state(job.state, event), job.attempts, at)

    def unsettled(self, msg_id: bytes, recipient: str) -> None:
        """The commit that was to store a :meth:`settle` failed: the job is as it was."""
        job = self._jobs.get((msg_id, recipient))
        if job is not None and job.receipts_storing:
            self._settled(job)

    def confirmed(self, msg_id: bytes, recipient: str, event: Event, at: int) -> Job | None:
        """The recipient's DELIVERED or SIGNED_FOR is durable (with the state it moved the
        delivery to: :meth:`settle`). Returns the job it closed."""
        job = self._jobs.get((msg_id, recipient))
        if job is None:
            return None
        if job.receipts_storing:
            self._settled(job)
        job.state = next_state(job.state, event)
        self._updates.pop(job.key, None)  # a SENT not yet written: the receipt's commit wins
        if not job.state.awaiting:  # delivered, signed for, or handed to the next hub
            del self._jobs[job.key]
            acked = log_confirmed(job, at, self.hop(job.recipient))
            if acked and job.accepted_at and self._latency is not None:
                self._latency(at - job.accepted_at)
        return job

    def framed(self, subject: bytes, hub: str) -> bytes | None:
        return self._jobs.framed(subject, hub)  # a refusal naming a frame's hash

    def behind(self, msg_id: bytes, hub: str) -> list[str]:
        return self._jobs.behind(msg_id, hub, self.hop)  # what that hub's answer moves

    def _settled(self, job: Job, *, all_of_them: bool = False) -> None:
        """One receipt batch closing ``job`` was answered (or every one, given up on)."""
        job.receipts_storing = 0 if all_of_them else job.receipts_storing - 1
        if not job.receipts_storing:
            job.move(PhaseEvent.SETTLED)

    def job(self, msg_id: bytes, recipient: str) -> Job | None:
        return self._jobs.get((msg_id, recipient))

    def resume(self, msg_id: bytes, recipient: str, offset: int) -> None:
        """The recipient (or the hub its copy went to) holds ``offset`` bytes of a chunked
        body: continue from there."""
        job = self._jobs.get((msg_id, recipient)) or self._jobs.carrier(msg_id, recipient)
        if job is None or not job.state.awaiting or job.payload.body_path is None:
            return
        job.offset = min(max(offset, 0), job.payload.body_size)
        if job.offset >= job.payload.body_size and not job.phase.queued:
            self._sent(job)  # it holds the whole body: wait for its DELIVERED (or retry)
            return
        self._route(job)  # if it is already on its way, the next chunk starts at offset

    def hurry(self, msg_id: bytes, recipients: Sequence[str]) -> int:
        """Publish ``msg_id`` to ``recipients`` now, not at their next retry (an emergency
        notice unacknowledged: hubd.engine.deadlines); returns how many are on their way."""
        hurried = 0
        for recipient in recipients:
            job = self._jobs.get((msg_id, recipient))
            if job is None or not job.state.awaiting or not self._mine(job):
                continue
            if not job.phase.queued:  # one on its way already goes on as it is
                self._route(job)
            hurried += 1
        return hurried

    def pending(self) -> list[Job]:
        return list(self._jobs.values())

    def pending_by_label(self) -> Counter[tuple[Precedence, Classification]]:
        """Deliveries not yet confirmed, counted by (precedence, classification)."""
        return Counter((job.precedence, job.classification) for job in self._jobs.values())

    # ------------------------------------------------------------------ queues

    def _route(self, job: Job) -> None:
        if self.is_online(job.channel, self.hop(job.recipient)):
            self._push(job)
        elif not job.phase.queued:
            self._parked[(job.channel, self.hop(job.recipient))].add(job.key)

    def _push(self, job: Job) -> None:
        if job.phase.queued:
            return  # already queued or on its way: one publish per job at a time
        job.move(PhaseEvent.QUEUE)
        heapq.heappush(self._ready, (-job.precedence.rank, next(self._counter), job.key, job))
        self._schedule_pump()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled and self._running:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _timer(self, due: int, key: Key, kind: TimerKind) -> None:
        timer = _Timer(due, next(self._counter), key, kind)
        heapq.heappush(self._timers, timer)
        if self._timers[0] is timer:
            self._timer_event.set()

    def _backoff_ms(self, attempts: int) -> int:
        jitter = random.uniform(*RETRY_JITTER)  # noqa: S311 - jitter, not secrecy
        return retry_delay_ms(attempts, self.timer_settings, jitter)

    def _record(self, job: Job, at: int, audit: AuditEvent | None = None) -> None:
        self._updates[job.key] = DeliveryUpdate(
            job.msg_id, job.recipient, job.state, job.attempts, at
        )
        if audit is not None:
            self._audit.append(audit)
        self._flush_event.set()

    # ------------------------------------------------------------------ tasks

    async def run(self, stop: asyncio.Event) -> None:
        self._running = True
        self._schedule_pump()  # deliveries reloaded before the run
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._timers_loop(stop), name="hubd.dispatch.timers")
            tasks.create_task(self._flusher(stop), name="hubd.dispatch.flush")
            await stop.wait()
            # Finish what is in flight; the rest stays PENDING in the store.
            self._running = False
            await self._drained.wait()
        await self.flush()  # what the last acknowledgements recorded

    def _pump(self) -> None:
        """Hand the most urgent ready deliveries to the connection while slots are free."""
        self._pump_scheduled = False
        window = self._settings.window
        while self._running and self._in_flight < window and self._ready:
            _, _, key, queued = heapq.heappop(self._ready)
            job = self._jobs.get(key)
            if job is queued and job.state.awaiting and not self._mine(job):
                job.move(PhaseEvent.RELEASE)
                self._timer(self._clock() + NOT_MINE_MS, key, TimerKind.WAKE)
                continue
            if job is not queued or not job.state.awaiting:
                # gone, or closed while queued and redelivered since under the same key: the
                # new job has an entry of its own (acting on it here would publish it twice)
                continue
            hop = self.hop(job.recipient)
            if self._jobs.rides(job, hop):  # one copy to a hub for all the recipients behind it
                job.move(PhaseEvent.RELEASE)
                self._timer(self._clock() + self.timer_settings.retry_max_ms, key, TimerKind.WAKE)
                continue
            if not self.is_online(job.channel, hop):
                job.move(PhaseEvent.RELEASE)
                self._parked[(job.channel, hop)].add(job.key)
                continue
            start = job.offset  # where this piece begins: sent again from here if it fails
            if isinstance(job.payload.body_path, StoredBody) and start >= 0:
                acked, last = self._stored.publish(job, hop)  # read from the store, then sent
            else:
                payload, last = self._piece(job)
                if payload is None:
                    job.move(PhaseEvent.RELEASE)
                    continue
                acked = self._publish(job.channel, hop, payload)
            self._in_flight += 1
            self._drained.clear()
            acked.add_done_callback(functools.partial(self._published, job, last, start))

    def _published(self, job: Job, last: bool, start: int, acked: asyncio.Future[bool]) -> None:  # noqa: FBT001 - a callback
        self._in_flight -= 1
        if self._in_flight == 0:
            self._drained.set()
        job.move(PhaseEvent.RELEASE)
        sent = not acked.cancelled() and acked.exception() is None and acked.result()
        if not sent:
            # The broker link is down or slow. Keep the recipient's presence as it is (only
            # the spoke itself says whether it is online) and try again shortly, from the
            # start of the piece that did not get through (a chunk is never skipped).
            job.offset = start
            self._timer(self._clock() + 1000, job.key, TimerKind.WAKE)
        else:
            self.published += 1
            if last:
                self._sent(job)
            else:
                job.offset = max(job.offset, 0)
                self._push(job)  # the next chunk competes with every other message again
        self._schedule_pump()

    def _piece(self, job: Job) -> tuple[bytes | None, bool]:
        """The next transport message for ``job`` and whether it completes the body."""
        payload = job.payload
        if payload.body is not None:
            # Encoded per publish, not kept: a backlog for an offline recipient holds each
            # body once, and the encoding costs microseconds.
            whole = transport.EnvelopeMsg(payload.frame, payload.body, job.part)
            return transport.encode(whole), True
        if job.offset < 0:
            job.offset = 0
            return transport.encode(transport.EnvelopeMsg(payload.frame, None, job.part)), False
        if not isinstance(payload.body_path, Path):  # a stored body: _stored_piece
            return None, True
        with payload.body_path.open("rb") as handle:
            handle.seek(job.offset)
            data = handle.read(transport.CHUNK_BYTES)
        if not data:
            return None, True
        message = transport.encode(transport.ChunkMsg(job.msg_id, job.offset, data))
        job.offset += len(data)
        return message, job.offset >= payload.body_size

    def _sent(self, job: Job) -> None:
        if self._jobs.get(job.key) is not job or not job.state.awaiting:
            return  # confirmed (or expired) while this publish was in flight
        at = self._clock()
        job.attempts += 1
        job.state = next_state(job.state, Event.PUBLISH)
        job.offset = -1
        self._record(
            job,
            at,
            AuditEvent(
                "delivery.sent",
                at,
                job.msg_id,
                job.recipient,
                {"channel": job.channel, "attempt": job.attempts},
            ),
        )
        log.debug(  # every attempt is in the audit ledger; info would be a line per publish
            "delivery.sent",
            msg_id=msg_id_text(job.msg_id),
            recipient=job.recipient,
            channel=job.channel,
            precedence=job.precedence.name,
            classification=job.classification.name,
            attempt=job.attempts,
        )
        self._timer(at + self._backoff_ms(job.attempts), job.key, TimerKind.RETRY)

    async def _timers_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = self.fire_due()
            self._timer_event.clear()
            due = self.next_due()
            delay = (due - now) / 1000 if due is not None else 1.0
            waiter = asyncio.create_task(self._timer_event.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait(
                {waiter, stopper},
                timeout=min(max(delay, 0.001), 1.0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiter.cancel()
            stopper.cancel()

    def next_due(self) -> int | None:
        """When the next timer falls due (ms on the dispatcher's clock); None if none is set."""
        return self._timers[0].due if self._timers else None

    def fire_due(self) -> int:
        """Carry out every timer due by the clock; returns the clock's time. The timers
        task calls it; a test on a fake clock may call it after moving the clock."""
        now = self._clock()
        while self._timers and self._timers[0].due <= now:
            self._fire(heapq.heappop(self._timers), now)
        return now

    def _fire(self, timer: _Timer, now: int) -> None:
        job = self._jobs.get(timer.key)
        if job is None:
            return
        if not self._mine(job):  # looked at again: dropped by then, or its lease renewed
            self._timer(now + NOT_MINE_MS, job.key, timer.kind)
            return
        decision = on_timer(job.timing(), timer.kind, now, self.timer_settings)
        match decision:
            case Stale():
                pass
            case Wait(until=until):
                self._timer(until, job.key, timer.kind)
            case Wake():
                self._route(job)
            case Expire(settling_overdue_ms=overdue):
                self._overdue(job, overdue)
                self._finish(job, Event.EXPIRE, now)
            case GiveUp(settling_overdue_ms=overdue):
                self._overdue(job, overdue)
                self._finish(job, Event.GIVE_UP, now)
            case Retry(attempt=attempt, settling_overdue_ms=overdue):
                self._overdue(job, overdue)
                self.retries += 1
                log.info(
                    "delivery.retry",
                    msg_id=msg_id_text(job.msg_id),
                    recipient=job.recipient,
                    channel=job.channel,
                    attempt=attempt,
                )
                self._route(job)
            case _:
                assert_never(decision)

    def _overdue(self, job: Job, waited_ms: int | None) -> None:
        """The receipts being stored were waited for too long: decide without them."""
        if waited_ms is None:
            return
        log.warning(
            "delivery.settling_overdue",
            msg_id=msg_id_text(job.msg_id),
            recipient=job.recipient,
            waited_ms=waited_ms,
        )
        self._settled(job, all_of_them=True)

    def _finish(self, job: Job, event: Event, now: int, *, alone: bool = False) -> None:
        job.state = next_state(job.state, event)
        name = "delivery.expired" if event is Event.EXPIRE else "delivery.dead"
        if event is Event.EXPIRE:
            self.expired += 1
        else:
            self.dead += 1
        self._record(
            job, now, AuditEvent(name, now, job.msg_id, job.recipient, {"attempts": job.attempts})
        )
        log.warning(
            name,
            msg_id=msg_id_text(job.msg_id),
            recipient=job.recipient,
            sender=job.sender,
            channel=job.channel,
            attempts=job.attempts,
        )
        del self._jobs[job.key]
        self._outcome(job, job.state, now)
        hop = self.hop(job.recipient)
        if event is Event.GIVE_UP and hop != job.recipient and not alone:  # those it carried
            for sibling in self._jobs.behind(job.msg_id, hop, self.hop):
                self._finish(self._jobs[(job.msg_id, sibling)], event, now, alone=True)

    async def _flusher(self, stop: asyncio.Event) -> None:
        """Write state changes in batches; never one commit per publish."""
        while True:
            if not self._updates and not self._audit:
                if stop.is_set():
                    return
                self._flush_event.clear()
                waiter = asyncio.create_task(self._flush_event.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                continue
            stored = await self.flush()
            if not stop.is_set():
                await asyncio.sleep(FLUSH_INTERVAL if stored else 1.0)

    async def flush(self) -> bool:
        """Write the changes gathered so far; False if the store refused them (kept)."""
        updates, audit = self._updates, self._audit
        self._updates, self._audit = {}, []
        outcomes = self._outcomes.take_outcomes() if self._outcomes is not None else ()
        if not updates and not audit and not outcomes:
            return True
        ops: list[Operation] = [UpdateDeliveries(list(updates.values()), audit)]
        ops += [batch.op for batch in outcomes]  # one commit: the states and their receipts
        try:
            numbers = await self._store.submit_many(ops)
        except StoreError as exc:
            owns = self.owns
            if owns is not None:  # replicas: a lost recipient's new owner goes on
                updates = {k: u for k, u in updates.items() if owns(u.recipient)}
                audit = [a for a in audit if a.org is None or owns(a.org)]
            # Keep them for the next flush (newer changes to the same delivery win) rather
            # than stop delivering: the store logged why; /healthz says it is failing.
            self._updates = {**updates, **self._updates}
            self._audit[:0] = audit
            if self._outcomes is not None:
                self._outcomes.give_back(outcomes, owns or _everyone)
            log.warning("delivery.state_not_stored", changes=len(updates), error=str(exc))
            self._flush_event.set()
            return False
        if self._outcomes is not None:
            for batch, seq in zip(outcomes, numbers[1:], strict=True):
                self._outcomes.outcome_stored(batch, seq)
        return True


def _everyone(_org: str) -> bool:
    return True
