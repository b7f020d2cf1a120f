"""kill -9 of hubd at random moments while several senders stream 1,000 messages.

Issue text: "kill -9 of hubd at random moments during a stream of 1,000 messages from
several senders: after restart, every ACCEPTED message reaches each recipient exactly once
(counted), and every sender has a receipt for every message it sent."

The spokes behave like real ones (:meth:`SimSpoke.start_reliable`): a sender keeps each
envelope until it holds the hub's ACCEPTED or REJECTED and resends the unanswered ones; a
recipient dedupes by msg_id (``received``) and counts raw arrivals (``deliveries``). The
kill moments come from ``random.Random(seed)``; the seed is printed, and
``GOVX_CRASH_SEED=<seed>`` replays the same plan (the same kill points and recipients;
the machine's timing still varies).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from sqlalchemy import func, select

from hubd.ops.ledgeraudit import verify_store_chain
from hubd.store import tables as t
from hubd.store.connections import engine_for
from schemas.ids import msg_id_text
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import HubSpawner, SpokeSpawner
from tests.hubproc import HubProcess, Mosquitto
from tests.spokesim import SimSpoke

SENDERS = ("jl.cc", "jl.jl", "jl.sp", "jl.ly")
RECIPIENTS = ("jl.gov", "jl.dept.health", "jl.yb")
RESEND_EVERY = 1.0  # seconds a sender waits for an answer before sending again
SETTLE = 90.0  # generous bound on a whole run (about 10 s here when nothing is wrong)


def crash_seed() -> int:
    value = os.environ.get("GOVX_CRASH_SEED")
    return int(value) if value else secrets.randbits(32)


def hub_store_url(hub: HubProcess) -> str:
    return hub.store_url or f"sqlite+aiosqlite:///{hub.folder / 'state' / 'hub.db'}"


async def eventually(predicate: Callable[[], bool], within: float | None = None) -> bool:
    """Poll ``predicate`` until it holds or ``within`` (SETTLE) seconds pass; its last value."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within or SETTLE):
            while True:  # polling state that several spokes and processes change
                if predicate():
                    break
                await asyncio.sleep(0.05)
    return predicate()


async def delivery_rows(url: str) -> dict[tuple[bytes, str], str]:
    """(msg_id, recipient) -> state of every delivery in the hub's store."""
    engine = engine_for(url)
    try:
        async with engine.connect() as conn:
            d = t.deliveries
            rows = (await conn.execute(select(d.c.msg_id, d.c.recipient, d.c.state))).all()
    finally:
        await engine.dispose()
    return {(bytes(r[0]), r[1]): r[2] for r in rows}


async def message_states(url: str) -> Counter[str]:
    engine = engine_for(url)
    try:
        async with engine.connect() as conn:
            m = t.messages
            rows = (await conn.execute(select(m.c.state, func.count()).group_by(m.c.state))).all()
    finally:
        await engine.dispose()
    return Counter({r[0]: int(r[1]) for r in rows})


async def settled_deliveries(
    url: str, expected: dict[tuple[bytes, str], str]
) -> dict[tuple[bytes, str], str]:
    """The store's delivery states once they equal ``expected``, or after SETTLE seconds."""
    rows: dict[tuple[bytes, str], str] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SETTLE):
            while True:  # polling another process's database
                rows = await delivery_rows(url)
                if rows == expected:
                    break
                await asyncio.sleep(0.2)
    return rows


@dataclass
class Stream:
    """One run: who sent what to whom, and where the hub was killed."""

    seed: int
    senders: dict[str, SimSpoke]
    recipients: dict[str, SimSpoke]
    to: dict[bytes, tuple[str, ...]] = field(default_factory=dict)  # msg_id -> recipients
    planned: int = 0  # kills planned
    kills: list[int] = field(default_factory=list)  # progress count at each kill
    sent: int = 0

    def progress(self) -> int:
        """Messages answered plus messages opened: the hub's work so far, which stands
        still while it is dead (so kill points do not bunch up behind a restart)."""
        answered = sum(len(s.sent) - len(s.outbox) for s in self.senders.values())
        return answered + sum(len(r.received) for r in self.recipients.values())

    def unanswered(self) -> dict[str, int]:
        return {o: len(s.outstanding()) for o, s in self.senders.items() if s.outstanding()}

    def accepted_for(self, recipient: str) -> set[bytes]:
        """msg_ids addressed to ``recipient`` whose sender holds the hub's ACCEPTED."""
        accepted = {
            m
            for s in self.senders.values()
            for m in s.sent
            if (a := s.answer(m)) is not None and a.status is ReceiptStatus.ACCEPTED
        }
        return {m for m, to in self.to.items() if recipient in to and m in accepted}

    def all_delivered(self) -> bool:
        return all(
            self.accepted_for(r) <= spoke.received.keys() for r, spoke in self.recipients.items()
        )

    def describe(self) -> str:
        return f"seed {self.seed} (GOVX_CRASH_SEED={self.seed} replays it), kills at {self.kills}"


