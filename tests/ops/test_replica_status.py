"""``hubctl status`` shows the hub replicas, who owns which organisations, and lease ages
(issue 15, hubd.ops.replicas).

Real lease rows: LeaseKeepers on one engine over a real PostgreSQL store (the rounds run
by hand, as in tests/hub/test_leases_store.py), a hub configuration and signed directory
written by HubProcess (no hub runs: status reads the store), and ``hubctl status`` run
for real through typer's CliRunner.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy import text as text_sql
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from hubd.core.leases import ChannelReach, LeaseSettings, bucket_of
from hubd.store import tables as t
from hubd.store.connections import engine_for
from hubd.store.leasekeeper import LeaseKeeper
from hubd.store.leases import db_now
from schemas.directory import Directory
from tests.hub.test_migrations import migrate
from tests.hubproc import HubProcess
from tests.world import World

# Rounds run by hand, and a lease long enough that none runs out while a test looks.
STEADY = LeaseSettings(lease_ms=600_000, renew_ms=1_000)
FAST = LeaseSettings(lease_ms=1_000, renew_ms=250)  # for the test that waits leases out
REPLICAS = "[replicas]\nenabled = true\nlease = 3.0\nrenew = 1.0\n"

KeeperFactory = Callable[..., LeaseKeeper]


@pytest.fixture
async def pg(pg_url: str) -> str:
    await migrate(pg_url, "head")
    return pg_url


@pytest.fixture
async def engine(pg: str) -> AsyncIterator[AsyncEngine]:
    shared = engine_for(pg)
    yield shared
    await shared.dispose()


@pytest.fixture
async def keepers(engine: AsyncEngine) -> AsyncIterator[KeeperFactory]:
    """``keepers("a")``: a keeper on the shared engine (a connection of its own), left at
    teardown."""
    async with AsyncExitStack() as stack:

        def make(
            replica: str,
            settings: LeaseSettings = STEADY,
            reach: Callable[[], ChannelReach] | None = None,
        ) -> LeaseKeeper:
            keeper = LeaseKeeper(
                engine,
                replica=replica,
                settings=settings,
                host=f"host-{replica}",
                pid=100,
                reach=reach,
            )
            stack.push_async_callback(keeper.leave)
            return keeper

        yield make


def config(world: World, directory: Directory, folder: Path, store: str, toml: str) -> str:
    """The hub's configuration and signed directory, written as a hub would have them."""
    hub = HubProcess(
        folder,
        world.hub_key,
        directory,
        broker_port=1883,  # a replica's brokers are external; no broker is reached here
        store_url=store,
        extra_toml=toml,
        metrics_port=None,
    )
    return str(hub.write())


async def status(cfg: str, store: str, *json_flag: str) -> str:
    argv = ["status", "--config", cfg, "--store", store, *json_flag]
    result = await asyncio.to_thread(CliRunner().invoke, hubctl_app, argv)
    assert result.exit_code == 0, result.output
    return result.stdout


async def replicas_json(cfg: str, store: str) -> Any:
    return json.loads(await status(cfg, store, "--json"))["replicas"]


async def balanced(*keepers: LeaseKeeper) -> None:
    """Join, then rounds in turn until the buckets are shared evenly."""
    for k in keepers:
        await k.join()
    for _ in range(4):
        for k in keepers:
            await k.run_round()
    assert sum(len(k.held) for k in keepers) == 256


def orgs_in(directory: Directory, keeper: LeaseKeeper) -> list[str]:
    return [o.id for o in directory.orgs if bucket_of(o.id) in keeper.held]


def line_with(text: str, *words: str) -> str:
    for line in text.splitlines():
        if all(w in line for w in words):
            return line
    raise AssertionError(f"no line with {words} in:\n{text}")


async def db_time(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(db_now(conn.dialect)))).scalar_one())


# ---------------------------------------------------------------------------- replicas at work


