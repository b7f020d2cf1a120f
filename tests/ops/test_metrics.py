"""/metrics and /healthz of a real hubd, driven by simulated spokes (issue 6, section 5).

The exposition is parsed with prometheus_client's own parser; the counters are read
before and after documents flow, so each test shows a number moving. Readiness is
checked on a hub whose broker is not there yet, then comes up, then goes away. The
listener's address is read from the kernel's socket table of the hub process itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hubd.config import HubConfig, load_config
from runtime.clock import now_ms
from schemas import topics
from schemas.directory import Directory
from schemas.errors import ConfigError
from schemas.labels import Classification, Precedence
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import SpokeSpawner
from tests.hubproc import HubProcess, Mosquitto
from tests.world import REPO, World

WITHIN = 30.0
FAST_DEATH = "[delivery]\nretry_initial = 0.2\nretry_max = 0.4\nmax_attempts = 3\n"
T = TypeVar("T")


# ---------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


def parse_reply(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("ascii").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split(" ")[1]), headers, body)


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(WITHIN):
        return await reader.read()


async def request(port: int, raw: bytes) -> Reply:
    """Send ``raw`` as it is and read the answer up to the server's close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return parse_reply(await read_to_end(reader))
    finally:
        writer.close()


async def get(port: int, path: str, method: str = "GET") -> Reply:
    return await request(port, f"{method} {path} HTTP/1.1\r\nHost: hub\r\n\r\n".encode())


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(hub: HubProcess) -> Samples:
    assert hub.metrics_port is not None
    reply = await get(hub.metrics_port, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.body.decode())
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def until(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str, within: float = WITHIN
) -> T:
    """Ask ``probe`` again until ``ok`` says yes; AssertionError naming ``what``."""
    last: T | None = None
    try:
        async with asyncio.timeout(within):
            while True:  # polling another process over HTTP, bounded above
                last = await probe()
                if ok(last):
                    return last
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            f"gave up after {within:.0f} s waiting for {what}; last: {last}"
        ) from None


async def spoke_up(hub: HubProcess, org: str, channel: str = "govnet") -> float:
    return value(await scrape(hub), "govxchg_spoke_up", org=org, channel=channel)


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket of process ``pid`` in the LISTEN state."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = str(fd.readlink())
            if target.startswith("socket:["):
                inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # each 32-bit word in host (little-endian) order
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, packed), int(port, 16)))
    return found