async def run_stream(
    hub: HubProcess,
    spawn_spoke: SpokeSpawner,
    *,
    seed: int,
    senders: tuple[str, ...],
    recipients: tuple[str, ...],
    per_sender: int,
    kills: int,
) -> Stream:
    """Stream ``per_sender`` messages from each sender; SIGKILL and restart hubd ``kills``
    times at random points of the run; return once every message is answered and every
    ACCEPTED one opened by each of its recipients (or SETTLE seconds have passed)."""
    print(f"\ncrash seed {seed}")
    deadline = asyncio.get_running_loop().time() + SETTLE

    def left() -> float:
        return max(deadline - asyncio.get_running_loop().time(), 0.001)

    rng = random.Random(seed)
    plan = {
        s: [tuple(rng.sample(recipients, rng.choice((1, 2)))) for _ in range(per_sender)]
        for s in senders
    }
    total = sum(1 + len(to) for p in plan.values() for to in p)  # progress at the very end
    points = sorted(rng.sample(range(1, total), kills))
    downtimes = [rng.uniform(0.0, 0.5) for _ in points]
    stream = Stream(
        seed,
        senders={s: spawn_spoke(hub, s) for s in senders},
        recipients={r: spawn_spoke(hub, r) for r in recipients},
        planned=kills,
    )
    for spoke in [*stream.recipients.values(), *stream.senders.values()]:
        spoke.start_reliable(resend_every=RESEND_EVERY)
        await spoke.connect()

    async def send_all(org: str) -> None:
        spoke = stream.senders[org]
        for to in plan[org]:
            sealed = await spoke.send_reliably(to, contents=[secrets.token_bytes(64)])
            stream.to[sealed.header.msg_id] = to
            stream.sent += 1
            await asyncio.sleep(0.005)  # pacing: a stream, not one burst

    async def kill_at_random_moments() -> None:
        for point, downtime in zip(points, downtimes, strict=True):
            if not await eventually(lambda: stream.progress() >= point, left()):  # noqa: B023
                return  # the run stalled before this kill point; check_stream says where
            hub.kill9()
            stream.kills.append(stream.progress())
            await asyncio.sleep(downtime)  # the hub stays dead for a while
            await asyncio.to_thread(hub.start)

    async with asyncio.TaskGroup() as tasks:  # each task is bounded by the deadline
        for org in senders:
            tasks.create_task(send_all(org))
        tasks.create_task(kill_at_random_moments())
    print(f"kills at progress {stream.kills} of {total}")
    await eventually(lambda: not stream.unanswered() and stream.all_delivered(), left())
    return stream


async def check_stream(stream: Stream, hub: HubProcess) -> None:
    """The issue's claims, each stated exactly."""
    why = stream.describe()
    # Every sender holds an answer for every message it sent, and here it is ACCEPTED.
    assert not stream.unanswered(), f"senders still without an answer: {stream.unanswered()}; {why}"
    for org, spoke in stream.senders.items():
        refused = {
            msg_id_text(m): (a.reason, a.detail)
            for m in spoke.sent
            if (a := spoke.answer(m)) is not None and a.status is not ReceiptStatus.ACCEPTED
        }
        assert refused == {}, f"{org} got REJECTED: {refused}; {why}"
    assert sum(len(s.sent) for s in stream.senders.values()) == len(stream.to)

    # Each recipient opened exactly the messages ACCEPTED for it: none lost, none that was
    # never ACCEPTED, each once in its inbox however many times it arrived.
    for org, spoke in stream.recipients.items():
        expected = stream.accepted_for(org)
        opened = set(spoke.received)
        missing, unexpected = expected - opened, opened - expected
        assert not missing, f"{org} never received {len(missing)} ACCEPTED messages; {why}"
        assert not unexpected, f"{org} opened {len(unexpected)} never ACCEPTED; {why}"
        assert len(spoke.received) == len(expected) == sum(1 for n in spoke.deliveries.values())
        assert all(spoke.deliveries[m] >= 1 for m in expected)
        assert not spoke.refused, f"{org} refused what it got: {spoke.refused[:3]}; {why}"

    # The hub agrees: one delivery row per (message, recipient), every one DELIVERED once
    # the recipients' receipts are in; every message stored once, ACCEPTED.
    url = hub_store_url(hub)
    expected_rows = {(m, r): "DELIVERED" for m, to in stream.to.items() for r in to}
    rows = await settled_deliveries(url, expected_rows)
    assert rows.keys() == expected_rows.keys(), f"delivery rows differ; {why}"
    states = Counter(rows.values())
    assert states == Counter({"DELIVERED": len(expected_rows)}), f"{states}; {why}"
    assert await message_states(url) == Counter({"ACCEPTED": len(stream.to)}), why

    # The audit chain survived the kills: every row links to the one before.
    checked, problems = await verify_store_chain(url)
    assert problems == [], f"audit chain broken after kills: {problems[:5]}; {why}"
    assert checked >= len(stream.to), why
    assert len(stream.kills) == stream.planned, f"hubd was killed {len(stream.kills)} times"

    raw = sum(sum(s.deliveries.values()) for s in stream.recipients.values())
    answers = sum(
        1
        for s in stream.senders.values()
        for m in s.sent
        for e in s.receipts[m]
        if e.status is ReceiptStatus.ACCEPTED
    )
    print(
        f"{len(stream.to)} messages, {len(expected_rows)} deliveries, {raw} raw arrivals, "
        f"{checked} audit rows, {answers} ACCEPTED receipts (resends answered again); {why}"
    )


