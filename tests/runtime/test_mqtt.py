"""BrokerLink against brokers that misbehave in ways Mosquitto cannot be asked to.

A small MQTT 3.1.1 broker in the test answers CONNECT and SUBSCRIBE like any broker, and
then either drops the connection at the first PUBLISH without a PUBACK, or takes every
PUBLISH and never acknowledges it. The claims are about the link: it notices, it comes
back, it gives up on a publish in bounded time, and it stops when told.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from runtime import mqtt
from runtime.link import Link, OnConnected
from runtime.mqtt import BrokerLink
from tests.hubproc import Mosquitto


@dataclass
class OddBroker:
    on_publish: str  # "drop" | "ignore"
    connections: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1

        async def packet() -> tuple[int, bytes]:
            head = (await reader.readexactly(1))[0]
            size, shift = 0, 0
            while True:
                byte = (await reader.readexactly(1))[0]
                size |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            return head, await reader.readexactly(size)

        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head, body = await packet()
                kind = head & 0xF0
                if kind == 0x10:  # CONNECT -> CONNACK
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 0x80:  # SUBSCRIBE -> SUBACK (QoS 1 granted)
                    writer.write(b"\x90\x03" + body[:2] + b"\x01")
                elif kind == 0xC0:  # PINGREQ -> PINGRESP
                    writer.write(b"\xd0\x00")
                elif kind == 0x30 and self.on_publish == "drop":
                    break  # gone, without a PUBACK
                await writer.drain()
        writer.close()


@pytest.fixture
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[OddBroker]:
    odd = OddBroker(request.param)
    server = await asyncio.start_server(odd.handle, "127.0.0.1", 0)
    odd.port = server.sockets[0].getsockname()[1]
    async with server:
        yield odd


def link_to(broker: OddBroker, on_connected: OnConnected) -> BrokerLink:
    return BrokerLink(
        "odd",
        "127.0.0.1",
        broker.port,
        ["govnet"],
        subscriptions=["xchg/v1/govnet/down/jl.cc"],
        client_id="odd-test",
        sink=lambda _topic, _payload: None,
        on_connected=on_connected,
        backoff_initial=0.05,
        backoff_max=0.2,
    )


@pytest.mark.parametrize("broker", ["drop"], indirect=True)
async def test_a_broker_gone_while_the_link_greets_it_is_noticed_and_the_link_still_stops(
    broker: OddBroker,
) -> None:
    answers: list[bool] = []

    async def greet(link: Link) -> None:  # as the hub publishes its directory
        answers.append(await link.publish("xchg/v1/govnet/directory", b"d" * 100, retain=True))

    link = link_to(broker, greet)
    stop = asyncio.Event()
    running = asyncio.create_task(link.run(stop))
    async with asyncio.timeout(20):
        while True:  # polling a counter the broker task moves
            if broker.connections >= 3:  # it reconnected after each drop
                break
            await asyncio.sleep(0.05)
    stop.set()
    async with asyncio.timeout(10):
        await running
    assert True not in answers  # a greeting that finished was told: not acknowledged


@pytest.mark.parametrize("broker", ["ignore"], indirect=True)
async def test_a_publish_the_broker_never_acknowledges_fails_after_the_ack_timeout(
    broker: OddBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt, "ACK_TIMEOUT", 1.0)

    async def nothing(_link: Link) -> None:
        return None

    link = link_to(broker, nothing)
    stop = asyncio.Event()
    running = asyncio.create_task(link.run(stop))
    async with asyncio.timeout(10):
        await link.connected.wait()
        acked = await link.publish("xchg/v1/govnet/down/jl.cc", b"x" * 100)
    assert acked is False
    stop.set()
    async with asyncio.timeout(10):
        await running


async def test_a_sink_that_raises_costs_one_message_not_the_connection(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    seen: list[bytes] = []

    def sink(_topic: str, payload: bytes) -> None:
        seen.append(payload)
        if payload == b"first":
            raise ValueError("a bug in the owner")

    async def nothing(_link: Link) -> None:
        return None

    link = BrokerLink(
        "mosquitto",
        "127.0.0.1",
        broker.port,
        ["govnet"],
        subscriptions=["xchg/v1/govnet/down/jl.cc"],
        client_id="sink-test",
        sink=sink,
        on_connected=nothing,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(link.run(stop))
    try:
        async with asyncio.timeout(20):
            await link.connected.wait()
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="sink-sender") as peer:
                for payload in (b"first", b"second"):
                    await peer.publish("xchg/v1/govnet/down/jl.cc", payload, qos=1)
            while True:  # polling what the sink recorded
                if b"second" in seen:
                    break
                await asyncio.sleep(0.05)
        assert seen == [b"first", b"second"]  # once each: not redelivered after a reconnect
        assert link.connections == 1
    finally:
        stop.set()
        try:
            async with asyncio.timeout(10):
                await running
        finally:
            broker.stop()  # whatever the link did: no Mosquitto outlives the test
