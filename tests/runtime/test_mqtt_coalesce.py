"""What a link queues in one loop iteration leaves in few sends, whole and in order.

paho writes its queue a packet at a time; runtime.mqtt.coalesce merges runs of the queued
packets first (one system call and one TCP segment, or TLS record, instead of one per
PUBLISH and PUBACK). The claims: the bytes on the wire are the same bytes in the same
order, a packet paho must see written on its own (a QoS 0 PUBLISH, a DISCONNECT) keeps
its place, a partly written packet is continued where it stopped, and against a real
Mosquitto hundreds of publishes handed over together arrive complete and in order from
a handful of sends, including when the socket fills and writes resume later.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho_client
from paho.mqtt.enums import CallbackAPIVersion

from runtime.link import Link
from runtime.mqtt import COALESCE_BYTES, BrokerLink, coalesce
from tests.hubproc import Mosquitto

TOPIC = "xchg/v1/govnet/down/jl.cc"


def queued(*packets: tuple[int, int, bytes]) -> deque[dict[str, Any]]:
    """Packets as paho queues them (Client._packet_queue): (command, qos, bytes)."""
    return deque(
        {"command": c, "mid": i, "qos": q, "pos": 0, "to_process": len(b), "packet": b}
        | {"info": None}
        for i, (c, q, b) in enumerate(packets, start=1)
    )


def wire(out: deque[dict[str, Any]]) -> bytes:
    return b"".join(bytes(p["packet"][p["pos"] :]) for p in out)


def test_paho_still_queues_packets_as_the_dicts_coalesce_merges() -> None:
    client = paho_client.Client(CallbackAPIVersion.VERSION2)
    client.on_socket_register_write = lambda *_: None  # queue only: no socket to write to
    client._packet_queue(0x32, b"\x32\x01x", 7, 1)
    (packet,) = client._out_packet
    assert set(packet) == {"command", "mid", "qos", "pos", "to_process", "packet", "info"}
    assert (packet["pos"], packet["to_process"]) == (0, 3)


def test_a_run_of_publishes_and_acks_becomes_one_packet_with_the_same_bytes() -> None:
    out = queued((0x32, 1, b"P" * 40), (0x40, 0, b"\x40\x02\x00\x01"), (0x32, 1, b"Q" * 40))
    before = wire(out)
    coalesce(out)
    assert len(out) == 1
    assert wire(out) == before
    assert out[0]["qos"] == 1  # a QoS 1 packet: paho does nothing when it is written
    assert out[0]["to_process"] == len(before)


def test_a_qos0_publish_and_a_disconnect_keep_their_own_send_and_their_place() -> None:
    out = queued(
        (0x32, 1, b"a" * 10),
        (0x32, 1, b"b" * 10),
        (0x30, 0, b"c" * 10),  # QoS 0: paho calls on_publish once it is written
        (0x32, 1, b"d" * 10),
        (0xE0, 0, b"\xe0\x00"),  # DISCONNECT: paho closes the socket after it
    )
    before = wire(out)
    coalesce(out)
    assert [p["packet"] for p in out] == [b"a" * 10 + b"b" * 10, b"c" * 10, b"d" * 10, b"\xe0\x00"]
    assert [p["command"] & 0xF0 for p in out] == [0x30, 0x30, 0x30, 0xE0]
    assert out[1]["qos"] == 0
    assert wire(out) == before


def test_a_partly_written_first_packet_is_continued_where_it_stopped() -> None:
    out = queued((0x32, 1, b"0123456789"), (0x32, 1, b"abc"))
    out[0]["pos"], out[0]["to_process"] = 4, 6  # paho wrote 4 bytes before the socket filled
    coalesce(out)
    assert out[0]["packet"] == b"456789abc"


def test_merged_packets_stay_under_the_limit_and_a_large_one_goes_alone() -> None:
    small = b"s" * 1000
    chunk = b"C" * COALESCE_BYTES  # a body chunk: sent as it is, never copied
    out = queued(*[(0x32, 1, small)] * 100, (0x32, 1, chunk), (0x32, 1, small))
    before = wire(out)
    chunk_packet = out[100]
    coalesce(out)
    assert wire(out) == before
    assert all(p["to_process"] <= COALESCE_BYTES for p in out if p is not chunk_packet)
    assert any(p is chunk_packet for p in out)
    assert len(out) == 4  # 65 + 35 small ones, the chunk, the last small one


class QueuedMeanwhile(deque[dict[str, Any]]):
    """paho's queue, with another thread appending a packet while the merged packets
    replace the ones they were made of."""

    def __init__(self, packets: deque[dict[str, Any]], late: dict[str, Any]) -> None:
        super().__init__(packets)
        self.late: dict[str, Any] | None = late

    def popleft(self) -> dict[str, Any]:
        packet = super().popleft()
        if self.late is not None:
            self.append(self.late)  # as paho's _packet_queue does, from the other thread
            self.late = None
        return packet


def test_a_packet_queued_meanwhile_from_another_thread_stays_after_the_merged_ones() -> None:
    late = queued((0x10, 0, b"CONNECT"))[0]
    out = QueuedMeanwhile(queued((0x32, 1, b"a" * 10), (0x32, 1, b"b" * 10)), late)
    coalesce(out)
    assert [p["packet"] for p in out] == [b"a" * 10 + b"b" * 10, b"CONNECT"]


def test_a_queue_of_one_is_left_alone() -> None:
    out = queued((0x32, 1, b"x"))
    first = out[0]
    coalesce(out)
    assert list(out) == [first]


async def _published_through_a_link(
    tmp_path: Path, payloads: list[bytes], *, small_buffer: bool = False
) -> tuple[list[bytes], list[bool], int, int]:
    """Every payload handed to a BrokerLink in one loop iteration; what a subscriber got,
    the acks, how many sends the link's paho client made for them, and how many of those
    found the socket full."""
    broker = Mosquitto(tmp_path / "mosquitto").start()

    async def nothing(_link: Link) -> None:
        return None

    link = BrokerLink(
        "mosquitto",
        "127.0.0.1",
        broker.port,
        ["govnet"],
        subscriptions=["xchg/v1/govnet/up/#"],
        client_id="coalesce-test",
        sink=lambda _topic, _payload: None,
        on_connected=nothing,
        window=len(payloads),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(link.run(stop))
    got: list[bytes] = []
    sends = 0
    short = 0  # sends that wrote less than they were given, or found the socket full
    try:
        async with (
            asyncio.timeout(60),
            aiomqtt.Client("127.0.0.1", broker.port, identifier="coalesce-reader") as reader,
        ):
            await reader.subscribe(TOPIC, qos=1)
            await link.connected.wait()
            paho = link._client._client  # type: ignore[union-attr]
            send = paho._sock_send

            def counted(buf: Any) -> int:
                nonlocal sends, short
                sends += 1
                try:
                    wrote = send(buf)
                except BlockingIOError:
                    short += 1
                    raise
                short += wrote < len(buf)
                return wrote

            paho._sock_send = counted  # type: ignore[method-assign]  # counts; still sends
            if small_buffer:  # the socket fills whatever the machine's TCP buffers are
                sock = paho._sock
                assert isinstance(sock, socket.socket)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
            acks = [link.enqueue(TOPIC, p) for p in payloads]  # one loop iteration
            acked = list(await asyncio.gather(*acks))
            async for message in reader.messages:
                got.append(bytes(message.payload))
                if len(got) == len(payloads):
                    break
        return got, acked, sends, short
    finally:
        stop.set()
        try:
            async with asyncio.timeout(10):
                await running
        finally:
            broker.stop()


async def test_hundreds_of_publishes_handed_over_together_leave_in_a_few_sends(
    tmp_path: Path,
) -> None:
    payloads = [f"document {i:04d}".encode() * 20 for i in range(400)]
    got, acked, sends, _ = await _published_through_a_link(tmp_path, payloads)
    assert got == payloads  # all of them, in the order handed over
    assert all(acked)
    assert sends <= 10  # one send per packet would be 400


async def test_publishes_that_overfill_the_socket_arrive_whole_and_in_order(
    tmp_path: Path,
) -> None:
    # 12 MB at once through a 16 KiB socket buffer, three 20 KiB publishes a merged packet:
    # the socket fills, paho keeps a merged packet partly written and the writer resumes
    # it when the socket drains.
    payloads = [bytes([i % 251]) * 20_000 + i.to_bytes(4, "big") for i in range(600)]
    got, acked, sends, short = await _published_through_a_link(
        tmp_path, payloads, small_buffer=True
    )
    assert got == payloads
    assert all(acked)
    assert short > 0  # the case this test is for: writes that stopped part way
    assert sends < len(payloads)
