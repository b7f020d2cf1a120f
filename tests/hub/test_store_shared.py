"""A store shared by replicas (hubd.store.shared): several :class:`Store` objects on one
PostgreSQL database, each with its own writer connection, as several hubd processes have.

What must hold with several writers: the audit ledger is one chain and one Merkle tree
that verify; each destination's receipt batches are numbered 1, 2, 3, ... without a gap
or a repeat, whoever numbered them; a caller whose lease was lost is refused and rolled
back while the rest of its group commit lands; a new message with deliveries is announced
to the other replicas when its commit lands.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import structlog.testing
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from hubd.core.leases import LeaseSettings, bucket_of
from hubd.ops.ledgeraudit import verify_store_chain, verify_store_ledger
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.db import Store
from hubd.store.leasekeeper import LeaseKeeper
from hubd.store.leases import Fence, LeaseLostError, read_ownership
from hubd.store.shared import JOBS_CHANNEL, WRITERS_LOCK
from hubd.store.writes import Announce, AppendAudit, Operation, QueueReceipts
from schemas.errors import StoreError
from schemas.ids import msg_id_text
from tests.hub.test_store import NOW, msg_id, new_message

FAST = LeaseSettings(lease_ms=1_000, renew_ms=250)


@pytest.fixture
async def replicas(pg_url: str) -> AsyncIterator[list[Store]]:
    """Three stores on one database, as three replicas (each opened, each shared)."""
    async with AsyncExitStack() as stack:
        stores = [await stack.enter_async_context(Store(pg_url, shared=True)) for _ in range(3)]
        for n, store in enumerate(stores):
            store.replica = f"r{n}"  # as join() names them
        yield stores


def queue(dest: str, n: int) -> QueueReceipts:
    return QueueReceipts(dest, "govnet", b"batch %d for %s" % (n, dest.encode()), NOW + n)


def audit(n: int) -> AppendAudit:
    return AppendAudit([AuditEvent("hub.note", NOW + n, None, None, {"n": n})])


async def test_three_writers_extend_one_chain_and_tree_that_verify(
    replicas: list[Store], pg_url: str
) -> None:
    async def writer(store: Store, first: int) -> None:
        for i in range(first, first + 40):
            ops: list[Operation] = [audit(i)]
            if i % 4 == 0:
                ops.append(new_message(i))
            await store.submit_many(ops)

    await asyncio.gather(*(writer(s, 1000 * k) for k, s in enumerate(replicas)))

    size, problems = await verify_store_chain(pg_url)
    assert (size, problems) == (120 + 30, [])
    # the tree a checkpoint signs is the one the rows give, whoever wrote last
    report = await verify_store_ledger(pg_url, {})
    assert report.ok, report.problems
    assert report.size == 150


async def test_each_destinations_batches_are_numbered_without_gap_or_repeat_across_writers(
    replicas: list[Store],
) -> None:
    dests = ("jl.gov", "jl.cc", "jl.jl")

    async def writer(store: Store, k: int) -> list[tuple[str, int]]:
        got = []
        for i in range(30):
            dest = dests[(i + k) % len(dests)]
            got.append((dest, await store.submit(queue(dest, 100 * k + i))))
        return got

    results = await asyncio.gather(*(writer(s, k) for k, s in enumerate(replicas)))
    numbers: dict[str, list[int]] = {d: [] for d in dests}
    for got in results:
        for dest, seq in got:
            numbers[dest].append(seq)
    assert {d: sorted(n) for d, n in numbers.items()} == {d: list(range(1, 31)) for d in dests}
    # and what a hello reads is the store's number, not one replica's memory
    for store in replicas:
        assert [await store.numbered_now(d, "govnet") for d in dests] == [30, 30, 30]


async def test_a_writer_whose_lease_was_lost_is_refused_and_the_rest_of_its_commit_lands(
    replicas: list[Store],
) -> None:
    ours, other = replicas[0], replicas[1]
    engine = ours.engine
    async with LeaseKeeper(engine, replica="r-ours", settings=FAST) as keeper:
        # a lone live keeper holds every bucket; its fence is what jl.gov's writes carry
        bucket = bucket_of("jl.gov")
        held = keeper.fence(["jl.gov"])
        assert held.tokens == {bucket: keeper.held[bucket]}
    # left: every lease released (or, on a machine too busy for the release to finish in
    # time, run out), so the fence names a token nobody holds now
    async with asyncio.timeout(30):
        while True:  # polling the database, bounded above
            if (await ours.read_sync(read_ownership)).leases[bucket].holder is None:
                break
            await asyncio.sleep(0.1)
    fences: list[Fence | None] = []
    ours.fence_for = lambda _ops: fences.pop(0)
    fences += [held, None]
    results: list[object] = await asyncio.gather(
        ours.submit(new_message(1)), ours.submit(new_message(2)), return_exceptions=True
    )
    refused, landed = results
    assert isinstance(refused, LeaseLostError)
    assert bucket in refused.buckets
    assert not isinstance(landed, BaseException)
    rows = await other.read(select(t.messages.c.msg_id))
    assert [bytes(r[0]) for r in rows] == [msg_id(2)]
    assert ours.writable  # a lost lease is not a failing store


async def test_a_new_message_with_deliveries_is_announced_to_the_other_replicas(
    replicas: list[Store], pg_url: str
) -> None:
    heard: list[tuple[int, str]] = []
    arrived = asyncio.Event()
    async with replicas[1].engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None

        def note(_c: object, pid: int, _channel: str, payload: str) -> None:
            heard.append((pid, payload))
            arrived.set()

        await driver.add_listener(JOBS_CHANNEL, note)
        await replicas[0].submit_many([new_message(7), new_message(8, recipients=()), audit(1)])
        async with asyncio.timeout(10):
            await arrived.wait()
        await asyncio.sleep(0.2)  # a second announcement (there must be none) would be here
        assert heard == [(replicas[0].backend_pid, f"r0 {msg_id_text(msg_id(7))}")]
        # a redelivery's deliveries, moved back to PENDING, are announced the same way
        arrived.clear()
        await replicas[2].submit(Announce([msg_id(8), msg_id(7)]))
        async with asyncio.timeout(10):
            await arrived.wait()
        await driver.remove_listener(JOBS_CHANNEL, note)
    expected = ",".join(msg_id_text(msg_id(n)) for n in (8, 7))
    assert heard[1:] == [(replicas[2].backend_pid, f"r2 {expected}")]


async def test_a_lone_hub_on_postgresql_writes_as_before(pg_url: str) -> None:
    """Not shared: no announcement, the numbering in memory (the lone hub's fast path)."""
    async with Store(pg_url) as store:
        assert not store.shared
        assert await store.submit(queue("jl.gov", 1)) == 1
        assert store.numbered("jl.gov", "govnet") == 1
        rows = await store.read(select(func.count()).select_from(t.receipt_outbox))
        assert rows[0][0] == 1


async def test_a_replica_frozen_inside_a_commit_holds_the_others_up_for_seconds_not_forever(
    replicas: list[Store],
) -> None:
    """A replica stopped (SIGSTOP) in the middle of a commit holds the writers' lock: the
    server ends its session once it idles in the transaction for IDLE_IN_COMMIT_MS, and
    the other replicas' commits go on (without it they would wait until it resumed)."""
    frozen = await replicas[0].engine.connect()  # a session as a replica's writer has
    try:
        await frozen.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITERS_LOCK})
        # ... and it stops here, its transaction open
        async with asyncio.timeout(30):  # a bound on a hang, not a timing claim
            assert await replicas[1].submit(queue("jl.gov", 1)) == 1
        with pytest.raises(DBAPIError):  # its session was ended under it
            await frozen.execute(text("SELECT 1"))
    finally:
        with contextlib.suppress(DBAPIError):
            await frozen.close()


