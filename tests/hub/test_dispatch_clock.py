"""The dispatcher carries out the timer policy on the clock it is given.

In-process, with a real SQLite store, a clock the test moves, and a stand-in for the
connection that records each publish and answers its PUBACK at once. Moving the clock
and calling ``fire_due`` replaces waiting: the retries, the expiry, the wait for a receipt
being stored and the wake-up after a failed publish happen at the exact milliseconds the
policy names, and not one before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from hubd.core.states import DeliveryState, Event
from hubd.core.timers import RETRY_JITTER, SETTLING_LIMIT_MS, SETTLING_RECHECK_MS
from hubd.engine.dispatch import Dispatcher
from hubd.engine.jobs import DispatchSettings, Job, Payload
from hubd.store.db import Store
from schemas.labels import Classification, Precedence

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MSG_ID = bytes(range(16))
EARLIEST, LATEST = RETRY_JITTER


@dataclass
class FakeClock:
    """Milliseconds that pass only when the test says so."""

    now: int = NOW

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclass
class Connection:
    """What the dispatcher publishes through: each publish recorded, its PUBACK at once."""

    acks: bool = True
    publishes: list[tuple[str, str, bytes]] = field(default_factory=list)

    def __call__(self, channel: str, org: str, payload: bytes) -> asyncio.Future[bool]:
        self.publishes.append((channel, org, payload))
        acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        acked.set_result(self.acks)
        return acked


@dataclass
class Rig:
    dispatcher: Dispatcher
    clock: FakeClock
    connection: Connection
    outcomes: list[DeliveryState]

    async def at(self, ms: int) -> None:
        """Move the clock ``ms`` on, carry out what fell due, and let the pump run."""
        self.clock.advance(ms)
        self.dispatcher.fire_due()
        await turns()


async def turns() -> None:
    """A few turns of the event loop: the pump and the PUBACK callbacks run in them."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    outcomes: list[DeliveryState] = []
    clock, connection = FakeClock(), Connection()
    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}") as store:
        settings = DispatchSettings(retry_initial=1.0, retry_max=4.0, max_attempts=3)
        dispatcher = Dispatcher(
            store,
            connection,
            settings,
            lambda _job, state, _now: outcomes.append(state),
            clock=clock,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        await turns()
        yield Rig(dispatcher, clock, connection, outcomes)
        stop.set()
        async with asyncio.timeout(30):
            await task


def job(expires_at: int | None = None) -> Job:
    return Job(
        msg_id=MSG_ID,
        recipient="jl.cc",
        channel="govnet",
        precedence=Precedence.ROUTINE,
        classification=Classification.INTERNAL,
        sender="jl.gov",
        origin="govnet",
        expires_at=expires_at,
        payload=Payload(b"frame", b"body", None, 4),
        accepted_at=NOW,
    )


async def test_a_delivery_without_delivered_is_retried_after_each_backoff_then_given_up(
    rig: Rig,
) -> None:
    rig.dispatcher.set_online("govnet", "jl.cc", online=True)
    rig.dispatcher.add(job())
    await turns()
    assert len(rig.connection.publishes) == 1

    with capture_logs() as logs:
        for attempt, backoff in [(2, 1_000), (3, 2_000), (None, 4_000)]:
            await rig.at(int(backoff * EARLIEST) - 1)  # before the earliest the jitter allows
            assert len(rig.connection.publishes) == (attempt or 4) - 1
            assert rig.outcomes == []
            await rig.at(int(backoff * (LATEST - EARLIEST)) + 2)  # past the latest
            if attempt is not None:
                assert len(rig.connection.publishes) == attempt

    assert rig.outcomes == [DeliveryState.DEAD]
    assert len(rig.connection.publishes) == 3
    assert [
        (e["event"], e.get("attempt", e.get("attempts")))
        for e in logs
        if e["event"] in {"delivery.retry", "delivery.dead"}
    ] == [("delivery.retry", 2), ("delivery.retry", 3), ("delivery.dead", 3)]
    assert rig.dispatcher.pending() == []


async def test_an_offline_recipients_delivery_expires_at_expires_at_and_not_a_millisecond_before(
    rig: Rig,
) -> None:
    rig.dispatcher.add(job(expires_at=NOW + 10_000))

    await rig.at(9_999)
    assert rig.outcomes == []
    await rig.at(1)

    assert rig.outcomes == [DeliveryState.EXPIRED]
    assert rig.connection.publishes == []


async def test_an_expiry_during_the_receipts_commit_waits_and_a_confirmed_delivered_closes_it(
    rig: Rig,
) -> None:
    rig.dispatcher.add(job(expires_at=NOW + 1_000))
    rig.dispatcher.settle(MSG_ID, "jl.cc", Event.DELIVERED, NOW)

    await rig.at(1_000)  # the expiry is due: asked again in SETTLING_RECHECK_MS
    await rig.at(SETTLING_RECHECK_MS)
    assert rig.outcomes == []
    closed = rig.dispatcher.confirmed(MSG_ID, "jl.cc", Event.DELIVERED, rig.clock())
    await rig.at(SETTLING_RECHECK_MS)

    assert closed is not None
    assert closed.state is DeliveryState.DELIVERED
    assert rig.outcomes == []  # no EXPIRED for a delivered document
    assert rig.dispatcher.pending() == []


async def test_a_receipt_the_store_never_answers_holds_an_expiry_back_exactly_the_settling_limit(
    rig: Rig,
) -> None:
    rig.dispatcher.add(job(expires_at=NOW + 1_000))
    rig.dispatcher.settle(MSG_ID, "jl.cc", Event.DELIVERED, NOW)  # and nothing after

    with capture_logs() as logs:
        await rig.at(1_000)
        while rig.clock() < NOW + SETTLING_LIMIT_MS - SETTLING_RECHECK_MS:
            await rig.at(SETTLING_RECHECK_MS)
            assert rig.outcomes == [], rig.clock() - NOW
        await rig.at(SETTLING_RECHECK_MS)

    assert rig.outcomes == [DeliveryState.EXPIRED]
    overdue = [e for e in logs if e["event"] == "delivery.settling_overdue"]
    assert [e["waited_ms"] for e in overdue] == [SETTLING_LIMIT_MS]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "delivery.settling_overdue",
        "delivery.expired",
    ]


