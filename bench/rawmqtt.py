"""A minimal MQTT 3.1.1 client over asyncio streams, for load generators of many connections.

Why not aiomqtt or paho: both read each PUBLISH whole into memory before handing it over,
so 10,000 simulated spokes taking an 8 MiB retained directory at once would hold 80 GB; a
paho client also costs a thread-safe socket pair and a few hundred kB per connection. This
client streams a message's payload through a :class:`Sink` in chunks (the caller counts
bytes and keeps only what it samples), so a connection costs its stream buffers. It does
what a spoke does on a connection and no more: CONNECT with a will, SUBSCRIBE (QoS 1),
PUBLISH (QoS 0/1, retained or not), PUBACK for what it receives; and, for a storm of
connections, the packets that follow CONNECT written with it in one go (MQTT lets a client
send before its CONNACK) and a socket dropped without DISCONNECT (the broker publishes the
will). No keepalive (0): the bench's connections live for minutes; no reconnect: a dropped
connection fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

HEAD_BYTES = 64  # how much of a payload the router sees before choosing a sink
CHUNK = 256 * 1024
CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP = 2, 3, 4, 9, 13


# What ended a reader other than its connection (a bench's route or sink raising): the
# benches' waits (check_readers) fail at once with it instead of running to their timeout.
FAILED: list[BaseException] = []


def check_readers() -> None:
    if FAILED:
        raise RuntimeError(f"a simulated spoke's reader failed: {FAILED[0]!r}") from FAILED[0]


class Sink(Protocol):
    def feed(self, chunk: bytes) -> None: ...
    def done(self) -> None: ...


Router = Callable[[str, bytes, int], Sink | None]  # (topic, head, payload size) -> sink


class Whole:
    """A sink that hands the whole payload to ``take`` once it is all here (for small
    messages only: the point of a sink is not to hold a large one)."""

    def __init__(self, take: Callable[[bytes], None]) -> None:
        self._take, self._chunks = take, list[bytes]()

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def done(self) -> None:
        self._take(b"".join(self._chunks))


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True
    qos: int = 1


class MqttRefusedError(ConnectionError):
    """The broker answered CONNECT with a non-zero return code."""


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    size, out = len(body), bytearray([first])
    while True:
        byte, size = size % 128, size // 128
        out.append(byte | (0x80 if size else 0))
        if not size:
            return bytes(out) + body


def subscribe_packet(packet_id: int, topics: Sequence[str], qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_string(t) + bytes([qos]) for t in topics)
    return _packet(0x82, body)


def publish_packet(
    topic: str, payload: bytes, *, packet_id: int = 0, qos: int = 1, retain: bool = False
) -> bytes:
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return _packet(first, body)


async def _remaining_length(reader: asyncio.StreamReader) -> int:
    value, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7


class RawClient:
    """One MQTT connection; ``route`` picks a sink for each message received (None: drop)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._next_id = 0
        self._subacks: dict[int, asyncio.Future[None]] = {}
        self._connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.route: Router = lambda _topic, _head, _size: None
        self.received_bytes = 0  # every byte read from the broker on this connection
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        client_id: str,
        *,
        will: Will | None = None,
        route: Router,
        then: bytes = b"",
    ) -> RawClient:
        """Connect and wait for the CONNACK. ``then`` (packets: :func:`subscribe_packet`,
        :func:`publish_packet`) is written with the CONNECT in one write, not waiting for
        the CONNACK: a spoke's whole opening in one go. Its packet ids are the caller's and
        nothing waits for their acknowledgements."""
        reader, writer = await asyncio.open_connection(host, port, limit=CHUNK)
        client = cls(reader, writer)
        client.route = route
        flags = 0x02  # clean session, as spokes connect
        payload = _string(client_id)
        if will is not None:
            flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
            payload += _string(will.topic) + _string(will.payload)
        header = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", 0)
        writer.write(_packet(0x10, header + payload) + then)
        client._task = asyncio.create_task(client._read(), name=f"rawmqtt.{client_id}")
        code = await client._connack
        if code:
            await client.close()
            raise MqttRefusedError(f"the broker refused {client_id}: CONNACK return code {code}")
        return client

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def subscribe(self, topics: list[str], qos: int = 1) -> None:
        pid = self._packet_id()
        done = self._subacks[pid] = asyncio.get_running_loop().create_future()
        self._writer.write(subscribe_packet(pid, topics, qos))
        await done

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Write a PUBLISH (its PUBACK is read and dropped: the bench counts arrivals)."""
        pid = self._packet_id() if qos else 0
        self._writer.write(publish_packet(topic, payload, packet_id=pid, qos=qos, retain=retain))

    async def _read(self) -> None:
        try:
            while True:
                await self._read_one()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            waiting: list[asyncio.Future[Any]] = [self._connack, *self._subacks.values()]
            for future in waiting:
                if not future.done():
                    future.set_exception(
                        ConnectionError(f"the broker closed the connection: {exc}")
                    )
        except Exception as exc:  # a route or sink of the bench failed: say so, end the run
            FAILED.append(exc)
            raise

    async def _read_one(self) -> None:
        reader = self._reader
        first = (await reader.readexactly(1))[0]
        size = await _remaining_length(reader)
        self.received_bytes += size + 2
        kind = first >> 4
        if kind != PUBLISH:
            body = await reader.readexactly(size)
            if kind == CONNACK and not self._connack.done():
                self._connack.set_result(body[1])
            elif kind == SUBACK:
                future = self._subacks.pop(struct.unpack("!H", body[:2])[0], None)
                if future is not None and not future.done():
                    future.set_result(None)
            return
        qos = (first >> 1) & 3
        topic_len = struct.unpack("!H", await reader.readexactly(2))[0]
        topic = (await reader.readexactly(topic_len)).decode()
        left = size - 2 - topic_len
        pid = b""
        if qos:
            pid = await reader.readexactly(2)
            left -= 2
        head = await reader.readexactly(min(left, HEAD_BYTES))
        left -= len(head)
        sink = self.route(topic, head, len(head) + left)
        if sink is not None:
            sink.feed(head)
        while left:
            chunk = await reader.read(min(left, CHUNK))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(chunk)
            if sink is not None:
                sink.feed(chunk)
        if sink is not None:
            sink.done()
        if qos == 1:
            self._writer.write(_packet(0x40, pid))

    async def drop(self) -> None:
        """Close the socket without DISCONNECT (the broker publishes the will); returns once
        the connection is gone."""
        self._writer.transport.abort()
        if self._task is not None:
            await self._task

    async def close(self) -> None:
        """DISCONNECT politely (no will) and close; idempotent."""
        if not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                self._writer.write(b"\xe0\x00")
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self._task
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
