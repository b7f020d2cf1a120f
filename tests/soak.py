"""Failover under steady load (issue 15, part 3): the machinery and the checker.

Shared by tests/hub/test_replicas_failover.py (a short fixed schedule on Mosquitto) and
bench/soak_replicas.py (minutes of faults on NATS or Mosquitto). :class:`Soak` is one run:
a broker (one Mosquitto, or a 3-node NATS cluster for govnet with a Mosquitto for the
hub's other channels), a fresh PostgreSQL database, two hubd replicas ``a`` and ``b`` on
it serving the SAME signed directory, and govnet-only spokes. :class:`Load` drops
documents into the spokes' outboxes at a steady rate, each with a unique title and one
addressee; :class:`Checker` reads the spokes' folders and counts sent / accepted /
delivered once / lost / duplicated / misrouted. The faults (kill -9 of a replica, SIGSTOP
of one past its lease, kill -9 of a NATS node) each restart what they stopped, and the
replica faults time the takeover: from the signal until every bucket the victim held is
held by the survivor, read from ``hub_leases`` (the database's clock decides expiry).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hubd.provision.directory import load_topology
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.natscluster import NatsCluster
from tests.spoke.procs import FAST_HUB, SpokeProcess
from tests.world import TOPOLOGY_PATH, World

CHANNEL = "govnet"
# govnet-only prefectures: 函 flows between any two of them
ORGS = ("jl.cc", "jl.jl", "jl.sp", "jl.ly", "jl.th", "jl.bs")
NAMES = ("a", "b")
BUCKETS = 256
RESTARTS = 10  # starts of a killed replica tried before the run gives up
WITHIN = 60.0  # the bound of one wait for the system to settle (not a measured figure)
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c"]


def create_database(tag: str) -> str:
    """A fresh database on the machine's PostgreSQL (as tests/hub/conftest.py ``pg_url``)."""
    name = f"govx_soak_{tag}"
    subprocess.run([*PSQL, f"CREATE DATABASE {name}"], check=True)  # noqa: S603
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    subprocess.run([*PSQL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)  # noqa: S603


def letter(to: str, title: str) -> dict[str, str]:
    return {"主送": to, "密级": "内部", "文种": "函", "标题": title}


# ---------------------------------------------------------------------------------------
# The checker


@dataclass
class Sent:
    name: str  # the drop's name in the sender's outbox
    sender: str
    to: str


@dataclass
class Folders:
    """What one spoke's inbox/ and sent/ hold, read incrementally (a complete inbox
    folder and a sent folder's drop name never change)."""

    spoke: SpokeProcess
    inbox: dict[str, str] = field(default_factory=dict)  # msg_id -> title
    accepted: dict[str, str] = field(default_factory=dict)  # sent/<msg_id> -> drop name

    def poll(self) -> None:
        if self.spoke.inbox.exists():
            for entry in self.spoke.inbox.iterdir():
                if entry.name.startswith(".") or entry.name in self.inbox:
                    continue
                meta = _json(entry / "meta.json")
                if meta is not None:
                    self.inbox[entry.name] = str(meta["title"])
        if self.spoke.sent.exists():
            for entry in self.spoke.sent.iterdir():
                if entry.name in self.accepted:
                    continue
                status = _json(entry / "status.json")  # there once the hub said ACCEPTED
                if status is not None:
                    self.accepted[entry.name] = str(status["name"])


def _json(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError, ValueError):
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else None
    return None


class Checker:
    """What was sent to whom, and what the spokes' folders show of it."""

    def __init__(self, spokes: dict[str, SpokeProcess]) -> None:
        self.folders = {org: Folders(spoke) for org, spoke in spokes.items()}
        self.sent: dict[str, Sent] = {}  # title -> what was dropped

    def record(self, title: str, sent: Sent) -> None:
        assert title not in self.sent, title
        self.sent[title] = sent

    def poll(self) -> None:
        for folders in self.folders.values():
            folders.poll()

    def _seen(self) -> Counter[tuple[str, str]]:
        seen: Counter[tuple[str, str]] = Counter()
        for org, folders in self.folders.items():
            for title in folders.inbox.values():
                seen[(title, org)] += 1
        return seen

    def _accepted(self) -> set[tuple[str, str]]:
        return {(org, n) for org, f in self.folders.items() for n in f.accepted.values()}

    def in_flight(self) -> int:
        """Documents dropped and not yet in their addressee's inbox."""
        self.poll()
        seen = self._seen()
        return sum(1 for title, s in self.sent.items() if seen[(title, s.to)] == 0)

    def drained(self) -> bool:
        """Every document accepted and in its addressee's inbox."""
        self.poll()
        seen, accepted = self._seen(), self._accepted()
        return all(
            seen[(title, s.to)] and (s.sender, s.name) in accepted for title, s in self.sent.items()
        )

    def tally(self) -> dict[str, int]:
        """sent / accepted / delivered once / lost / duplicated into inboxes / misrouted."""
        self.poll()
        seen, accepted = self._seen(), self._accepted()
        return {
            "sent": len(self.sent),
            "accepted": sum(1 for s in self.sent.values() if (s.sender, s.name) in accepted),
            "delivered_once": sum(1 for t, s in self.sent.items() if seen[(t, s.to)] == 1),
            "lost": sum(1 for t, s in self.sent.items() if seen[(t, s.to)] == 0),
            "duplicated": sum(n - 1 for n in seen.values() if n > 1),
            "misrouted": sum(
                n for (t, org), n in seen.items() if t not in self.sent or self.sent[t].to != org
            ),
        }

    def missing(self) -> list[str]:
        """The titles not (yet) in their addressee's inbox, for a report."""
        self.poll()
        seen = self._seen()
        return sorted(t for t, s in self.sent.items() if seen[(t, s.to)] == 0)

    async def drain(self, within: float) -> bool:
        """Wait until :meth:`drained`; False if ``within`` seconds pass first."""
        deadline = time.monotonic() + within
        while not self.drained():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)
        return True