@pytest.mark.slow
async def test_kill9_during_a_stream_of_1000_messages_loses_and_duplicates_nothing(
    mosquitto: Mosquitto, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(broker_port=mosquitto.port)
    stream = await run_stream(
        hub,
        spawn_spoke,
        seed=crash_seed(),
        senders=SENDERS,
        recipients=RECIPIENTS,
        per_sender=250,
        kills=3,
    )
    await check_stream(stream, hub)
    assert len(stream.to) == 1000


@pytest.mark.slow
async def test_kill9_with_the_embedded_broker_spokes_reconnect_and_nothing_is_lost(
    spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub()  # the broker lives and dies inside hubd
    stream = await run_stream(
        hub,
        spawn_spoke,
        seed=crash_seed(),
        senders=SENDERS[:3],
        recipients=RECIPIENTS[:2],
        per_sender=100,
        kills=3,
    )
    assert all(s.connections > 1 for s in [*stream.senders.values()]), (
        "every sender lost its broker with hubd and reconnected by itself"
    )
    await check_stream(stream, hub)


@pytest.mark.slow
async def test_kill9_with_a_postgresql_store_loses_and_duplicates_nothing(
    mosquitto: Mosquitto, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner, pg_url: str
) -> None:
    hub = spawn_hub(broker_port=mosquitto.port, store_url=pg_url)
    stream = await run_stream(
        hub,
        spawn_spoke,
        seed=crash_seed(),
        senders=SENDERS[:3],
        recipients=RECIPIENTS,
        per_sender=100,
        kills=3,
    )
    await check_stream(stream, hub)


@pytest.mark.slow
async def test_after_kill9_every_sender_gets_delivered_for_every_recipient(
    mosquitto: Mosquitto, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    """DELIVERED is news the sender cannot ask for: the hub keeps it in its numbered
    receipt outbox, and a spoke's hello (the last batch it holds with no gap before it)
    brings back whatever a crash kept from it."""
    hub = spawn_hub(broker_port=mosquitto.port)
    stream = await run_stream(
        hub,
        spawn_spoke,
        seed=crash_seed(),
        senders=SENDERS,
        recipients=RECIPIENTS,
        per_sender=150,
        kills=3,
    )
    why = stream.describe()
    assert not stream.unanswered(), why
    assert stream.all_delivered(), why
    expected_rows = {(m, r): "DELIVERED" for m, to in stream.to.items() for r in to}
    rows = await settled_deliveries(hub_store_url(hub), expected_rows)
    assert rows == expected_rows, f"the hub never recorded every DELIVERED; {why}"

    for spoke in stream.senders.values():  # the next connection says hello
        await spoke.disconnect()
        await spoke.connect()

    def lacking() -> list[tuple[str, str, str]]:
        return [
            (s.org, msg_id_text(m), r)
            for s in stream.senders.values()
            for m in s.sent
            for r in stream.to[m]
            if not s.has(m, ReceiptStatus.DELIVERED, r)
        ]

    await eventually(lambda: not lacking())
    lost = lacking()
    assert lost == [], (
        f"{len(lost)} DELIVERED receipts recorded by the hub never reached their senders, "
        f"even after hello: {lost[:5]}; {why}"
    )
