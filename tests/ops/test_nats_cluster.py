"""hubctl broker-config --engine nats: a 3-node NATS cluster per channel (issue 15, part 1).

The generated files are started as a real cluster (three nats-server processes on
loopback, tests/natscluster.py) and real MQTT clients prove what the Mosquitto tests
prove of the ACL: the routes form, a QoS 1 message crosses nodes, a spoke publishes only
on its own up topic and reads only its own down topic, and a retained directory reaches
a late subscriber on another node. One cluster serves the whole module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shlex
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from hubd.provision.brokerconf import Listener, acl_text, write_broker
from hubd.provision.directory import load_topology
from hubd.provision.natsconf import (
    cluster_user,
    nats_subject,
    nodes_for,
    permissions,
    user_name,
    write_nats_cluster,
)
from runtime.mqtt import BrokerLink, mqtt_client_id, tls_context
from schemas import topics
from schemas.topology import Topology
from tests.natscluster import NatsCluster, start_command
from tests.spoke.procs import eventually
from tests.world import REPO

TOPOLOGY = REPO / "config" / "topology.toml"
CHANNEL = "govnet"
WITHIN = 20.0
REPLICAS = ("a", "b")  # hub replicas (--hub-replicas a,b): a user of its own each


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(TOPOLOGY)


@pytest.fixture(scope="module")
def cluster(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    folder = tmp_path_factory.mktemp("nats")
    nats = NatsCluster(topology, CHANNEL, folder, replicas=REPLICAS).start()
    try:
        yield nats
    finally:
        nats.stop()


@contextlib.asynccontextmanager
async def connected(
    cluster: NatsCluster, node: int, identity: str | None, *, name: str = ""
) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1",
        cluster.port(node),
        tls_context=cluster.tls(identity),
        identifier=client_id(f"t-{identity}-{name}-{os.getpid()}"),
        clean_session=True,  # as runtime.mqtt.BrokerLink connects
    ) as client:
        yield client


def client_id(name: str) -> str:
    """A client id NATS takes: no '.' (nor ' ', '*', '>'). Organisation ids are labels of
    [a-z0-9-] joined by dots, so '.' -> '_' keeps every id distinct."""
    return name.replace(".", "_")


def _any(messages: list[tuple[str, bytes]]) -> list[tuple[str, bytes]] | None:
    return messages or None


async def collect(client: aiomqtt.Client, into: list[tuple[str, bytes]]) -> None:
    async for message in client.messages:  # until cancelled: each message as it comes
        into.append((message.topic.value, bytes(message.payload)))  # noqa: PERF401


# ---------------------------------------------------------------------------------------
# The generated files


def test_dotted_topics_become_the_subjects_nats_server_makes_of_them() -> None:
    assert nats_subject("xchg/v1/govnet/up/jl.cc.nongan") == "xchg.v1.govnet.up.jl//cc//nongan"
    assert nats_subject("xchg/v1/govnet/up/+") == "xchg.v1.govnet.up.*"
    assert nats_subject("xchg/v1/govnet/directory") == "xchg.v1.govnet.directory"
    for unlike_ours in ("xchg//v1", "/xchg", "xchg/v1/#", "xchg/a b", "xchg/a+b", "xchg/a>"):
        with pytest.raises(ValueError, match="not one the topic layout makes"):
            nats_subject(unlike_ours)


def test_permissions_are_the_mosquitto_acl_written_on_subjects(topology: Topology) -> None:
    from_acl: dict[str, dict[str, list[str]]] = {}
    for line in acl_text(topology, (CHANNEL,)).splitlines():
        if line.startswith("user "):
            user = from_acl.setdefault(line.split()[1], {"publish": [], "subscribe": []})
        elif line.startswith("topic "):
            _, access, topic = line.split()
            user["publish" if access == "write" else "subscribe"].append(nats_subject(topic))
    assert permissions(topology, CHANNEL) == from_acl
    assert permissions(topology, CHANNEL)["jl.cc"]["publish"] == [
        "xchg.v1.govnet.up.jl//cc",
        "xchg.v1.govnet.presence.jl//cc",
    ]


def test_each_hub_replica_is_a_user_of_its_own_with_the_hubs_permissions(
    topology: Topology, tmp_path: Path
) -> None:
    granted = permissions(topology, CHANNEL, ("jl.hub~a", "jl.hub~b"))
    assert granted["jl.hub~a"] == granted["jl.hub~b"] == granted["jl.hub"]
    assert {k: v for k, v in granted.items() if "~" not in k} == permissions(topology, CHANNEL)

    issued = write_nats_cluster(
        topology, CHANNEL, tmp_path, nodes_for([], CHANNEL), replicas=REPLICAS
    )

    assert issued.replicas == ("jl.hub~a", "jl.hub~b")
    for index in range(3):
        conf = issued.conf(index).read_text()
        assert 'user: "CN=jl.hub~a,O=govxchg"' in conf
        assert '#   [replicas] name = "b": cert = ".../clients/jl.hub~b.pem"' in conf
    assert issued.cert("jl.hub~b").exists()


def test_each_node_routes_to_the_other_two_with_tls_and_its_own_store(
    topology: Topology, tmp_path: Path
) -> None:
    nodes = nodes_for(
        [f"{CHANNEL}=nats{i}.govnet.example" for i in (1, 2, 3)], CHANNEL, ["10.1.0.5"]
    )
    issued = write_nats_cluster(
        topology, CHANNEL, tmp_path, nodes, install=Path("/srv/govxchg-nats")
    )
    for index in range(3):
        conf = issued.conf(index).read_text()
        others = [f"nats-route://nats{i}.govnet.example:6222" for i in (1, 2, 3) if i != index + 1]
        assert f"routes: {others}".replace("'", '"') in conf
        assert f'server_name: "govnet-{index + 1}"' in conf
        assert f'store_dir: "/srv/govxchg-nats/node{index + 1}/jetstream"' in conf
        assert 'listen: "10.1.0.5:8883"' in conf  # MQTT
        assert 'listen: "10.1.0.5:6222"' in conf  # routes
        assert 'listen: "127.0.0.1:4222"' in conf  # NATS's own client port: this host only
        assert "stream_replicas: 3" in conf
        assert conf.count("verify_and_map: true") == 2  # MQTT clients and routes
        assert f'authorization {{ user: "{cluster_user(CHANNEL)}" }}' in conf
        assert f'user: "{user_name("jl.cc")}"' in conf
        assert "consumer_replicas" not in conf  # 2.15 ignores it: consumers follow the stream
        assert (issued.node(index) / "server.key").stat().st_mode & 0o077 == 0


def test_hubctl_broker_config_engine_nats_writes_a_cluster_per_channel(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        hubctl_app,
        ["broker-config", "--engine", "nats", "--topology", str(TOPOLOGY), "--out", str(tmp_path)],
    )

    assert result.exit_code == 0, result.output
    for channel in ("internet", "govnet", "classified", "core"):
        for node in (1, 2, 3):
            assert (tmp_path / channel / f"node{node}" / "nats.conf").exists()
        assert not (tmp_path / channel / "broker").exists()
    # three nodes on one host (no --host): ports counted up from the defaults
    conf = (tmp_path / "govnet" / "node2" / "nats.conf").read_text()
    assert 'listen: "0.0.0.0:8884"' in conf
    assert '"nats-route://localhost:6222", "nats-route://localhost:6224"' in conf


def test_a_channel_moved_from_mosquitto_to_nats_keeps_its_ca_and_client_certificates(
    topology: Topology, tmp_path: Path
) -> None:
    mosquitto = write_broker(
        topology, (CHANNEL,), tmp_path, Listener("127.0.0.1", 8883), broker_user=None
    )
    before = {p.name: p.read_bytes() for p in (mosquitto.folder / "clients").iterdir()}
    ca = mosquitto.ca.read_bytes()

    nats = write_nats_cluster(topology, CHANNEL, tmp_path, nodes_for([], CHANNEL))

    assert nats.folder == mosquitto.folder
    assert nats.issued == ("govnet-1", "govnet-2", "govnet-3")  # the nodes, nobody else
    assert nats.ca.read_bytes() == ca
    assert {p.name: p.read_bytes() for p in (nats.folder / "clients").iterdir()} == before


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--host", "govnet=a:8883", "--host", "govnet=b:8883"], "a NATS cluster has 3 nodes"),
        (["--shared"], "one cluster per channel"),
        (["--host", "a:1", "--host", "a:1", "--host", "b"], "two nodes at the same HOST:PORT"),
        (["--host", 'a"]', "--host", "b", "--host", "c"], "a DNS name or an IPv4 address"),
        (["--host", "a:99999", "--host", "b", "--host", "c"], "write HOST[:PORT]"),
    ],
)
def test_a_cluster_that_is_not_three_nodes_of_one_channel_is_refused(
    tmp_path: Path, argv: list[str], says: str
) -> None:
    result = CliRunner().invoke(
        hubctl_app,
        [
            "broker-config",
            "--engine",
            "nats",
            "--topology",
            str(TOPOLOGY),
            "--out",
            str(tmp_path),
            *argv,
        ],
    )

    assert result.exit_code == 2
    assert says in result.stderr
    assert not list(tmp_path.rglob("nats.conf"))


# ---------------------------------------------------------------------------------------
# A real cluster started from the generated files


def test_the_generated_configs_start_and_form_one_cluster(cluster: NatsCluster) -> None:
    names = {f"{CHANNEL}-{i}" for i in (1, 2, 3)}
    for index in range(3):
        assert cluster.routes(index) == names - {f"{CHANNEL}-{index + 1}"}


async def test_a_qos1_message_published_on_one_node_reaches_a_subscriber_on_another(
    cluster: NatsCluster, topology: Topology
) -> None:
    seen: list[tuple[str, bytes]] = []
    stop = asyncio.Event()

    async def greet(_: object) -> None:
        return None

    hub = BrokerLink(
        "nats-2",
        "127.0.0.1",
        cluster.port(1),
        [CHANNEL],
        subscriptions=[topics.hub_subscriptions(CHANNEL)[0]],
        client_id=client_id(f"hubd-{topology.hub.id}-{os.getpid()}"),
        sink=lambda topic, payload: seen.append((topic, payload)),
        on_connected=greet,
        tls=tls_context(str(cluster.files.ca), *map(str, _pair(cluster, topology.hub.id))),
    )
    running = asyncio.create_task(hub.run(stop))
    try:
        async with asyncio.timeout(WITHIN):
            await hub.connected.wait()
        async with connected(cluster, 0, "jl.cc.nongan") as spoke:
            await spoke.publish(topics.up(CHANNEL, "jl.cc.nongan"), b"across nodes", qos=1)
        await eventually(lambda: seen or None, "the message on node 2", within=WITHIN)
    finally:
        stop.set()
        await running
    assert seen == [(topics.up(CHANNEL, "jl.cc.nongan"), b"across nodes")]


def _code(granted: object) -> int:
    """A SUBACK return code, whether paho gives an int or a ReasonCode."""
    value = getattr(granted, "value", granted)
    assert isinstance(value, int)
    return value


def _pair(cluster: NatsCluster, identity: str) -> tuple[Path, Path]:
    return cluster.files.cert(identity), cluster.files.key(identity)


async def test_a_spoke_publishes_on_its_own_up_topic_only(cluster: NatsCluster) -> None:
    seen: list[tuple[str, bytes]] = []
    async with connected(cluster, 1, "jl.hub") as hub:
        await hub.subscribe(topics.hub_subscriptions(CHANNEL)[0], qos=1)
        reader = asyncio.create_task(collect(hub, seen))
        try:
            async with connected(cluster, 0, "jl.cc") as spoke:
                await spoke.publish(topics.up(CHANNEL, "jl.jl"), b"forged", qos=1)
                await spoke.publish(topics.directory(CHANNEL), b"fake directory", qos=1)
                await spoke.publish(topics.up(CHANNEL, "jl.cc"), b"own", qos=1)
            await eventually(lambda: seen or None, "the spoke's own message", within=WITHIN)
            async with connected(cluster, 0, "jl.jl") as other:  # the forged one's owner
                await other.publish(topics.up(CHANNEL, "jl.jl"), b"jl.jl's own", qos=1)
            await eventually(lambda: len(seen) > 1 or None, "jl.jl's message", within=WITHIN)
        finally:
            reader.cancel()
    assert seen == [
        (topics.up(CHANNEL, "jl.cc"), b"own"),
        (topics.up(CHANNEL, "jl.jl"), b"jl.jl's own"),
    ]


async def test_a_spoke_cannot_read_another_orgs_down_topic(cluster: NatsCluster) -> None:
    seen: list[tuple[str, bytes]] = []
    async with connected(cluster, 2, "jl.cc") as spoke:
        refused = await spoke.subscribe(topics.down(CHANNEL, "jl.jl"), qos=1)
        granted = await spoke.subscribe(topics.down(CHANNEL, "jl.cc"), qos=1)
        assert [_code(c) for c in (*refused, *granted)] == [0x80, 1]  # SUBACK: failure, QoS 1
        reader = asyncio.create_task(collect(spoke, seen))
        try:
            async with connected(cluster, 0, "jl.hub") as hub:
                await hub.publish(topics.down(CHANNEL, "jl.jl"), b"for jl.jl", qos=1)
                await hub.publish(topics.down(CHANNEL, "jl.cc"), b"for jl.cc", qos=1)
            await eventually(lambda: seen or None, "jl.cc's own down message", within=WITHIN)
            async with connected(cluster, 0, "jl.hub") as hub:  # one more, after the refused one
                await hub.publish(topics.down(CHANNEL, "jl.cc"), b"again", qos=1)
            await eventually(lambda: len(seen) > 1 or None, "the second message", within=WITHIN)
        finally:
            reader.cancel()
    assert seen == [
        (topics.down(CHANNEL, "jl.cc"), b"for jl.cc"),
        (topics.down(CHANNEL, "jl.cc"), b"again"),
    ]


async def test_two_hub_replicas_on_two_nodes_each_read_up_and_write_down_at_once(
    cluster: NatsCluster, topology: Topology
) -> None:
    heard: dict[str, list[tuple[str, bytes]]] = {"a": [], "b": [], "spoke": []}
    async with contextlib.AsyncExitStack() as stack:
        readers: dict[str, asyncio.Task[None]] = {}
        replicas: dict[str, aiomqtt.Client] = {}
        for node, name in enumerate(REPLICAS):
            identity = f"{topology.hub.id}~{name}"
            client = await stack.enter_async_context(connected(cluster, node, identity, name=name))
            granted = await client.subscribe(topics.hub_subscriptions(CHANNEL)[0], qos=1)
            assert [_code(c) for c in granted] == [1]  # QoS 1, not the failure code
            readers[name] = asyncio.create_task(collect(client, heard[name]))
            replicas[name] = client
        spoke = await stack.enter_async_context(connected(cluster, 2, "jl.cc", name="r"))
        await spoke.subscribe(topics.down(CHANNEL, "jl.cc"), qos=1)
        readers["spoke"] = asyncio.create_task(collect(spoke, heard["spoke"]))
        try:
            await spoke.publish(topics.up(CHANNEL, "jl.cc"), b"to both replicas", qos=1)
            for name, messages in (("a", heard["a"]), ("b", heard["b"])):
                await eventually(functools.partial(_any, messages), f"up on {name}", within=WITHIN)
                await replicas[name].publish(
                    topics.down(CHANNEL, "jl.cc"), f"from {name}".encode(), qos=1
                )
            await eventually(
                lambda: len(heard["spoke"]) == 2 or None, "down from both", within=WITHIN
            )
            assert not any(task.done() for task in readers.values())  # nobody disconnected
        finally:
            for task in readers.values():
                task.cancel()
    assert heard["a"] == heard["b"] == [(topics.up(CHANNEL, "jl.cc"), b"to both replicas")]
    assert sorted(heard["spoke"]) == [
        (topics.down(CHANNEL, "jl.cc"), b"from a"),
        (topics.down(CHANNEL, "jl.cc"), b"from b"),
    ]


async def test_a_retained_directory_reaches_a_late_subscriber_on_another_node(
    cluster: NatsCluster,
) -> None:
    async with connected(cluster, 0, "jl.hub") as hub:
        await hub.publish(topics.directory(CHANNEL), b"signed directory v7", qos=1, retain=True)
    seen: list[tuple[str, bytes]] = []
    async with connected(cluster, 2, "jl.sp", name="late") as spoke:
        await spoke.subscribe(topics.directory(CHANNEL), qos=1)
        reader = asyncio.create_task(collect(spoke, seen))
        try:
            await eventually(lambda: seen or None, "the retained directory", within=WITHIN)
        finally:
            reader.cancel()
    assert seen == [(topics.directory(CHANNEL), b"signed directory v7")]


async def test_a_dead_spokes_will_says_offline_to_the_hub_on_another_node(
    cluster: NatsCluster,
) -> None:
    """A spoke's will is its retained presence 'offline' (spoke/agent.py): NATS publishes
    it for the spoke, under the spoke's permissions, when the connection dies."""
    presence = topics.presence(CHANNEL, "jl.ly")
    seen: list[tuple[str, bytes]] = []
    files = cluster.files
    argv = [
        *("mosquitto_sub", "-h", "127.0.0.1", "-p", str(cluster.port(0))),
        *("--cafile", str(files.ca), "--cert", str(files.cert("jl.ly"))),
        *("--key", str(files.key("jl.ly")), "-i", client_id("spoke-jl.ly-govnet")),
        *("-t", topics.down(CHANNEL, "jl.ly"), "-q", "1"),
        *("--will-topic", presence, "--will-payload", "offline", "--will-retain"),
        *("--will-qos", "1"),
    ]
    async with connected(cluster, 1, "jl.hub") as hub:
        await hub.subscribe(topics.hub_subscriptions(CHANNEL)[1], qos=1)
        reader = asyncio.create_task(collect(hub, seen))
        assert not cluster.mqtt_subscriptions(0, client_id("spoke-jl.ly-govnet"))
        spoke = await asyncio.create_subprocess_exec(*argv)
        try:
            await eventually(
                lambda: cluster.mqtt_subscriptions(0, client_id("spoke-jl.ly-govnet")),
                "the spoke's subscription on node 1",
                within=WITHIN,
            )
            spoke.kill()  # no DISCONNECT: the will goes out
            await spoke.wait()
            await eventually(lambda: seen or None, "the spoke's will", within=WITHIN)
        finally:
            if spoke.returncode is None:
                spoke.kill()
                await spoke.wait()
            reader.cancel()
    assert seen == [(presence, topics.OFFLINE)]