def exact(counts: dict[str, int]) -> dict[str, int]:
    """What ``counts`` must be: everything accepted and delivered once, nothing else."""
    sent = counts["sent"]
    return {
        "sent": sent,
        "accepted": sent,
        "delivered_once": sent,
        "lost": 0,
        "duplicated": 0,
        "misrouted": 0,
    }


# ---------------------------------------------------------------------------------------
# The load


@dataclass
class Load:
    """``rate`` documents a second in total, the senders in turn, each to another one of
    ``orgs`` chosen by a seeded generator."""

    checker: Checker
    spokes: dict[str, SpokeProcess]
    rate: float
    seed: int = 1
    count: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # a reproducible load
        self.orgs = sorted(self.spokes)

    def drop_one(self) -> None:
        i = self.count
        self.count += 1
        sender = self.orgs[i % len(self.orgs)]
        to = self.rng.choice([o for o in self.orgs if o != sender])
        title = f"soak {i:06d} {sender}→{to}"
        name = f"s{i:06d}.txt"
        self.checker.record(title, Sent(name, sender, to))
        self.spokes[sender].drop(name, f"{title}\n".encode(), letter(to, title))

    async def run(self, stop: asyncio.Event) -> None:
        """Drop at the rate until ``stop`` is set (behind schedule: drop at once, no burst
        skipped)."""
        loop = asyncio.get_running_loop()
        start, first = loop.time(), self.count
        while not stop.is_set():
            due = start + (self.count - first) / self.rate
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, due - loop.time())):
                    await stop.wait()
            if not stop.is_set():
                self.drop_one()


# ---------------------------------------------------------------------------------------
# The system


@dataclass
class Replica(HubProcess):
    """A hub replica whose config may name other brokers for one channel (NATS nodes)."""

    channel_section: tuple[str, str] | None = None  # (as HubProcess writes it, instead)

    def write(self) -> Path:
        config = super().write()
        if self.channel_section is not None:
            old, new = self.channel_section
            written = config.read_text(encoding="utf-8")
            assert old in written, written
            config.write_text(written.replace(old, new), encoding="utf-8")
        return config


def nats_section(nats: NatsCluster, identity: str, order: tuple[int, ...]) -> str:
    """[channels.govnet] naming the cluster's nodes in ``order``, with ``identity``'s
    certificate (as tests/spoke/test_nats_e2e.py)."""
    files = nats.files
    urls = [f"mqtts://127.0.0.1:{nats.port(i)}" for i in order]
    return "\n".join(
        [
            f"[channels.{CHANNEL}]",
            f"urls = {json.dumps(urls)}",
            f'ca = "{files.ca}"',
            f'cert = "{files.cert(identity)}"',
            f'key = "{files.key(identity)}"',
        ]
    )


