"""Leases on a real PostgreSQL (hubd.store.leases): keepers with connections of their own
share a database as replicas would; rounds are run by hand where the claim is about which
round does what, and by the keepers' own tasks where it is about converging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from hubd.core.leases import ChannelReach, LeaseSettings, bucket_of
from hubd.store import tables as t
from hubd.store.connections import engine_for
from hubd.store.leasekeeper import LeaseKeeper
from hubd.store.leases import (
    Fence,
    LeaseLostError,
    Ownership,
    check_fence,
    db_now,
    lost_buckets,
    reach_of,
    read_ownership,
)
from schemas.errors import StoreError
from tests.hub.test_migrations import migrate

FAST = LeaseSettings(lease_ms=1_000, renew_ms=250)
KeeperFactory = Callable[..., LeaseKeeper]


@pytest.fixture
async def pg(pg_url: str) -> str:
    await migrate(pg_url, "head")
    return pg_url


@pytest.fixture
async def keepers(pg: str) -> AsyncIterator[KeeperFactory]:
    """``keepers("a")``: a keeper with an engine (and so connections) of its own; each is
    left and its engine disposed at teardown."""
    async with AsyncExitStack() as stack:

        def make(replica: str, **kw: object) -> LeaseKeeper:
            engine = engine_for(pg)
            stack.push_async_callback(engine.dispose)
            kw.setdefault("settings", FAST)
            keeper = LeaseKeeper(engine, replica=replica, **kw)  # type: ignore[arg-type]
            stack.push_async_callback(keeper.leave)
            return keeper

        yield make


async def ownership(engine: AsyncEngine) -> Ownership:
    async with engine.connect() as conn:
        return await conn.run_sync(read_ownership)


def split(own: Ownership) -> Counter[str | None]:
    return Counter(x.holder for x in own.leases)


async def db_time(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(db_now(conn.dialect)))).scalar_one())


async def lease_rows(engine: AsyncEngine) -> dict[int, tuple[str | None, int, int, int]]:
    """bucket -> (holder, token, acquired_at, expires_at), as stored."""
    lt = t.hub_leases
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(lt.c.bucket, lt.c.holder, lt.c.token, lt.c.acquired_at, lt.c.expires_at)
        )
        return {int(r[0]): (r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows}


async def until_expired(engine: AsyncEngine, replica: str) -> None:
    """Wait (by the database's clock) until every lease ``replica`` holds has run out."""
    async with engine.connect() as conn:
        latest = (
            await conn.execute(
                select(t.hub_leases.c.expires_at)
                .where(t.hub_leases.c.holder == replica)
                .order_by(t.hub_leases.c.expires_at.desc())
                .limit(1)
            )
        ).scalar_one()
    while True:
        if await db_time(engine) > latest:
            return
        await asyncio.sleep(0.05)  # polling the database's clock


async def until(check: Callable[[], Awaitable[bool]], *, within: float = 30.0) -> None:
    """Ask again until ``check`` holds (what the keepers' tasks commit in their own time)."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)  # polling the store, bounded above


def org_in(buckets: Container[int]) -> str:
    """An organisation id whose bucket is in ``buckets``."""
    return next(f"org{n}.jl.gov" for n in range(100_000) if bucket_of(f"org{n}.jl.gov") in buckets)


def note(conn: Connection, fence: Fence, dest: str) -> None:
    """A write as owner: the fence, then a row (receipt_numbering, as good as any)."""
    check_fence(conn, fence)
    conn.execute(insert(t.receipt_numbering).values(dest=dest, channel="govnet", floor=1, set_at=0))


async def written(engine: AsyncEngine, dest: str) -> bool:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(t.receipt_numbering).where(t.receipt_numbering.c.dest == dest)
        )
        return rows.first() is not None


async def balanced_by_hand(*keepers: LeaseKeeper) -> None:
    """Run rounds in turn until the split is even and everything owned."""
    for _ in range(6):
        for k in keepers:
            await k.run_round()
    own = await ownership(keepers[0].engine)
    shares = [split(own)[k.replica] for k in keepers]
    assert None not in split(own)
    assert max(shares) - min(shares) <= 1


# ----------------------------------------------------------------- by hand


async def test_one_replica_alone_owns_every_bucket_and_its_beliefs_match_the_rows(
    keepers: KeeperFactory,
) -> None:
    a = keepers("a")
    await a.join()
    own = await ownership(a.engine)
    assert split(own) == Counter({"a": 256})
    assert dict(a.held) == {x.bucket: x.token for x in own.leases}
    assert {x.token for x in own.leases} == {1}  # every change of holder counts one up


async def test_replicas_joining_at_once_write_the_bucket_rows_once_and_share_them(
    keepers: KeeperFactory,
) -> None:
    a, b = keepers("a"), keepers("b")
    await asyncio.gather(a.join(), b.join())
    own = await ownership(a.engine)
    assert [x.bucket for x in own.leases] == list(range(256))
    assert set(a.held).isdisjoint(b.held)  # a bucket both wanted went to one of them
    assert len(a.held) + len(b.held) <= 256
    await balanced_by_hand(a, b)  # and the next rounds even it out


async def test_a_replica_that_counts_buckets_differently_refuses_to_join(
    keepers: KeeperFactory,
) -> None:
    await keepers("a").join()
    other = keepers("old", settings=LeaseSettings(lease_ms=1_000, renew_ms=250, buckets=128))
    with pytest.raises(StoreError, match="256 lease buckets"):
        await other.join()


async def test_a_joining_replica_gets_half_given_back_gracefully_not_by_expiry(
    keepers: KeeperFactory,
) -> None:
    told: list[tuple[frozenset[int], frozenset[int]]] = []
    a = keepers("a", on_change=lambda gained, lost: told.append((gained, lost)))
    b = keepers("b")
    await a.join()
    before = await ownership(a.engine)
    await b.join()  # b is short, nothing is free: it claims nothing yet
    assert split(await ownership(a.engine))["b"] == 0
    await a.run_round()  # a sees b: gives back its surplus
    assert split(await ownership(a.engine)) == Counter({"a": 128, None: 128})
    assert len(a.held) == 128
    await b.run_round()
    after = await ownership(a.engine)
    assert split(after) == Counter({"a": 128, "b": 128})
    assert dict(b.held) == {x.bucket: x.token for x in after.leases if x.holder == "b"}
    # a was told it had all, then that it gave back what b holds now
    assert told == [(frozenset(range(256)), frozenset()), (frozenset(), frozenset(b.held))]
    # long before a's first leases could have run out
    assert after.now < min(before.now + x.expires_in_ms for x in before.leases if x.expires_in_ms)


async def test_a_stopped_replicas_buckets_go_in_the_first_round_after_expiry_and_its_fenced_write_fails(  # noqa: E501
    keepers: KeeperFactory,
) -> None:
    # a's clock never moves (a paused process, or a clock far off): it goes on believing;
    # the database's clock decides all the same
    a, b = keepers("a", clock=lambda: 0), keepers("b")
    await a.join()
    await b.join()
    await balanced_by_hand(a, b)
    mine = dict(a.held)
    org = org_in(mine)
    fence = a.fence([org])  # taken while a owned it; a is paused before it writes
    bucket = bucket_of(org)

    before = await lease_rows(b.engine)
    latest = max(expires for holder, _, _, expires in before.values() if holder == "a")
    while True:  # b's rounds, every renew_ms, until one starts after a's leases ran out
        started = await db_time(b.engine)
        await b.run_round()
        if started > latest:
            break
        await asyncio.sleep(FAST.renew_ms / 1000)
    after = await lease_rows(b.engine)
    assert Counter(holder for holder, *_ in after.values()) == Counter({"b": 256})
    for n, (holder, token, _, expires) in before.items():
        if holder == "a":  # never taken before it ran out, and under the next token
            assert after[n][2] >= expires
            assert after[n][1] == token + 1

    assert a.held == mine  # a resumes, still believing
    with pytest.raises(LeaseLostError) as lost:
        async with a.engine.begin() as conn:
            await conn.run_sync(note, fence, "from.a")
    assert lost.value.buckets == (bucket,)
    assert "已失去" in str(lost.value)
    assert "no longer holds" in str(lost.value)
    assert not await written(a.engine, "from.a")  # rolled back

    await a.run_round()  # and then it sees it
    assert bucket not in a.held or a.held[bucket] > mine[bucket]
    assert all(a.held.get(b_) != token for b_, token in mine.items())  # no old token left


async def test_a_lapsed_lease_fences_writes_even_unclaimed_and_comes_back_under_a_new_token(
    keepers: KeeperFactory,
) -> None:
    a = keepers("a", clock=lambda: 0)  # believes for ever: only the store says no
    await a.join()
    org = org_in(range(256))
    old = a.fence([org])
    await until_expired(a.engine, "a")
    with pytest.raises(LeaseLostError):  # nobody took it, yet a write past the lease fails
        async with a.engine.begin() as conn:
            await conn.run_sync(note, old, "expired")
    await a.run_round()  # claimed again, as any free bucket: a new token
    new = a.fence([org])
    assert new.tokens[bucket_of(org)] == old.tokens[bucket_of(org)] + 1
    with pytest.raises(LeaseLostError):
        async with a.engine.begin() as conn:
            await conn.run_sync(note, old, "old.token")
    async with a.engine.begin() as conn:
        await conn.run_sync(note, new, "new.token")
    assert not await written(a.engine, "expired")
    assert not await written(a.engine, "old.token")
    assert await written(a.engine, "new.token")


async def test_a_bucket_held_again_under_a_new_token_is_reported_lost_and_gained(
    keepers: KeeperFactory,
) -> None:
    """Between the two tokens the bucket was not this replica's (here: its lease lapsed;
    another could have written as owner): what the replica kept for it must be dropped,
    so on_change names it as lost as well as gained, though the bucket numbers match."""
    told: list[tuple[frozenset[int], frozenset[int]]] = []
    a = keepers("a", clock=lambda: 0, on_change=lambda gained, lost: told.append((gained, lost)))
    await a.join()
    told.clear()
    await until_expired(a.engine, "a")
    await a.run_round()  # every bucket claimed again, each under a new token
    assert told == [(frozenset(range(256)), frozenset(range(256)))]
    await a.run_round()  # renewed under the same tokens: nothing moved
    assert len(told) == 1


async def test_a_batch_for_many_buckets_learns_exactly_which_it_lost(
    keepers: KeeperFactory,
) -> None:
    a, b = keepers("a"), keepers("b")
    await a.join()
    everything = Fence("a", dict(a.held))  # a batch fenced while a held all
    await b.join()
    await a.run_round()  # gives half back
    await b.run_round()  # and b takes it
    async with a.engine.begin() as conn:
        lost = await conn.run_sync(lost_buckets, everything)
    assert lost == frozenset(b.held)
    assert len(lost) == 128


async def test_a_takeover_waits_for_a_fenced_write_in_flight_and_lands_after_it(
    keepers: KeeperFactory,
) -> None:
    a, b = keepers("a", clock=lambda: 0), keepers("b")
    await a.join()
    await b.join()
    await balanced_by_hand(a, b)
    org = org_in(a.held)
    bucket = bucket_of(org)
    fence = a.fence([org])

    async with a.engine.begin() as conn:
        await conn.run_sync(check_fence, fence)  # holds the row until this commits
        await until_expired(b.engine, "a")
        async with asyncio.timeout(10):  # a claim that waited for the write would hang here
            await b.run_round()  # claims a's other buckets, skips the one being written
        own = await ownership(b.engine)
        assert own.leases[bucket].holder is None  # expired, not taken
        assert split(own)["b"] == 255
        await conn.run_sync(
            lambda c: c.execute(
                insert(t.receipt_numbering).values(
                    dest="in.flight", channel="govnet", floor=1, set_at=0
                )
            )
        )
    assert await written(a.engine, "in.flight")  # it was a's, and it committed first
    await b.run_round()
    assert split(await ownership(b.engine)) == Counter({"b": 256})
    with pytest.raises(LeaseLostError):
        async with a.engine.begin() as conn:
            await conn.run_sync(check_fence, fence)


async def test_a_renewal_never_waits_for_the_replicas_own_write_in_flight(
    keepers: KeeperFactory,
) -> None:
    a = keepers("a")
    await a.join()
    org = org_in(range(256))
    bucket = bucket_of(org)
    async with a.engine.begin() as conn:
        await conn.run_sync(check_fence, a.fence([org]))  # a write under way ...
        before = (await lease_rows(a.engine))[bucket]
        await a.run_round()  # ... and a round (bounded by a lease) renews all the same
        after = (await lease_rows(a.engine))[bucket]
    assert after[:2] == before[:2] == ("a", a.held[bucket])
    assert after[3] > before[3]


async def test_a_round_the_store_does_not_answer_gives_up_after_a_lease_and_the_next_one_works(
    keepers: KeeperFactory,
) -> None:
    a = keepers("a")
    await a.join()
    async with a.engine.connect() as blocker:
        await blocker.execute(text("LOCK TABLE hub_replicas IN ACCESS EXCLUSIVE MODE"))
        with pytest.raises(StoreError, match="longer than a lease"):
            await a.run_round()  # its heartbeat waits on the lock
        await blocker.rollback()
    rounds = a.rounds
    await a.run_round()
    assert a.rounds == rounds + 1
    # they ran out meanwhile: claimed again, under new tokens
    assert dict(a.held) == dict.fromkeys(range(256), 2)


async def test_a_graceful_leave_releases_at_once_and_the_others_take_them_next_round(
    keepers: KeeperFactory,
) -> None:
    a, b, c = keepers("a"), keepers("b"), keepers("c")
    for k in (a, b, c):
        await k.join()
    await balanced_by_hand(a, b, c)
    before = await ownership(a.engine)
    assert sorted(split(before).values()) == [85, 85, 86]

    await a.leave()
    assert a.held == {}
    own = await ownership(b.engine)
    assert split(own)["a"] == 0
    assert "a" not in {r.id for r in own.replicas}
    await b.run_round()
    await c.run_round()
    await b.run_round()
    after = await ownership(b.engine)
    assert split(after) == Counter({"b": 128, "c": 128})
    # by release, not expiry: a's leases had not run out yet
    a_expiry = min(
        before.now + x.expires_in_ms
        for x in before.leases
        if x.holder == "a" and x.expires_in_ms is not None
    )
    assert after.now < a_expiry


async def test_a_replicas_own_clock_never_reaches_the_rows(keepers: KeeperFactory) -> None:
    # a monotonic clock ten hours ahead: leases still last one lease by the database's clock
    a = keepers("a", clock=lambda: time.monotonic_ns() // 1_000_000 + 36_000_000)
    await a.join()
    own = await ownership(a.engine)
    assert {x.holder for x in own.leases} == {"a"}
    assert all(0 < (x.expires_in_ms or 0) <= FAST.lease_ms for x in own.leases)
    assert all(0 <= (x.held_for_ms or 0) < FAST.lease_ms for x in own.leases)
    assert len(a.held) == 256


async def test_ownership_shows_replicas_what_they_hold_and_how_old_the_leases_are(
    keepers: KeeperFactory,
) -> None:
    a, b = keepers("a", host="hub1", pid=11), keepers("b", host="hub2", pid=22)
    await a.join()
    await b.join()
    await balanced_by_hand(a, b)
    await asyncio.sleep(0.1)
    own = await ownership(a.engine)
    assert [(r.id, r.host, r.pid, r.live, r.buckets) for r in own.replicas] == [
        ("a", "hub1", 11, True, 128),
        ("b", "hub2", 22, True, 128),
    ]
    assert own.unowned == ()
    for x in own.leases:
        assert x.held_for_ms is not None
        assert x.renewed_ago_ms is not None
        assert x.held_for_ms >= x.renewed_ago_ms >= 100  # the database's clock moved on
        assert x.expires_in_ms is not None
        assert x.expires_in_ms <= FAST.lease_ms

    await until_expired(a.engine, "a")  # neither renews any more
    await until_expired(a.engine, "b")
    own = await ownership(a.engine)
    assert len(own.unowned) == 256  # expired leases read as unowned
    assert [(r.id, r.live, r.buckets) for r in own.replicas] == [
        ("a", False, 0),
        ("b", False, 0),
    ]


# ----------------------------------------------------------------- the keepers' own tasks


class Gate:
    """An injectable sleep that blocks while closed: the task stops as a SIGSTOP would."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.open.wait()


