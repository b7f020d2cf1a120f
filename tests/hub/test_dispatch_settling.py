"""A delivery whose DELIVERED is being stored neither expires nor is given up meanwhile.

The recipient's receipt batch goes to the store with the delivery's new state; until that
commit answers, the dispatcher still holds the job. An expiry (or the last retry) falling
in that gap used to close the job as EXPIRED (or DEAD) and tell the sender so, and the
receipt, once durable, was forwarded too: the sender heard both. In-process, with a real
SQLite store.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hubd.core.states import DeliveryState, Event
from hubd.core.timers import SETTLING_RECHECK_MS
from hubd.engine.dispatch import Dispatcher
from hubd.engine.jobs import DispatchSettings, Job, Payload
from hubd.store.db import Store
from runtime.clock import now_ms
from schemas.labels import Classification, Precedence
from tests.hub.test_ingest_passes import until

MSG_ID = bytes(range(16))


@dataclass
class Rig:
    dispatcher: Dispatcher
    outcomes: list[tuple[bytes, str, DeliveryState]]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    outcomes: list[tuple[bytes, str, DeliveryState]] = []

    def outcome(job: Job, state: DeliveryState, _now: int) -> None:
        outcomes.append((job.msg_id, job.recipient, state))

    def publish(*_args: object) -> asyncio.Future[bool]:
        acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        acked.set_result(True)
        return acked

    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}") as store:
        settings = DispatchSettings(retry_initial=0.05, retry_max=0.05, max_attempts=1)
        dispatcher = Dispatcher(store, publish, settings, outcome)
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        yield Rig(dispatcher, outcomes)
        stop.set()
        async with asyncio.timeout(30):
            await task


def job(expires_in_ms: int | None) -> Job:
    return Job(
        msg_id=MSG_ID,
        recipient="jl.cc",
        channel="govnet",
        precedence=Precedence.ROUTINE,
        classification=Classification.INTERNAL,
        sender="jl.gov",
        origin="govnet",
        expires_at=None if expires_in_ms is None else now_ms() + expires_in_ms,
        payload=Payload(b"frame", b"body", None, 1),
    )


async def past(ms: int) -> None:
    """Let ``ms`` milliseconds of the dispatcher's timers run."""
    await asyncio.sleep(ms / 1000)


async def test_an_expiry_during_the_receipts_commit_waits_and_the_delivery_closes_delivered(
    rig: Rig,
) -> None:
    rig.dispatcher.add(job(expires_in_ms=100))  # the recipient is offline: it waits
    update = rig.dispatcher.settle(MSG_ID, "jl.cc", Event.DELIVERED, now_ms())
    assert update.state is DeliveryState.DELIVERED

    await past(100 + 2 * SETTLING_RECHECK_MS)  # expiry due, and asked again, meanwhile

    assert rig.outcomes == []
    assert rig.dispatcher.job(MSG_ID, "jl.cc") is not None
    closed = rig.dispatcher.confirmed(MSG_ID, "jl.cc", Event.DELIVERED, now_ms())
    assert closed is not None
    assert closed.state is DeliveryState.DELIVERED
    await past(2 * SETTLING_RECHECK_MS)
    assert rig.outcomes == []  # no EXPIRED for a delivered document
    assert rig.dispatcher.pending() == []


async def test_a_receipt_commit_that_failed_lets_the_delivery_expire_after_all(
    rig: Rig,
) -> None:
    rig.dispatcher.add(job(expires_in_ms=100))
    rig.dispatcher.settle(MSG_ID, "jl.cc", Event.DELIVERED, now_ms())
    await past(100)

    rig.dispatcher.unsettled(MSG_ID, "jl.cc")  # the store refused the batch

    await until(lambda: rig.outcomes, "the delivery to expire")
    assert rig.outcomes == [(MSG_ID, "jl.cc", DeliveryState.EXPIRED)]
    assert rig.dispatcher.pending() == []


async def test_giving_up_waits_for_a_receipt_being_stored(rig: Rig) -> None:
    rig.dispatcher.set_online("govnet", "jl.cc", online=True)
    rig.dispatcher.add(job(expires_in_ms=None))  # published at once; one attempt allowed
    await until(
        lambda: (
            (j := rig.dispatcher.job(MSG_ID, "jl.cc")) is not None and j.state is DeliveryState.SENT
        ),
        "the publish",
    )
    rig.dispatcher.settle(MSG_ID, "jl.cc", Event.DELIVERED, now_ms())

    await past(50 + 2 * SETTLING_RECHECK_MS)  # the retry that would give up is due

    assert rig.outcomes == []
    assert rig.dispatcher.confirmed(MSG_ID, "jl.cc", Event.DELIVERED, now_ms()) is not None
    await past(2 * SETTLING_RECHECK_MS)
    assert rig.outcomes == []


async def test_a_receipt_that_never_answers_holds_the_expiry_back_only_so_long(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    shorter = dataclasses.replace(
        rig.dispatcher.timer_settings, settling_limit_ms=2 * SETTLING_RECHECK_MS
    )
    monkeypatch.setattr(rig.dispatcher, "timer_settings", shorter)
    rig.dispatcher.add(job(expires_in_ms=100))
    rig.dispatcher.settle(MSG_ID, "jl.cc", Event.DELIVERED, now_ms())  # and nothing after

    await until(lambda: rig.outcomes, "the delivery to expire after all")
    assert rig.outcomes == [(MSG_ID, "jl.cc", DeliveryState.EXPIRED)]
