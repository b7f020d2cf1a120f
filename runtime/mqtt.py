"""One MQTT connection (aiomqtt) that stays up: the adapter hub and spoke share.

The hub and every spoke must connect, resubscribe, back off and publish in exactly the
same way, and one tested copy is better than two. What its users may rely on is the
:class:`runtime.link.Link` protocol; :mod:`runtime.fakelink` is the in-memory stand-in.

A :class:`BrokerLink` connects, subscribes to its topics, calls ``on_connected`` (the hub
republishes the retained directory; a spoke says hello), and reconnects with jittered
exponential backoff when the broker goes away. A clustered broker's nodes (``failover``)
are tried in the order given: when the node in use goes away, or one does not answer, the
next is tried at once, and only a whole round of nodes that failed backs off. A node that
refuses one of the link's subscriptions (SUBACK 0x80: its permissions, or a NATS cluster
still making JetStream consumers after a node loss) counts as one that failed: a link
that cannot read what it subscribes to is not connected.

Incoming messages skip aiomqtt's per-message iterator (a task and an ``asyncio.wait``
each) and its Message objects: paho hands them straight to the owner. Publishes are QoS 1
from bounded concurrent callers; a PUBACK only frees a window slot, it proves nothing (the
signed receipts do).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import ssl
import threading
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any

import aiomqtt
import structlog

from runtime.link import OnConnected, Sink
from runtime.tasks import cancel_and_wait
from schemas.errors import TransportError, UsageError

log = structlog.get_logger("xchg.mqtt")

# The private attributes of aiomqtt's and paho's clients this module reaches into, and why.
# paho-mqtt is pinned in pyproject.toml for them; every new client is checked for them, and
# tests/runtime/test_paho_private.py names the one an upgrade removed.
AIOMQTT_PRIVATE = {
    "_client": "the paho client under aiomqtt's: publishes and callbacks go to it directly",
    "_disconnected": "the future aiomqtt's connection watch waits on; SocketIO fails it when "
    "the socket breaks",
}
PAHO_PRIVATE = {
    "_sock": "the connection's socket, which SocketIO reads from",
    "_sock_recv": "replaced by SocketIO._recv: paho reads through one buffer per readable event",
    "_call_socket_register_write": "called when TLS must write before it can read",
    "_out_packet": "the queue of packets to write, whose runs coalesce() merges into one "
    "send: paho writes each packet with a send() of its own",
}
ACK_TIMEOUT = 30.0  # seconds a publish may wait for its PUBACK before it counts as failed
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # PERF-NOTES: p99 57 ms -> 3.8 ms
RECV_BYTES = 256 * 1024  # one recv() per readable socket, not one per header byte
# Packets queued in one loop iteration leave in sends of up to this many bytes; a packet
# at least this large (a body chunk) goes alone, not copied into a merged one.
COALESCE_BYTES = 64 * 1024
_PUBLISH, _DISCONNECT = 0x30, 0xE0  # MQTT control packet types (the high nibble)
# A connection that ends sooner than this counts as a failed node, and its round goes on
# to the backoff: a broker that accepts and then drops us at once (NATS handing a client
# id to another connection, a broker at its limits) must not be retried in a tight loop.
STABLE_AFTER = 5.0


# nats-server refuses a client id containing any of these (CONNACK 2, identifier rejected)
_NOT_IN_CLIENT_ID = re.compile(r"[\s*>]")


def mqtt_client_id(*parts: str) -> str:
    """The MQTT client id of ``parts`` joined by '-', in a form every broker we run takes.

    nats-server refuses a client id containing '.', whitespace, '*' or '>' (its names
    for subjects and streams), and ours carry dotted organisation ids and broker
    addresses. '.' becomes '_': organisation ids are [a-z0-9-] labels joined by dots, so
    two ids stay two client ids; the others (no id of ours has them) become '-'. Mosquitto
    takes either form, and a broker of ``hubctl broker-config`` replaces it with the
    certificate's name anyway (``use_username_as_clientid``).
    """
    return _NOT_IN_CLIENT_ID.sub("-", "-".join(parts).replace(".", "_"))


class SubscriptionRefused(TransportError):  # noqa: N818 - says what happened, as MqttError does
    """The broker answered a SUBSCRIBE with a failure code (0x80): it will not deliver.
    Retriable: a NATS cluster refuses for a moment after losing a node."""

    def __init__(self, node: str, topics: list[str]) -> None:
        self.node, self.topics = node, topics
        shown = ", ".join(topics)
        super().__init__(
            f"代理 {node} 拒绝了订阅 {shown}（SUBACK 0x80）：反复出现时，是它的权限不允许本证书"
            "的身份读取这些主题，请用 hubctl broker-config 为该频道重新生成代理配置并重启代理，"
            "并核对本机证书属于本机构；NATS 集群刚失去一个节点时也会拒绝几秒，连接会自动换节点"
            f"重试 / broker {node} refused the subscription to {shown} (SUBACK 0x80): if it "
            "repeats, its permissions do not let this certificate's identity read them: "
            "regenerate the channel's broker configuration with hubctl broker-config, restart "
            "the broker, and check that this certificate is this organisation's; a NATS cluster "
            "that has just lost a node refuses for a few seconds too, and the link tries "
            "another node by itself"
        )


def refused_codes(granted: Sequence[Any]) -> list[int]:
    """The failure codes (0x80 and up) among a SUBACK's return codes: paho gives ints or
    ReasonCodes, whose value is the code."""
    codes = [int(getattr(code, "value", code)) for code in granted]
    return [code for code in codes if code >= 0x80]  # MQTT's failure bit


def tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


class BrokerLink:
    """One broker connection carrying ``channels``; reconnects until ``stop`` is set."""

    def __init__(
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
        window: int = 256,
        tls: ssl.SSLContext | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        failover: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.name, self.host, self.port, self.channels = name, host, port, channels
        # (host, port) of every node of the broker, in the order they are tried
        self.nodes = [(host, port), *failover]
        self._scheme = "mqtt" if tls is None else "mqtts"
        self.node: str | None = None  # the node connected now (scheme://host:port)
        self._subscriptions, self._will = subscriptions, will
        self._client_id, self._sink, self._on_connected = client_id, sink, on_connected
        self._window, self._tls = window, tls
        self._backoff = (backoff_initial, backoff_max)
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self._acks: dict[int, tuple[asyncio.Future[bool], float]] = {}  # mid -> (ack, sent at)
        self._io: SocketIO | None = None
        self._reading = True
        self._refusals = 0  # refused subscriptions in a row (any node), for the log level

    def _new_client(self, host: str, port: int) -> aiomqtt.Client:
        client = aiomqtt.Client(
            host,
            port,
            identifier=self._client_id,
            clean_session=True,  # the hub never relies on broker-side queues
            max_inflight_messages=self._window,
            max_concurrent_outgoing_calls=self._window,
            socket_options=[NODELAY],
            tls_context=self._tls,
            will=self._will,
            keepalive=30,
            timeout=10,  # a CONNACK takes milliseconds; do not hang on a broken broker
        )
        client.pending_calls_threshold = self._window * 4  # expected, not a warning
        missing = missing_private(client)
        if missing:
            raise UsageError(
                f"本机安装的 aiomqtt 或 paho-mqtt 缺少 runtime/mqtt.py 所用的私有属性 "
                f"{', '.join(missing)}；请按 pyproject.toml 固定的版本安装 / the installed "
                f"aiomqtt or paho-mqtt lacks {', '.join(missing)}, which runtime/mqtt.py "
                "reaches into; install the versions pyproject.toml pins"
            )
        return client

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop``; back off (with jitter) between rounds of nodes.

        The nodes are tried in the order given, so the operator's order is a preference
        (the nearest node first) and every hub and spoke can be told where to be; a spoke
        that should start elsewhere is given its list in another order. The node that went
        away is tried last, and one connected node is kept until it goes away (no moving
        back to the first, which would drop a good connection). A connection that ends
        within :data:`STABLE_AFTER` counts as a failed node of the round.
        """
        clock = asyncio.get_running_loop().time
        since = 0.0  # when the current connection was made
        delay = self._backoff[0]
        index = 0  # the node tried next
        failed = 0  # nodes tried in a row without a connection
        while not stop.is_set():
            host, port = self.nodes[index]
            node = f"{self._scheme}://{host}:{port}"
            reached = counted = False
            sweeper = asyncio.create_task(self._sweep_acks())  # the whole life of a client
            try:
                client = self._new_client(host, port)
                self._hook_acks(client)
                self._io = SocketIO(client, asyncio.get_running_loop(), reading=True)
                self._io.install()
                async with client:
                    # Usable before subscribing: retained presence arrives during the
                    # subscribe calls and releases deliveries that publish at once.
                    self._client = client
                    await self._subscribe(client, node)
                    self._io.set_reading(self._reading)  # paused only once connected
                    self.connections += 1
                    self.node, reached, since, self._refusals = node, True, clock(), 0
                    self.connected.set()
                    log.info(
                        "broker.connected", broker=self.name, channels=self.channels, node=node
                    )
                    await self._until_disconnected_or(client, stop, self._on_connected(self))
            except (SubscriptionRefused, aiomqtt.MqttError) as exc:
                failed, delay = self._tally(reached, clock() - since, failed, delay)
                counted = True
                # the next node at once, or the first again after the backoff
                self._failed(node, exc, 0 if failed < len(self.nodes) else round(delay, 2))
            finally:
                sweeper.cancel()
                if reached:
                    log.info("broker.disconnected", broker=self.name, node=node)
                self._client = None
                self.node = None
                self.connected.clear()
                self._fail_acks()
            if stop.is_set():
                return
            if not counted:
                failed, delay = self._tally(reached, clock() - since, failed, delay)
            index = (index + 1) % len(self.nodes)
            if failed < len(self.nodes):
                continue  # another node of the broker may be up: try it now
            failed = 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * random.uniform(0.5, 1.5)):  # noqa: S311
                    await stop.wait()
            delay = min(delay * 2, self._backoff[1])

    async def _subscribe(self, client: aiomqtt.Client, node: str) -> None:
        refused = [
            topic
            for topic in self._subscriptions
            if refused_codes(await client.subscribe(topic, qos=1))
        ]
        if refused:
            raise SubscriptionRefused(node, refused)

    def _tally(self, reached: bool, lasted: float, failed: int, delay: float) -> tuple[int, float]:  # noqa: FBT001
        """The round's failed nodes and the backoff after a try of one node."""
        if reached and lasted >= STABLE_AFTER:
            # a connection that held: a new round, the node that went away tried in it
            return 1, self._backoff[0]
        return failed + 1, delay  # unreachable, or up and gone at once: the round goes on

    def _failed(self, node: str, exc: Exception, retry_in: float) -> None:
        if isinstance(exc, SubscriptionRefused):
            # Not connected: a hub that cannot read its up topics does not serve the
            # channel, a spoke that cannot read its down topic receives nothing. A refusal
            # that outlasts a round of nodes is the broker's permissions (an error, said at
            # every round); a NATS cluster that lost a node refuses while it makes new
            # JetStream consumers (a warning: the next node, or a moment later, takes it).
            self._refusals += 1
            persistent = self._refusals > len(self.nodes)
            (log.error if persistent else log.warning)(
                "broker.subscribe_refused",
                broker=self.name,
                node=node,
                topics=exc.topics,
                error=str(exc),
                retry_in=retry_in,
            )
        else:
            log.warning(
                "broker.unreachable", broker=self.name, node=node, error=str(exc), retry_in=retry_in
            )

    async def _sweep_acks(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._expire_acks()

    @staticmethod
    async def _until_disconnected_or(
        client: aiomqtt.Client, stop: asyncio.Event, connected: Awaitable[None]
    ) -> None:
        """Run the owner's on-connect work and wait, until the connection drops or ``stop``.

        The on-connect work (the hub's retained directory, a spoke's hello and resends)
        runs beside the watch, not before it: if the broker goes away while it waits for a
        PUBACK, the link still notices, reconnects, and still honours ``stop``.
        """

        # Messages go to the sink and aiomqtt's queue stays empty: iterating waits for a disconnect.
        async def drain() -> None:
            async for _ in client.messages:
                pass  # never reached: the sink takes every message

        watcher = asyncio.create_task(drain())
        stopper = asyncio.create_task(stop.wait())
        greeter = asyncio.ensure_future(connected)
        waiting = {watcher, stopper, greeter}
        try:
            while True:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if greeter in done:
                    greeter.result()  # our own bug: let it be seen
                if watcher in done:
                    watcher.result()  # raises the MqttError of the disconnect
                if stopper in done or watcher in done:
                    return
        finally:
            await cancel_and_wait((watcher, stopper, greeter))

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """QoS 1; True once the broker acknowledged it, False if not connected, or if no
        acknowledgement came within ACK_TIMEOUT.

        Goes to paho directly and waits on a future of its own: aiomqtt's publish counts its
        pending calls on every call (a list of all of them), which at a window of 256 cost
        a third of the hub's publish time (15.6k vs 24.8k publishes/s measured here).
        """
        return await self.enqueue(topic, payload, retain=retain)

    def enqueue(self, topic: str, payload: bytes, *, retain: bool = False) -> asyncio.Future[bool]:
        """Hand a QoS 1 publish to the connection now; the future says whether it was acked
        (False once ACK_TIMEOUT passes without a PUBACK, or when the connection drops).

        Synchronous on purpose: publishes enqueued one after another leave on the one
        connection in that order, so a caller can order messages without awaiting acks.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        client = self._client
        if client is None:
            waiter.set_result(False)
            return waiter
        info = client._client.publish(topic, payload, qos=1, retain=retain)  # noqa: SLF001
        if info.rc != 0 or info.is_published():
            waiter.set_result(info.rc == 0)
            return waiter
        self._acks[info.mid] = (waiter, loop.time())
        return waiter

    def set_reading(self, reading: bool) -> None:  # noqa: FBT001 - a switch
        """Stop (False) or resume (True) reading from the broker: the owner's intake is full.

        TCP then pushes back to the broker, which holds messages for us (or drops them by its
        own limits; senders resend what the hub never answered). Kept across reconnects.
        """
        self._reading = reading
        if self._io is not None:
            self._io.set_reading(reading)

    def _expire_acks(self) -> None:
        """Fail publishes that waited ACK_TIMEOUT for their PUBACK (a broker that takes
        them and never answers); checked once a second, not with a timer per publish."""
        if not self._acks:
            return
        limit = asyncio.get_running_loop().time() - ACK_TIMEOUT
        late = [mid for mid, (_, sent_at) in self._acks.items() if sent_at < limit]
        for mid in late:
            waiter, _ = self._acks.pop(mid)
            if not waiter.done():
                waiter.set_result(False)
        if late:
            log.warning("broker.publish_timeout", broker=self.name, publishes=len(late))

    def _hook_acks(self, client: aiomqtt.Client) -> None:
        """Resolve our publish futures from paho's on_publish, then let aiomqtt see it too."""
        paho = client._client  # noqa: SLF001
        chained = paho.on_publish
        acks = self._acks

        def on_publish(*args: Any) -> None:  # (client, userdata, mid, reason_code, properties)
            pending = acks.pop(args[2], None)
            if pending is not None and not pending[0].done():
                pending[0].set_result(True)
            if chained is not None:
                chained(*args)

        paho.on_publish = on_publish
        disconnected = paho.on_disconnect

        loop, thread = asyncio.get_running_loop(), threading.get_ident()

        def on_disconnect(*args: Any) -> None:
            # Nothing sent on this connection will be acknowledged now: say so at once, so
            # that nobody waits ACK_TIMEOUT for a connection that is gone.
            if threading.get_ident() == thread:
                self._fail_acks()
            else:  # paho may call it from the thread aiomqtt connects in
                loop.call_soon_threadsafe(self._fail_acks)
            if disconnected is not None:
                disconnected(*args)

        paho.on_disconnect = on_disconnect
        sink = self._sink

        def on_message(_client: Any, _userdata: Any, message: Any) -> None:
            # Straight to the owner: aiomqtt would build (and validate) a Message and a Topic
            # object for every message, only for the sink to take them apart again.
            try:
                sink(message.topic, message.payload)
            except Exception:
                # would send the same message again, and so on for ever: log it and go on
                log.exception("broker.sink_failed", broker=self.name, topic=message.topic[:120])

        paho.on_message = on_message

    def _fail_acks(self) -> None:
        for waiter, _ in self._acks.values():
            if not waiter.done():
                waiter.set_result(False)
        self._acks.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "broker": self.name,
            "channels": self.channels,
            "connected": self.connected.is_set(),
            "node": self.node,
        }