class Leases:
    """Who holds which bucket, read from ``hub_leases`` (unexpired by the database's clock)."""

    def __init__(self, db_url: str) -> None:
        self.engine: AsyncEngine = create_async_engine(db_url, pool_size=1)

    async def held(self) -> dict[int, str]:
        """bucket -> replica name (the holder id's first part)."""
        query = text(
            "SELECT bucket, holder FROM hub_leases WHERE holder IS NOT NULL AND expires_at > "
            "(extract(epoch from statement_timestamp()) * 1000)::bigint"
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {int(bucket): str(holder).split("-", 1)[0] for bucket, holder in rows}

    async def shared_by(self, *names: str) -> bool:
        held = await self.held()
        return set(held.values()) == set(names) and len(held) == BUCKETS

    async def close(self) -> None:
        await self.engine.dispose()


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = WITHIN) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Soak:
    """One run's processes, in ``folder``; :meth:`close` stops them all."""

    folder: Path
    world: World
    db_url: str
    broker: str = "mosquitto"  # or "nats"
    orgs: tuple[str, ...] = ORGS
    lease: float = 3.0
    renew: float = 1.0
    pause: float = 3.0  # how long a killed process stays down
    mosquitto: Mosquitto | None = None
    nats: NatsCluster | None = None
    replicas: dict[str, Replica] = field(default_factory=dict)
    spokes: dict[str, SpokeProcess] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)  # what a fault's at_s counts from

    def __post_init__(self) -> None:
        self.leases = Leases(self.db_url)

    async def start(self) -> Checker:
        # the hub's channels other than govnet are on this Mosquitto in a NATS run
        self.mosquitto = Mosquitto(self.folder / "mosquitto").start()
        port = self.mosquitto.port
        if self.broker == "nats":
            topology = load_topology(TOPOLOGY_PATH)
            self.nats = NatsCluster(topology, CHANNEL, self.folder / "nats")
            await asyncio.to_thread(self.nats.start, 60.0)
        directory = live_directory(self.world)  # one signed directory served by both
        single = f'[channels.{CHANNEL}]\nurl = "mqtt://127.0.0.1:{port}"'
        hub_id = self.world.topology.hub.id
        for name in NAMES:
            section = None
            if self.nats is not None:
                section = (single, nats_section(self.nats, hub_id, (0, 1, 2)))
            settings = f"lease = {self.lease}\nrenew = {self.renew}\n"
            self.replicas[name] = Replica(
                self.folder / f"hub-{name}",
                self.world.hub_key,
                directory,
                broker_port=port,
                store_url=self.db_url,
                extra_toml=f'{FAST_HUB}\n[replicas]\nenabled = true\nname = "{name}"\n{settings}',
                channel_section=section,
            )
        for replica in self.replicas.values():
            await asyncio.to_thread(replica.start, timeout=60.0)
        await until(lambda: self.leases.shared_by(*NAMES), "both replicas hold buckets")
        for k, org in enumerate(self.orgs):
            spoke = SpokeProcess(self.folder / org, org, self.world, port, (CHANNEL,))
            if self.nats is not None:  # spread over the nodes: each spoke its own first
                written = spoke.write().read_text(encoding="utf-8")
                order = tuple((k + j) % 3 for j in range(3))
                new = nats_section(self.nats, org, order)
                spoke.config.write_text(written.replace(single, new), encoding="utf-8")
            self.spokes[org] = spoke.start()
        for spoke in self.spokes.values():
            await spoke.wait_connected()
        return Checker(self.spokes)

    def close(self) -> None:
        for spoke in self.spokes.values():
            spoke.stop()
        for replica in self.replicas.values():
            if replica.process is not None and replica.process.poll() is None:
                replica.process.send_signal(signal.SIGCONT)  # a paused one dies too
            replica.stop()
        if self.nats is not None:
            self.nats.stop()
        if self.mosquitto is not None:
            self.mosquitto.stop()

    async def aclose(self) -> None:
        await self.leases.close()
        self.close()

    # ------------------------------------------------------------------ faults

    def _other(self, name: str) -> str:
        return next(n for n in NAMES if n != name)

    async def _taken_over(self, buckets: set[int], survivor: str, since: float) -> float | None:
        """Seconds from ``since`` until ``survivor`` holds every one of ``buckets``
        (polled every 50 ms); None if it did not within :data:`WITHIN`."""
        while time.monotonic() - since < WITHIN:
            held = await self.leases.held()
            if all(held.get(b) == survivor for b in buckets):
                return round(time.monotonic() - since, 3)
            await asyncio.sleep(0.05)
        return None

    async def _both_again(self) -> None:
        await until(lambda: self.leases.shared_by(*NAMES), "both replicas hold buckets again")

    async def kill_replica(self, name: str, checker: Checker) -> dict[str, Any]:
        """kill -9 of replica ``name``; the other takes its buckets over; it is started
        again after :attr:`pause` and gets its share back."""
        survivor, victim = self._other(name), self.replicas[name]
        buckets = {b for b, holder in (await self.leases.held()).items() if holder == name}
        in_flight = checker.in_flight()
        since = time.monotonic()
        victim.kill9()
        took = await self._taken_over(buckets, survivor, since)
        await asyncio.sleep(max(0.0, since + self.pause - time.monotonic()))
        refused, restarted = await self._restart(victim)
        if restarted:
            await self._both_again()
        return self._record(
            "kill9_replica",
            name,
            since,
            buckets,
            took,
            in_flight=in_flight,
            refused=refused,
            restarted=restarted,
        )

    async def _restart(self, replica: HubProcess) -> tuple[list[str], bool]:
        """Start ``replica`` again; a refusal to start (hubd exits) is recorded and the
        start tried again a second later, up to :data:`RESTARTS` times. The refusals'
        reasons (hub.failed), oldest first, and whether it runs."""
        refused: list[str] = []
        for _ in range(RESTARTS):
            try:
                await asyncio.to_thread(replica.start, timeout=60.0)
            except RuntimeError:  # it exited: its last hub.failed says why
                failed = [e for e in replica.log_events() if e.get("event") == "hub.failed"]
                refused.append(str(failed[-1].get("error")) if failed else replica.log_tail(1))
                await asyncio.sleep(1.0)
            else:
                return refused, True
        return refused, False

    async def pause_replica(self, name: str, checker: Checker) -> dict[str, Any]:
        """SIGSTOP of replica ``name`` for its lease + 2 s (longer if the takeover takes
        longer), then SIGCONT: it must say it lost its leases, and share again."""
        survivor, victim = self._other(name), self.replicas[name]
        assert victim.process is not None
        buckets = {b for b, holder in (await self.leases.held()).items() if holder == name}
        in_flight = checker.in_flight()
        lost_before = self._said_lost(victim)
        since = time.monotonic()
        victim.process.send_signal(signal.SIGSTOP)
        try:
            took = await self._taken_over(buckets, survivor, since)
            await asyncio.sleep(max(0.0, since + self.lease + 2.0 - time.monotonic()))
        finally:
            victim.process.send_signal(signal.SIGCONT)
        stopped_for = round(time.monotonic() - since, 3)

        async def said_lost() -> bool:
            return self._said_lost(victim) > lost_before

        await until(said_lost, f"replica {name} to log leases.lost after SIGCONT")
        await self._both_again()
        return self._record(
            "sigstop_replica",
            name,
            since,
            buckets,
            took,
            in_flight=in_flight,
            stopped_s=stopped_for,
        )

    @staticmethod
    def _said_lost(replica: HubProcess) -> int:
        return sum(1 for e in replica.log_events() if e.get("event") == "leases.lost")

    async def kill_node(self, index: int, checker: Checker) -> dict[str, Any]:
        """kill -9 of NATS node ``index``; started again after :attr:`pause`."""
        assert self.nats is not None
        process = self.nats.processes[index]
        assert process is not None
        in_flight = checker.in_flight()
        since = time.monotonic()
        process.kill()
        process.wait(10)
        await asyncio.sleep(self.pause)
        self.nats.start_node(index)
        await asyncio.to_thread(self.nats.wait_ready, WITHIN)
        record = {
            "fault": "kill9_nats_node",
            "node": index + 1,
            "at_s": round(since - self.t0, 1),
            "in_flight": in_flight,
            "back_after_s": round(time.monotonic() - since, 3),
        }
        self.faults.append(record)
        return record

    def _record(
        self,
        fault: str,
        name: str,
        since: float,
        buckets: set[int],
        took: float | None,
        **more: object,
    ) -> dict[str, Any]:
        record = {
            "fault": fault,
            "replica": name,
            "at_s": round(since - self.t0, 1),
            "buckets": len(buckets),
            "takeover_s": took,
            **more,
        }
        self.faults.append(record)
        return record

    def hub_errors(self) -> dict[str, list[str]]:
        """Each replica's error-level log events (their names), over all its runs."""
        return {
            name: [str(e.get("event")) for e in r.log_events() if e.get("level") == "error"]
            for name, r in self.replicas.items()
        }


def takeover_figures(faults: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """max and median takeover seconds of the faults of ``kind`` (None: never taken over)."""
    times = [f["takeover_s"] for f in faults if f["fault"] == kind]
    done = sorted(t for t in times if t is not None)
    median = None
    if done:
        mid = len(done) // 2
        median = done[mid] if len(done) % 2 else round((done[mid - 1] + done[mid]) / 2, 3)
    return {
        "count": len(times),
        "not_taken_over": len(times) - len(done),
        "max_s": done[-1] if done else None,
        "median_s": median,
    }
