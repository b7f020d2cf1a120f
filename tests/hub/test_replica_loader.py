"""What a replica loads when it gains buckets (hubd.engine.replicas): the deliveries still
awaited by the recipients it now owns, none of another replica's, none already closed; and
what it drops when another replica recalls a document; on a real PostgreSQL with two lease
keepers that split the buckets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from hubd.core.leases import LeaseSettings
from hubd.core.states import DeliveryState
from hubd.engine.dispatch import Dispatcher
from hubd.engine.flows import StopDeliveries
from hubd.engine.jobs import DispatchSettings
from hubd.engine.replicas import Replicas
from hubd.store.connections import engine_for
from hubd.store.db import Store
from hubd.store.leasekeeper import LeaseKeeper
from hubd.store.writes import Announce, DeliveryUpdate, UpdateDeliveries
from tests.hub.test_ingest_passes import published, until
from tests.hub.test_leases_store import balanced_by_hand, org_in
from tests.hub.test_store import NOW, msg_id, new_message

LONG = LeaseSettings(lease_ms=60_000, renew_ms=20_000)  # rounds by hand: nothing runs out


@pytest.fixture
async def two_keepers(pg_url: str) -> AsyncIterator[tuple[Store, LeaseKeeper, LeaseKeeper]]:
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(Store(pg_url, shared=True))
        keepers = []
        for name in ("a", "b"):
            engine = engine_for(pg_url)
            stack.push_async_callback(engine.dispose)
            keeper = LeaseKeeper(engine, replica=name, settings=LONG)
            stack.push_async_callback(keeper.leave)
            await keeper.join()
            keepers.append(keeper)
        await balanced_by_hand(*keepers)
        yield store, keepers[0], keepers[1]


async def test_a_replica_loads_the_awaited_deliveries_of_the_recipients_it_owns_only(
    two_keepers: tuple[Store, LeaseKeeper, LeaseKeeper],
) -> None:
    store, mine, theirs = two_keepers
    store.replica = mine.replica
    ours, other = org_in(mine.held), org_in(theirs.held)
    await store.submit(new_message(1, recipients=(ours,)))  # awaited: to load
    await store.submit(new_message(2, recipients=(other,)))  # the other replica's
    await store.submit(new_message(3, recipients=(ours,)))  # closed since: not to load
    expired = DeliveryUpdate(msg_id(3), ours, DeliveryState.EXPIRED, 1, NOW + 10)
    await store.submit(UpdateDeliveries([expired], []))
    loop = asyncio.get_running_loop()
    dispatcher = Dispatcher(store, lambda *_: published(loop), DispatchSettings(), lambda *_: None)
    replicas = Replicas(mine, store)
    replicas.dispatcher = dispatcher
    stop = asyncio.Event()
    task = asyncio.create_task(replicas.run(stop))
    try:
        await until(lambda: replicas.handed_over > 0, "the gained buckets' deliveries")
        await asyncio.sleep(0.2)  # anything else it would load meanwhile
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task

    assert dispatcher.job(msg_id(1), ours) is not None
    assert dispatcher.job(msg_id(2), other) is None
    assert dispatcher.job(msg_id(3), ours) is None
    assert replicas.handed_over == 1


async def test_a_replica_drops_what_it_delivers_of_a_document_another_replica_recalled(
    two_keepers: tuple[Store, LeaseKeeper, LeaseKeeper], pg_url: str
) -> None:
    store, mine, theirs = two_keepers
    store.replica = mine.replica
    ours = org_in(mine.held)
    await store.submit(new_message(1, recipients=(ours,)))
    await store.submit(new_message(2, recipients=(ours,)))  # not recalled: kept
    loop = asyncio.get_running_loop()
    dispatcher = Dispatcher(store, lambda *_: published(loop), DispatchSettings(), lambda *_: None)
    replicas = Replicas(mine, store)
    replicas.dispatcher = dispatcher
    stop = asyncio.Event()
    task = asyncio.create_task(replicas.run(stop))
    try:
        await until(lambda: replicas.handed_over == 2, "the gained buckets' deliveries")
        async with Store(pg_url, shared=True) as other:  # the replica the sender's owner is
            other.replica = theirs.replica
            stopped = await other.submit_many(
                [StopDeliveries(msg_id(1), NOW + 20), Announce([msg_id(1)], recalled=True)]
            )
        assert stopped[0] == [ours]
        await until(lambda: dispatcher.job(msg_id(1), ours) is None, "the recalled job dropped")
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task

    assert dispatcher.job(msg_id(2), ours) is not None
