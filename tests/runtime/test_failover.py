"""BrokerLink over a list of broker nodes, against real Mosquitto processes.

Two independent Mosquittos are not a cluster (what one takes the other never sees), so
these tests claim only what the link does: which node it is on, that it moves to the next
node at once when its node dies (kill -9) or does not answer, that only a whole round of
failed nodes backs off, and that the owner's greeting (the spoke's hello, the hub's
directory) runs again on the new node with the subscriptions in place there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from structlog.testing import capture_logs

from runtime.link import Link
from runtime.mqtt import BrokerLink
from runtime.ports import free_port
from tests.hubproc import Mosquitto

TOPIC = "xchg/v1/govnet/down/jl.cc"


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[list[Mosquitto]]:
    """Two Mosquittos on their own ports, both running; each stopped whatever happens."""
    started: list[Mosquitto] = []
    try:
        for name in ("a", "b"):
            broker = Mosquitto(tmp_path / f"mosquitto-{name}")
            started.append(broker)
            broker.start()
        yield started
    finally:
        for broker in started:
            broker.stop()


def kill9(broker: Mosquitto) -> None:
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait(10)


class Owner:
    """What a hub or spoke gives the link: a sink and a greeting, recorded."""

    def __init__(self) -> None:
        self.greeted: list[str | None] = []  # the node each greeting ran on
        self.received: list[bytes] = []

    def sink(self, _topic: str, payload: bytes) -> None:
        self.received.append(payload)

    async def greet(self, link: Link) -> None:
        self.greeted.append(link.node)


def link_over(
    ports: list[int], owner: Owner, *, backoff_initial: float = 0.5, backoff_max: float = 30.0
) -> BrokerLink:
    first, *rest = ports
    return BrokerLink(
        "govnet",
        "127.0.0.1",
        first,
        ["govnet"],
        subscriptions=[TOPIC],
        client_id="failover-test",
        sink=owner.sink,
        on_connected=owner.greet,
        failover=[("127.0.0.1", port) for port in rest],
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
    )


@pytest.fixture
async def running() -> AsyncIterator[list[tuple[BrokerLink, asyncio.Event, asyncio.Task[None]]]]:
    """Links started by a test; stopped (and awaited) at its end."""
    started: list[tuple[BrokerLink, asyncio.Event, asyncio.Task[None]]] = []
    yield started
    for _, stop, _task in started:
        stop.set()
    async with asyncio.timeout(20):
        for _, _stop, task in started:
            await task


def start(link: BrokerLink, running: list[Any]) -> None:
    stop = asyncio.Event()
    running.append((link, stop, asyncio.create_task(link.run(stop))))


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (the link's state, a sink, a captured log) until it holds; 20 s
    is only the bound of a test that went wrong."""
    async with asyncio.timeout(20):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def on_node(link: BrokerLink, port: int) -> None:
    """Until the link is connected to the node on ``port``."""
    await until(lambda: link.connected.is_set() and link.node == f"mqtt://127.0.0.1:{port}")


