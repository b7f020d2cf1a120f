"""Hub and spokes end to end over a real 3-node NATS cluster (issue 15, part 1).

The cluster is the one ``hubctl broker-config --engine nats`` writes for govnet
(tests/natscluster.py starts its three nodes as processes), with its TLS certificates:
the hub and two govnet-only spokes (jl.cc, jl.jl) each name the three nodes in ``urls``,
the first node first. A document from jl.cc to jl.jl is DELIVERED; then the node all
three are on is killed (kill -9), and a second document still flows, the first is not
delivered into the inbox again, and the hub shows both spokes online on the nodes they
moved to. The link's own claims on NATS are here too: the client ids hubd and the
spokes make are ones NATS takes, and a subscription the cluster's permissions refuse is
an error the operator sees, with the link not counted as connected.

One cluster serves the whole module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from hubd.provision.directory import load_topology
from runtime.link import Link
from runtime.mqtt import BrokerLink, mqtt_client_id, tls_context
from schemas import topics
from tests.hubproc import HubProcess, live_directory
from tests.natscluster import NatsCluster
from tests.spoke.procs import FAST_HUB, SpokeProcess, eventually
from tests.world import TOPOLOGY_PATH, World

CHANNEL = "govnet"
SENDER, RECIPIENT = "jl.cc", "jl.jl"  # organisations on govnet only
WITHIN = 60.0  # a failover waits for JetStream's new leaders: seconds, not minutes
# what a node logs when a client id takes over another connection, which is what starts
# NATS's one-second jail for the next connect with that id (nats-server mqtt.go)
TAKEOVER = ("Replacing old client", "same client ID")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    nats = NatsCluster(load_topology(TOPOLOGY_PATH), CHANNEL, tmp_path_factory.mktemp("nats"))
    nats.start()
    try:
        yield nats
    finally:
        nats.stop()


def node_url(cluster: NatsCluster, index: int) -> str:
    return f"mqtts://127.0.0.1:{cluster.port(index)}"


def channel_toml(cluster: NatsCluster, identity: str, order: tuple[int, ...]) -> str:
    """[channels.govnet] naming the cluster's nodes in ``order``, with ``identity``'s
    certificate from ``hubctl broker-config --engine nats``."""
    files = cluster.files
    return "\n".join(
        [
            f"[channels.{CHANNEL}]",
            f"urls = {json.dumps([node_url(cluster, i) for i in order])}",
            f'ca = "{files.ca}"',
            f'cert = "{files.cert(identity)}"',
            f'key = "{files.key(identity)}"',
            "",
        ]
    )


def on_nats(spoke: SpokeProcess, cluster: NatsCluster, order: tuple[int, ...]) -> None:
    """The spoke's govnet given as the cluster's nodes, with its own certificate."""
    text = spoke.write().read_text(encoding="utf-8")
    single = f'[channels.{CHANNEL}]\nurl = "mqtt://127.0.0.1:{spoke.port}"\n'
    assert single in text
    spoke.config.write_text(
        text.replace(single, channel_toml(cluster, spoke.org, order)), encoding="utf-8"
    )


def connected_nodes(events: list[dict[str, Any]]) -> list[str]:
    """The nodes a govnet link connected to, in order (the hub's embedded broker left out)."""
    return [
        str(e["node"])
        for e in events
        if e["event"] == "broker.connected" and str(e["node"]).startswith("mqtts://")
    ]


def reconnected(events: Callable[[], list[dict[str, Any]]]) -> list[str] | None:
    """The govnet nodes connected to, once there has been more than one."""
    nodes = connected_nodes(events())
    return nodes if len(nodes) > 1 else None


async def hubctl_status(hub: HubProcess, *json_flag: str) -> str:
    argv = ["status", "--config", str(hub.folder / "hub.toml"), *json_flag]
    result = await asyncio.to_thread(CliRunner().invoke, hubctl_app, argv)
    assert result.exit_code == 0, result.output
    return result.stdout


async def presence(hub: HubProcess) -> dict[str, bool | None]:
    """What hubctl status --json says of the two spokes on govnet (None: unknown)."""
    report = json.loads(await hubctl_status(hub, "--json"))
    spokes = {s["org"]: s["channels"][CHANNEL]["online"] for s in report["spokes"]}
    known = report["presence_known"]
    return {org: spokes[org] if known else None for org in (SENDER, RECIPIENT)}


def takeovers(cluster: NatsCluster) -> list[str]:
    """The lines of the nodes' logs that say a client id took a connection over."""
    logs = [cluster.files.node(index) / "nats.log" for index in range(3)]
    lines = [line for log in logs for line in log.read_text(errors="replace").splitlines()]
    return [line for line in lines if any(mark in line for mark in TAKEOVER)]


def notice(title: str) -> dict[str, str]:
    return {"主送": RECIPIENT, "密级": "内部", "文种": "通知", "标题": title}


# ---------------------------------------------------------------------------------------
# The link on NATS


async def test_a_subscription_the_cluster_refuses_is_an_error_and_the_link_stays_down(
    cluster: NatsCluster,
) -> None:
    """jl.cc's certificate asks for jl.jl's down topic: every node refuses it (SUBACK
    0x80), first said as a warning (a NATS cluster that lost a node refuses for a moment
    too), then as an error once a whole round of nodes refused it; the link never counts
    as connected, so the hub's health and status say the channel is down."""
    greeted: list[str | None] = []

    async def greet(link: Link) -> None:
        greeted.append(link.node)

    files = cluster.files
    link = BrokerLink(
        CHANNEL,
        "127.0.0.1",
        cluster.port(0),
        [CHANNEL],
        subscriptions=[topics.down(CHANNEL, SENDER), topics.down(CHANNEL, RECIPIENT)],
        client_id=mqtt_client_id("spoke", SENDER, CHANNEL),
        sink=lambda _topic, _payload: None,
        on_connected=greet,
        tls=tls_context(str(files.ca), str(files.cert(SENDER)), str(files.key(SENDER))),
        failover=[("127.0.0.1", cluster.port(i)) for i in (1, 2)],
        backoff_initial=0.05,
    )
    stop = asyncio.Event()
    with capture_logs() as logs:
        running = asyncio.create_task(link.run(stop))
        try:
            await eventually(
                lambda: [e for e in logs if e["log_level"] == "error"],
                "the refusal said as an error",
                within=WITHIN,
            )
        finally:
            stop.set()
            await running
    refused = [e for e in logs if e["event"] == "broker.subscribe_refused"]
    assert [e["log_level"] for e in refused[:4]] == ["warning"] * 3 + ["error"]
    assert [e["node"] for e in refused[:4]] == [node_url(cluster, i) for i in (0, 1, 2, 0)]
    assert all(e["topics"] == [topics.down(CHANNEL, RECIPIENT)] for e in refused)
    assert "hubctl broker-config" in refused[0]["error"]
    assert not [e for e in logs if e["event"] == "broker.connected"]
    assert (link.connections, greeted, link.connected.is_set()) == (0, [], False)


# ---------------------------------------------------------------------------------------
# Hub and spokes


async def test_documents_flow_before_and_after_the_node_everyone_is_on_is_killed(
    cluster: NatsCluster, world: World, tmp_path: Path
) -> None:
    hub = HubProcess(
        tmp_path / "hub",
        world.hub_key,
        live_directory(world),
        extra_toml=FAST_HUB + channel_toml(cluster, world.topology.hub.id, (0, 1, 2)),
    )
    sender = SpokeProcess(tmp_path / SENDER, SENDER, world, 0, (CHANNEL,))
    recipient = SpokeProcess(tmp_path / RECIPIENT, RECIPIENT, world, 0, (CHANNEL,))
    on_nats(sender, cluster, (0, 2, 1))  # after the first node, the third
    on_nats(recipient, cluster, (0, 1, 2))
    try:
        hub.start()
        await sender.started()
        await recipient.started()
        # where everyone is: the spokes' logs, and what hubctl status says of the hub
        first = node_url(cluster, 0)
        assert f"govnet: on {first}, node 1 of 3\n" in await hubctl_status(hub)
        for spoke in (sender, recipient):
            assert connected_nodes(spoke.events()) == [first], spoke.org
        # under the client ids mqtt_client_id makes (the node's monitoring knows them)
        hub_id = world.topology.hub.id
        for client_id in (
            mqtt_client_id("hubd", hub_id, f"mqtts-127.0.0.1-{cluster.port(0)}"),
            mqtt_client_id("spoke", SENDER, CHANNEL),
            mqtt_client_id("spoke", RECIPIENT, CHANNEL),
        ):
            assert cluster.mqtt_subscriptions(0, client_id), client_id

        sender.drop("first.txt", "第一份\n".encode(), notice("失联之前"))
        await sender.wait_status("first.txt", RECIPIENT)

        node = cluster.processes[0]
        assert node is not None
        node.kill()  # kill -9 the node all three are on
        node.wait(10)

        sender.drop("second.txt", "第二份\n".encode(), notice("失联之后"))
        await sender.wait_status("second.txt", RECIPIENT, within=WITHIN)
        await recipient.wait_received("失联之后")

        titles = sorted(m["title"] for m in recipient.received().values())
        assert titles == ["失联之前", "失联之后"]  # the first once, not again after the failover
        # A link takes messages while it still subscribes: the recipient may answer before
        # it logs broker.connected. Wait for each to say where it went.
        logs = {
            "hubd": hub.log_events,
            SENDER: sender.events,
            RECIPIENT: recipient.events,
        }
        for who, events in logs.items():
            moved = await eventually(
                partial(reconnected, events), f"{who} connected again", within=WITHIN
            )
            assert moved[0] == first, who
            assert first not in moved[1:], who  # to a live node
        hub_nodes = connected_nodes(hub.log_events())
        shown = await hubctl_status(hub)
        assert f"govnet: on {hub_nodes[-1]}, node " in shown
        online = await presence(hub)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WITHIN):  # the hub's view follows the spokes' hellos
                while online != {SENDER: True, RECIPIENT: True}:
                    await asyncio.sleep(0.2)
                    online = await presence(hub)
        assert online == {SENDER: True, RECIPIENT: True}
        # No connection was taken over by its own client id: NATS's one-second jail for a
        # quick reconnect after a takeover never came into play on failover.
        assert takeovers(cluster) == []
    finally:
        for spoke in (sender, recipient):
            spoke.stop()
        hub.stop()
        if cluster.processes[0] is not None and cluster.processes[0].poll() is not None:
            cluster.start_node(0)  # the module's cluster whole again for the next test
            cluster.wait_ready()