@pytest.mark.parametrize("replicas", [2, 3])
async def test_keepers_converge_to_an_even_split_of_every_bucket(
    keepers: KeeperFactory, replicas: int
) -> None:
    async with AsyncExitStack() as stack:
        running = [await stack.enter_async_context(keepers(f"r{n}")) for n in range(replicas)]

        async def even() -> bool:
            own = await ownership(running[0].engine)
            shares = [split(own)[k.replica] for k in running]
            return None not in split(own) and max(shares) - min(shares) <= 1

        await until(even)
        for k in running:  # each one's beliefs are the rows, a round later at the latest
            await k.run_round()
        own = await ownership(running[0].engine)
        for k in running:
            assert dict(k.held) == {x.bucket: x.token for x in own.leases if x.holder == k.replica}


async def test_a_suspended_keepers_buckets_are_taken_and_it_is_fenced_when_it_resumes(
    keepers: KeeperFactory,
) -> None:
    gate = Gate()
    changes: list[tuple[frozenset[int], frozenset[int]]] = []
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            keepers(
                "a",
                sleep=gate.sleep,
                clock=lambda: 0,
                on_change=lambda gained, lost: changes.append((gained, lost)),
            )
        )
        for name in ("b", "c"):
            await stack.enter_async_context(keepers(name))

        async def a_has_its_share() -> bool:
            return split(await ownership(a.engine))["a"] >= 85

        await until(a_has_its_share)
        org = org_in(a.held)
        fence = a.fence([org])
        gate.open.clear()  # a's task stops between rounds

        async def taken_over() -> bool:
            own = await ownership(a.engine)
            return split(own) == Counter({"b": 128, "c": 128})

        await until(taken_over)
        with pytest.raises(LeaseLostError):
            async with a.engine.begin() as conn:
                await conn.run_sync(note, fence, "from.a")
        assert not await written(a.engine, "from.a")

        gate.open.set()

        async def rebalanced() -> bool:
            own = await ownership(a.engine)
            return sorted(split(own).values()) == [85, 85, 86]

        await until(rebalanced)
        assert changes[0][0]  # it gained first
        assert not changes[0][1]
        assert any(lost for _, lost in changes)  # and later saw what it lost


