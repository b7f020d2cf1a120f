"""hubctl broker-config: Mosquitto TLS, ACL and certificates generated from the topology.

Issue 6, section 2: a real Mosquitto started with the generated files proves that the
system works end to end over TLS; that a client without a certificate (or with one from
another CA) is refused; that a spoke's certificate cannot publish to another spoke's up
topic, read another's down topic or write the directory; and that an id trying ``+``,
``#`` or ``/`` is refused before it reaches a topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from hubd.provision.brokerconf import MAX_PACKET, Listener, acl_text, members, write_broker
from hubd.provision.directory import load_topology
from runtime.ports import free_port
from schemas import topics
from schemas.errors import ConfigError
from schemas.topology import Topology, parse_topology
from tests.hubproc import (
    MOSQUITTO,
    HubProcess,
    live_directory,
    stop_process,
    wait_for_port,
)
from tests.ops import fedsite
from tests.spoke.procs import FAST_HUB, SpokeProcess, eventually
from tests.world import REPO, World

TOPOLOGY = Path(__file__).resolve().parents[2] / "config" / "topology.toml"
WITHIN = 30.0


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(TOPOLOGY)


def _as_root_user() -> str | None:
    # Started as root, Mosquitto would drop to 'mosquitto', which cannot enter pytest's
    # private temporary folder; the generated file says 'user root' here instead.
    return "root" if os.geteuid() == 0 else None


@dataclass
class TlsBroker:
    issued_folder: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def ca(self) -> Path:
        return self.issued_folder / "ca.pem"

    def cert(self, identity: str) -> Path:
        return self.issued_folder / "clients" / f"{identity}.pem"

    def key(self, identity: str) -> Path:
        return self.issued_folder / "clients" / f"{identity}.key"

    def stop(self) -> None:
        stop_process(self.process)


def start_broker(topology: Topology, out: Path, channels: tuple[str, ...]) -> TlsBroker:
    port = free_port()
    issued = write_broker(
        topology,
        channels,
        out,
        Listener("127.0.0.1", port, "127.0.0.1"),
        name="shared" if len(channels) > 1 else None,
        days=2,
        broker_user=_as_root_user(),
    )
    log = issued.broker / "stderr.log"
    with log.open("ab") as errors:
        process = subprocess.Popen(  # noqa: S603 - Debian's mosquitto with our file
            [MOSQUITTO, "-c", str(issued.conf)], stderr=errors
        )
    wait_for_port("127.0.0.1", port)
    return TlsBroker(issued.folder, port, process)


@pytest.fixture(scope="module")
def govnet(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    broker = start_broker(topology, tmp_path_factory.mktemp("tls"), ("govnet",))
    try:
        yield broker
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def connected(
    broker: TlsBroker, identity: str | None, *, ca: Path | None = None
) -> AsyncIterator[aiomqtt.Client]:
    tls = aiomqtt.TLSParameters(
        ca_certs=str(ca or broker.ca),
        certfile=None if identity is None else str(broker.cert(identity)),
        keyfile=None if identity is None else str(broker.key(identity)),
        cert_reqs=ssl.CERT_REQUIRED,
    )
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, tls_params=tls, identifier=f"t-{identity}-{os.getpid()}"
    ) as client:
        yield client


async def collect(client: aiomqtt.Client, into: list[tuple[str, bytes]]) -> None:
    async for message in client.messages:  # until cancelled: each message as it comes
        into.append((message.topic.value, bytes(message.payload)))  # noqa: PERF401


# ---------------------------------------------------------------------------------------
# The generated files


def test_acl_lets_each_spoke_use_only_its_own_topics_and_the_hub_all(topology: Topology) -> None:
    acl = acl_text(topology, ("govnet",))
    blocks = {b.splitlines()[1]: b for b in acl.split("\n\n")[1:]}
    hub = blocks["user jl.hub"].splitlines()[2:]
    assert hub == [
        "topic read xchg/v1/govnet/up/+",
        "topic read xchg/v1/govnet/presence/+",
        "topic read xchg/v1/govnet/directory",
        "topic write xchg/v1/govnet/down/+",
        "topic write xchg/v1/govnet/directory",
        "topic write xchg/v1/govnet/dirroot",
        "topic write xchg/v1/govnet/ledger",
    ]
    assert blocks["user jl.cc"].splitlines()[2:] == [
        "topic write xchg/v1/govnet/up/jl.cc",
        "topic write xchg/v1/govnet/presence/jl.cc",
        "topic read xchg/v1/govnet/down/jl.cc",
        "topic read xchg/v1/govnet/directory",
        "topic read xchg/v1/govnet/dirroot",
        "topic read xchg/v1/govnet/ledger",
    ]
    # every organisation on govnet, and nobody else, has a block
    assert set(blocks) == {"user jl.hub", *(f"user {o}" for o in members(topology, ("govnet",)))}
    assert "readwrite" not in acl
    assert "pattern" not in acl


def test_classified_acl_names_only_organisations_provisioned_on_it(topology: Topology) -> None:
    acl = acl_text(topology, ("classified",))
    users = sorted(line.split()[1] for line in acl.splitlines() if line.startswith("user "))
    assert users == ["cn.gov", "jl.gov", "jl.hub"]


def test_generated_conf_requires_certificates_and_refuses_anonymous_clients(
    topology: Topology, tmp_path: Path
) -> None:
    issued = write_broker(
        topology,
        ("govnet",),
        tmp_path,
        Listener("broker.govnet.example", 8883),
        install=Path("/etc/govxchg/broker"),
        broker_user=None,
    )
    conf = issued.conf.read_text().splitlines()
    for line in (
        "listener 8883 0.0.0.0",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        "acl_file /etc/govxchg/broker/acl",
        "keyfile /etc/govxchg/broker/server.key",
        f"max_packet_size {MAX_PACKET}",
        "persistence true",
        "tls_version tlsv1.2",
        "use_username_as_clientid true",
    ):
        assert line in conf
    private = [
        issued.folder / "ca.key",
        issued.broker / "server.key",
        *(issued.key(i) for i in issued.identities),
    ]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not (issued.broker / "ca.key").exists()  # the CA key never goes to the broker


@pytest.mark.parametrize("bad", ["jl.+", "jl.#", "jl/cc", "jl.cc/#", "+", "$sys"])
def test_an_org_id_with_topic_or_path_characters_is_refused_before_it_becomes_a_topic(
    bad: str,
) -> None:
    text = TOPOLOGY.read_text(encoding="utf-8").replace('id = "jl.cc"\n', f'id = "{bad}"\n', 1)
    with pytest.raises(ConfigError) as caught:
        parse_topology(text, source="topology.toml")
    assert bad in str(caught.value)
    with pytest.raises(ValueError, match="organisation id"):
        topics.up("govnet", bad)


def test_hubctl_broker_config_writes_one_broker_per_channel(tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-c",
            "from hubd.cli import hubctl_main; hubctl_main()",
            "broker-config",
            "--topology",
            str(TOPOLOGY),
            "--out",
            str(tmp_path),
            "--host",
            "govnet=broker.govnet.example:8883",
            "--broker-user",
            "",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for channel in ("internet", "govnet", "classified", "core"):
        assert (tmp_path / channel / "broker" / "mosquitto.conf").exists()
    server = x509.load_pem_x509_certificate(
        (tmp_path / "govnet" / "broker" / "server.pem").read_bytes()
    )
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.govnet.example" in names.get_values_for_type(x509.DNSName)
    assert (
        "listener 8883 0.0.0.0" in (tmp_path / "govnet" / "broker" / "mosquitto.conf").read_text()
    )
    # the other channels had no --host of their own: localhost
    other = x509.load_pem_x509_certificate(
        (tmp_path / "classified" / "broker" / "server.pem").read_bytes()
    )
    assert other.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "localhost"


def test_running_again_keeps_the_ca_and_good_certificates_and_issues_only_new_ones(
    topology: Topology, tmp_path: Path
) -> None:
    listener = Listener("127.0.0.1", 8883)
    first = write_broker(topology, ("classified",), tmp_path, listener, broker_user=None)
    assert set(first.issued) == {"127.0.0.1", "jl.hub", "cn.gov", "jl.gov"}
    before = {p.name: p.read_bytes() for p in (first.folder / "clients").iterdir()}
    ca = first.ca.read_bytes()
    (first.folder / "clients" / "cn.gov.pem").unlink()  # lost: issued again, alone

    again = write_broker(topology, ("classified",), tmp_path, listener, broker_user=None)

    assert again.issued == ("cn.gov",)
    assert again.ca.read_bytes() == ca
    after = {p.name: p.read_bytes() for p in (again.folder / "clients").iterdir()}
    assert {k for k in after if after[k] != before.get(k)} == {"cn.gov.pem", "cn.gov.key"}
    renewed = write_broker(
        topology, ("classified",), tmp_path, listener, broker_user=None, renew=True
    )
    assert set(renewed.issued) == {"127.0.0.1", "jl.hub", "cn.gov", "jl.gov"}
    assert renewed.ca.read_bytes() == ca


def test_a_rerun_without_the_ca_key_refuses_instead_of_making_a_new_ca(
    topology: Topology, tmp_path: Path
) -> None:
    listener = Listener("127.0.0.1", 8883)
    first = write_broker(topology, ("classified",), tmp_path, listener, broker_user=None)
    ca = first.ca.read_bytes()
    (first.folder / "ca.key").unlink()  # taken off the machine, as the operator is told

    with pytest.raises(ValueError, match=r"ca\.key is missing"):
        write_broker(topology, ("classified",), tmp_path, listener, broker_user=None)
    assert first.ca.read_bytes() == ca


def test_certificates_never_outlive_the_ca_that_issued_them(
    topology: Topology, tmp_path: Path
) -> None:
    issued = write_broker(
        topology,
        ("classified",),
        tmp_path,
        Listener("127.0.0.1", 8883),
        days=9000,
        broker_user=None,
    )
    ca = x509.load_pem_x509_certificate(issued.ca.read_bytes())
    for identity in issued.identities:
        leaf = x509.load_pem_x509_certificate(issued.cert(identity).read_bytes())
        assert leaf.not_valid_after_utc <= ca.not_valid_after_utc
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.digital_signature
        assert not usage.key_cert_sign


def test_a_shared_broker_cannot_tie_client_ids_to_certificates(
    topology: Topology, tmp_path: Path
) -> None:
    issued = write_broker(
        topology,
        ("govnet", "classified"),
        tmp_path,
        Listener("127.0.0.1", 8883),
        name="shared",
        broker_user=None,
    )
    # a spoke holds one connection per channel there, under one certificate
    assert "use_username_as_clientid true" not in issued.conf.read_text()


# ---------------------------------------------------------------------------------------
# A real Mosquitto with the generated files


async def test_a_client_without_a_certificate_is_refused(govnet: TlsBroker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with connected(govnet, None):
            pass


async def test_a_certificate_from_another_ca_is_refused(
    govnet: TlsBroker, topology: Topology, tmp_path: Path
) -> None:
    other = write_broker(
        topology, ("govnet",), tmp_path, Listener("127.0.0.1", 1), broker_user=None
    )
    foreign = TlsBroker(other.folder, govnet.port, govnet.process)
    with pytest.raises(aiomqtt.MqttError):
        async with connected(foreign, "jl.cc", ca=govnet.ca):
            pass


async def test_a_spoke_cannot_publish_on_another_spokes_up_topic(govnet: TlsBroker) -> None:
    seen: list[tuple[str, bytes]] = []
    async with connected(govnet, "jl.hub") as hub:
        await hub.subscribe(topics.hub_subscriptions("govnet")[0], qos=1)
        reader = asyncio.create_task(collect(hub, seen))
        try:
            async with connected(govnet, "jl.cc") as spoke:
                await spoke.publish(topics.up("govnet", "jl.jl"), b"forged", qos=1)
                await spoke.publish(topics.directory("govnet"), b"fake directory", qos=1)
                await spoke.publish(topics.up("govnet", "jl.cc"), b"own", qos=1)
            await eventually(lambda: seen or None, "the spoke's own message", within=WITHIN)
        finally:
            reader.cancel()
    assert seen == [(topics.up("govnet", "jl.cc"), b"own")]


async def test_a_spoke_cannot_read_another_spokes_down_topic(govnet: TlsBroker) -> None:
    seen: list[tuple[str, bytes]] = []
    async with connected(govnet, "jl.cc") as spoke:
        await spoke.subscribe(topics.down("govnet", "jl.jl"), qos=1)
        await spoke.subscribe(topics.down("govnet", "jl.cc"), qos=1)
        reader = asyncio.create_task(collect(spoke, seen))
        try:
            async with connected(govnet, "jl.hub") as hub:
                await hub.publish(topics.down("govnet", "jl.jl"), b"for jl.jl", qos=1)
                await hub.publish(topics.down("govnet", "jl.cc"), b"for jl.cc", qos=1)
            await eventually(lambda: seen or None, "jl.cc's own down message", within=WITHIN)
        finally:
            reader.cancel()
    assert seen == [(topics.down("govnet", "jl.cc"), b"for jl.cc")]


async def test_a_spoke_cannot_take_over_the_hubs_session_by_its_client_id(
    govnet: TlsBroker,
) -> None:
    seen: list[tuple[str, bytes]] = []
    tls = aiomqtt.TLSParameters(
        ca_certs=str(govnet.ca),
        certfile=str(govnet.cert("jl.hub")),
        keyfile=str(govnet.key("jl.hub")),
        cert_reqs=ssl.CERT_REQUIRED,
    )
    async with aiomqtt.Client(
        "127.0.0.1", govnet.port, tls_params=tls, identifier="hubd-jl.hub-0"
    ) as hub:
        await hub.subscribe(topics.hub_subscriptions("govnet")[0], qos=1)
        reader = asyncio.create_task(collect(hub, seen))
        try:
            intruder = aiomqtt.TLSParameters(
                ca_certs=str(govnet.ca),
                certfile=str(govnet.cert("jl.cc")),
                keyfile=str(govnet.key("jl.cc")),
                cert_reqs=ssl.CERT_REQUIRED,
            )
            async with aiomqtt.Client(
                "127.0.0.1", govnet.port, tls_params=intruder, identifier="hubd-jl.hub-0"
            ) as spoke:
                await spoke.publish(topics.up("govnet", "jl.cc"), b"still heard", qos=1)
            await eventually(lambda: seen or None, "the hub's session to survive", within=WITHIN)
        finally:
            reader.cancel()
    assert seen == [(topics.up("govnet", "jl.cc"), b"still heard")]


# ---------------------------------------------------------------------------------------
# The whole exchange over TLS


class TlsHub(HubProcess):
    tls_folder: Path = Path()

    def write(self) -> Path:
        config = super().write()
        plain = f'url = "mqtt://127.0.0.1:{self.broker_port}"'
        secure = "\n".join(
            [
                f'url = "mqtts://127.0.0.1:{self.broker_port}"',
                f'ca = "{self.tls_folder / "ca.pem"}"',
                f'cert = "{self.tls_folder / "clients" / "jl.hub.pem"}"',
                f'key = "{self.tls_folder / "clients" / "jl.hub.key"}"',
            ]
        )
        config.write_text(config.read_text().replace(plain, secure))
        return config


class TlsSpoke(SpokeProcess):
    tls_folder: Path = Path()

    def write(self, **replace: str | float) -> Path:
        config = super().write(**replace)
        plain = f'url = "mqtt://127.0.0.1:{self.port}"'
        secure = "\n".join(
            [
                f'url = "mqtts://127.0.0.1:{self.port}"',
                f'ca = "{self.tls_folder / "ca.pem"}"',
                f'cert = "{self.tls_folder / "clients" / f"{self.org}.pem"}"',
                f'key = "{self.tls_folder / "clients" / f"{self.org}.key"}"',
            ]
        )
        config.write_text(config.read_text(encoding="utf-8").replace(plain, secure))
        return config


async def test_documents_flow_end_to_end_over_tls_with_generated_certificates(
    topology: Topology, world: World, tmp_path: Path
) -> None:
    channels = tuple(c.id for c in topology.channels)
    broker = start_broker(topology, tmp_path / "tls", channels)
    hub = TlsHub(
        tmp_path / "hub", world.hub_key, live_directory(world), broker.port, extra_toml=FAST_HUB
    )
    hub.tls_folder = broker.issued_folder
    spokes: list[TlsSpoke] = []
    try:
        hub.start()
        for org in ("jl.gov", "jl.cc"):
            entry = world.directory.org(org)
            assert entry is not None
            spoke = TlsSpoke(tmp_path / org, org, world, broker.port, tuple(entry.channels))
            spoke.tls_folder = broker.issued_folder
            spoke.start()
            spokes.append(spoke)
        for spoke in spokes:
            await spoke.wait_connected()
        sender, recipient = spokes
        sender.drop(
            "tls-notice.txt",
            "关于加强网络安全的通知".encode(),
            {"主送": "jl.cc", "密级": "内部", "文种": "通知", "标题": "TLS 通知"},
        )
        await sender.wait_status("tls-notice.txt", "jl.cc", "DELIVERED", within=WITHIN)
        delivered = [p for p in recipient.inbox.iterdir() if (p / "meta.json").exists()]
        assert len(delivered) == 1
        assert (delivered[0] / "tls-notice.txt").read_bytes() == "关于加强网络安全的通知".encode()
    finally:
        for spoke in spokes:
            spoke.stop()
        hub.stop()
        broker.stop()


# ------------------------------------------------------------- --listen, as the guide runs it


def guide_broker_config(out: Path) -> list[str]:
    """docs/operations.md's 'hubctl broker-config' command, as written, for this machine."""
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    block = text.split("\nhubctl broker-config ", 1)[1].split("\n```", 1)[0]
    command = "hubctl broker-config " + block.replace("\\\n", " ")
    command = command.replace("/etc/govxchg/topology.toml", str(TOPOLOGY))
    command = command.replace("/etc/govxchg/brokers", str(out))
    return shlex.split(command)