async def test_a_replicas_session_ended_by_the_database_is_one_warning_and_the_next_commit_lands(
    replicas: list[Store],
) -> None:
    store, other = replicas[0], replicas[1]
    await store.submit(queue("jl.gov", 1))
    await other.read(select(func.pg_terminate_backend(store.backend_pid)))
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(StoreError):
            await store.submit(queue("jl.gov", 2))
        assert await store.submit(queue("jl.gov", 3)) == 2  # a new session, the same numbering
    assert [(e["event"], e["log_level"]) for e in logs] == [("store.session_ended", "warning")]
    assert "the write was rolled back" in logs[0]["error"]
    assert store.writable


async def test_an_older_token_is_refused_though_a_caller_in_the_same_commit_holds_a_newer_one(
    replicas: list[Store],
) -> None:
    """A write fenced before the bucket was lost and held again (a new token) must not ride
    on the fence of a later write in the same group commit."""
    ours = replicas[0]
    bucket = bucket_of("jl.gov")
    async with LeaseKeeper(ours.engine, replica="r-ours", settings=FAST) as first:
        older = first.fence(["jl.gov"])
    async with LeaseKeeper(ours.engine, replica="r-ours", settings=FAST) as again:
        newer = again.fence(["jl.gov"])
        assert newer.tokens[bucket] > older.tokens[bucket]
        fences: list[Fence | None] = [older, newer]
        ours.fence_for = lambda _ops: fences.pop(0)
        results: list[object] = await asyncio.gather(
            ours.submit(new_message(1)), ours.submit(new_message(2)), return_exceptions=True
        )
    stale, fresh = results
    assert isinstance(stale, LeaseLostError)
    assert stale.buckets == (bucket,)
    assert not isinstance(fresh, BaseException)
    rows = await replicas[1].read(select(t.messages.c.msg_id))
    assert [bytes(r[0]) for r in rows] == [msg_id(2)]


async def test_a_burst_of_numbering_questions_costs_one_read_and_each_gets_its_own_answer(
    replicas: list[Store],
) -> None:
    """Every hello to a replica asks the store how far its spoke's numbering goes (another
    replica may have numbered since): a reconnect storm's hellos share the read."""
    writer, asker = replicas[0], replicas[1]
    for n in range(3):
        await writer.submit(queue("jl.cc", n))
    await writer.submit(queue("jl.jl", 9))
    reads = asker.reads

    answers = await asyncio.gather(
        *(asker.numbered_now(org, "govnet") for org in ["jl.cc", "jl.jl", "jl.sp", "jl.cc"] * 50)
    )

    assert answers == [3, 1, 0, 3] * 50
    assert asker.reads - reads == 1
    assert await asker.numbered_now("jl.cc", "internet") == 0  # per channel
    await writer.submit(queue("jl.cc", 4))  # numbered since: the next question reads again
    assert await asker.numbered_now("jl.cc", "govnet") == 4
    assert asker.reads - reads == 3
