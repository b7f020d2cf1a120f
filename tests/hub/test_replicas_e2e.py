"""Two hubd replicas on one PostgreSQL store behind one Mosquitto (issue 15, part 2).

Real processes: a Mosquitto of the test's own, a fresh PostgreSQL database, two hubd
processes with ``[replicas] enabled`` and four govnet spokes. The replicas split the
organisations between them (leases), each takes in what the organisations it owns send
and delivers to the recipients it owns; a document accepted by one replica for a recipient
the other owns is handed over through the store. Then one replica is killed (kill -9) and
the other takes its organisations over; it is started again and they share once more; a
replica is stopped (SIGSTOP) for longer than its lease and goes on (SIGCONT) without
acting as owner of what it lost. After each step every document is in its recipient's
inbox exactly once and nowhere else (the checker of :func:`tally`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hubd.ops.ledgeraudit import verify_store_ledger
from runtime.ports import free_port
from schemas.directory import Directory
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.ops.test_metrics import scrape, value
from tests.spoke.procs import FAST_HUB, SpokeProcess, eventually
from tests.world import World

pytestmark = pytest.mark.slow

CHANNEL = "govnet"
ORGS = ("jl.cc", "jl.jl", "jl.sp", "jl.ly")  # govnet-only prefectures: 函 between them flow
LEASE = "lease = 2.0\nrenew = 0.5\n"
WITHIN = 60.0


def psql(db_url: str, sql: str) -> list[list[str]]:
    name = db_url.rsplit("/", 1)[1]
    out = subprocess.run(  # noqa: S603 - the test's own query
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", name, "-At", "-F", "|", "-c", sql],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def holders(db_url: str) -> dict[str, int]:
    """Replica name (the id's first part) -> buckets it holds unexpired."""
    rows = psql(
        db_url,
        "SELECT holder, count(*) FROM hub_leases WHERE holder IS NOT NULL AND expires_at > "
        "(extract(epoch from now()) * 1000)::bigint GROUP BY holder",
    )
    return {holder.split("-", 1)[0]: int(count) for holder, count in rows}


def reaches(db_url: str) -> dict[str, str]:
    """Live replica name -> the channels it says it reaches (hub_replicas.reach)."""
    rows = psql(
        db_url,
        "SELECT id, reach FROM hub_replicas WHERE expires_at > "
        "(extract(epoch from now()) * 1000)::bigint",
    )
    return {rid.split("-", 1)[0]: said for rid, said in rows}


def shared_by(db_url: str, *names: str) -> dict[str, int] | None:
    """The holdings once each of ``names`` (and no other) holds buckets; else None."""
    held = holders(db_url)
    return held if set(held) == set(names) and sum(held.values()) == 256 else None


def letter(to: str, title: str) -> dict[str, str]:
    return {"主送": to, "密级": "内部", "文种": "函", "标题": title}


@dataclass
class Flow:
    """What was sent, to whom, and the checker of what arrived."""

    spokes: dict[str, SpokeProcess]
    sent: dict[str, str] = field(default_factory=dict)  # title -> recipient
    rounds: int = 0

    def send_round(self) -> list[tuple[SpokeProcess, str, str]]:
        """Every organisation writes to the next one in the ring."""
        self.rounds += 1
        out = []
        for i, org in enumerate(ORGS):
            to = ORGS[(i + 1) % len(ORGS)]
            title = f"第{self.rounds}轮 {org}→{to}"
            name = f"r{self.rounds}-{org}.txt"
            self.spokes[org].drop(name, f"{title}\n".encode(), letter(to, title))
            self.sent[title] = to
            out.append((self.spokes[org], name, to))
        return out

    async def delivered(self, drops: list[tuple[SpokeProcess, str, str]]) -> None:
        for spoke, name, to in drops:
            await spoke.wait_status(name, to, within=WITHIN)
        for title, to in self.sent.items():
            await self.spokes[to].wait_received(title, within=WITHIN)

    def tally(self) -> dict[str, int]:
        """sent / delivered once / lost / duplicated / misrouted, over every inbox."""
        seen: Counter[tuple[str, str]] = Counter()
        for org, spoke in self.spokes.items():
            for meta in spoke.received().values():
                seen[(str(meta["title"]), org)] += 1
        once = sum(1 for title, to in self.sent.items() if seen[(title, to)] == 1)
        return {
            "sent": len(self.sent),
            "delivered_once": once,
            "lost": sum(1 for title, to in self.sent.items() if seen[(title, to)] == 0),
            "duplicated": sum(n - 1 for n in seen.values() if n > 1),
            "misrouted": sum(n for (t, org), n in seen.items() if self.sent.get(t) != org),
        }

    def assert_exact(self) -> None:
        sent = len(self.sent)
        expected = {"sent": sent, "delivered_once": sent, "lost": 0, "duplicated": 0}
        assert self.tally() == {**expected, "misrouted": 0}


def accepted_by(hub: HubProcess) -> set[str]:
    """The senders whose documents this replica accepted."""
    return {str(e["sender"]) for e in hub.log_events() if e.get("event") == "message.accepted"}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


def replica(
    world: World, directory: Directory, folder: Path, name: str, *, port: int, db_url: str
) -> HubProcess:
    """A replica: its own folder, the store, the broker and the directory all share."""
    return HubProcess(
        folder / f"hub-{name}",
        world.hub_key,
        directory,
        broker_port=port,
        store_url=db_url,
        extra_toml=f'{FAST_HUB}\n[replicas]\nenabled = true\nname = "{name}"\n{LEASE}',
    )


async def no_errors_and_one_ledger(world: World, db_url: str, *hubs: HubProcess) -> None:
    """Neither logged an error; the ledger both wrote verifies, with the checkpoints the
    leader of the moment signed."""
    for hub in hubs:
        errors = [e for e in hub.log_events() if e.get("level") == "error"]
        assert errors == [], hub.log_tail()
    # one ledger written by both, with the checkpoints the leader of the moment signed
    report = await verify_store_ledger(db_url, {world.hub_key.kid: world.hub_key.public})
    assert report.ok, report.problems
    assert report.checkpoints > 0


def refused_as_a_twin(twin: HubProcess) -> None:
    """A replica named like a live one exits 2 naming the setting: one client id for two
    connections would have them take each other over, for ever."""
    twin.start(ready=False)
    assert twin.process is not None
    code = twin.process.wait(60)
    twin.kill9()  # exited already: closes what the test holds of it
    assert code == 2, twin.log_tail()
    failed = [e for e in twin.log_events() if e.get("event") == "hub.failed"]
    assert failed, twin.log_tail()
    assert "replicas.name" in str(failed[0]["error"])


async def metrics_say_they_share(owned: dict[str, set[str]], *hubs: HubProcess) -> None:
    """/metrics of each: their buckets add up to 256, one leads; a replica left to the
    other the messages of every organisation it does not own (each spoke says hello to
    both), and a document whose recipient the other replica owns was handed over. Which
    organisations fall to which replica is the leases' draw: ``owned`` says it."""
    scraped = [await scrape(hub) for hub in hubs]
    assert sum(value(m, "govxchg_replica_buckets") for m in scraped) == 256
    assert sorted(value(m, "govxchg_replica_leading") for m in scraped) == [0, 1]
    for hub, m in zip(hubs, scraped, strict=True):
        others = set(ORGS) - owned[hub.folder.name]
        assert (value(m, "govxchg_replica_left_to_owner_total") > 0) == bool(others)
    owner = {org: name for name, orgs in owned.items() for org in orgs}
    crossing = any(owner[o] != owner[ORGS[(i + 1) % len(ORGS)]] for i, o in enumerate(ORGS))
    handed = sum(value(m, "govxchg_replica_handed_over_total") for m in scraped)
    assert (handed > 0) == crossing


async def test_two_replicas_share_the_work_and_take_over_from_a_dead_or_paused_one(
    world: World, tmp_path: Path, pg_url: str, broker: Mosquitto
) -> None:
    directory = live_directory(world)  # one signed directory served by both
    a = replica(world, directory, tmp_path, "a", port=broker.port, db_url=pg_url)
    b = replica(world, directory, tmp_path, "b", port=broker.port, db_url=pg_url)
    spokes = {
        org: SpokeProcess(tmp_path / org, org, world, broker.port, (CHANNEL,)) for org in ORGS
    }
    flow = Flow(spokes)
    try:
        a.start()
        b.start()
        await eventually(lambda: shared_by(pg_url, "a", "b"), "both replicas hold buckets")
        for spoke in spokes.values():
            spoke.start()
        for spoke in spokes.values():
            await spoke.wait_connected()

        # 1. both at work: each document accepted by the one that owns its sender
        await flow.delivered(flow.send_round())
        flow.assert_exact()
        by_a, by_b = accepted_by(a), accepted_by(b)
        assert by_a | by_b == set(ORGS)
        assert not by_a & by_b, "an organisation's documents taken in by both replicas"

        await metrics_say_they_share({"hub-a": by_a, "hub-b": by_b}, a, b)
        # each says, with its heartbeat, the channels whose brokers it reaches
        said = {name: json.loads(text) for name, text in reaches(pg_url).items()}
        every = sorted(c.id for c in directory.channels)
        assert said["a"] == said["b"] == {"configured": every, "reached": every}

        # 2. kill -9 of a: b takes every bucket over, and documents flow again
        a.kill9()
        await eventually(lambda: shared_by(pg_url, "b"), "b holds every bucket")
        await flow.delivered(flow.send_round())
        flow.assert_exact()
        assert accepted_by(b) == set(ORGS)

        # 3. a again (a new replica of the same name): they share once more
        a.start()
        await eventually(lambda: shared_by(pg_url, "a", "b"), "a holds buckets again")
        await flow.delivered(flow.send_round())
        flow.assert_exact()

        # 4. b paused past its lease: a takes over; b resumes and lets go of what it lost
        assert b.process is not None
        b.process.send_signal(signal.SIGSTOP)
        try:
            await eventually(lambda: shared_by(pg_url, "a"), "a holds every bucket")
            await flow.delivered(flow.send_round())
        finally:
            b.process.send_signal(signal.SIGCONT)
        await eventually(
            lambda: [e for e in b.log_events() if e.get("event") == "leases.lost"],
            "b says it lost its leases",
        )
        await eventually(lambda: shared_by(pg_url, "a", "b"), "b holds buckets again")
        await flow.delivered(flow.send_round())
        await asyncio.sleep(1.0)  # a late duplicate would land now
        flow.assert_exact()
        # 5. a third replica named like a live one is refused
        twin = replica(world, directory, tmp_path / "twin", "a", port=broker.port, db_url=pg_url)
        refused_as_a_twin(twin)
        await no_errors_and_one_ledger(world, pg_url, a, b)
    finally:
        for spoke in spokes.values():
            spoke.stop()
        a.stop()
        b.stop()


class Proxy:
    """A TCP relay to a broker that the test can cut and restore: one replica's way to one
    channel's broker, while the other replica's way stays up. Its event loop runs in a
    thread of its own: the test's loop blocks while hubd starts."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    def start(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

        self._call(listen())

    async def _shut(self) -> None:
        """No new connection, and every relayed one closed."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.close()
        self._open.clear()

    def cut(self) -> None:
        self._call(self._shut())

    def close(self) -> None:
        """Cut, end every relay task, and close the loop (nothing left for the collector)."""

        async def shutdown() -> None:
            await self._shut()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._open |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


def logged(hub: HubProcess, event: str) -> list[dict[str, object]]:
    return [e for e in hub.log_events() if e.get("event") == event]


async def test_a_replica_cut_off_from_one_channels_broker_hands_its_organisations_over(
    world: World, tmp_path: Path, pg_url: str, broker: Mosquitto
) -> None:
    """b reaches the classified channel's broker through a relay, a directly: with the
    relay cut, b reaches fewer channels than a and gives a every organisation (nobody would
    read their up topics on that channel otherwise), though it still reaches the others;
    with the relay back, they share again."""
    directory = live_directory(world)
    relay = Proxy(broker.port)
    relay.start()
    a = replica(world, directory, tmp_path, "a", port=broker.port, db_url=pg_url)
    b = replica(world, directory, tmp_path, "b", port=broker.port, db_url=pg_url)
    b.channel_ports = {"classified": relay.port}
    for hub in (a, b):
        hub.extra_toml += "reach_hold = 1.0\n"  # in [replicas], the section it ends with
    try:
        a.start()
        b.start()
        await eventually(lambda: shared_by(pg_url, "a", "b"), "both replicas hold buckets")

        relay.cut()
        await eventually(lambda: shared_by(pg_url, "a"), "a holds every bucket")
        short = await eventually(lambda: logged(b, "leases.reach_short"), "b says why")
        assert short[-1]["missing"] == ["classified"]
        assert short[-1]["level"] == "warning"
        said = {name: json.loads(text) for name, text in reaches(pg_url).items()}
        assert said["a"]["reached"] == said["a"]["configured"]
        assert set(said["b"]["configured"]) - set(said["b"]["reached"]) == {"classified"}
        assert not logged(b, "leases.stood_aside")  # it still reaches a broker: it stays live

        relay.start()
        await eventually(lambda: shared_by(pg_url, "a", "b"), "b holds buckets again")
        await eventually(lambda: logged(b, "leases.reach_back"), "b says it is back")
        for hub in (a, b):
            errors = [e for e in hub.log_events() if e.get("level") == "error"]
            assert errors == [], hub.log_tail()
    finally:
        relay.close()
        a.stop()
        b.stop()