async def test_status_lists_each_replica_with_its_buckets_organisations_and_lease_ages(
    world: World, live_dir: Directory, tmp_path: Path, pg: str, keepers: KeeperFactory
) -> None:
    a, b = keepers("a"), keepers("b")
    await balanced(a, b)
    cfg = config(world, live_dir, tmp_path / "hub", pg, REPLICAS)

    report = await replicas_json(cfg, pg)
    text = await status(cfg, pg)

    assert report["live"] == 2
    assert report["buckets"] == 256
    assert report["lease_ms"] == STEADY.lease_ms  # as the replicas renew, not the config's 3 s
    shown = {r["id"]: r for r in report["replicas"]}
    assert set(shown) == {"a", "b"}
    for k in (a, b):
        r = shown[k.replica]
        assert (r["host"], r["pid"], r["live"], r["buckets"]) == (k.host, 100, True, 128)
        assert r["organisations"] == orgs_in(live_dir, k)
    assert sorted(shown["a"]["organisations"] + shown["b"]["organisations"]) == sorted(
        o.id for o in live_dir.orgs
    )  # every organisation of the directory has its one owner
    leases = report["leases"]
    assert [x["bucket"] for x in leases] == list(range(256))
    for x in leases:
        keeper = a if x["holder"] == "a" else b
        assert x["token"] == keeper.held[x["bucket"]]
        assert x["held_for_ms"] >= x["renewed_ago_ms"] >= 0
        assert x["renewed_ago_ms"] + x["expires_in_ms"] == STEADY.lease_ms
        assert x["unowned_for_ms"] is None
    assert report["oldest_renewal_ms"] == max(x["renewed_ago_ms"] for x in leases)
    assert report["soonest_expiry_ms"] == min(x["expires_in_ms"] for x in leases)
    assert report["unowned"]["buckets"] == []
    assert report["unowned"]["organisations"] == []
    assert report["warning"] is None

    head = line_with(text, "replicas: 2 live; 256 buckets, 256 held, 0 unowned")
    assert "lease 10m00s, by the database's clock" in head
    assert "oldest renewal" in head
    assert "soonest expiry in" in head
    for k in (a, b):
        row = line_with(text, k.replica, k.host, "live").split()
        assert row[:6] == [k.replica, k.host, "100", "live", "128", str(len(orgs_in(live_dir, k)))]
    assert "WARNING" not in text
    assert "(unowned)" not in text


async def test_a_replica_that_left_leaves_its_organisations_unowned_until_another_claims_them(
    world: World, live_dir: Directory, tmp_path: Path, pg: str, keepers: KeeperFactory
) -> None:
    a, b = keepers("a"), keepers("b")
    await balanced(a, b)
    left = orgs_in(live_dir, b)
    await b.leave()  # releases at once; a has not claimed them yet
    cfg = config(world, live_dir, tmp_path / "hub", pg, REPLICAS)

    report = await replicas_json(cfg, pg)
    text = await status(cfg, pg)

    assert [(r["id"], r["live"], r["buckets"]) for r in report["replicas"]] == [("a", True, 128)]
    unowned = report["unowned"]
    assert len(unowned["buckets"]) == 128
    assert unowned["organisations"] == left
    assert unowned["stranded_buckets"] == []  # released less than a lease ago
    assert report["warning"] is None
    released = [x for x in report["leases"] if x["holder"] is None]
    assert all(x["unowned_for_ms"] is not None for x in released)
    assert all(x["expires_in_ms"] is None for x in released)
    assert "replicas: 1 live; 256 buckets, 128 held, 128 unowned" in text
    assert line_with(text, "(unowned)").split() == [
        "(unowned)",
        "-",
        "-",
        "-",
        "128",
        str(len(left)),
        "-",
        "-",
    ]
    assert "WARNING" not in text


async def test_buckets_unowned_for_longer_than_a_lease_warn_in_both_languages_what_to_do(
    world: World, live_dir: Directory, tmp_path: Path, pg: str, keepers: KeeperFactory
) -> None:
    a, b = keepers("a", FAST), keepers("b", FAST)
    await balanced(a, b)
    async with a.engine.connect() as conn:  # both stop renewing: wait their leases out, twice
        last = (await conn.execute(select(func.max(t.hub_leases.c.expires_at)))).scalar_one()
    async with asyncio.timeout(30):
        while True:
            if await db_time(a.engine) > last + FAST.lease_ms:
                break
            await asyncio.sleep(0.1)  # polling the database's clock
    cfg = config(world, live_dir, tmp_path / "hub", pg, REPLICAS)

    report = await replicas_json(cfg, pg)
    text = await status(cfg, pg)

    assert report["live"] == 0
    assert [(r["id"], r["live"], r["buckets"]) for r in report["replicas"]] == [
        ("a", False, 0),
        ("b", False, 0),
    ]
    everyone = [o.id for o in live_dir.orgs]
    assert report["lease_ms"] == FAST.lease_ms  # as they ran it, not the configuration's 3 s
    assert report["unowned"]["stranded_buckets"] == list(range(256))
    assert report["unowned"]["stranded_organisations"] == everyone
    assert all(x["unowned_for_ms"] > FAST.lease_ms for x in report["leases"])
    assert report["oldest_renewal_ms"] is None
    assert report["soonest_expiry_ms"] is None
    assert "replicas: 0 live, 2 not live; 256 buckets, 0 held, 256 unowned" in text
    warning = line_with(text, "WARNING")
    assert "256 个桶无人持有已超过一个租期" in warning
    assert "请再启动一个副本" in warning
    assert f"nothing sent by the {len(everyone)} organisation(s) in them" in warning
    assert "start another replica, or check the replicas listed above" in warning
    assert report["warning"] == warning.removeprefix("WARNING ")


# ---------------------------------------------------------------------------- a lone hub