@pytest.mark.parametrize(
    ("dotted", "parts"),
    [
        ("spoke-jl.cc-govnet", ("spoke", "jl.cc", "govnet")),
        ("hubd-jl.hub-mqtts-127.0.0.1-8883", ("hubd", "jl.hub", "mqtts-127.0.0.1-8883")),
    ],
)
async def test_nats_refuses_a_client_id_with_a_dot_and_takes_the_one_hubd_and_spokes_make(
    cluster: NatsCluster, dotted: str, parts: tuple[str, ...]
) -> None:
    """nats-server refuses a client id with '.' ("invalid character in client ID"; CONNACK
    2, identifier rejected); hubd and the spokes make theirs with runtime.mqtt's
    mqtt_client_id, which writes the organisation id (and the broker's address) without."""
    tls = cluster.tls("jl.cc")
    with pytest.raises(aiomqtt.MqttCodeError) as refused:
        async with aiomqtt.Client("127.0.0.1", cluster.port(0), tls_context=tls, identifier=dotted):
            pass
    assert refused.value.rc in (2, 133)  # 3.1.1's code, or paho's name for it
    async with aiomqtt.Client(
        "127.0.0.1", cluster.port(0), tls_context=tls, identifier=mqtt_client_id(*parts)
    ):
        pass