def port_is_free(port: int) -> bool:
    """Whether the hub could listen on 127.0.0.1:``port`` (TIME_WAIT leftovers do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def hub(world: World, live_dir: Directory, tmp_path: Path) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path / "hub", world.hub_key, live_dir).start()
    yield process
    process.stop()


@pytest.fixture
def spokes(spawn_spoke: SpokeSpawner) -> SpokeSpawner:
    """``spokes(hub, "jl.gov", **fields)``: a SimSpoke aimed at ``hub`` (not connected)."""
    return spawn_spoke


# ---------------------------------------------------------------------------- /metrics


async def test_accepted_documents_and_their_delivery_latency_are_counted(
    hub: HubProcess, spokes: SpokeSpawner, live_dir: Directory
) -> None:
    gov, cc = spokes(hub, "jl.gov"), spokes(hub, "jl.cc")
    await cc.connect()
    await gov.connect()
    before = await scrape(hub)

    sent = [await gov.send(["jl.cc"], contents=[f"notice {n}".encode()]) for n in range(3)]
    for sealed in sent:
        msg_id = sealed.header.msg_id
        await gov.wait_for(lambda m=msg_id: gov.has(m, ReceiptStatus.DELIVERED, "jl.cc"), WITHIN)
    after = await scrape(hub)

    accepted = {"outcome": "accepted"}
    assert value(before, "govxchg_messages_total", **accepted) == 0
    assert value(after, "govxchg_messages_total", **accepted) == 3
    assert value(after, "govxchg_messages_total", outcome="rejected") == 0
    assert value(before, "govxchg_delivery_latency_seconds_count") == 0
    assert value(after, "govxchg_delivery_latency_seconds_count") == 3
    assert value(after, "govxchg_delivery_latency_seconds_bucket", le="+Inf") == 3
    assert value(after, "govxchg_delivery_latency_seconds_bucket", le="300.0") == 3
    assert value(after, "govxchg_delivery_latency_seconds_sum") > 0
    assert value(after, "govxchg_directory_version") == live_dir.version
    expires = value(after, "govxchg_directory_expires_timestamp_seconds")
    assert expires == live_dir.expires_at / 1000
    info = series(after, "govxchg_build_info")
    assert list(info.values()) == [1]
    assert ("hub", live_dir.hub_id) in next(iter(info))


async def test_spoke_up_is_one_while_connected_and_zero_after_it_disconnects(
    hub: HubProcess, spokes: SpokeSpawner, live_dir: Directory
) -> None:
    cc = spokes(hub, "jl.cc")
    assert await spoke_up(hub, "jl.cc") == 0

    await cc.connect()
    await until(lambda: spoke_up(hub, "jl.cc"), lambda v: v == 1, "jl.cc up on govnet")
    online = await scrape(hub)
    await cc.disconnect()
    await until(lambda: spoke_up(hub, "jl.cc"), lambda v: v == 0, "jl.cc down on govnet")
    offline = await scrape(hub)

    assert value(online, "govxchg_spokes_online", channel="govnet") == 1
    assert value(offline, "govxchg_spokes_online", channel="govnet") == 0
    up = series(online, "govxchg_spoke_up")
    on_channels = {(o.id, c) for o in live_dir.orgs for c in o.channels}
    assert {(dict(k)["org"], dict(k)["channel"]) for k in up} == on_channels
    assert sum(up.values()) == 1, "only jl.cc is online"
    assert {dict(k)["channel"] for k in series(online, "govxchg_spokes_online")} == {
        c.id for c in live_dir.channels
    }


async def test_deliveries_for_an_offline_recipient_are_pending_by_precedence(
    hub: HubProcess, spokes: SpokeSpawner
) -> None:
    gov = spokes(hub, "jl.gov")
    await gov.connect()
    flash = [await gov.send(["jl.cc"], precedence=Precedence.FLASH) for _ in range(2)]
    routine = await gov.send(["jl.cc"], precedence=Precedence.ROUTINE)
    for sealed in [*flash, routine]:
        msg_id = sealed.header.msg_id
        await gov.wait_for(lambda m=msg_id: gov.has(m, ReceiptStatus.ACCEPTED), WITHIN)

    waiting = await scrape(hub)
    pending = series(waiting, "govxchg_deliveries_pending")
    assert len(pending) == len(Precedence) * len(Classification)
    assert value(waiting, "govxchg_deliveries_pending", **internal("FLASH")) == 2
    assert value(waiting, "govxchg_deliveries_pending", **internal("ROUTINE")) == 1
    assert sum(pending.values()) == 3

    cc = spokes(hub, "jl.cc")
    await cc.connect()  # its presence releases the parked deliveries
    for sealed in [*flash, routine]:
        msg_id = sealed.header.msg_id
        await gov.wait_for(lambda m=msg_id: gov.has(m, ReceiptStatus.DELIVERED, "jl.cc"), WITHIN)
    delivered = await scrape(hub)
    assert sum(series(delivered, "govxchg_deliveries_pending").values()) == 0
    assert value(delivered, "govxchg_delivery_latency_seconds_count") == 3


def internal(precedence: str) -> dict[str, str]:
    return {"precedence": precedence, "classification": "INTERNAL"}


async def test_rejected_and_quarantined_messages_are_counted_apart_from_accepted(
    hub: HubProcess, spokes: SpokeSpawner
) -> None:
    gov = spokes(hub, "jl.gov")
    await gov.connect()

    leak = await gov.send(["cn.gov"], classification=Classification.SECRET)  # over govnet
    await gov.wait_for(lambda: gov.has(leak.header.msg_id, ReceiptStatus.REJECTED), WITHIN)
    await gov.publish_raw(b"\xc1 not a message")
    await gov.wait_for(lambda: bool(gov.receipts.get(None)), WITHIN)
    samples = await scrape(hub)

    assert value(samples, "govxchg_messages_total", outcome="quarantined") == 1
    assert value(samples, "govxchg_quarantines_total") == 1
    assert value(samples, "govxchg_messages_total", outcome="rejected") == 1
    assert value(samples, "govxchg_messages_total", outcome="accepted") == 0
    assert sum(series(samples, "govxchg_deliveries_pending").values()) == 0


async def test_retries_expiries_and_dead_letters_are_counted(
    world: World, live_dir: Directory, tmp_path: Path, spokes: SpokeSpawner
) -> None:
    hub = HubProcess(tmp_path / "hub", world.hub_key, live_dir, extra_toml=FAST_DEATH).start()
    try:
        gov, cc = spokes(hub, "jl.gov"), spokes(hub, "jl.cc", auto_deliver=False)
        await cc.connect()  # receives, never confirms: DEAD after max_attempts (3)
        await gov.connect()
        before = await scrape(hub)

        unconfirmed = await gov.send(["jl.cc"])
        expiring = await gov.send(["jl.jl"], expires_at=now_ms() + 2_000)  # jl.jl is offline
        dead, expired = unconfirmed.header.msg_id, expiring.header.msg_id
        await gov.wait_for(lambda: gov.has(dead, ReceiptStatus.DEAD, "jl.cc"), WITHIN)
        await gov.wait_for(lambda: gov.has(expired, ReceiptStatus.EXPIRED, "jl.jl"), WITHIN)
        after = await scrape(hub)
    finally:
        hub.stop()

    for name in (
        "govxchg_delivery_retries_total",
        "govxchg_deliveries_dead_total",
        "govxchg_deliveries_expired_total",
    ):
        assert value(before, name) == 0, name
    assert value(after, "govxchg_delivery_retries_total") == 2  # attempts 2 and 3
    assert value(after, "govxchg_deliveries_dead_total") == 1
    assert value(after, "govxchg_deliveries_expired_total") == 1
    assert sum(series(after, "govxchg_deliveries_pending").values()) == 0


async def test_presence_of_an_organisation_outside_the_directory_adds_no_series(
    hub: HubProcess,
) -> None:
    async with aiomqtt.Client("127.0.0.1", hub.port, identifier="intruder") as client:
        await client.publish(topics.presence("govnet", "zz.nobody"), topics.ONLINE, qos=1)

        def seen() -> bool:
            return any(
                e.get("event") == "presence.refused" and e.get("org") == "zz.nobody"
                for e in hub.log_events()
            )

        await until(_async(seen), bool, "the hub to refuse the presence message")
    samples = await scrape(hub)

    labels = {v for (_, pairs) in samples for (_, v) in pairs}
    assert "zz.nobody" not in labels
    assert value(samples, "govxchg_spokes_online", channel="govnet") == 0


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return check()

    return probe


# ---------------------------------------------------------------------------- /healthz


async def test_healthz_is_200_ok_with_the_directory_version_when_the_hub_serves(
    hub: HubProcess, live_dir: Directory
) -> None:
    assert hub.metrics_port is not None
    reply = await get(hub.metrics_port, "/healthz")

    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "status": "ok",
        "directory_version": live_dir.version,
        "brokers": {"embedded": True},
        "nodes": {"embedded": f"mqtt://127.0.0.1:{hub.port}"},  # the node it is on
        "store": "writable",
    }


async def test_healthz_is_503_naming_the_broker_until_it_is_up_and_again_when_it_goes(
    world: World, live_dir: Directory, tmp_path: Path
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")  # its port is chosen, nothing listens yet
    hub = HubProcess(tmp_path / "hub", world.hub_key, live_dir, broker_port=broker.port)
    name = f"mqtt://127.0.0.1:{broker.port}"
    assert hub.metrics_port is not None
    port = hub.metrics_port

    async def health() -> Reply | None:
        with contextlib.suppress(ConnectionError):
            return await get(port, "/healthz")
        return None  # the hub is not listening yet

    hub.start(ready=False)
    try:
        starting = await until(health, lambda r: r is not None, "the hub to listen")
        broker.start()
        up = await until(health, lambda r: r is not None and r.status == 200, "readiness")
        broker.stop()
        down = await until(health, lambda r: r is not None and r.status == 503, "unreadiness")
    finally:
        hub.stop()
        broker.stop()

    assert starting is not None
    assert starting.status == 503
    assert starting.json()["status"] == "unavailable"
    assert up is not None
    assert up.json()["brokers"] == {name: True}
    assert up.json()["nodes"] == {name: name}  # a single url: its one node
    assert down is not None
    report = down.json()
    assert report["brokers"] == {name: False}
    assert report["nodes"] == {name: None}  # on no node while it is not connected
    assert report["store"] == "writable"
    not_ready = report["not_ready"]
    assert isinstance(not_ready, list)
    assert any(name in problem and "not connected" in problem for problem in not_ready)


# ---------------------------------------------------------------------------- the listener


async def test_an_unknown_path_is_404_and_a_method_other_than_get_or_head_is_405(
    hub: HubProcess,
) -> None:
    assert hub.metrics_port is not None
    missing = await get(hub.metrics_port, "/nothing-here")
    posted = await get(hub.metrics_port, "/metrics", method="POST")
    query = await get(hub.metrics_port, "/metrics?name[]=govxchg_messages_total")
    head = await get(hub.metrics_port, "/healthz", method="HEAD")

    assert missing.status == 404
    assert b"GET /metrics, GET /healthz and the status page at GET /" in missing.body
    assert posted.status == 405
    assert posted.headers["allow"] == "GET, HEAD"
    assert query.status == 200
    assert head.status == 200
    assert head.body == b""


async def test_an_oversized_request_head_is_refused_and_a_slow_client_holds_nothing(
    hub: HubProcess,
) -> None:
    assert hub.metrics_port is not None
    port = hub.metrics_port
    huge = b"GET /metrics HTTP/1.1\r\n" + b"X-Padding: " + b"a" * 10_000 + b"\r\n\r\n"
    refused = await request(port, huge)

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metr")  # and nothing more
        await writer.drain()
        meanwhile = await get(port, "/healthz")
        slow = parse_reply(await read_to_end(reader))  # the server gives up on it
    finally:
        writer.close()

    assert refused.status == 431
    assert meanwhile.status == 200
    assert slow.status == 408


async def test_the_endpoint_listens_on_loopback_only_by_default(
    world: World, live_dir: Directory, tmp_path: Path
) -> None:
    default = HubConfig().metrics
    assert (default.host, default.port) == ("127.0.0.1", 9464)
    if not port_is_free(default.port):
        pytest.skip("something on this machine already listens on 127.0.0.1:9464")
    hub = HubProcess(tmp_path / "hub", world.hub_key, live_dir, metrics_port=None).start()
    try:
        assert hub.process is not None
        listening = listening_addresses(hub.process.pid)
        reply = await get(default.port, "/healthz")
    finally:
        hub.stop()

    assert {a for a in listening if a[1] == default.port} == {("127.0.0.1", default.port)}
    assert reply.status == 200


async def test_an_empty_listen_turns_the_endpoint_off(
    world: World, live_dir: Directory, tmp_path: Path
) -> None:
    hub = HubProcess(
        tmp_path / "hub",
        world.hub_key,
        live_dir,
        metrics_port=None,
        extra_toml='[metrics]\nlisten = ""\n',
    ).start()
    try:
        assert hub.process is not None
        listening = listening_addresses(hub.process.pid)
    finally:
        hub.stop()

    assert listening == {("127.0.0.1", hub.embedded_port)}  # the embedded broker alone


def test_a_taken_metrics_port_stops_the_hub_with_a_message_naming_the_option(
    world: World, live_dir: Directory, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        hub = HubProcess(tmp_path / "hub", world.hub_key, live_dir, metrics_port=port)
        config = hub.write()

        done = subprocess.run(  # noqa: S603 - our own daemon
            [sys.executable, "-m", "hubd", "run", "--config", str(config)],
            capture_output=True,
            timeout=60,
            check=False,
        )

    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 2, output
    assert f"metrics.listen: 127.0.0.1:{port} is already in use" in output
    assert "[metrics] listen" in output
    assert "broker.embedded_started" not in output, "it stops before starting anything"


# ---------------------------------------------------------------------------- configuration


def test_the_repository_configuration_serves_metrics_on_loopback() -> None:
    config = load_config(REPO / "config" / "hub.toml")

    assert config.metrics.enabled
    assert config.metrics.listen == "127.0.0.1:9464"


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("0.0.0.0:9100", "0.0.0.0", 9100), ("[::1]:9464", "::1", 9464)],  # noqa: S104
)
def test_listen_takes_host_and_port(tmp_path: Path, listen: str, host: str, port: int) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(f'[metrics]\nlisten = "{listen}"\n')

    metrics = load_config(path).metrics

    assert (metrics.host, metrics.port) == (host, port)


def test_a_listen_without_a_port_is_a_config_error_naming_the_option(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[metrics]\nlisten = "9464"\n')

    with pytest.raises(ConfigError, match=r"metrics\.listen") as caught:
        load_config(path)

    assert "HOST:PORT" in str(caught.value)