async def delivered(port: int, owner: Owner, payload: bytes) -> None:
    """Publish on the node on ``port`` as a peer would, until the owner's sink has it."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"peer-{port}") as peer:
        await peer.publish(TOPIC, payload, qos=1)
    await until(lambda: payload in owner.received)


def events(logs: list[MutableMapping[str, Any]], *names: str) -> list[tuple[str, str | None, Any]]:
    return [(e["event"], e.get("node"), e.get("retry_in")) for e in logs if e["event"] in names]


async def test_a_link_with_a_list_connects_to_the_first_node(
    brokers: list[Mosquitto], running: list[Any]
) -> None:
    owner = Owner()
    a, b = brokers
    link = link_over([a.port, b.port], owner)
    with capture_logs() as logs:
        start(link, running)
        await on_node(link, a.port)
        await delivered(a.port, owner, b"on a")

    node_a = f"mqtt://127.0.0.1:{a.port}"
    assert owner.greeted == [node_a]
    assert link.describe()["node"] == node_a
    assert events(logs, "broker.connected") == [("broker.connected", node_a, None)]


async def test_a_killed_node_is_left_for_the_next_at_once_and_the_greeting_runs_there(
    brokers: list[Mosquitto], running: list[Any]
) -> None:
    owner = Owner()
    a, b = brokers
    # A backoff no test waits out: a link that backed off before trying b never gets there.
    link = link_over([a.port, b.port], owner, backoff_initial=600.0, backoff_max=600.0)
    with capture_logs() as logs:
        start(link, running)
        await on_node(link, a.port)
        kill9(a)
        await on_node(link, b.port)
        await delivered(b.port, owner, b"on b")  # subscribed again, on the new node

    node_a, node_b = (f"mqtt://127.0.0.1:{x.port}" for x in (a, b))
    assert owner.greeted == [node_a, node_b]  # the hello (or the directory) again, on b
    assert link.connections == 2
    moves = events(logs, "broker.connected", "broker.disconnected", "broker.unreachable")
    assert moves == [
        ("broker.connected", node_a, None),
        ("broker.unreachable", node_a, 0),  # a went away: b next, without waiting
        ("broker.disconnected", node_a, None),
        ("broker.connected", node_b, None),
    ]


async def test_a_dead_first_node_is_skipped_without_backing_off(
    brokers: list[Mosquitto], running: list[Any]
) -> None:
    owner = Owner()
    dead = free_port()  # nothing listens there
    _, b = brokers
    link = link_over([dead, b.port], owner, backoff_initial=600.0, backoff_max=600.0)
    with capture_logs() as logs:
        start(link, running)
        await on_node(link, b.port)

    node_dead, node_b = f"mqtt://127.0.0.1:{dead}", f"mqtt://127.0.0.1:{b.port}"
    assert owner.greeted == [node_b]
    assert events(logs, "broker.connected", "broker.unreachable") == [
        ("broker.unreachable", node_dead, 0),
        ("broker.connected", node_b, None),
    ]


async def test_only_a_whole_round_of_failed_nodes_backs_off_then_the_first_is_tried_again(
    tmp_path: Path, running: list[Any]
) -> None:
    owner = Owner()
    first, second = free_port(), free_port()  # neither listens yet
    link = link_over([first, second], owner, backoff_initial=0.05, backoff_max=0.1)
    broker = Mosquitto(tmp_path / "mosquitto", port=first)
    try:
        with capture_logs() as logs:
            start(link, running)
            await until(lambda: len(events(logs, "broker.unreachable")) >= 4)  # two rounds
            broker.start()
            await on_node(link, first)
    finally:
        broker.stop()

    node_1, node_2 = f"mqtt://127.0.0.1:{first}", f"mqtt://127.0.0.1:{second}"
    tried = events(logs, "broker.unreachable")[:4]
    assert [(node, retry_in == 0) for _, node, retry_in in tried] == [
        (node_1, True),  # the next node at once
        (node_2, False),  # a round failed: back off, then from the first again
        (node_1, True),
        (node_2, False),
    ]
    assert owner.greeted == [node_1]


async def test_a_single_url_backs_off_between_attempts_as_before(running: list[Any]) -> None:
    owner = Owner()
    dead = free_port()
    link = link_over([dead], owner, backoff_initial=0.05, backoff_max=0.1)
    with capture_logs() as logs:
        start(link, running)
        await until(lambda: len(events(logs, "broker.unreachable")) >= 2)

    assert link.node is None
    assert all(retry_in > 0 for _, _, retry_in in events(logs, "broker.unreachable"))


async def test_connections_dropped_at_once_back_off_more_each_time_not_in_a_tight_loop(
    brokers: list[Mosquitto], running: list[Any]
) -> None:
    """Two links with one client id (a spoke started twice; NATS hands an id to the last
    connection cluster-wide): each connection drops the other's at once. A connection that
    ends within STABLE_AFTER is a failed try, so the backoff grows instead of starting over
    at every connect (which made a tight loop over a list of nodes)."""
    a, _ = brokers
    first, second = Owner(), Owner()
    links = [
        link_over([a.port], owner, backoff_initial=0.05, backoff_max=0.4)
        for owner in (first, second)
    ]
    with capture_logs() as logs:
        for link in links:
            start(link, running)
        await until(lambda: len(events(logs, "broker.unreachable")) >= 10)

    delays = [retry_in for _, _, retry_in in events(logs, "broker.unreachable")]
    assert max(delays) == 0.4  # grown to the ceiling ...
    assert delays.count(0.05) <= 2  # ... not started over at each connect (once a link)
