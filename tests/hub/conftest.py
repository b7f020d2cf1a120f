"""Fixtures for the hub's integration tests: real brokers, a real hubd process."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from runtime.tasks import cancel_and_wait
from schemas import transport
from schemas.directory import Directory
from schemas.envelope import VerifiedEnvelope
from schemas.errors import PeerError
from schemas.receipts import ReceiptEntry, ReceiptStatus, verify_receipts
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.spokesim import SimSpoke
from tests.world import World


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture(params=["embedded", "mosquitto"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def live_dir(world: World) -> Directory:
    return live_directory(world)


@pytest.fixture
def hub(
    broker_kind: str, world: World, live_dir: Directory, tmp_path: Path
) -> Iterator[HubProcess]:
    """A running hubd on the embedded broker or on a Mosquitto of its own."""
    broker = Mosquitto(tmp_path / "mosquitto").start() if broker_kind == "mosquitto" else None
    process = HubProcess(
        tmp_path / "hub",
        world.hub_key,
        live_dir,
        broker_port=None if broker is None else broker.port,
        extra_toml="[delivery]\nretry_initial = 1.0\nretry_max = 4.0\n",
    )
    process.start()
    yield process
    process.stop()
    if broker is not None:
        broker.stop()


SpokeFactory = Callable[..., SimSpoke]


@pytest.fixture
async def spokes(world: World, live_dir: Directory, hub: HubProcess) -> AsyncIterator[SpokeFactory]:
    """``spokes("jl.gov", channels=("govnet",))``: a connected simulated spoke."""
    async with AsyncExitStack() as stack:
        made: list[SimSpoke] = []

        def make(org: str, **kw: object) -> SimSpoke:
            spoke = SimSpoke(
                org,
                world.keys[org].signing,
                world.keys[org].encryption,
                live_dir,
                "127.0.0.1",
                hub.port,
                **kw,  # type: ignore[arg-type]
            )
            made.append(spoke)
            stack.push_async_callback(spoke.disconnect)
            return spoke

        yield make


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server (127.0.0.1:5432, trust auth)."""
    import secrets  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    name = f"govx_test_{secrets.token_hex(4)}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True)  # noqa: S603
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)  # noqa: S603


# ---------------------------------------------------------------------------------------
# Helpers added for the end-to-end suites (delivery, gating, replay, offline, precedence,
# lifecycle, logs). They add to the fixtures above without changing them.

FAST_RETRIES = "[delivery]\nretry_initial = 1.0\nretry_max = 4.0\n"
# Hubs whose retry timer cannot fire within a test: what arrives came from the presence
# flush or the receipt replay, never from a resend, so "exactly once" is a real claim.
NO_RETRIES = "[delivery]\nretry_initial = 600.0\nretry_max = 600.0\n"

HubFactory = Callable[..., HubProcess]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The hub's store: "" (SQLite in the state folder) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def hub_factory(
    broker_kind: str, world: World, live_dir: Directory, tmp_path: Path
) -> Iterator[HubFactory]:
    """``hub_factory(store_url=..., extra_toml=..., env=..., start=True)``: hubd processes.

    All hubs made in one test share one Mosquitto (for broker_kind "mosquitto") and each
    has its own folder; every process is killed at teardown if still running.
    """
    broker: Mosquitto | None = None
    made: list[HubProcess] = []

    def make(
        *,
        store_url: str = "",
        extra_toml: str = FAST_RETRIES,
        env: dict[str, str] | None = None,
        start: bool = True,
        directory: Directory | None = None,
    ) -> HubProcess:
        nonlocal broker
        if broker_kind == "mosquitto" and broker is None:
            broker = Mosquitto(tmp_path / "mosquitto").start()
        process = HubProcess(
            tmp_path / f"hub{len(made)}",
            world.hub_key,
            directory or live_dir,
            broker_port=None if broker is None else broker.port,
            store_url=store_url,
            extra_toml=extra_toml,
        )
        made.append(process)
        if start:
            process.start(env=env)
        return process

    yield make
    for process in made:
        process.stop()
    if broker is not None:
        broker.stop()


@dataclass
class RecordingSpoke(SimSpoke):
    """A SimSpoke that also records what order and on which channel things arrived.

    ``order``: msg_ids in the order the spoke opened them, duplicates included;
    ``delivered_on``: the channel of every opening; ``batches``: each receipt batch as
    (channel, seq, entries); and :meth:`crash` drops the connection without an MQTT
    DISCONNECT, so the broker publishes the will (offline) as after a real crash.
    """

    order: list[bytes] = field(default_factory=list)
    delivered_on: dict[bytes, list[str]] = field(default_factory=lambda: defaultdict(list))
    batches: list[tuple[str, int, tuple[ReceiptEntry, ...]]] = field(default_factory=list)

    async def _on(self, channel: str, payload: bytes) -> None:
        with contextlib.suppress(PeerError):
            message = transport.decode(payload)
            if isinstance(message, transport.ReceiptsMsg):
                verified = verify_receipts(message.frame, self.directory)
                self.batches.append((channel, message.seq, verified.batch.entries))
        await super()._on(channel, payload)

    async def _deliver(self, envelope: VerifiedEnvelope, body: bytes, channel: str) -> None:
        msg_id = envelope.header.msg_id
        before = self.deliveries[msg_id]
        await super()._deliver(envelope, body, channel)
        if self.deliveries[msg_id] > before:
            self.order.append(msg_id)
            self.delivered_on[msg_id].append(channel)

    def _distinct_batches(self) -> list[tuple[str, int, tuple[ReceiptEntry, ...]]]:
        """The batches received, a numbered one once however often it came: the hub may
        send a numbered batch again when a hello's replay overlaps the live stream."""
        seen: set[tuple[str, int]] = set()
        distinct = []
        for channel, seq, entries in self.batches:
            if seq:
                if (channel, seq) in seen:
                    continue
                seen.add((channel, seq))
            distinct.append((channel, seq, entries))
        return distinct

    def statements(self, msg_id: bytes) -> list[tuple[ReceiptStatus, str | None]]:
        """(status, recipient) of every receipt about ``msg_id``, in arrival order, each
        numbered batch counted once."""
        return [
            (e.status, e.recipient)
            for _, _, entries in self._distinct_batches()
            for e in entries
            if e.msg_id == msg_id
        ]

    def seqs(self, msg_id: bytes, status: ReceiptStatus) -> list[int]:
        """The seq of every distinct batch that carried ``status`` for ``msg_id``."""
        return [
            seq
            for _, seq, entries in self._distinct_batches()
            for e in entries
            if e.msg_id == msg_id and e.status is status
        ]

    async def crash(self) -> None:
        """Lose the connection abruptly: no DISCONNECT packet, so the will is published."""
        client, self._client = self._client, None
        assert client is not None
        sock = client._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task  # the listener ends with the connection
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)


