"""A 3-node NATS cluster per channel, generated from the topology (``--engine nats``).

``hubctl broker-config --engine nats --out DIR`` writes, for each channel (one cluster per
channel: classified networks stay physically separate)::

    DIR/<channel>/node1/ node2/ node3/   what goes to each node's host: nats.conf, ca.pem,
                                         server.pem, server.key, jetstream/ (its store)
    DIR/<channel>/ca.pem, ca.key         the channel's CA: the same one (and the same
    DIR/<channel>/clients/<id>.pem|key   client certificates) as the Mosquitto layout

Each node's ``nats.conf`` names the server (``server_name``, which NATS's MQTT needs),
routes to the other two over TLS (only the cluster certificate of the channel's CA may
route: ``verify_and_map`` against one cluster user), JetStream with its own store (the
MQTT streams replicated 3 times), and the MQTT listener over TLS with client
certificates mapped to users by their subject (``CN=<id>,O=govxchg``). Each user may
publish and subscribe only on the subjects of its topics in :mod:`schemas.topics` (the
same layout as the Mosquitto ACL): NATS sees an MQTT topic as a subject, ``/`` becoming
``.`` and a ``.`` inside a level becoming ``//`` (nats-server 2.10 and later; 2.9
refuses such topics), so ``xchg/v1/govnet/up/jl.cc`` is ``xchg.v1.govnet.up.jl//cc``
and the permissions are written on that. Each hub replica (``--hub-replicas``) is a user
of its own, ``CN=<hub id>~<name>,O=govxchg``, with the hub's permissions.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.x509.oid import ExtendedKeyUsageOID

from hubd.provision.brokerconf import (
    MAX_PACKET,
    ChannelFiles,
    _ca_for,
    _name,
    _pem_cert,
    issue_clients,
    issue_leaf,
    members,
)
from hubd.provision.identities import (
    REPLICA_SEPARATOR,
    check_identity,
    replica_identities,
    replica_lines,
)
from runtime.clock import now_ms
from runtime.files import PUBLIC_MODE, atomic_write
from schemas import topics
from schemas.ids import check_org_id
from schemas.topology import Topology

NODES = 3  # a JetStream cluster of three keeps a quorum when one node is down
MQTT_PORT, ROUTE_PORT, CLIENT_PORT, HTTP_PORT = 8883, 6222, 4222, 8222
CLUSTER_UNIT = "nats-cluster"  # the OU of the nodes' certificate: no organisation has one
# What an MQTT client of NATS must be allowed to subscribe to for QoS 1: the server
# delivers through "$MQTT.sub.<nuid>" (an MQTT client cannot subscribe to "$MQTT." itself).
QOS1_DELIVERY = "$MQTT.sub.>"
# A node's host goes into the other nodes' route URLs: a DNS name or an IPv4 address
_HOST = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


@dataclass(frozen=True, slots=True)
class NatsNode:
    """One node of a channel's cluster: where clients and the other nodes reach it."""

    host: str  # the name (or address) MQTT clients and the other nodes connect to
    port: int = MQTT_PORT  # the MQTT listener (TLS)
    route_port: int = ROUTE_PORT  # the cluster listener (TLS, the other nodes only)
    bind: str = "0.0.0.0"  # noqa: S104 - MQTT and routes; only certificate holders get in
    # NATS's own client port and its monitoring: loopback only, for the operator
    client_port: int = CLIENT_PORT
    http_port: int = HTTP_PORT


@dataclass(frozen=True, slots=True)
class NatsIssued(ChannelFiles):
    """Where one channel's cluster was written."""

    channel: str
    folder: Path
    nodes: tuple[NatsNode, ...]
    identities: tuple[str, ...]  # the hub first, then each organisation on the channel
    issued: tuple[str, ...] = ()
    replicas: tuple[str, ...] = ()  # each hub replica's identity (--hub-replicas)

    def node(self, index: int) -> Path:
        """``node1``, ``node2``, ``node3``: what goes to each node's host."""
        return self.folder / f"node{index + 1}"

    def conf(self, index: int) -> Path:
        return self.node(index) / "nats.conf"

    def server_name(self, index: int) -> str:
        return server_name(self.channel, index)


