"""Hellos against the receipt outbox, in-process with a real store and the real issuer.

A hello from a spoke that holds every numbered batch must cost no store read (10,000 spokes
reconnect at once after a broker restart); a spoke that is behind gets exactly the batches
after its ``last_seq``, and behind spokes whose hellos arrive together share one read. What
the hub keeps in memory for this must stay exact while batches are being numbered and after
a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hubd.core.states import DeliveryState
from hubd.engine.arrival import Arrival, Slow
from hubd.engine.dispatch import Dispatcher
from hubd.engine.intake import Ingest
from hubd.engine.issuer import ReceiptIssuer
from hubd.engine.jobs import DispatchSettings, Job, Payload
from hubd.engine.presence import Presence
from hubd.store.db import Store
from hubd.store.spool import Spool
from hubd.store.writes import QueueReceipts
from schemas import topics, transport
from schemas.ids import new_msg_id
from schemas.labels import Classification, Precedence
from tests.world import World, make_world

CHANNEL = "govnet"


@dataclass
class Wire:
    """What the hub handed to its broker connection, as (org, seq) of each receipt batch."""

    batches: list[tuple[str, int]] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def send(self, channel: str, org: str, payload: bytes) -> asyncio.Future[bool]:
        assert channel == CHANNEL
        match transport.decode(payload):
            case transport.ReceiptsMsg(_frame, seq):
                self.batches.append((org, seq))
            case transport.AskHelloMsg():
                self.asked.append(org)
            case other:
                raise AssertionError(f"unexpected {other!r}")
        acked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        acked.set_result(True)
        return acked

    def seqs(self, org: str) -> list[int]:
        return [seq for to, seq in self.batches if to == org]


@dataclass
class Hub:
    world: World
    store: Store
    wire: Wire
    issuer: ReceiptIssuer
    dispatcher: Dispatcher
    presence: Presence
    arrivals: int = 0

    def hello(self, org: str, last_seq: int) -> Slow | None:
        """A hello read from ``org``, checked as the intake's pass checks it."""
        self.arrivals += 1
        payload = transport.encode(transport.HelloMsg(last_seq))
        arrival = Arrival(CHANNEL, org, payload, self.world.now, self.arrivals)
        step = self.presence.hello_now(arrival, transport.HelloMsg(last_seq))
        assert step is None or isinstance(step, Slow)
        return step


def hub_on(store: Store) -> Hub:
    world = make_world()
    wire = Wire()
    issuer = ReceiptIssuer("jl.hub", world.hub_key, store, wire.send, lambda: world.now)
    dispatcher = Dispatcher(store, wire.send, DispatchSettings(), issuer.outcome, outcomes=issuer)
    presence = Presence(
        directory=lambda: world.directory,
        dispatcher=dispatcher,
        issuer=issuer,
        send=wire.send,
        clock=lambda: world.now,
    )
    return Hub(world, store, wire, issuer, dispatcher, presence)


def store_at(tmp_path: Path) -> Store:
    return Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")


async def number(store: Store, org: str, count: int) -> list[int]:
    """``count`` receipt batches numbered for ``org`` (as the issuer's flush stores them)."""
    ops = [QueueReceipts(org, CHANNEL, b"batch %d" % n, 1) for n in range(count)]
    numbers: list[int] = await store.submit_many(ops)
    return numbers


def sent_by(sender: str) -> Job:
    """A delivery of a document ``sender`` sent (to jl.jl), as the dispatcher holds it."""
    return Job(
        msg_id=new_msg_id(),
        recipient="jl.jl",
        channel=CHANNEL,
        precedence=Precedence.ROUTINE,
        classification=Classification.INTERNAL,
        sender=sender,
        origin=CHANNEL,
        expires_at=None,
        payload=Payload(b"frame", b"body", None, 4),
    )


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with store_at(tmp_path) as store:
        yield hub_on(store)


async def test_a_hello_from_a_spoke_holding_every_batch_is_answered_without_a_store_read(
    hub: Hub,
) -> None:
    held = await number(hub.store, "jl.cc", 3)
    reads = hub.store.reads

    assert hub.hello("jl.cc", held[-1]) is None  # nothing left to await
    assert hub.hello("jl.jl", 0) is None  # never numbered anything for it

    assert hub.store.reads == reads
    assert hub.wire.batches == []
    assert hub.dispatcher.is_online(CHANNEL, "jl.cc")
    assert hub.dispatcher.is_online(CHANNEL, "jl.jl")