def _needs_own_send(packet: dict[str, Any]) -> bool:
    """Whether paho does something when this packet is written out: a QoS 0 PUBLISH calls
    on_publish, a DISCONNECT closes the socket. Everything else (QoS 1 PUBLISHes, whose
    PUBACK is what counts, PUBACKs, SUBSCRIBEs, PINGREQs) is only bytes."""
    kind: int = packet["command"] & 0xF0
    return (kind == _PUBLISH and packet["qos"] == 0) or kind == _DISCONNECT


def coalesce(out: deque[Any], limit: int = COALESCE_BYTES) -> None:
    """Merge runs of paho's queued packets into packets of up to ``limit`` bytes, in order.

    paho writes its queue a packet at a time, one ``send()`` each: at a few thousand
    messages a second that is a system call and, with TCP_NODELAY, a TCP segment (a TLS
    record on TLS) per PUBLISH and per PUBACK, for the broker to read one by one too (the
    bench's hub sent 2.2 per document; merged, 0.06). A merged packet is one paho needs
    no bookkeeping for (:func:`_needs_own_send`), so paho writes it, partly if the socket
    is full, as it writes any other; a packet that needs its own send, or is ``limit``
    bytes or more, stays as it is, where it is. The first packet may be partly written
    already (``pos``): only what remains of it is taken.

    The packets seen are then taken off the left one by one and the result put back on
    the left: paho may queue a packet from another thread meanwhile (its CONNECT, from the
    thread aiomqtt connects in), and it appends on the right, where it stays, after them.
    """
    taken = list(out)
    count = len(taken)
    if count < 2:
        return
    merged: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []
    size = 0  # bytes in run

    def close_run() -> None:
        nonlocal size
        size = 0
        if len(run) == 1:
            merged.append(run[0])
        elif run:
            data = b"".join(memoryview(p["packet"])[p["pos"] :] for p in run)
            merged.append(
                {
                    "command": run[0]["command"],
                    "mid": run[0]["mid"],
                    "qos": 1,
                    "pos": 0,
                    "to_process": len(data),
                    "packet": data,
                    "info": None,
                }
            )
        run.clear()

    for packet in taken:
        if _needs_own_send(packet) or packet["to_process"] >= limit:
            close_run()
            merged.append(packet)
            continue
        if size + packet["to_process"] > limit:
            close_run()
        run.append(packet)
        size += packet["to_process"]
    close_run()
    for _ in range(count):  # only now: a failure above leaves paho's queue as it was
        out.popleft()
    out.extendleft(reversed(merged))