def server_name(channel: str, index: int) -> str:
    return f"{check_org_id(channel, what='channel id')}-{index + 1}"


def nats_subject(topic: str) -> str:
    """The NATS subject nats-server (2.10+) makes of an MQTT topic or filter of ours:
    ``/`` between levels is ``.``, a ``.`` inside a level is ``//``, ``+`` is ``*``.

    Only what the topic layout produces (no empty level, no ``#``, no whitespace, no
    ``*``/``>`` inside a level) is accepted, so that the conversion here cannot differ
    from the server's."""
    levels = topic.split("/")
    for level in levels:
        if (
            not level
            or "#" in level
            or any(c in level for c in "*>\x7f")
            or any(c.isspace() for c in level)
            or ("+" in level and level != "+")
        ):
            raise ValueError(f"topic {topic!r} is not one the topic layout makes")
    return ".".join("*" if level == "+" else level.replace(".", "//") for level in levels)


def user_name(identity: str) -> str:
    """The NATS user a client certificate of ours maps to: its subject as RFC 2253 writes
    it (``verify_and_map``: the certificates carry no e-mail or DNS names)."""
    return f"CN={check_identity(identity)},O=govxchg"


def cluster_user(channel: str) -> str:
    """The one route identity: the subject of the nodes' certificate (which has an OU no
    client certificate of the CA has, so no organisation can join the cluster)."""
    return f"CN={check_org_id(channel, what='channel id')},OU={CLUSTER_UNIT},O=govxchg"


def permissions(
    topology: Topology, channel: str, replicas: Sequence[str] = ()
) -> dict[str, dict[str, list[str]]]:
    """Per identity, the subjects it may publish and subscribe to: the topic layout of
    :mod:`schemas.topics`, as :func:`acl_text` gives Mosquitto; each of ``replicas`` (hub
    replica identities) the hub's."""
    hub = check_org_id(topology.hub.id, what="hub id")
    granted = {
        hub: {
            "publish": [nats_subject(t) for t in topics.hub_publications(channel)],
            "subscribe": [nats_subject(t) for t in topics.hub_subscriptions(channel)],
        }
    }
    for identity in replicas:
        if check_identity(identity).partition(REPLICA_SEPARATOR)[0] != hub:
            raise ValueError(f"{identity!r} is not a replica identity of the hub {hub}")
        granted[identity] = {k: list(v) for k, v in granted[hub].items()}
    for org_id in members(topology, (channel,)):
        granted[check_org_id(org_id)] = {
            "publish": [
                nats_subject(topics.up(channel, org_id)),
                nats_subject(topics.presence(channel, org_id)),
            ],
            "subscribe": [
                nats_subject(topics.down(channel, org_id)),
                nats_subject(topics.directory(channel)),
                nats_subject(topics.dirroot(channel)),
                nats_subject(topics.ledger(channel)),
            ],
        }
    return granted


def _q(value: str | Path) -> str:
    return json.dumps(str(value))  # NATS's configuration reads JSON strings