async def test_a_client_without_a_certificate_is_refused(cluster: NatsCluster) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with connected(cluster, 0, None):
            pass


def test_an_organisations_certificate_cannot_join_the_cluster(cluster: NatsCluster) -> None:
    """The route listener takes the channel's CA, so it must also say who may route."""
    context = cluster.tls("jl.cc")
    context.check_hostname = False
    port = cluster.nodes[0].route_port
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as route,
    ):
        answer = b""
        with contextlib.suppress(OSError, ssl.SSLError):
            assert route.recv(4096).startswith(b"INFO ")
            hello = {"tls_required": True, "name": "intruder", "cluster": f"govxchg-{CHANNEL}"}
            route.sendall(b"CONNECT " + json.dumps(hello).encode() + b"\r\n")
            route.sendall(b"PING\r\n")
            while b"Violation" not in answer:
                chunk = route.recv(4096)
                if not chunk:
                    break
                answer += chunk
    assert b"Authorization Violation" in answer


# ---------------------------------------------------------------------------------------
# docs/operations.md, as written


def guide_commands() -> tuple[list[str], list[str]]:
    """docs/operations.md's NATS 'hubctl broker-config' and 'nats-server' commands."""
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    block = text.split("\nhubctl broker-config --engine nats ", 1)[1].split("\n```", 1)[0]
    lines = ("hubctl broker-config --engine nats " + block.replace("\\\n", " ")).splitlines()
    return shlex.split(lines[0]), shlex.split(lines[1])


def test_the_guides_nats_commands_write_and_start_the_cluster_the_tests_start(
    tmp_path: Path,
) -> None:
    write, start = guide_commands()
    write = [
        str(TOPOLOGY)
        if a == "/etc/govxchg/topology.toml"
        else a.replace("/etc/govxchg", str(tmp_path))
        for a in write
    ]

    result = CliRunner().invoke(hubctl_app, write[1:])

    assert result.exit_code == 0, result.output
    conf = (tmp_path / "nats" / "govnet" / "node1" / "nats.conf").read_text()
    assert '"nats-route://nats2.govnet.example:6222"' in conf
    assert 'store_dir: "/var/lib/govxchg-nats/node1/jetstream"' in conf
    assert 'listen: "10.1.0.5:8883"' in conf
    assert start == start_command(Path("/var/lib/govxchg-nats/node1/nats.conf"))