async def test_a_behind_spoke_gets_exactly_the_batches_after_its_last_seq_in_order(
    hub: Hub,
) -> None:
    await number(hub.store, "jl.cc", 5)
    await number(hub.store, "jl.jl", 2)  # another spoke's batches are not its own

    step = hub.hello("jl.cc", 2)
    assert step is not None
    await step.work()

    assert hub.wire.seqs("jl.cc") == [3, 4, 5]
    assert hub.wire.seqs("jl.jl") == []


async def test_behind_spokes_whose_hellos_arrive_together_share_one_store_read(
    tmp_path: Path,
) -> None:
    async with store_at(tmp_path) as store:
        hub = hub_on(store)
        for org in ("jl.cc", "jl.jl", "jl.sp"):
            await number(store, org, 4)
        spool = Spool(tmp_path / "spool")
        ingest = Ingest(
            directory=lambda: hub.world.directory,
            store=store,
            spool=spool,
            dispatcher=hub.dispatcher,
            issuer=hub.issuer,
            send=hub.wire.send,
            clock=lambda: hub.world.now,
            max_skew_ms=10**9,
        )
        reads = store.reads
        # One read from the broker: three behind hellos, one up to date, one pass.
        for org, last_seq in (("jl.cc", 1), ("jl.jl", 3), ("jl.sp", 0), ("jl.ly", 0)):
            ingest.on_message(
                topics.up(CHANNEL, org), transport.encode(transport.HelloMsg(last_seq))
            )
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))
        try:
            async with asyncio.timeout(30):
                while True:  # polling in-process state, bounded above
                    if len(hub.wire.batches) == 3 + 1 + 4 and ingest.idle:
                        break
                    await asyncio.sleep(0.01)
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await task

        assert hub.wire.seqs("jl.cc") == [2, 3, 4]
        assert hub.wire.seqs("jl.jl") == [4]
        assert hub.wire.seqs("jl.sp") == [1, 2, 3, 4]
        assert hub.wire.seqs("jl.ly") == []
        assert store.reads - reads == 1


async def test_a_batch_numbered_while_a_hello_is_checked_reaches_the_spoke(hub: Hub) -> None:
    held = (await number(hub.store, "jl.cc", 2))[-1]
    reads = hub.store.reads
    # An EXPIRED for jl.cc is being numbered: its commit is under way, not yet durable.
    hub.issuer.outcome(sent_by("jl.cc"), DeliveryState.EXPIRED, hub.world.now)
    flushing = asyncio.create_task(hub.dispatcher.flush())
    await asyncio.sleep(0)  # the flush has handed its batch to the store's writer
    assert hub.store.numbered("jl.cc", CHANNEL) == held, "the commit finished too early"

    # The spoke's hello names the last batch durable so far: nothing to read, ...
    assert hub.hello("jl.cc", held) is None
    await flushing
    # ... and the batch being numbered is handed over once durable, after the hello.
    assert hub.wire.seqs("jl.cc") == [held + 1]
    assert hub.store.reads == reads
    # A hello naming the old number, read once that commit is durable, gets it from the
    # store (if the live hand-over reached the spoke too, it drops the repeat).
    behind = hub.hello("jl.cc", held)
    assert behind is not None
    await behind.work()
    assert hub.wire.seqs("jl.cc") == [held + 1, held + 1]


async def test_after_a_restart_hellos_are_judged_by_the_numbers_the_store_holds(
    tmp_path: Path,
) -> None:
    async with store_at(tmp_path) as store:
        await number(store, "jl.cc", 4)
        # jl.jl holds a number this store never wrote (a store restored from a backup)
        first = hub_on(store)
        step = first.hello("jl.jl", 9)
        assert step is not None
        await step.work()
        assert store.numbered("jl.jl", CHANNEL) == 9

    async with store_at(tmp_path) as store:
        hub = hub_on(store)
        reads = store.reads
        assert hub.hello("jl.cc", 4) is None
        assert hub.hello("jl.jl", 9) is None  # the advanced numbering is kept
        assert store.reads == reads

        behind = hub.hello("jl.cc", 2)
        assert behind is not None
        await behind.work()
        assert hub.wire.seqs("jl.cc") == [3, 4]
        assert store.reads == reads + 1
