"""EXPIRED and DEAD are numbered in the commit that moves their deliveries to that state.

The sender hears EXPIRED (or DEAD) from a receipt batch the store numbers; the delivery's
state says whether any hub may still deliver it. Written in separate commits, a crash or a
replica that lost the recipient's lease between them could tell the sender EXPIRED while
the store still held the delivery as awaiting (and the new owner then delivered it: the
sender heard both), or store EXPIRED and never tell. In-process, with the real dispatcher,
issuer and SQLite store; the lease is the store's fence as the keeper sets it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from hubd.core.leases import BUCKETS, bucket_of
from hubd.core.states import DeliveryState
from hubd.engine.dispatch import Dispatcher
from hubd.engine.issuer import ReceiptIssuer
from hubd.engine.jobs import DispatchSettings, Job, Payload
from hubd.store import tables as t
from hubd.store.db import Store
from hubd.store.leases import LeaseLostError
from hubd.store.writes import Operation, owners
from runtime.clock import now_ms
from schemas.errors import StoreError
from schemas.labels import Classification, Precedence
from schemas.receipts import ReceiptStatus, verify_receipts
from tests.hub.test_hello_replay import Wire
from tests.hub.test_ingest_passes import until
from tests.hub.test_store import new_message
from tests.world import World, make_world

CHANNEL = "govnet"


@dataclass
class Rig:
    world: World
    store: Store
    wire: Wire
    dispatcher: Dispatcher
    msg_id: bytes


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    world = make_world()
    wire = Wire()
    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}") as store:
        stored = new_message(1, recipients=("jl.cc",))
        await store.submit(stored)
        issuer = ReceiptIssuer(world.directory.hub_id, world.hub_key, store, wire.send, now_ms)
        dispatcher = Dispatcher(
            store, wire.send, DispatchSettings(), issuer.outcome, outcomes=issuer
        )
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        yield Rig(world, store, wire, dispatcher, stored.row["msg_id"])
        stop.set()
        async with asyncio.timeout(30):
            await task


def expiring(rig: Rig, in_ms: int) -> Job:
    """The stored delivery to jl.cc (offline), due to expire in ``in_ms``."""
    return Job(
        msg_id=rig.msg_id,
        recipient="jl.cc",
        channel=CHANNEL,
        precedence=Precedence.ROUTINE,
        classification=Classification.INTERNAL,
        sender="jl.gov",
        origin=CHANNEL,
        expires_at=now_ms() + in_ms,
        payload=Payload(b"frame-1", b"body", None, 4),
    )


async def stored_state(rig: Rig) -> str:
    rows = await rig.store.read(select(t.deliveries.c.state))
    return str(rows[0][0])


async def numbered(rig: Rig) -> int:
    return len(await rig.store.read(select(t.receipt_outbox.c.seq)))


async def test_an_expiry_is_stored_and_numbered_together_and_reaches_the_sender_once(
    rig: Rig,
) -> None:
    rig.dispatcher.add(expiring(rig, 50))

    await until(lambda: rig.wire.batches, "the EXPIRED batch on the wire")

    assert await stored_state(rig) == DeliveryState.EXPIRED.value
    assert await numbered(rig) == 1
    assert rig.wire.seqs("jl.gov") == [1]
    frame = (await rig.store.read(select(t.receipt_outbox.c.frame)))[0][0]
    batch = verify_receipts(bytes(frame), rig.world.directory).batch
    assert [(e.msg_id, e.recipient, e.status) for e in batch.entries] == [
        (rig.msg_id, "jl.cc", ReceiptStatus.EXPIRED)
    ]


async def test_a_replica_that_lost_the_recipients_lease_tells_the_sender_nothing(
    rig: Rig,
) -> None:
    """Its EXPIRED state is refused by the fence: so is the receipt, and neither is kept
    for later; the delivery stays awaiting in the store for the recipient's new owner,
    which expires (or delivers) it and tells the sender itself."""
    moved = bucket_of("jl.cc", BUCKETS)
    refused: list[int] = []

    def fence_for(ops: Sequence[Operation]) -> None:
        if "jl.cc" in owners(ops):  # the keeper no longer holds jl.cc's bucket
            refused.append(len(ops))
            raise LeaseLostError("a", {moved})

    rig.store.fence_for = fence_for
    # It believed it owned jl.cc when the expiry fired (paused past its lease just after);
    # its keeper knows better once the commit was refused.
    rig.dispatcher.owns = lambda org: not (refused and org == "jl.cc")
    rig.dispatcher.add(expiring(rig, 50))

    await until(lambda: refused, "the expiry's commit")
    assert await rig.dispatcher.flush()  # the retry, now: what was given back (nothing)

    assert refused[0] == 2  # the state and its receipt, in one write
    assert await stored_state(rig) == DeliveryState.PENDING.value
    assert await numbered(rig) == 0
    assert rig.wire.batches == []
    assert rig.dispatcher.job(rig.msg_id, "jl.cc") is None


async def test_a_refused_commit_keeps_the_expiry_and_its_receipt_for_the_next_one(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit = rig.store.submit_many
    failures: list[list[str]] = []

    async def refusing_once(ops: Sequence[Operation]) -> list[object]:
        if not failures and any(type(op).__name__ == "QueueReceipts" for op in ops):
            failures.append([type(op).__name__ for op in ops])
            raise StoreError("disk I/O error (injected)", retriable=True)
        return await submit(ops)

    monkeypatch.setattr(rig.store, "submit_many", refusing_once)
    rig.dispatcher.add(expiring(rig, 50))

    await until(lambda: failures, "the refused commit")
    assert failures == [["UpdateDeliveries", "QueueReceipts"]]
    assert await stored_state(rig) == DeliveryState.PENDING.value  # neither was stored
    assert rig.wire.batches == []

    await until(lambda: rig.wire.batches, "the next flush", within=10)
    assert await stored_state(rig) == DeliveryState.EXPIRED.value
    assert await numbered(rig) == 1
    assert rig.wire.seqs("jl.gov") == [1]


async def test_an_expiry_decided_before_the_lease_went_is_neither_written_nor_told_after(
    rig: Rig,
) -> None:
    """The expiry fired while this replica owned jl.cc; the lease round then found the bucket
    gone and dropped jl.cc's deliveries: the EXPIRED waiting for the next flush goes with
    them, and a flush that carried it anyway would be fenced as jl.cc's owner."""
    moved = bucket_of("jl.cc", BUCKETS)
    lost: list[str] = []

    def fence_for(ops: Sequence[Operation]) -> None:
        if set(lost) & owners(ops):
            raise LeaseLostError("a", {moved})

    rig.store.fence_for = fence_for
    rig.dispatcher.owns = lambda org: org not in lost
    rig.dispatcher.add(expiring(rig, -1))
    rig.dispatcher.fire_due()  # expired, as the owner
    assert rig.dispatcher.expired == 1
    lost.append("jl.cc")  # the lease round: the bucket went to another replica
    rig.dispatcher.drop(lambda org: org in lost)

    assert await rig.dispatcher.flush()

    assert await stored_state(rig) == DeliveryState.PENDING.value
    assert await numbered(rig) == 0
    assert rig.wire.batches == []