async def test_a_publish_the_broker_did_not_acknowledge_is_sent_again_a_second_later(
    rig: Rig,
) -> None:
    rig.connection.acks = False
    rig.dispatcher.set_online("govnet", "jl.cc", online=True)
    rig.dispatcher.add(job())
    await turns()
    pending = rig.dispatcher.job(MSG_ID, "jl.cc")
    assert pending is not None
    assert (pending.state, len(rig.connection.publishes)) == (DeliveryState.PENDING, 1)
    assert rig.dispatcher.presence("govnet", "jl.cc") == (True, NOW)  # on the given clock

    rig.connection.acks = True
    await rig.at(999)
    assert len(rig.connection.publishes) == 1
    await rig.at(1)

    assert len(rig.connection.publishes) == 2
    assert (pending.state, pending.attempts) == (DeliveryState.SENT, 1)


async def test_a_delivery_closed_while_queued_and_redelivered_is_published_once(
    tmp_path: Path,
) -> None:
    """A job that expires while it waits behind a full window leaves its place in the
    ready heap; an operator's redelivery adds a new job under the same key. The pump must
    not take the old place for the new job (two publishes, then an illegal phase)."""
    clock, held = FakeClock(), []
    loop_errors: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: loop_errors.append(ctx))

    def publish(_channel: str, org: str, _payload: bytes) -> asyncio.Future[bool]:
        acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        held.append((org, acked))
        return acked

    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}") as store:
        dispatcher = Dispatcher(
            store, publish, DispatchSettings(window=1), lambda *_: None, clock=clock
        )
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        await turns()
        dispatcher.set_online("govnet", "jl.cc", online=True)
        first = job()
        first.msg_id = bytes(16)  # another document fills the one slot
        dispatcher.add(first)
        dispatcher.add(job(expires_at=NOW + 10))  # waits in the heap
        await turns()
        clock.advance(20)
        dispatcher.fire_due()  # it expires while queued
        dispatcher.add(job())  # redelivered: a new job under the same key
        await turns()
        for _ in range(3):  # free the slot, and every slot after it
            for _org, acked in held:
                if not acked.done():
                    acked.set_result(True)
            await turns()
        stop.set()
        async with asyncio.timeout(30):
            await task

    assert len(held) == 2  # the first document, then the redelivered one once
    assert loop_errors == []
