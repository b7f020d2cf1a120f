"""Hellos at national scale: N spokes connect to hubd through Mosquitto at once.

    python bench/hellos.py                       # 10,000 spokes
    python bench/hellos.py --spokes 2000         # fewer
    python bench/hellos.py --hub-src /tmp/base   # the hub from another checkout (before/after)

Each simulated spoke does what a spoke's connection does (:mod:`bench.rawmqtt`, a raw MQTT
3.1.1 client: thousands fit in one process; the packets after CONNECT go with it): CONNECT
with its will (retained "offline"), SUBSCRIBE to its down topic, retained "online" on its
presence topic, then ``["hello", 0]`` on its up topic. Four phases, one hub and one broker:

1. **connect**: every spoke connects (at most ``--connecting`` connections being set up at
   once); measured until the hub has logged every ``spoke.hello``.
2. **hello burst**: every connected spoke says hello again at once (the hub's own rate,
   with hellos waiting for it; the ask-hello timers of phase 1 have run out).
3. every socket drops (the broker publishes each will); once the hub has logged every
   ``spoke.offline``, one spoke sends ten documents, one to each of ten offline spokes.
4. **storm**: every spoke reconnects at once; measured until the ten documents are in their
   recipients' hands and every hello is processed.

Figures: the wall time of each phase from its first connection to the last hello the hub
logged (and the last document received); hellos/s at the hub (hellos over the span from
the first to the last, ``spoke.hello`` lines and the hellos ``spoke.storm`` counted); the
hub's CPU per spoke (presence and hello; its capacity on one core is the inverse).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.e2e import cpu_seconds
from bench.rawmqtt import (
    RawClient,
    Sink,
    Whole,
    Will,
    check_readers,
    publish_packet,
    subscribe_packet,
)
from runtime.clock import now_ms
from schemas import topics, transport
from schemas.keys import EncryptionKey, SigningKey
from schemas.labels import Classification, DocType, Precedence
from schemas.seal import Draft, file_entry, seal_bytes
from schemas.topology import parse_topology
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.world import TOPOLOGY_PATH, OrgKeys, World, _directory

CHANNEL = "govnet"
SENDER = "jl.cc"  # a prefecture: its spokes are counties under it (a 通知 goes down)
DOCUMENTS = 10


def national_world(spokes: int) -> tuple[World, list[str]]:
    """The Jilin topology with ``spokes`` more counties under jl.cc, keys for everyone."""
    ids = [f"jl.cc.s{n:05d}" for n in range(spokes)]
    extra = "".join(
        f'\n[[orgs]]\nid = "{org}"\nname_zh = "模拟县{n}"\nname_en = "Simulated county {n}"\n'
        f'level = "county"\nparent = "jl.cc"\nclearance = "内部"\nchannels = ["govnet"]\n'
        for n, org in enumerate(ids)
    )
    text = TOPOLOGY_PATH.read_text(encoding="utf-8") + extra
    topology = parse_topology(text, source="bench")
    keys = {o.id: OrgKeys(SigningKey.generate(), EncryptionKey.generate()) for o in topology.orgs}
    hub_key = SigningKey.generate()
    return World(topology, hub_key, keys, _directory(topology, hub_key, keys, 1)), ids


class HubLog:
    """The hub's JSON log, read as it grows: when each event of a name was logged."""

    def __init__(self, path: Path) -> None:
        self._path, self._offset, self._rest = path, 0, b""
        self.times: dict[str, list[float]] = {}

    def read(self) -> None:
        with self._path.open("rb") as handle:
            handle.seek(self._offset)
            data = self._rest + handle.read()
            self._offset = handle.tell()
        *lines, self._rest = data.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict) or "timestamp" not in event:
                continue
            at = datetime.fromisoformat(str(event["timestamp"])).timestamp()
            self.times.setdefault(str(event["event"]), []).append(at)
            if event["event"] == "spoke.storm" and event.get("hello"):
                # hellos counted, not logged one by one: the first and last time counted
                count, first, last = int(event["hello"]), event["first_at"], event["last_at"]
                hellos = self.times.setdefault("spoke.hello", [])
                hellos += [first / 1000] + [last / 1000] * (count - 1)

    def count(self, name: str) -> int:
        return len(self.times.get(name, []))

    async def until(self, name: str, count: int, within: float = 600.0) -> None:
        async with asyncio.timeout(within):
            while True:
                self.read()
                if self.count(name) >= count:
                    return
                check_readers()
                await asyncio.sleep(0.05)

    def span(self, name: str, since: int) -> tuple[float, float]:
        """(first, last) time of the events of ``name`` after the first ``since``."""
        times = sorted(self.times[name][since:])
        return times[0], times[-1]