def missing_private(client: aiomqtt.Client) -> list[str]:
    """The private attributes this module uses that ``client`` (or its paho client) lacks."""
    missing = [f"aiomqtt.Client.{name}" for name in AIOMQTT_PRIVATE if not hasattr(client, name)]
    paho = getattr(client, "_client", None)
    if paho is not None:
        missing += [f"paho Client.{name}" for name in PAHO_PRIVATE if not hasattr(paho, name)]
    return missing


class SocketIO:
    """paho's socket callbacks for an asyncio loop, cheaper than aiomqtt's own.

    aiomqtt registers a writer through ``call_soon_threadsafe`` every time paho queues a
    packet (a wake-up write to the loop's self-pipe, then ``epoll_ctl`` twice) and lets
    paho read each packet's header a byte per ``recv()``. At a few thousand messages a
    second that bookkeeping cost more than the messages. Here, packets queued during one
    loop iteration are written together by one ``loop_write`` scheduled with
    ``call_soon`` (a writer is registered only when the socket buffer is full), and
    reads go through a buffer filled by one ``recv()`` per readable event. These are
    paho's documented external-loop callbacks (``on_socket_*``); aiomqtt keeps the
    connection's lifecycle (connect, subscribe, keepalive, disconnect).
    """

    def __init__(
        self, client: aiomqtt.Client, loop: asyncio.AbstractEventLoop, *, reading: bool = True
    ) -> None:
        self._aio, self._paho, self._loop = client, client._client, loop  # noqa: SLF001
        self._thread = threading.get_ident()  # the loop's thread (we are on it now)
        self._inbox = bytearray()
        self._write_scheduled = False
        self._writer_fd: int | None = None
        self._reader_fd: int | None = None  # while a reader is registered
        self._sock_fd: int | None = None
        self._reading = reading

    def install(self) -> None:
        paho = self._paho
        self._open_chained = paho.on_socket_open
        self._close_chained = paho.on_socket_close
        paho.on_socket_open = self._on_open
        paho.on_socket_close = self._on_close
        paho.on_socket_register_write = self._on_register_write
        paho.on_socket_unregister_write = self._on_unregister_write
        paho._sock_recv = self._recv  # type: ignore[method-assign]  # noqa: SLF001

    # ------------------------------------------------------------- reading

    def _on_open(self, client: Any, userdata: Any, sock: Any) -> None:
        # aiomqtt's callback adds its reader and starts its keepalive task (from the thread
        # that connects, hence threadsafe); ours replaces that reader right after it.
        if self._open_chained is not None:
            self._open_chained(client, userdata, sock)
        self._loop.call_soon_threadsafe(self._opened, sock.fileno())

    def _opened(self, fd: int) -> None:
        self._sock_fd = fd
        if self._reading:
            self._loop.add_reader(fd, self._on_readable)
            self._reader_fd = fd
        else:
            self._loop.remove_reader(fd)  # aiomqtt's, added just before

    def set_reading(self, reading: bool) -> None:  # noqa: FBT001 - a switch
        self._reading = reading
        fd = self._sock_fd
        if fd is None:
            return  # not open yet: _opened follows the switch
        if not reading and self._reader_fd is not None:
            self._loop.remove_reader(self._reader_fd)
            self._reader_fd = None
        elif reading and self._reader_fd is None:
            self._loop.add_reader(fd, self._on_readable)
            self._reader_fd = fd
            self._loop.call_soon(self._on_readable)  # bytes already buffered raise no event

    def _on_readable(self) -> None:
        paho = self._paho
        try:
            while self._reading:
                paho.loop_read()
                sock = paho._sock  # noqa: SLF001
                if self._inbox or (sock is not None and getattr(sock, "pending", int)() > 0):
                    continue  # bytes already read (by us or by TLS) raise no new event
                break
        except Exception as exc:  # noqa: BLE001 - any failure here is a broken connection
            self._broken(exc)

    def _recv(self, bufsize: int) -> bytes:
        inbox = self._inbox
        if not inbox:
            sock = self._paho._sock  # noqa: SLF001
            if sock is None:
                raise ConnectionError("the MQTT socket is closed")
            try:
                data = sock.recv(RECV_BYTES)
            except ssl.SSLWantReadError as exc:
                raise BlockingIOError from exc
            except ssl.SSLWantWriteError as exc:
                self._paho._call_socket_register_write()  # noqa: SLF001
                raise BlockingIOError from exc
            if len(data) <= bufsize:
                return data  # b"" is the end of the connection: paho handles it
            inbox += data
        data = bytes(inbox[:bufsize])
        del inbox[:bufsize]
        return data

    # ------------------------------------------------------------- writing

    def _on_register_write(self, _client: Any, _userdata: Any, _sock: Any) -> None:
        if threading.get_ident() == self._thread:
            self._schedule_write()
        else:  # paho queues CONNECT from the thread aiomqtt connects in
            self._loop.call_soon_threadsafe(self._schedule_write)

    def _schedule_write(self) -> None:
        if not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write)

    def _write(self) -> None:
        self._write_scheduled = False
        try:
            coalesce(self._paho._out_packet)  # noqa: SLF001 - one send for what queued
            self._paho.loop_write()
        except Exception as exc:  # noqa: BLE001 - any failure here is a broken connection
            self._broken(exc)
            return
        sock = self._paho._sock  # noqa: SLF001
        if self._paho.want_write() and sock is not None and self._writer_fd is None:
            self._writer_fd = sock.fileno()  # the socket buffer is full: wait until writable
            self._loop.add_writer(self._writer_fd, self._write)

    def _on_unregister_write(self, _client: Any, _userdata: Any, _sock: Any) -> None:
        self._drop_writer()

    def _drop_writer(self) -> None:
        if self._writer_fd is not None:
            self._loop.remove_writer(self._writer_fd)
            self._writer_fd = None

    def _on_close(self, client: Any, userdata: Any, sock: Any) -> None:
        self._drop_writer()
        self._inbox.clear()
        self._sock_fd = self._reader_fd = None  # aiomqtt's close removes the reader
        if self._close_chained is not None:
            self._close_chained(client, userdata, sock)

    def _broken(self, exc: Exception) -> None:
        disconnected = self._aio._disconnected  # noqa: SLF001 - how aiomqtt learns of it
        if not disconnected.done():
            disconnected.set_exception(exc)
