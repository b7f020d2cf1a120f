"""One delivery driven at random through everything that can happen to it, against the
state table (hubd.core.states) and the timer policy (hubd.core.timers).

A hypothesis state machine plays the world around one delivery: the message arrives (and
arrives again: a resend of the same envelope), the recipient comes and goes, the broker
acknowledges a publish or not, the recipient's receipts arrive in any order and more than
once (DELIVERED after SIGNED_FOR, a REJECTED it has no business sending), their commits
succeed or fail in any order, the clock moves so that retries, expiry and giving up fall
due, the dispatcher writes its batch, and the hub crashes or stops and starts again with
its deliveries reloaded as stored. The dispatcher and the SQLite store are the real ones;
the rules stand in only for their neighbours (the connection, the ingest's receipt path,
the hub's reload), and the clock is the test's.

What must hold after every step, and when the sender is told anything:

- the stored state and the dispatcher's state only move along ``TRANSITIONS``;
- a final stored state (SIGNED_FOR, EXPIRED, DEAD) stays as it is;
- the sender hears EXPIRED only once ``expires_at`` has passed, DEAD only after
  ``max_attempts`` publishes, neither once the recipient's DELIVERED is stored, and
  neither while a receipt is in the store's hands (for up to ``SETTLING_LIMIT_MS``);
- one publish of the delivery at a time; its phase says *queued* exactly while a publish
  is under way and *settling* exactly while receipts are being stored;
- a recipient that never answers is given up on (or the delivery expires) in the end.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from hubd.core.receipts import receipt_event
from hubd.core.states import TRANSITIONS, DeliveryState, Event
from hubd.core.timers import SETTLING_LIMIT_MS
from hubd.engine.dispatch import Dispatcher
from hubd.engine.jobrows import job_query, jobs_from_rows
from hubd.engine.jobs import DispatchSettings, Job
from hubd.store import tables as t
from hubd.store.db import Store
from hubd.store.writes import DeliveryUpdate, Duplicate, NewMessage, Stored, UpdateDeliveries
from schemas.receipts import ReceiptStatus
from tests.hub.test_dispatch_clock import NOW, FakeClock
from tests.hub.test_store import msg_id, new_message

T = TypeVar("T")
CHANNEL, RECIPIENT = "govnet", "jl.cc"
SETTINGS = DispatchSettings(retry_initial=1.0, retry_max=4.0, max_attempts=3)
LONGEST_BACKOFF_MS = 4_800  # retry_max with the largest jitter
AWAITED = [DeliveryState.PENDING.value, DeliveryState.SENT.value]


def one_step(before: DeliveryState, after: DeliveryState) -> bool:
    """``after`` follows ``before`` by one transition of the table (or is the same)."""
    return after is before or any(TRANSITIONS.get((before, e)) is after for e in Event)


@dataclass
class Shared:
    """What the machines of one run share: the event loop and the store (a fresh msg_id
    per machine keeps them apart)."""

    loop: asyncio.AbstractEventLoop
    store: Store
    numbers: Iterator[int]
    # What the loop caught in callbacks (a PUBACK's, the pump): nothing may go there.
    failures: list[dict[str, Any]] = field(default_factory=list)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)


@dataclass
class Commit:
    """A receipt handed to the store with the delivery state it moves to."""

    update: DeliveryUpdate
    event: Event
    at: int
    held: bool  # the dispatcher held the delivery then: it waits for this answer


class OneDelivery(RuleBasedStateMachine):
    shared: Shared  # set by the test before the run

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.number = next(self.shared.numbers)
        self.msg_id = msg_id(self.number)
        self.expires_at: int | None = None
        self.acks: list[asyncio.Future[bool]] = []  # this life's publishes, acknowledged or not
        self.commits: list[Commit] = []  # receipts in the store's hands
        self.outcomes: list[tuple[DeliveryState, int]] = []  # what the sender was told, when
        self.delivered_stored = False  # the recipient's DELIVERED (or SIGNED_FOR) is durable
        self.stored = DeliveryState.PENDING
        self.seen: DeliveryState | None = None  # the dispatcher's state at the last check
        self.dispatcher = self._life()

    # ------------------------------------------------------------------ the neighbours

    def _life(self) -> Dispatcher:
        dispatcher = Dispatcher(
            self.shared.store, self._publish, SETTINGS, self._outcome, clock=self.clock
        )
        # The pump runs (it needs nothing but the loop); the timers and the batched writes
        # are this test's own steps (time_passes, the_dispatcher_writes_its_batch).
        dispatcher._running = True
        return dispatcher

    def _publish(self, channel: str, org: str, payload: bytes) -> asyncio.Future[bool]:
        assert (channel, org) == (CHANNEL, RECIPIENT)
        assert payload
        assert not self._unanswered(), "two publishes of one delivery under way at once"
        acked: asyncio.Future[bool] = self.shared.loop.create_future()
        self.acks.append(acked)
        return acked

    def _outcome(self, job: Job, state: DeliveryState, at: int) -> None:
        assert not self.delivered_stored, f"{state} told after the DELIVERED was stored"
        if state is DeliveryState.EXPIRED:
            assert self.expires_at is not None
            assert at >= self.expires_at, "expired before expires_at"
        else:
            assert state is DeliveryState.DEAD
            assert job.attempts >= SETTINGS.max_attempts, "given up before the attempts limit"
        if held := [c.at for c in self.commits if c.held]:
            waited = at - min(held)
            assert waited >= SETTLING_LIMIT_MS, f"{state} while a receipt was being stored"
        self.outcomes.append((state, at))
        event(f"the sender was told {state}")

    def _unanswered(self) -> asyncio.Future[bool] | None:
        return next((f for f in self.acks if not f.done()), None)

    def _act(self, action: Callable[[], object] = lambda: None) -> None:
        """Do ``action`` inside the event loop (the dispatcher schedules its pump there),
        then let the pump and the PUBACK callbacks run."""

        async def act() -> None:
            action()
            for _ in range(5):
                await asyncio.sleep(0)

        self.shared.run(act())

    def _message(self) -> NewMessage:
        message = new_message(self.number, recipients=(RECIPIENT,))
        message.row["expires_at"] = self.expires_at
        message.row["received_at"] = NOW
        for delivery in message.deliveries:
            delivery["expires_at"] = self.expires_at
        return message

    def _reload(self) -> None:
        """What the hub does at start (Hub._reload_jobs), for this delivery."""
        d = t.deliveries
        rows = self.shared.run(
            self.shared.store.read(job_query(d.c.msg_id == self.msg_id, d.c.state.in_(AWAITED)))
        )
        for job in jobs_from_rows(rows):
            self._act(functools.partial(self.dispatcher.add, job))

    def _stored_state(self) -> DeliveryState:
        d = t.deliveries
        rows = self.shared.run(
            self.shared.store.read(select(d.c.state).where(d.c.msg_id == self.msg_id))
        )
        assert len(rows) == 1
        return DeliveryState(rows[0][0])

    # ------------------------------------------------------------------ rules

    @initialize(
        expires_in=st.none()
        | st.integers(min_value=1, max_value=20_000)
        | st.integers(min_value=1, max_value=600_000),
        online=st.booleans(),
    )
    def the_message_arrives(self, expires_in: int | None, online: bool) -> None:
        self.expires_at = None if expires_in is None else NOW + expires_in
        assert isinstance(self.shared.run(self.shared.store.submit(self._message())), Stored)
        self._reload()
        if online:
            self._act(lambda: self.dispatcher.set_online(CHANNEL, RECIPIENT, online=True))

    @rule()
    def the_same_envelope_arrives_again(self) -> None:
        before = self._stored_state()
        result = self.shared.run(self.shared.store.submit(self._message()))
        assert isinstance(result, Duplicate)
        assert result.same
        assert self._stored_state() is before  # answered, not delivered a second time

    @rule(online=st.booleans())
    def the_recipients_presence_changes(self, online: bool) -> None:
        self._act(lambda: self.dispatcher.set_online(CHANNEL, RECIPIENT, online=online))

    @precondition(lambda self: self._unanswered() is not None)
    @rule(acked=st.booleans())
    def the_broker_answers_the_publish(self, acked: bool) -> None:
        unanswered = self._unanswered()
        assert unanswered is not None
        self._act(lambda: unanswered.set_result(acked))

    @rule(
        ms=st.sampled_from([1, 499, 500, 1_000, LONGEST_BACKOFF_MS, SETTLING_LIMIT_MS])
        | st.integers(min_value=1, max_value=LONGEST_BACKOFF_MS)
        | st.integers(min_value=1, max_value=130_000)
    )
    def time_passes(self, ms: int) -> None:
        self.clock.advance(ms)
        self._act(self.dispatcher.fire_due)

    @precondition(lambda self: self.dispatcher.next_due() is not None)
    @rule()
    def the_next_timer_falls_due(self) -> None:
        due = self.dispatcher.next_due()
        assert due is not None
        self.clock.advance(max(due - self.clock(), 0))
        self._act(self.dispatcher.fire_due)

    @rule(status=st.sampled_from([ReceiptStatus.DELIVERED, ReceiptStatus.SIGNED_FOR]))
    def the_recipients_receipt_arrives(self, status: ReceiptStatus) -> None:
        event = receipt_event(status)
        assert event is not None
        at = self.clock()
        held = self.dispatcher.job(self.msg_id, RECIPIENT) is not None
        update = self.dispatcher.settle(self.msg_id, RECIPIENT, event, at)
        self.commits.append(Commit(update, event, at, held))

    @rule(status=st.sampled_from([s for s in ReceiptStatus if receipt_event(s) is None]))
    def a_status_only_the_hub_issues_arrives_from_the_recipient(
        self, status: ReceiptStatus
    ) -> None:
        assert receipt_event(status) is None  # the ingest drops the entry: nothing changes

    @precondition(lambda self: self.commits)
    @rule(which=st.integers(min_value=0, max_value=7), stored=st.booleans())
    def a_receipts_commit_answers(self, which: int, stored: bool) -> None:
        commit = self.commits.pop(which % len(self.commits))
        if stored:
            self.shared.run(self.shared.store.submit(UpdateDeliveries([commit.update], [])))
            after = self._stored_state()
            event(f"a stored {commit.event} left the delivery {after}")
            if after in {DeliveryState.DELIVERED, DeliveryState.SIGNED_FOR}:
                self.delivered_stored = True
            self.dispatcher.confirmed(self.msg_id, RECIPIENT, commit.event, commit.at)
        else:
            self.dispatcher.unsettled(self.msg_id, RECIPIENT)
        self._act()

    @rule()
    def the_dispatcher_writes_its_batch(self) -> None:
        self.shared.run(self.dispatcher.flush())

    @rule(cleanly=st.booleans())
    def the_hub_restarts(self, cleanly: bool) -> None:
        """A crash loses what the dispatcher had not written and the receipts not yet
        committed (the recipient sends them again); a clean stop writes its batch first."""
        if cleanly:
            self.shared.run(self.dispatcher.flush())
        self._end_life()
        self.dispatcher = self._life()
        self._reload()  # the recipient's presence comes back with its retained message

    @precondition(lambda self: self.dispatcher.job(self.msg_id, RECIPIENT) is not None)
    @rule()
    def the_recipient_never_answers_again(self) -> None:
        """Online, every publish acknowledged, no receipt: it ends DEAD (or EXPIRED)."""
        for _ in self.commits:
            self.dispatcher.unsettled(self.msg_id, RECIPIENT)
        self.commits.clear()
        told = len(self.outcomes)
        self._act(lambda: self.dispatcher.set_online(CHANNEL, RECIPIENT, online=True))
        for _ in range(4 * SETTINGS.max_attempts):
            if (unanswered := self._unanswered()) is not None:
                self._act(functools.partial(unanswered.set_result, True))
            if self.dispatcher.job(self.msg_id, RECIPIENT) is None:
                break
            self.clock.advance(LONGEST_BACKOFF_MS)
            self._act(self.dispatcher.fire_due)
        assert self.dispatcher.job(self.msg_id, RECIPIENT) is None, "never given up on"
        assert len(self.outcomes) == told + 1
        state, at = self.outcomes[-1]
        if state is DeliveryState.EXPIRED:
            assert self.expires_at is not None
            assert at >= self.expires_at
        self.seen = None

    # ------------------------------------------------------------------ invariants

    @invariant()
    def the_stored_state_moves_along_the_table_and_stays_final(self) -> None:
        stored = self._stored_state()
        assert one_step(self.stored, stored), f"stored {self.stored} -> {stored}"
        if self.stored.final:
            assert stored is self.stored, f"the final {self.stored} became {stored}"
        self.stored = stored

    @invariant()
    def the_dispatchers_job_moves_along_the_table(self) -> None:
        job = self.dispatcher.job(self.msg_id, RECIPIENT)
        if job is None:
            return
        assert job.state.awaiting  # it leaves the dispatcher when it is confirmed or closed
        assert self.stored.awaiting, f"held as {job.state} though stored {self.stored}"
        if self.seen is not None:
            assert one_step(self.seen, job.state), f"{self.seen} -> {job.state}"
        self.seen = job.state
        assert job.attempts <= SETTINGS.max_attempts

    @invariant()
    def the_phase_says_what_is_under_way(self) -> None:
        job = self.dispatcher.job(self.msg_id, RECIPIENT)
        if job is None:
            return
        assert job.phase.settling == (job.receipts_storing > 0), job.phase
        assert job.phase.queued == (self._unanswered() is not None), job.phase

    @invariant()
    def settling_lasts_exactly_while_a_receipt_is_in_the_stores_hands(self) -> None:
        job = self.dispatcher.job(self.msg_id, RECIPIENT)
        if job is None:
            return
        held = [c.at for c in self.commits if c.held]
        if job.phase.settling:
            assert held, "settling with no receipt being stored"
        elif held:
            waited = self.clock() - min(held)
            assert waited >= SETTLING_LIMIT_MS, f"stopped waiting after {waited} ms"

    @invariant()
    def nothing_failed_inside_the_event_loop(self) -> None:
        assert self.shared.failures == [], self.shared.failures[0].get("exception")

    def _end_life(self) -> None:
        self.dispatcher._running = False  # an abandoned PUBACK must not wake its pump
        self._act(lambda: [acked.cancel() for acked in self.acks])
        self.acks, self.commits, self.seen = [], [], None

    def teardown(self) -> None:
        self._end_life()


def test_one_delivery_through_arrivals_receipts_timers_and_restarts_keeps_to_the_table(
    tmp_path: Path,
) -> None:
    loop = asyncio.new_event_loop()
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    try:
        loop.run_until_complete(store.__aenter__())
        shared = OneDelivery.shared = Shared(loop, store, itertools.count(1))
        loop.set_exception_handler(lambda _loop, context: shared.failures.append(context))
        run_state_machine_as_test(
            OneDelivery,
            settings=settings(
                max_examples=150,
                stateful_step_count=50,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(store.close())
        loop.close()
