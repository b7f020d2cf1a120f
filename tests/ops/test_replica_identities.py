"""hubctl broker-config --hub-replicas: a broker identity of its own for each hub replica.

Two hub replicas with the hub's one certificate would have one client id on a broker of
``hubctl broker-config`` (``use_username_as_clientid``: the CN) and take each other's
session over, forever. Each replica gets ``clients/<hub id>~<name>.pem|key`` (a CN no
organisation id can be) with the hub's ACL. A real Mosquitto started on the generated
files holds both replicas' connections at once, each reading ``up/+`` and writing
``down/...``; the hub's one certificate used twice, the control, does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from pydantic import ValidationError
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from hubd.config import Replicas
from hubd.provision.brokerconf import Issued, Listener, acl_text, write_broker
from hubd.provision.directory import load_topology
from hubd.provision.identities import replica_identities, replica_identity
from runtime.mqtt import mqtt_client_id
from runtime.ports import free_port
from schemas import topics
from schemas.ids import is_org_id
from schemas.topology import Topology
from tests.hubproc import MOSQUITTO, stop_process, wait_for_port
from tests.spoke.procs import eventually
from tests.world import REPO

TOPOLOGY = REPO / "config" / "topology.toml"
CHANNEL = "govnet"
UP_ALL = topics.hub_subscriptions(CHANNEL)[0]  # xchg/v1/govnet/up/+
WITHIN = 30.0


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(TOPOLOGY)


def _cn(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    value = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def _blocks(acl: str) -> dict[str, list[str]]:
    """Each ``user`` line of an ACL and its topic lines."""
    blocks: dict[str, list[str]] = {}
    for block in acl.split("\n\n")[1:]:
        lines = [ln for ln in block.splitlines() if not ln.startswith("#")]
        blocks[lines[0]] = lines[1:]
    return blocks


# ---------------------------------------------------------------------------------------
# The generated files


def test_each_replica_gets_a_certificate_whose_name_no_organisation_id_can_be(
    topology: Topology, tmp_path: Path
) -> None:
    issued = write_broker(
        topology,
        (CHANNEL,),
        tmp_path,
        Listener("127.0.0.1", 8883),
        broker_user=None,
        replicas=("a", "hub-2.example"),
    )
    assert issued.replicas == ("jl.hub~a", "jl.hub~hub-2.example")
    assert issued.identities[0] == "jl.hub"  # the hub's own identity is still there
    for identity in issued.replicas:
        assert _cn(issued.cert(identity)) == identity
        assert issued.cert(identity).parent == issued.cert("jl.hub").parent
        assert issued.key(identity).stat().st_mode & 0o077 == 0
        assert not is_org_id(identity)
    assert {"jl.hub~a", "jl.hub~hub-2.example"} <= set(issued.issued)


def test_replicas_have_the_hubs_acl_each_under_its_own_user(topology: Topology) -> None:
    blocks = _blocks(acl_text(topology, (CHANNEL,), replica_identities("jl.hub", ["a", "b"])))

    assert blocks["user jl.hub~a"] == blocks["user jl.hub"]
    assert blocks["user jl.hub~b"] == blocks["user jl.hub"]
    assert f"topic read {UP_ALL}" in blocks["user jl.hub~a"]
    # the organisations' blocks are those of a broker without replicas
    without = _blocks(acl_text(topology, (CHANNEL,)))
    assert {k: v for k, v in blocks.items() if "~" not in k} == without


def test_the_broker_conf_says_which_cert_and_key_each_replica_names(
    topology: Topology, tmp_path: Path
) -> None:
    issued = write_broker(
        topology,
        (CHANNEL,),
        tmp_path,
        Listener("127.0.0.1", 8883),
        broker_user=None,
        replicas=("a", "b"),
    )
    conf = issued.conf.read_text()
    assert f"# In each replica's [channels.{CHANNEL}]" in conf
    for name in ("a", "b"):
        assert (
            f'#   [replicas] name = "{name}": cert = ".../clients/jl.hub~{name}.pem", '
            f'key = ".../clients/jl.hub~{name}.key"'
        ) in conf
    assert "use_username_as_clientid true" in conf.splitlines()


def test_without_hub_replicas_nothing_of_them_is_written(
    topology: Topology, tmp_path: Path
) -> None:
    issued = write_broker(
        topology, (CHANNEL,), tmp_path, Listener("127.0.0.1", 8883), broker_user=None
    )
    assert issued.replicas == ()
    assert not list((issued.folder / "clients").glob("*~*"))
    assert "~" not in (issued.broker / "acl").read_text()
    assert "# Hub replicas" not in issued.conf.read_text()


@pytest.mark.parametrize(
    "name", ["a", "A", "hub-2.example", "x_y", "9", "a" * 40, "", "-a", ".a", "a b", "a" * 41]
)
def test_replica_names_are_exactly_those_replicas_name_allows(name: str) -> None:
    try:
        Replicas(name=name)
    except ValidationError:
        allowed = False
    else:
        allowed = True
    try:
        identity = replica_identity("jl.hub", name)
    except ValueError:
        assert not allowed
    else:
        assert allowed
        assert identity == f"jl.hub~{name}"


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ("a,b c", "'b c'"),
        ("a,b~c", "'b~c'"),
        ("a/b", "'a/b'"),
        ("-a", "'-a'"),
        ("a,a", "'a' twice"),
        ("a,,b", "'a,,b' has an empty name"),
    ],
)
@pytest.mark.parametrize("engine", ["mosquitto", "nats"])
def test_a_bad_replica_name_is_refused_in_one_bilingual_line_before_anything_is_written(
    tmp_path: Path, given: str, named: str, engine: str
) -> None:
    result = CliRunner().invoke(
        hubctl_app,
        [
            "broker-config",
            "--engine",
            engine,
            "--topology",
            str(TOPOLOGY),
            "--out",
            str(tmp_path),
            "--broker-user",
            "",
            "--hub-replicas",
            given,
        ],
    )

    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert named in result.stderr
    assert "副本名" in result.stderr
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_hubctl_broker_config_hub_replicas_issues_each_replica_a_certificate(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(
        hubctl_app,
        [
            "broker-config",
            "--topology",
            str(TOPOLOGY),
            "--out",
            str(tmp_path),
            "--channel",
            CHANNEL,
            "--broker-user",
            "",
            "--hub-replicas",
            "a, b",
        ],
    )

    assert result.exit_code == 0, result.output
    clients = tmp_path / CHANNEL / "clients"
    assert _cn(clients / "jl.hub~a.pem") == "jl.hub~a"
    assert _cn(clients / "jl.hub~b.pem") == "jl.hub~b"
    assert "Hub replica b: clients/jl.hub~b.pem|key" in result.output


# ---------------------------------------------------------------------------------------
# A real Mosquitto with the generated files


@pytest.fixture(scope="module")
def broker(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issued]:
    port = free_port()
    issued = write_broker(
        topology,
        (CHANNEL,),
        tmp_path_factory.mktemp("replicas"),
        Listener("127.0.0.1", port, "127.0.0.1"),
        days=2,
        # started as root, Mosquitto would drop to 'mosquitto', who cannot enter pytest's
        # private temporary folder
        broker_user="root" if os.geteuid() == 0 else None,
        replicas=("a", "b"),
    )
    with (issued.broker / "stderr.log").open("ab") as errors:
        process = subprocess.Popen(  # noqa: S603 - Debian's mosquitto with our file
            [MOSQUITTO, "-c", str(issued.conf)], stderr=errors
        )
    try:
        wait_for_port("127.0.0.1", port)
        yield issued
    finally:
        stop_process(process)


def _port(issued: Issued) -> int:
    line = next(ln for ln in issued.conf.read_text().splitlines() if ln.startswith("listener "))
    return int(line.split()[1])


@contextlib.asynccontextmanager
async def connected(issued: Issued, identity: str, client_id: str) -> AsyncIterator[aiomqtt.Client]:
    tls = aiomqtt.TLSParameters(
        ca_certs=str(issued.ca),
        certfile=str(issued.cert(identity)),
        keyfile=str(issued.key(identity)),
        cert_reqs=ssl.CERT_REQUIRED,
    )
    async with aiomqtt.Client(
        "127.0.0.1", _port(issued), tls_params=tls, identifier=client_id
    ) as client:
        yield client


def _any(messages: list[tuple[str, bytes]]) -> list[tuple[str, bytes]] | None:
    return messages or None


async def collect(client: aiomqtt.Client, into: list[tuple[str, bytes]]) -> None:
    async for message in client.messages:  # until cancelled, or the connection is lost
        into.append((message.topic.value, bytes(message.payload)))  # noqa: PERF401


def _hub_client_id(name: str) -> str:
    """The client id hubd gives a replica named ``name`` (hubd/daemon.py)."""
    return mqtt_client_id("hubd", "jl.hub", f"mqtts-127.0.0.1-{CHANNEL}", name)


async def test_two_replicas_stay_connected_at_once_each_reading_up_and_writing_down(
    broker: Issued,
) -> None:
    heard: dict[str, list[tuple[str, bytes]]] = {"a": [], "b": [], "spoke": []}
    async with contextlib.AsyncExitStack() as stack:
        readers: dict[str, asyncio.Task[None]] = {}
        replicas: dict[str, aiomqtt.Client] = {}
        for name in ("a", "b"):
            client = await stack.enter_async_context(
                connected(broker, f"jl.hub~{name}", _hub_client_id(name))
            )
            await client.subscribe(UP_ALL, qos=1)
            readers[name] = asyncio.create_task(collect(client, heard[name]))
            replicas[name] = client
        spoke = await stack.enter_async_context(connected(broker, "jl.cc", "spoke-jl_cc"))
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
            # neither connection was taken over while the other was connected
            assert not any(task.done() for task in readers.values())
        finally:
            for task in readers.values():
                task.cancel()
    assert heard["a"] == heard["b"] == [(topics.up(CHANNEL, "jl.cc"), b"to both replicas")]
    assert sorted(heard["spoke"]) == [
        (topics.down(CHANNEL, "jl.cc"), b"from a"),
        (topics.down(CHANNEL, "jl.cc"), b"from b"),
    ]


async def test_the_hubs_one_certificate_used_by_two_replicas_takes_the_first_over(
    broker: Issued,
) -> None:
    """The control: why each replica needs its own identity on such a broker."""
    async with connected(broker, "jl.hub", _hub_client_id("a")) as first:
        await first.subscribe(UP_ALL, qos=1)
        reader = asyncio.create_task(collect(first, []))
        async with connected(broker, "jl.hub", _hub_client_id("b")):
            with pytest.raises(aiomqtt.MqttError):
                async with asyncio.timeout(WITHIN):
                    await reader