def _address(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def conf_text(
    topology: Topology,
    channel: str,
    nodes: Sequence[NatsNode],
    index: int,
    home: Path,
    *,
    replicas: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """Node ``index``'s nats.conf; ``home`` is where its folder lives on its host;
    ``replicas`` are hub replica identities, ``notes`` comment lines for the heading."""
    node = nodes[index]
    routes = [
        f"nats-route://{_address(other.host, other.route_port)}"
        for i, other in enumerate(nodes)
        if i != index
    ]

    def tls(indent: str) -> list[str]:
        return [
            f"{indent}tls {{",
            f"{indent}  cert_file: {_q(home / 'server.pem')}",
            f"{indent}  key_file: {_q(home / 'server.key')}",
            f"{indent}  ca_file: {_q(home / 'ca.pem')}",
            f"{indent}  verify_and_map: true",
            f"{indent}  timeout: 5",
            f"{indent}}}",
        ]

    users = []
    for identity, allowed in permissions(topology, channel, replicas).items():
        subscribe = [*allowed["subscribe"], QOS1_DELIVERY]
        users += [
            "    {",
            f"      user: {_q(user_name(identity))}",
            "      permissions: {",
            f"        publish: {{ allow: {json.dumps(allowed['publish'])} }}",
            f"        subscribe: {{ allow: {json.dumps(subscribe)} }}",
            "      }",
            '      allowed_connection_types: ["MQTT"]',
            "    }",
        ]
    return "\n".join(
        [
            f"# NATS (nats-server 2.10+) for govxchg channel {channel}, node {index + 1} of 3,",
            "# generated by 'hubctl broker-config --engine nats'. Start it with",
            "# 'nats-server -c THIS_FILE'. Spokes and the hub connect to the MQTT listener.",
            *notes,
            f"server_name: {_q(server_name(channel, index))}",
            # NATS's own client port and the monitoring endpoint: this host only
            f"listen: {_q(_address('127.0.0.1', node.client_port))}",
            f"http: {_q(_address('127.0.0.1', node.http_port))}",
            f"max_payload: {MAX_PACKET}",
            "",
            "jetstream {",
            f"  store_dir: {_q(home / 'jetstream')}",
            "}",
            "",
            "cluster {",
            f"  name: {_q(f'govxchg-{channel}')}",
            f"  listen: {_q(_address(node.bind, node.route_port))}",
            f"  routes: {json.dumps(routes)}",
            "  no_advertise: true",
            *tls("  "),
            # routes are accepted only from the nodes' certificate
            f"  authorization {{ user: {_q(cluster_user(channel))} }}",
            "}",
            "",
            "mqtt {",
            f"  listen: {_q(_address(node.bind, node.port))}",
            f"  stream_replicas: {min(NODES, len(nodes))}",
            *tls("  "),
            "}",
            "",
            "# Every user is a certificate subject, MQTT only, with exactly its subjects.",
            "authorization {",
            "  users: [",
            *users,
            "  ]",
            "}",
            "",
        ]
    )


def _applies(items: Sequence[str], channel: str) -> list[str]:
    """The ``CHANNEL=VALUE`` items for ``channel`` if any, else the bare ``VALUE`` ones."""
    specific = [v for k, _, v in (i.rpartition("=") for i in items) if k == channel]
    return specific or [v for k, _, v in (i.rpartition("=") for i in items) if not k]


def nodes_for(
    hosts: Sequence[str], channel: str, binds: Sequence[str] = ()
) -> tuple[NatsNode, ...]:
    """The three nodes of ``channel``'s cluster from the --host items that apply to it
    (``CHANNEL=HOST[:PORT]`` or ``HOST[:PORT]``, repeated, one per node; none: three nodes
    on localhost). Nodes on one host get the default ports counted up (8883, 8884, ...;
    routes 6222, 6223, ...)."""
    given = _applies(hosts, channel) or ["localhost"] * NODES
    if len(given) != NODES:
        raise ValueError(
            f"--host for {channel}: a NATS cluster has {NODES} nodes; give --host "
            f"{channel}=HOST[:PORT] {NODES} times (given {len(given)}: {', '.join(given)})"
        )
    chosen_binds = _applies(binds, channel)
    if len(chosen_binds) > 1:
        raise ValueError(f"--listen for {channel}: give one address, not {len(chosen_binds)}")
    bind = chosen_binds[0] if chosen_binds else "0.0.0.0"  # noqa: S104
    try:
        bind = str(ipaddress.ip_address(bind))
    except ValueError:
        raise ValueError(
            f"--listen {bind!r}: give the IP address the nodes listen on, e.g. 10.1.2.3 "
            "(one interface), 0.0.0.0 (every IPv4 interface) or :: (IPv6 too)"
        ) from None
    nodes: list[NatsNode] = []
    seen: dict[str, int] = {}
    for item in given:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not _HOST.fullmatch(host) or (
            port and (not port.isdigit() or not 1 <= int(port) <= 65535)
        ):
            raise ValueError(
                f"--host {item!r}: write HOST[:PORT] (a DNS name or an IPv4 address), "
                "e.g. nats1.govnet.example:8883"
            )
        n = seen.get(host, 0)
        seen[host] = n + 1
        nodes.append(
            NatsNode(
                host,
                int(port) if port else MQTT_PORT + n,
                route_port=ROUTE_PORT + n,
                bind=bind,
                client_port=CLIENT_PORT + n,
                http_port=HTTP_PORT + n,
            )
        )
    if len({(n.host, n.port) for n in nodes}) != len(nodes):
        raise ValueError(f"--host for {channel}: two nodes at the same HOST:PORT")
    return tuple(nodes)


def write_nats_cluster(
    topology: Topology,
    channel: str,
    out: Path,
    nodes: Sequence[NatsNode],
    *,
    days: int = 825,
    install: Path | None = None,
    renew: bool = False,
    now: dt.datetime | None = None,
    replicas: Sequence[str] = (),
) -> NatsIssued:
    """Write ``channel``'s cluster under ``out/<channel>``: a folder per node, the CA and
    the client certificates (kept when still good, as :func:`write_broker` keeps them;
    the same folder serves both engines).

    ``install`` is the folder on the nodes' hosts that holds ``nodeN/`` (the paths in
    node N's nats.conf point at ``install/nodeN``; default: where it is written).
    ``replicas`` are hub replica names: each gets ``clients/<hub id>~<name>.pem|key``
    and a user with the hub's permissions."""
    check_org_id(channel, what="channel id")
    if topology.channel(channel) is None:
        known = ", ".join(c.id for c in topology.channels)
        raise ValueError(f"channel {channel!r} is not in the topology (channels: {known})")
    if len(nodes) != NODES:
        raise ValueError(f"a NATS cluster here has {NODES} nodes, not {len(nodes)}")
    if days < 1:
        raise ValueError(f"--days must be at least 1, not {days}")
    now = now or dt.datetime.fromtimestamp(now_ms() / 1000, dt.UTC)
    folder = (out / channel).resolve()
    identities = (check_org_id(topology.hub.id, what="hub id"), *members(topology, (channel,)))
    replica_ids = replica_identities(identities[0], replicas)
    notes = replica_lines(folder, replica_ids, (channel,))
    (folder / "clients").mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca_for(folder, _name(f"govxchg {channel} CA"), now=now, days=days)
    authority = (ca_key, ca_cert)
    issued: list[str] = []
    result = NatsIssued(channel, folder, tuple(nodes), identities)
    for index, node in enumerate(nodes):
        home = result.node(index)
        (home / "jetstream").mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(home / "ca.pem", _pem_cert(ca_cert), mode=PUBLIC_MODE)
        # one certificate per node for both listeners: MQTT clients check the host name,
        # the other nodes map its subject to the cluster user (server and client usage)
        if issue_leaf(
            home / "server.pem",
            home / "server.key",
            _name(channel, CLUSTER_UNIT),
            authority,
            usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            hosts=(node.host,),
            now=now,
            days=days,
            renew=renew,
        ):
            issued.append(result.server_name(index))
        text = conf_text(
            topology,
            channel,
            nodes,
            index,
            home if install is None else install / home.name,
            replicas=replica_ids,
            notes=notes,
        )
        atomic_write(home / "nats.conf", text.encode(), mode=PUBLIC_MODE)
    issued += issue_clients(
        folder, (*identities, *replica_ids), authority, now=now, days=days, renew=renew
    )
    return NatsIssued(channel, folder, tuple(nodes), identities, tuple(issued), replica_ids)