# ----------------------------------------------------------------- SQLite


async def test_on_sqlite_the_one_hub_holds_every_bucket_without_expiry_until_it_leaves(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await migrate(url, "head")
    engine = engine_for(url)
    try:
        async with LeaseKeeper(engine, replica="solo", settings=FAST) as solo:
            assert solo.sole_owner
            own = await ownership(engine)
            assert split(own) == Counter({"solo": 256})
            assert {x.expires_in_ms for x in own.leases} == {None}  # no expiry to show
            fence = solo.fence(["jl.gov", "jl.cc"])
            async with engine.begin() as conn:
                await conn.run_sync(note, fence, "solo.write")
            assert await written(engine, "solo.write")
            # a second hub on the same file (the state folder's lock forbids it) would
            # take every bucket under new tokens, and the first one's writes would fail
            async with LeaseKeeper(engine, replica="intruder", settings=FAST):
                with pytest.raises(LeaseLostError):
                    async with engine.begin() as conn:
                        await conn.run_sync(note, fence, "solo.late")
        own = await ownership(engine)
        assert split(own) == Counter({None: 256})
        assert own.replicas == ()
    finally:
        await engine.dispose()


# ----------------------------------------------------------------- real processes


class Replica:
    """tests/hub/leaseproc.py in a process of its own."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, name: str) -> Replica:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.hub.leaseproc",
            url,
            name,
            str(FAST.lease_ms),
            str(FAST.renew_ms),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        replica = cls(process)
        assert (await replica.ask(None))["event"] == "joined"
        return replica

    async def ask(self, command: str | None) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        if command is not None:
            self.process.stdin.write(f"{command}\n".encode())
            await self.process.stdin.drain()
        async with asyncio.timeout(30):
            while True:
                line = await self.process.stdout.readline()
                assert line, "the replica process exited"
                if line.startswith(b"{"):  # its structlog lines are not ours
                    answer: dict[str, Any] = json.loads(line)
                    return answer

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
                self.process.kill()
            await self.process.wait()


async def test_a_process_stopped_past_its_lease_cannot_write_as_owner_when_it_continues(
    pg: str,
) -> None:
    engine = engine_for(pg)
    replicas: list[Replica] = []
    try:
        one = await Replica.start(pg, "one")
        replicas.append(one)
        two = await Replica.start(pg, "two")
        replicas.append(two)

        async def even() -> bool:
            return split(await ownership(engine)) == Counter({"one": 128, "two": 128})

        await until(even)
        fenced = await one.ask("fence")  # about to write as owner of this bucket ...
        bucket, token = fenced["bucket"], fenced["token"]
        os.kill(one.process.pid, signal.SIGSTOP)  # ... when it is stopped

        async def taken_over() -> bool:
            return split(await ownership(engine)) == Counter({"two": 256})

        await until(taken_over)
        assert (await lease_rows(engine))[bucket][:2] == ("two", token + 1)
        os.kill(one.process.pid, signal.SIGCONT)

        assert await one.ask("write") == {"event": "lost", "buckets": [bucket]}
        assert not await written(engine, "by.one")
        held = await one.ask("held")
        assert held["tokens"].get(str(bucket)) != token  # it no longer believes it either
    finally:
        for replica in replicas:
            await replica.stop()
        await engine.dispose()


async def test_a_replica_that_cannot_serve_stands_aside_and_takes_its_share_back_when_it_can(
    keepers: KeeperFactory,
) -> None:
    """``ready`` False (the hub reaches no broker): it lets go of everything at once, sends
    no heartbeat (so the others count it out once its row runs out) and claims nothing;
    ready again, it takes its share back."""
    reachable = [True]
    a = keepers("a", ready=lambda: reachable[0])
    b = keepers("b")
    await a.join()
    await b.join()
    await balanced_by_hand(a, b)
    assert split(await ownership(a.engine)) == Counter({"a": 128, "b": 128})

    reachable[0] = False
    changes: list[tuple[int, int]] = []
    a._on_change = lambda gained, lost: changes.append((len(gained), len(lost)))
    await a.run_round()
    assert (a.held, a.aside, changes) == ({}, True, [(0, 128)])
    # its row runs out within a lease (no heartbeat); then b counts only itself
    await asyncio.sleep(FAST.lease_ms / 1000 + 0.1)
    for _ in range(3):
        await a.run_round()
        await b.run_round()
    own = await ownership(b.engine)
    assert split(own) == Counter({"b": 256})
    assert {r.id for r in own.replicas if r.live} == {"b"}  # counted out, not orphaned

    reachable[0] = True
    await balanced_by_hand(a, b)
    assert not a.aside
    assert split(await ownership(a.engine)) == Counter({"a": 128, "b": 128})


def reaching(*channels: str) -> ChannelReach:
    """A replica configured for govnet and secure that reaches ``channels`` of them."""
    return ChannelReach(frozenset({"govnet", "secure"}), frozenset(channels))


async def test_a_replica_cut_off_from_one_channel_gives_its_share_to_one_that_reaches_all(
    keepers: KeeperFactory,
) -> None:
    """Each says the channels it reaches with its heartbeat; one that misses a channel
    another reaches gives every bucket back (nobody would read its organisations' up topics
    on that channel) and takes its share again once it reaches it; when both miss the same
    channel (that broker is down for everyone) they share as before."""
    now_settings = LeaseSettings(lease_ms=1_000, renew_ms=250, reach_hold_ms=0)
    reach_a, reach_b = [reaching("govnet", "secure")], [reaching("govnet", "secure")]
    a = keepers("a", settings=now_settings, reach=lambda: reach_a[0])
    b = keepers("b", settings=now_settings, reach=lambda: reach_b[0])
    await a.join()
    await b.join()
    await balanced_by_hand(a, b)

    reach_b[0] = reaching("govnet")  # b's link to the secure channel's broker is gone
    for _ in range(3):
        await b.run_round()
        await a.run_round()
    own = await ownership(a.engine)
    assert split(own) == Counter({"a": 256})
    assert (dict(b.held), b.target, b.missing) == ({}, 0, frozenset({"secure"}))
    assert {r.id for r in own.replicas if r.live} == {"a", "b"}  # alive, only not sharing

    reach_a[0] = reaching("govnet")  # now the secure broker is down for both: alike
    await balanced_by_hand(a, b)
    assert b.missing == frozenset()

    reach_a[0] = reach_b[0] = reaching("govnet", "secure")
    await balanced_by_hand(a, b)
    assert split(await ownership(a.engine)) == Counter({"a": 128, "b": 128})


async def test_a_broker_lost_by_both_at_moments_apart_moves_nothing_a_lasting_cut_does(
    keepers: KeeperFactory,
) -> None:
    """Replicas see a shared broker go (each after its own grace) and come back (each after
    its own backoff) at different moments: within reach_hold nothing moves. A cut that lasts
    past it hands the share over."""
    clock = [0]
    hold = LeaseSettings(lease_ms=1_000, renew_ms=250, reach_hold_ms=5_000)
    reach_a, reach_b = [reaching("govnet", "secure")], [reaching("govnet", "secure")]
    moves: list[tuple[str, int, int]] = []

    def keeper(name: str, reach: list[ChannelReach]) -> LeaseKeeper:
        made = keepers(name, settings=hold, reach=lambda: reach[0], clock=lambda: clock[0])
        made._on_change = lambda gained, lost: moves.append((name, len(gained), len(lost)))
        return made

    a, b = keeper("a", reach_a), keeper("b", reach_b)
    await a.join()
    await b.join()
    await balanced_by_hand(a, b)
    moves.clear()

    async def rounds(seconds: float) -> None:
        for _ in range(int(seconds * 4)):  # a round every 250 ms of the keepers' clock
            clock[0] += 250
            await a.run_round()
            await b.run_round()

    reach_a[0] = reaching("govnet")  # a sees the secure broker gone first ...
    await rounds(2)
    reach_b[0] = reaching("govnet")  # ... b two seconds later
    await rounds(2)
    reach_a[0] = reaching("govnet", "secure")  # a is back first ...
    await rounds(3)
    reach_b[0] = reaching("govnet", "secure")  # ... b three seconds later
    await rounds(1)
    assert moves == []  # nothing moved on the way
    assert split(await ownership(a.engine)) == Counter({"a": 128, "b": 128})
    assert (a.missing, b.missing) == (frozenset(), frozenset())

    reach_b[0] = reaching("govnet")  # a cut that lasts
    await rounds(4)
    assert split(await ownership(a.engine)) == Counter({"a": 128, "b": 128})  # on hold
    await rounds(2)  # past reach_hold: b gives way, a takes its share
    assert split(await ownership(a.engine)) == Counter({"a": 256})
    assert b.missing == frozenset({"secure"})


async def test_a_poke_runs_the_next_round_at_once_not_after_the_interval(
    keepers: KeeperFactory,
) -> None:
    """A broker connection came (hubd pokes its keeper): a replica standing aside or just
    started takes its share now; the interval here is far longer than the test's bound."""
    reachable = [False]
    gained = asyncio.Event()
    slow = LeaseSettings(lease_ms=120_000, renew_ms=60_000)
    a = keepers(
        "a", ready=lambda: reachable[0], settings=slow, on_change=lambda _g, _l: gained.set()
    )
    async with a:
        assert (a.held, a.aside) == ({}, True)
        reachable[0] = True
        a.poke()
        async with asyncio.timeout(30):  # a bound on a hang: the interval is 60 s
            await gained.wait()
        assert (len(a.held), a.aside) == (256, False)


@pytest.mark.parametrize(
    "said",
    [
        None,
        "not json",
        "[" * 60_000,  # nested past the parser's recursion limit
        '["govnet"]',  # not an object
        '{"configured": ["govnet"]}',
        '{"configured": ["govnet"], "reached": [1]}',
        '{"configured": "govnet", "reached": []}',
        '{"configured": [], "reached": []}' + " " * 70_000,  # longer than any row we write
    ],
)
def test_a_replica_rows_reach_that_is_not_ours_is_read_as_unsaid(said: str | None) -> None:
    assert reach_of(said) is None


def test_a_replica_rows_reach_reads_back_as_it_was_said() -> None:
    said = reach_of('{"configured": ["govnet", "secure"], "reached": ["govnet"]}')
    assert said == ChannelReach(frozenset({"govnet", "secure"}), frozenset({"govnet"}))
    assert said.missing == {"secure"}
