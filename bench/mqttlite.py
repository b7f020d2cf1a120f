"""A minimal MQTT 3.1.1 client for load generators: thousands of connections in one process.

Not product code. It does what a spoke's connection does at connect (will, subscription,
retained presence, hello) with every packet built once and written in one go without
waiting for CONNACK (MQTT allows a client to send after CONNECT), acknowledges what it
receives at QoS 1, and can drop its socket so the broker publishes the will. paho or
aiomqtt spend a thread or several tasks and callbacks per client; this spends one
``asyncio.Protocol``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

CONNACK, PUBLISH, PUBACK, SUBACK = 0x20, 0x30, 0x40, 0x90


def _string(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    length, size = b"", len(body)
    while True:
        digit, size = size % 128, size // 128
        length += bytes([digit | (0x80 if size else 0)])
        if not size:
            return bytes([first]) + length + body


def connect(client_id: str, *, will_topic: str, will: bytes, keepalive: int = 600) -> bytes:
    """CONNECT, clean session, with a retained QoS 1 will."""
    flags = 0x02 | 0x04 | 0x08 | 0x20  # clean session, will, will QoS 1, will retain
    head = _string(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    payload = _string(client_id.encode()) + _string(will_topic.encode()) + _string(will)
    return _packet(0x10, head + payload)


def subscribe(packet_id: int, topic: str) -> bytes:
    return _packet(0x82, struct.pack("!H", packet_id) + _string(topic.encode()) + b"\x01")


def publish(packet_id: int, topic: str, payload: bytes, *, retain: bool = False) -> bytes:
    """PUBLISH at QoS 1."""
    first = 0x32 | (0x01 if retain else 0)
    return _packet(first, _string(topic.encode()) + struct.pack("!H", packet_id) + payload)


Sink = Callable[[str, bytes], None]  # (topic, payload) of each message received


class Client(asyncio.Protocol):
    """One connection: writes ``opening`` when connected, hands each PUBLISH to ``sink``."""

    def __init__(self, opening: bytes, sink: Sink) -> None:
        self._opening, self._sink = opening, sink
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] - a stream transport (uvloop's too)
        transport.write(self._opening)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def drop(self) -> None:
        """Close the socket without DISCONNECT: the broker publishes the will."""
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        del exc
        if not self.connack.done():
            self.connack.set_result(-1)
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            size, multiplier, at = 0, 1, 1
            while True:
                if at >= len(buffer):
                    return  # the length is not all here yet
                byte = buffer[at]
                size += (byte & 0x7F) * multiplier
                multiplier *= 128
                at += 1
                if not byte & 0x80:
                    break
            if len(buffer) < at + size:
                return
            first, body = buffer[0], bytes(buffer[at : at + size])
            del buffer[: at + size]
            self._packet(first, body)

    def _packet(self, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind == CONNACK and not self.connack.done():
            self.connack.set_result(body[1])
        elif kind == PUBLISH:
            (length,) = struct.unpack_from("!H", body)
            topic = body[2 : 2 + length].decode()
            at = 2 + length
            if first & 0x06:  # QoS 1 (a spoke subscribes at 1): acknowledge it
                assert self.transport is not None
                self.transport.write(b"\x40\x02" + body[at : at + 2])
                at += 2
            self._sink(topic, body[at:])