SpokeMaker = Callable[..., RecordingSpoke]


@pytest.fixture
async def spokes_at(world: World, live_dir: Directory) -> AsyncIterator[SpokeMaker]:
    """``spokes_at(hub, "jl.gov", channels=(...))``: a RecordingSpoke aimed at ``hub``
    (not yet connected; disconnected at teardown)."""
    async with AsyncExitStack() as stack:

        def make(
            hub: HubProcess,
            org: str,
            *,
            directory: Directory | None = None,
            **kw: object,
        ) -> RecordingSpoke:
            spoke = RecordingSpoke(
                org,
                world.keys[org].signing,
                world.keys[org].encryption,
                directory or live_dir,
                "127.0.0.1",
                hub.port,
                **kw,  # type: ignore[arg-type]
            )
            stack.push_async_callback(spoke.disconnect)
            return spoke

        yield make


async def wait_for_log(
    hub: HubProcess, predicate: Callable[[dict[str, object]], bool], within: float = 20.0
) -> dict[str, object]:
    """The first event of hubd's JSON log that satisfies ``predicate``, polling the file."""
    async with asyncio.timeout(within):
        while True:
            for event in hub.log_events():
                if predicate(event):
                    return event
            await asyncio.sleep(0.05)  # polling a file for a condition, bounded above


class Observer:
    """A plain MQTT client (not a spoke) that records every message on some topics."""

    def __init__(self, port: int, *topics: str) -> None:
        self.port, self.topics = port, topics
        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retained)
        self._changed = asyncio.Condition()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Observer:
        self._client = aiomqtt.Client(
            "127.0.0.1", self.port, identifier=f"observer-{secrets.token_hex(4)}"
        )
        await self._client.__aenter__()
        for topic in self.topics:
            await self._client.subscribe(topic, qos=1)
        self._task = asyncio.create_task(self._listen(self._client))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            # amqtt 0.12.1 (the embedded broker) sends a client that connects every retained
            # message matching *any* client's subscription (broker.py, after "pre-existing
            # session's subscriptions"); keep only what this observer subscribed to.
            if not any(message.topic.matches(t) for t in self.topics):
                continue
            self.messages.append((message.topic.value, message.payload, message.retain))
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 20.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)


# ---------------------------------------------------------------------------------------
# Fixtures for the crash, large-document and expiry suites: hubs and reliable spokes with
# an explicit broker, so one test can kill, restart and reconnect them at will.

HubSpawner = Callable[..., HubProcess]
SpokeSpawner = Callable[..., SimSpoke]


@pytest.fixture
def spawn_hub(world: World, live_dir: Directory, tmp_path: Path) -> Iterator[HubSpawner]:
    """``spawn_hub(broker_port=..., store_url=..., extra_toml=...)``: a started hubd.

    ``broker_port=None`` runs the embedded broker. Every process is killed at teardown."""
    made: list[HubProcess] = []

    def spawn(
        *, broker_port: int | None = None, store_url: str = "", extra_toml: str = ""
    ) -> HubProcess:
        process = HubProcess(
            tmp_path / f"hubd{len(made)}",
            world.hub_key,
            live_dir,
            broker_port=broker_port,
            store_url=store_url,
            extra_toml=extra_toml,
        )
        made.append(process)
        return process.start()

    yield spawn
    for process in made:
        process.stop()


@pytest.fixture
async def spawn_spoke(
    world: World, live_dir: Directory, spawn_hub: HubSpawner
) -> AsyncIterator[SpokeSpawner]:
    """``spawn_spoke(hub, "jl.cc", **fields)``: a SimSpoke aimed at ``hub`` (not connected).

    Disconnected at teardown, before the hubs are stopped."""
    async with AsyncExitStack() as stack:

        def spawn(hub: HubProcess, org: str, **kw: object) -> SimSpoke:
            spoke = SimSpoke(
                org,
                world.keys[org].signing,
                world.keys[org].encryption,
                live_dir,
                "127.0.0.1",
                hub.port,
                **kw,  # type: ignore[arg-type]
            )
            stack.push_async_callback(spoke.disconnect)
            return spoke

        yield spawn