@dataclass
class Spokes:
    """The simulated spokes' connections, and what their down topics received."""

    port: int
    orgs: list[str]
    connecting: int
    envelopes: int = 0
    last_envelope_at: float = 0.0  # time.time() of the latest
    clients: list[RawClient] | None = None
    wanted: int = 0
    delivered: asyncio.Event = field(default_factory=asyncio.Event)  # envelopes >= wanted

    def opening(self, org: str) -> bytes:
        """What follows CONNECT: subscription, retained presence, hello."""
        return b"".join(
            (
                subscribe_packet(1, [topics.down(CHANNEL, org)]),
                publish_packet(
                    topics.presence(CHANNEL, org), topics.ONLINE, packet_id=2, retain=True
                ),
                publish_packet(
                    topics.up(CHANNEL, org),
                    transport.encode(transport.HelloMsg(0)),
                    packet_id=3,
                ),
            )
        )

    def route(self, _topic: str, _head: bytes, _size: int) -> Sink:
        return Whole(self.received)

    def received(self, payload: bytes) -> None:
        if isinstance(transport.decode(payload), transport.EnvelopeMsg):
            self.envelopes += 1
            self.last_envelope_at = time.time()
            if self.envelopes >= self.wanted:
                self.delivered.set()

    async def connect(self) -> None:
        gate = asyncio.Semaphore(self.connecting)  # the listen backlog holds 4096 at most

        async def one(org: str) -> RawClient:
            async with gate:
                return await RawClient.connect(
                    "127.0.0.1",
                    self.port,
                    f"sim-{org}",
                    will=Will(topics.presence(CHANNEL, org), topics.OFFLINE),
                    route=self.route,
                    then=self.opening(org),
                )

        self.clients = list(await asyncio.gather(*(one(org) for org in self.orgs)))

    def hello_all(self) -> None:
        """Every connected spoke says hello again, all at once: a backlog at the hub."""
        assert self.clients is not None
        hello = transport.encode(transport.HelloMsg(0))
        for org, client in zip(self.orgs, self.clients, strict=True):
            client.publish(topics.up(CHANNEL, org), hello)

    async def drop(self) -> None:
        assert self.clients is not None
        await asyncio.gather(*(c.drop() for c in self.clients))
        self.clients = None


@dataclass
class Phase:
    name: str
    spokes: int
    wall_s: float  # first connection -> every hello processed (and documents delivered)
    hello_span_s: float  # the hub's first to last spoke.hello
    hub_cpu_us: float  # hub CPU per spoke (presence + hello)
    delivered: int = 0

    @property
    def hellos_per_s(self) -> float:
        return self.spokes / self.hello_span_s if self.hello_span_s else float("inf")


def documents(world: World, directory: object, recipients: list[str]) -> list[bytes]:
    """One sealed 通知 from SENDER to each recipient, as EnvelopeMsg payloads."""
    out = []
    for org in recipients:
        draft = Draft(
            sender=SENDER,
            to=(org,),
            classification=Classification.INTERNAL,
            precedence=Precedence.ROUTINE,
            doc_type=DocType.NOTICE,
            title="bench",
            created_at=now_ms(),
            files=[file_entry("doc.bin", "application/octet-stream", b"x" * 1024)],
        )
        sealed, body = seal_bytes(draft, world.keys[SENDER].signing, directory, [b"x" * 1024])  # type: ignore[arg-type]
        out.append(transport.encode(transport.EnvelopeMsg(sealed.frame, body)))
    return out


