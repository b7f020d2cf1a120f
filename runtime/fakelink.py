"""An in-memory MQTT broker and links to it, for the tests of what uses a link.

:class:`FakeBroker` keeps retained messages, matches ``+`` and ``#`` filters as MQTT 3.1.1
does, and acknowledges a QoS 1 publish once it has queued the message for every matching
subscriber. :meth:`FakeBroker.link` makes a :class:`FakeLink` with ``BrokerLink``'s
arguments (:class:`runtime.link.LinkMaker`), so it fits wherever a
:class:`runtime.link.Link` is expected. Nothing leaves the process and nothing waits on a
timer: a test moves the broker (:meth:`~FakeBroker.drop`, :meth:`~FakeBroker.stop`,
:meth:`~FakeBroker.start`, :meth:`~FakeBroker.hold_acks`) and awaits what follows.

As with the real broker and ``clean_session``, messages a link has not read yet are lost
with its connection, and a link that loses its connection without saying goodbye has its
will published for it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog

from runtime.link import OnConnected, Sink
from runtime.tasks import cancel_and_wait

if TYPE_CHECKING:
    import aiomqtt

log = structlog.get_logger("xchg.mqtt")


class Published(NamedTuple):
    """A message the broker took: from a link, from a test, or a will."""

    topic: str
    payload: bytes
    retain: bool


def check_filter(pattern: str) -> None:
    """ValueError unless ``pattern`` is an MQTT topic filter a broker would accept."""
    if not pattern:
        raise ValueError("a topic filter may not be empty")
    levels = pattern.split("/")
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or (
            "+" in level and level != "+"
        ):
            raise ValueError(
                f"topic filter {pattern!r}: '+' must be a whole level and '#' the whole last one"
            )


def check_topic(topic: str) -> None:
    """ValueError unless ``topic`` may be published to (not empty, no wildcards)."""
    if not topic or "+" in topic or "#" in topic:
        raise ValueError(f"cannot publish to {topic!r}: a topic is not empty and has no + or #")


def topic_matches(pattern: str, topic: str) -> bool:
    """Does the filter ``pattern`` match ``topic`` (MQTT 3.1.1, 4.7)?

    ``+`` is one level, ``#`` the rest (and the level above it: ``a/#`` matches ``a``);
    a wildcard in the first level does not match topics that begin with ``$``.
    """
    wanted, levels = pattern.split("/"), topic.split("/")
    if topic.startswith("$") and wanted[0] in {"+", "#"}:
        return False
    for i, want in enumerate(wanted):
        if want == "#":
            return True
        if i >= len(levels) or want not in {"+", levels[i]}:
            return False
    return len(wanted) == len(levels)


def _as_bytes(payload: object) -> bytes:
    """A will's payload as paho sends it (aiomqtt's Will takes str, bytes or numbers)."""
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()


class _Connection:
    """One connection of a link: what waits to be read, and what waits for its PUBACK."""

    def __init__(self, link: FakeLink) -> None:
        self.link = link
        self.inbox: deque[tuple[str, bytes]] = deque()
        self.unacked: set[asyncio.Future[bool]] = set()
        self.lost = asyncio.Event()
        self._draining = False

    def deliver(self, topic: str, payload: bytes) -> None:
        self.inbox.append((topic, payload))
        self.schedule()

    def schedule(self) -> None:
        """Hand waiting messages to the sink on the next loop turn (never inside the call
        that published them, as a socket would not)."""
        if self.inbox and self.link.reading and not self._draining and not self.lost.is_set():
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        self._draining = False
        while self.inbox and self.link.reading and not self.lost.is_set():
            topic, payload = self.inbox.popleft()
            self.link.receive(topic, payload)

    def close(self) -> None:
        """The connection is gone: nothing on it is read or acknowledged any more."""
        self.lost.set()
        self.inbox.clear()
        for waiter in self.unacked:
            if not waiter.done():
                waiter.set_result(False)
        self.unacked.clear()


class FakeBroker:
    """An MQTT broker in memory; links made by :meth:`link` connect to it."""

    def __init__(self) -> None:
        self.retained: dict[str, bytes] = {}
        self.published: list[Published] = []  # every message taken, in order
        self._connections: dict[FakeLink, _Connection] = {}
        self._up = asyncio.Event()
        self._up.set()
        self._holding = False
        self._held: list[asyncio.Future[bool]] = []

    # ------------------------------------------------------------- what tests do

    def link(
        self,
        name: str,
        host: str,
        port: int,
        channels: list[str],
        *,
        subscriptions: list[str],
        client_id: str,
        sink: Sink,
        will: aiomqtt.Will | None = None,
        on_connected: OnConnected,
        window: int = 256,  # noqa: ARG002 - BrokerLink's arguments; nothing to bound here
        tls: ssl.SSLContext | None = None,  # noqa: ARG002
        backoff_initial: float = 0.5,  # noqa: ARG002 - reconnects wait for start(), not a timer
        backoff_max: float = 30.0,  # noqa: ARG002
        failover: Sequence[tuple[str, int]] = (),  # noqa: ARG002 - one fake broker, one node
    ) -> FakeLink:
        """A link to this broker, made as ``BrokerLink`` is (host and port are kept only
        for the record)."""
        for pattern in subscriptions:
            check_filter(pattern)
        return FakeLink(
            self,
            name,
            host,
            port,
            channels,
            subscriptions=subscriptions,
            client_id=client_id,
            sink=sink,
            will=will,
            on_connected=on_connected,
        )

    @property
    def running(self) -> bool:
        return self._up.is_set()

    def connected(self) -> list[str]:
        """The client ids connected now, in the order they connected."""
        return [link.client_id for link in self._connections]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish as another client would (a test playing the hub or a spoke)."""
        check_topic(topic)
        self._take(topic, payload, retain=retain)

    def drop(self, link: FakeLink) -> None:
        """Cut ``link``'s connection without a goodbye (a broken network): its will is
        published, its unacknowledged publishes fail, and it reconnects."""
        connection = self._connections.pop(link, None)
        if connection is None:
            return
        connection.close()
        if link.will is not None:
            will = link.will
            self._take(will.topic, _as_bytes(will.payload), retain=will.retain)

    def stop(self, *, keep_retained: bool = True) -> None:
        """The broker goes away: every connection is lost and no link can connect until
        :meth:`start`. ``keep_retained=False`` is a broker without persistence."""
        self._up.clear()
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
        if not keep_retained:
            self.retained.clear()

    def start(self) -> None:
        """The broker is back: waiting links connect."""
        self._up.set()

    async def wait_running(self) -> None:
        await self._up.wait()

    def hold_acks(self) -> None:
        """Take publishes but acknowledge none until :meth:`release_acks`."""
        self._holding = True

    def release_acks(self, *, acked: bool = True) -> None:
        """Answer the held publishes (``acked=False``: as when they time out)."""
        self._holding = False
        held, self._held = self._held, []
        for waiter in held:
            if not waiter.done():
                waiter.set_result(acked)

    # ------------------------------------------------------------- what links do

    def connect_link(self, link: FakeLink) -> _Connection:
        connection = self._connections[link] = _Connection(link)
        for pattern in link.subscriptions:  # a real broker sends them per SUBSCRIBE
            for topic, payload in self.retained.items():
                if topic_matches(pattern, topic):
                    connection.deliver(topic, payload)
        return connection

    def disconnect_link(self, connection: _Connection) -> None:
        """A clean goodbye: no will."""
        if self._connections.get(connection.link) is connection:
            del self._connections[connection.link]
        connection.close()

    def publish_from(
        self, connection: _Connection, topic: str, payload: bytes, *, retain: bool
    ) -> asyncio.Future[bool]:
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._take(topic, payload, retain=retain)
        connection.unacked.add(waiter)
        waiter.add_done_callback(connection.unacked.discard)
        if self._holding:
            self._held.append(waiter)
        else:  # the PUBACK comes back later, not inside the call that published
            asyncio.get_running_loop().call_soon(_acknowledge, waiter)
        return waiter

    def _take(self, topic: str, payload: bytes, *, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = payload
            else:  # an empty retained message clears the topic's
                self.retained.pop(topic, None)
        self.published.append(Published(topic, payload, retain))
        for connection in list(self._connections.values()):
            if any(topic_matches(pattern, topic) for pattern in connection.link.subscriptions):
                connection.deliver(topic, payload)  # once, however many filters match


def _acknowledge(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


class FakeLink:
    """A :class:`runtime.link.Link` to a :class:`FakeBroker`."""

    def __init__(
        self,
        broker: FakeBroker,
        name: str,
        host: str,
        port: int,
        channels: list[str],
        *,
        subscriptions: list[str],
        client_id: str,
        sink: Sink,
        will: aiomqtt.Will | None,
        on_connected: OnConnected,
    ) -> None:
        self.name, self.host, self.port, self.channels = name, host, port, channels
        self.subscriptions, self.client_id, self.will = subscriptions, client_id, will
        self._broker, self._sink, self._on_connected = broker, sink, on_connected
        self.connected = asyncio.Event()
        self.node: str | None = None  # f"fake://{host}:{port}" while connected
        self.connections = 0
        self.reading = True
        self._connection: _Connection | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop``; while the broker is stopped, wait for it."""
        while not stop.is_set():
            if not self._broker.running:
                await _first_of(stop.wait(), self._broker.wait_running())
                continue
            connection = self._connection = self._broker.connect_link(self)
            self.connections += 1
            self.node = f"fake://{self.host}:{self.port}"
            self.connected.set()
            try:
                await self._until_lost_or(connection, stop)
            finally:
                self._connection = None
                self.node = None
                self.connected.clear()
                self._broker.disconnect_link(connection)  # idempotent

    async def _until_lost_or(self, connection: _Connection, stop: asyncio.Event) -> None:
        """Greet beside the watch, as BrokerLink does: a greeting's error is raised here."""
        lost = asyncio.ensure_future(connection.lost.wait())
        stopper = asyncio.ensure_future(stop.wait())
        greeter = asyncio.ensure_future(self._on_connected(self))
        waiting: set[asyncio.Future[Any]] = {lost, stopper, greeter}
        try:
            while True:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if greeter in done:
                    greeter.result()  # our own bug: let it be seen
                if lost in done or stopper in done:
                    return
        finally:
            await cancel_and_wait((lost, stopper, greeter))

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        return await self.enqueue(topic, payload, retain=retain)

    def enqueue(self, topic: str, payload: bytes, *, retain: bool = False) -> asyncio.Future[bool]:
        check_topic(topic)
        connection = self._connection
        if connection is None or connection.lost.is_set():
            unsent: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            unsent.set_result(False)
            return unsent
        return self._broker.publish_from(connection, topic, payload, retain=retain)

    def set_reading(self, reading: bool) -> None:  # noqa: FBT001 - a switch
        self.reading = reading
        if self._connection is not None:
            self._connection.schedule()

    def receive(self, topic: str, payload: bytes) -> None:
        """One message for the sink; a sink that raises costs that message, as with BrokerLink."""
        try:
            self._sink(topic, payload)
        except Exception:
            log.exception("broker.sink_failed", broker=self.name, topic=topic[:120])


async def _first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(tasks)