async def test_a_lone_hub_on_sqlite_shows_no_replicas(
    world: World, live_dir: Directory, tmp_path: Path
) -> None:
    store = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await migrate(store, "head")
    engine = engine_for(store)
    try:
        async with LeaseKeeper(engine, replica="only"):  # every bucket, a lease without end
            cfg = config(world, live_dir, tmp_path / "hub", store, "")
            report = json.loads(await status(cfg, store, "--json"))
            text = await status(cfg, store)
    finally:
        await engine.dispose()

    assert report["replicas"] is None
    assert "replicas:" not in text


async def test_a_hub_without_replicas_on_a_store_they_once_used_shows_none_of_them(
    world: World, live_dir: Directory, tmp_path: Path, pg: str, keepers: KeeperFactory
) -> None:
    a = keepers("a")
    await a.join()
    await a.leave()  # every bucket released, the replica gone: its rows stay
    alone = config(world, live_dir, tmp_path / "alone", pg, "")
    replicated = config(world, live_dir, tmp_path / "replicated", pg, REPLICAS)

    assert await replicas_json(alone, pg) is None
    assert "replicas:" not in await status(alone, pg)
    # the same store read with [replicas] enabled: no replica is there to take anything in
    report = await replicas_json(replicated, pg)
    assert (report["live"], report["replicas"]) == (0, [])
    assert report["lease_ms"] == 3_000  # no row tells the replicas' own: the configuration's


async def test_a_store_made_before_replicas_has_no_lease_tables_and_status_still_answers(
    world: World, live_dir: Directory, tmp_path: Path
) -> None:
    store = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await migrate(store, "0006")
    cfg = config(world, live_dir, tmp_path / "hub", store, "")

    assert json.loads(await status(cfg, store, "--json"))["replicas"] is None


async def test_a_replica_cut_off_from_one_channel_is_shown_with_its_reach_and_a_warning(
    pg: str, keepers: KeeperFactory, world: World, live_dir: Directory, tmp_path: Path
) -> None:
    both = frozenset({"govnet", "secure"})
    full, govnet = ChannelReach(both, both), ChannelReach(both, frozenset({"govnet"}))
    now = LeaseSettings(lease_ms=600_000, renew_ms=1_000, reach_hold_ms=0)
    a = keepers("a", now, reach=lambda: full)
    b = keepers("b", now, reach=lambda: govnet)  # its link to the secure broker is down
    await balanced(a)
    await b.join()
    for _ in range(3):
        await b.run_round()
        await a.run_round()
    cfg = config(world, live_dir, tmp_path / "hub", pg, REPLICAS)

    text = await status(cfg, pg)
    assert "channels reached" in text
    assert line_with(text, "host-a", "govnet, secure")
    row_b = line_with(text, "host-b", "live")
    assert row_b.endswith("govnet (not secure)")
    assert row_b.split()[4] == "0"  # buckets: it holds none
    warning = line_with(text, "WARNING", "replica b")
    assert "channel(s) secure" in warning
    assert "副本 b" in warning  # Chinese first, then English
    assert "check the network and certificates" in warning

    shown = await replicas_json(cfg, pg)
    reach = {r["id"]: r["reach"] for r in shown["replicas"]}
    assert reach == {
        "a": {"configured": ["govnet", "secure"], "reached": ["govnet", "secure"]},
        "b": {"configured": ["govnet", "secure"], "reached": ["govnet"]},
    }
    assert "replica b" in shown["reach_warning"]


async def test_replicas_that_reach_alike_show_no_reach_warning(
    pg: str, keepers: KeeperFactory, world: World, live_dir: Directory, tmp_path: Path
) -> None:
    # the secure broker is down for both: nothing to tell but what each misses
    down = ChannelReach(frozenset({"govnet", "secure"}), frozenset({"govnet"}))
    await balanced(keepers("a", reach=lambda: down), keepers("b", reach=lambda: down))
    cfg = config(world, live_dir, tmp_path / "hub", pg, REPLICAS)
    assert (await replicas_json(cfg, pg))["reach_warning"] is None
    text = await status(cfg, pg)
    assert "does not reach" not in text
    assert line_with(text, "host-a").endswith("govnet (not secure)")


async def test_status_answers_on_a_store_no_hubd_has_migrated_to_the_reach_column_yet(
    pg_url: str, world: World, live_dir: Directory, tmp_path: Path
) -> None:
    """hubctl does not migrate: on a store at 0008 (replicas, no reach yet) it still
    shows them, without their reach."""
    await migrate(pg_url, "0008")
    engine = engine_for(pg_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text_sql(
                    "INSERT INTO hub_replicas (id, host, pid, started_at, seen_at, expires_at) "
                    "VALUES ('a', 'host-a', 100, 0, 0, 0)"
                )
            )
    finally:
        await engine.dispose()
    cfg = config(world, live_dir, tmp_path / "hub", pg_url, REPLICAS)
    shown = await replicas_json(cfg, pg_url)
    assert [(r["id"], r["reach"]) for r in shown["replicas"]] == [("a", None)]
    assert line_with(await status(cfg, pg_url), "host-a").endswith("-")