@contextmanager
def chdir(path: Path) -> Iterator[None]:
    """``python -m hubd`` takes hubd from the working directory first."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


async def run(args: argparse.Namespace, tmp: Path) -> list[Phase]:
    world, orgs = national_world(args.spokes)
    directory = live_directory(world)
    broker = Mosquitto(tmp / "mosquitto", settings=("max_connections -1",)).start()
    hub = HubProcess(tmp / "hub", world.hub_key, directory, broker_port=broker.port)
    phases: list[Phase] = []
    try:
        with chdir(args.hub_src):
            hub.start(timeout=120)
        assert hub.process is not None
        log = HubLog(hub.folder / "hubd.log")
        spokes = Spokes(broker.port, orgs, args.connecting)

        async def phase(name: str, pending: int) -> Phase:
            log.read()
            hellos = log.count("spoke.hello")
            cpu, start = cpu_seconds(hub.process.pid), time.perf_counter()  # type: ignore[union-attr]
            began = time.time()  # the hub's log has wall-clock times
            own, brokers = time.process_time(), cpu_seconds(broker.process.pid)  # type: ignore[union-attr]
            spokes.wanted = spokes.envelopes + pending
            spokes.delivered.clear()
            await spokes.connect()
            connected = time.perf_counter() - start
            await log.until("spoke.hello", hellos + len(orgs))
            if pending:
                async with asyncio.timeout(600):
                    await spokes.delivered.wait()
            first, last = log.span("spoke.hello", hellos)
            wall = max(last, spokes.last_envelope_at) - began
            used = cpu_seconds(hub.process.pid) - cpu  # type: ignore[union-attr]
            print(  # where the rest of the machine went: the load generator and the broker
                f"{name}: connections set up in {connected:.1f} s; CPU s: load generator "
                f"{time.process_time() - own:.1f}, broker "
                f"{cpu_seconds(broker.process.pid) - brokers:.1f}, hub {used:.1f}",  # type: ignore[union-attr]
                file=sys.stderr,
            )
            return Phase(name, len(orgs), wall, last - first, used / len(orgs) * 1e6, pending)

        phases.append(await phase("connect", 0))
        await asyncio.sleep(args.settle)  # the hello grace timers (3 s) run out
        phases.append(await burst(hub, log, spokes))
        offline = log.count("spoke.offline")
        await spokes.drop()
        await log.until("spoke.offline", offline + len(orgs))

        sender = Spokes(broker.port, [SENDER], 1)
        await sender.connect()
        accepted = log.count("message.accepted")
        assert sender.clients is not None
        for payload in documents(world, directory, orgs[:DOCUMENTS]):
            sender.clients[0].publish(topics.up(CHANNEL, SENDER), payload)
        await log.until("message.accepted", accepted + DOCUMENTS)
        phases.append(await phase("storm", DOCUMENTS))
        await spokes.drop()
        await sender.drop()
    finally:
        hub.stop()
        broker.stop()
    return phases


async def burst(hub: HubProcess, log: HubLog, spokes: Spokes) -> Phase:
    """Connected spokes all say hello at once: the hub's own rate, with hellos waiting."""
    assert hub.process is not None
    log.read()
    hellos = log.count("spoke.hello")
    cpu, began = cpu_seconds(hub.process.pid), time.time()
    spokes.hello_all()
    await log.until("spoke.hello", hellos + len(spokes.orgs))
    first, last = log.span("spoke.hello", hellos)
    wall = last - began
    used = cpu_seconds(hub.process.pid) - cpu
    return Phase("hello burst", len(spokes.orgs), wall, last - first, used / len(spokes.orgs) * 1e6)


def table(phases: list[Phase], args: argparse.Namespace) -> str:
    lines = [
        f"{args.spokes} spokes, hub from {args.hub_src}",
        "",
        (
            "| phase | spokes | documents delivered | all done (s) | hellos/s at the hub "
            "| hub CPU per spoke (µs) |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {p.name} | {p.spokes} | {p.delivered} | {p.wall_s:.1f} | {p.hellos_per_s:,.0f} "
        f"| {p.hub_cpu_us:,.0f} |"
        for p in phases
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spokes", type=int, default=10_000)
    parser.add_argument("--connecting", type=int, default=512, help="connections set up at once")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds between the phases")
    parser.add_argument("--hub-src", type=Path, default=REPO, help="the checkout hubd runs from")
    args = parser.parse_args()
    args.hub_src = args.hub_src.resolve()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the broker inherits it
    if soft < 2 * args.spokes + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="bench-hellos-") as tmp:
        try:
            import uvloop  # noqa: PLC0415 - a cheaper loop for the load generator, if there

            phases = uvloop.run(run(args, Path(tmp)))
        except ImportError:
            phases = asyncio.run(run(args, Path(tmp)))
    print(table(phases, args))


if __name__ == "__main__":
    main()
