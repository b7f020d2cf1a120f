"""One MQTT connection (aiomqtt) that stays up: the adapter hub and spoke share.

One of two deliberate exceptions to "schemas does no I/O" (docs/architecture.md): the
hub and every spoke must connect, resubscribe, back off and publish in exactly the same
way, and one tested copy is better than two.

A :class:`BrokerLink` connects, subscribes to its topics, calls ``on_connected`` (the hub
republishes the retained directory; a spoke says hello), and reconnects with jittered
exponential backoff when the broker goes away. Incoming messages skip aiomqtt's
per-message iterator (a task and an ``asyncio.wait`` each) and its Message objects: paho hands them
straight to the owner. Publishes are QoS 1 from bounded concurrent callers; a PUBACK only
frees a window slot, it proves nothing (the signed receipts do).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import structlog

log = structlog.get_logger("xchg.mqtt")

Sink = Callable[[str, bytes], None]  # (topic, payload), called on the event loop thread
ACK_TIMEOUT = 30.0  # seconds a publish may wait for its PUBACK before it counts as failed
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # PERF-NOTES: p99 57 ms -> 3.8 ms


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
        on_connected: Callable[[BrokerLink], Awaitable[None]],
        window: int = 256,
        tls: ssl.SSLContext | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.name, self.host, self.port, self.channels = name, host, port, channels
        self._subscriptions, self._will = subscriptions, will
        self._client_id, self._sink, self._on_connected = client_id, sink, on_connected
        self._window, self._tls = window, tls
        self._backoff = (backoff_initial, backoff_max)
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self._acks: dict[int, asyncio.Future[bool]] = {}

    def _new_client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self.host,
            self.port,
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
        return client

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop``; back off (with jitter) between attempts."""
        delay = self._backoff[0]
        while not stop.is_set():
            try:
                client = self._new_client()
                self._hook_acks(client)
                async with client:
                    # Usable before subscribing: retained presence arrives during the
                    # subscribe calls and releases deliveries that publish at once.
                    self._client = client
                    for topic in self._subscriptions:
                        await client.subscribe(topic, qos=1)
                    self.connections += 1
                    self.connected.set()
                    log.info("broker.connected", broker=self.name, channels=self.channels)
                    delay = self._backoff[0]
                    await self._on_connected(self)
                    await self._until_disconnected_or(client, stop)
            except aiomqtt.MqttError as exc:
                log.warning(
                    "broker.unreachable", broker=self.name, error=str(exc), retry_in=round(delay, 2)
                )
            finally:
                if self._client is not None:
                    log.info("broker.disconnected", broker=self.name)
                self._client = None
                self.connected.clear()
                self._fail_acks()
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * random.uniform(0.5, 1.5))  # noqa: S311
            delay = min(delay * 2, self._backoff[1])

    @staticmethod
    async def _until_disconnected_or(client: aiomqtt.Client, stop: asyncio.Event) -> None:
        # Messages go to the sink and aiomqtt's queue stays empty: iterating waits for a disconnect.
        async def drain() -> None:
            async for _ in client.messages:
                pass  # never reached: the sink takes every message

        watcher = asyncio.create_task(drain())
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if watcher in done:
                watcher.result()  # raises the MqttError of the disconnect
        finally:
            for task in (watcher, stopper):
                task.cancel()
            await asyncio.gather(watcher, stopper, return_exceptions=True)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """QoS 1; True once the broker acknowledged it, False if not connected or it failed.

        Goes to paho directly and waits on a future of its own: aiomqtt's publish counts its
        pending calls on every call (a list of all of them), which at a window of 256 cost
        a third of the hub's publish time (15.6k vs 24.8k publishes/s measured here).
        """
        return await self.acked(self.enqueue(topic, payload, retain=retain), topic)

    def enqueue(self, topic: str, payload: bytes, *, retain: bool = False) -> asyncio.Future[bool]:
        """Hand a QoS 1 publish to the connection now; the future says whether it was acked.

        Synchronous on purpose: publishes enqueued one after another leave on the one
        connection in that order, so a caller can order messages without awaiting acks.
        """
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        client = self._client
        if client is None:
            waiter.set_result(False)
            return waiter
        info = client._client.publish(topic, payload, qos=1, retain=retain)  # noqa: SLF001
        if info.rc != 0 or info.is_published():
            waiter.set_result(info.rc == 0)
            return waiter
        mid, acks = info.mid, self._acks
        acks[mid] = waiter

        def forget(_: asyncio.Future[bool]) -> None:
            if acks.get(mid) is waiter:  # acked, timed out or failed: the mid may be reused
                del acks[mid]

        waiter.add_done_callback(forget)
        return waiter

    @staticmethod
    async def acked(waiter: asyncio.Future[bool], topic: str) -> bool:
        try:
            async with asyncio.timeout(ACK_TIMEOUT):
                return await waiter
        except TimeoutError:
            log.debug("broker.publish_timeout", topic=topic)
            return False

    def _hook_acks(self, client: aiomqtt.Client) -> None:
        """Resolve our publish futures from paho's on_publish, then let aiomqtt see it too."""
        paho = client._client  # noqa: SLF001
        chained = paho.on_publish
        acks = self._acks

        def on_publish(*args: Any) -> None:  # (client, userdata, mid, reason_code, properties)
            waiter = acks.pop(args[2], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(True)
            if chained is not None:
                chained(*args)

        paho.on_publish = on_publish
        sink = self._sink

        def on_message(_client: Any, _userdata: Any, message: Any) -> None:
            # Straight to the owner: aiomqtt would build (and validate) a Message and a Topic
            # object for every message, only for the sink to take them apart again.
            sink(message.topic, message.payload)

        paho.on_message = on_message

    def _fail_acks(self) -> None:
        for waiter in self._acks.values():
            if not waiter.done():
                waiter.set_result(False)
        self._acks.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "broker": self.name,
            "channels": self.channels,
            "connected": self.connected.is_set(),
        }