def test_the_guides_broker_config_binds_each_broker_where_listen_says(tmp_path: Path) -> None:
    argv = guide_broker_config(tmp_path)
    assert "--listen" in argv

    result = CliRunner().invoke(hubctl_app, argv[1:])

    assert result.exit_code == 0, result.output
    conf = {
        channel: (tmp_path / channel / "broker" / "mosquitto.conf").read_text(encoding="utf-8")
        for channel in ("govnet", "classified")
    }
    listeners = {
        c: [ln for ln in t.splitlines() if ln.startswith("listener ")] for c, t in conf.items()
    }
    assert listeners == {
        "classified": ["listener 8883 10.20.0.5"],
        "govnet": ["listener 8883 0.0.0.0"],  # the documented default, written out
    }
    assert "at secret-broker.example:8883, listening on 10.20.0.5" in result.output


@pytest.mark.parametrize(
    "listen", ["eth0", "0.0.0.0\ninclude_dir /tmp", "classified=10.20.0.5 1883", "::1x"]
)
def test_a_listen_that_is_not_an_ip_address_is_refused_before_anything_is_written(
    tmp_path: Path, listen: str
) -> None:
    result = CliRunner().invoke(
        hubctl_app,
        ["broker-config", "--topology", str(TOPOLOGY), "--out", str(tmp_path), "--listen", listen],
    )

    assert result.exit_code == 2
    assert "give the IP address the broker listens on" in result.stderr
    assert not list(tmp_path.rglob("mosquitto.conf"))


def test_a_member_hubs_uplink_gets_a_spokes_topics_on_the_channels_of_its_link() -> None:
    """At the national hub's brokers a member hub connects under its hub id, as a spoke:
    its own up, down and presence topics on its link's channels, nothing else."""
    national = parse_topology(fedsite.national(), source="national")

    acl = acl_text(national, ("classified",))

    assert "jl.hub" in members(national, ("classified",))
    assert f"user jl.hub\ntopic write {topics.up('classified', 'jl.hub')}" in acl
    assert f"topic read {topics.down('classified', 'jl.hub')}" in acl
    assert f"topic write {topics.presence('classified', 'jl.hub')}" in acl
    assert f"topic read {topics.down('classified', 'ln.hub')}" in acl  # both members' links
    assert "topic write xchg/v1/classified/up/cn.gov" in acl
    assert "user jl.gov" not in acl  # a province's organisations connect to their own hub
