"""Where a document's time goes at low load: one sender, one recipient, each leg timed.

    python bench/legs.py [--docs 100] [--rate 20]

Starts Mosquitto and hubd, sends ``--docs`` 1 KiB documents from jl.gov to jl.cc at
``--rate`` per second through the spokes' own MQTT link, and prints p50/p90/max of: send ->
ACCEPTED back, send -> the recipient has it, the recipient's verify + open + sign, its
DELIVERED -> back at the sender, and send -> DELIVERED. All times on one clock (one
process), so the legs add up.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.e2e import loop_run, spoke_link
from runtime import startup
from runtime.mqtt import BrokerLink
from schemas import topics, transport
from schemas.directory import Directory
from schemas.envelope import verify_envelope
from schemas.labels import Classification, DocType, Precedence
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts, verify_receipts
from schemas.seal import Draft, file_entry, open_bytes, seal_bytes
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.world import World, make_world

CHANNEL, SENDER, RECIPIENT = "govnet", "jl.gov", "jl.cc"


async def measure(
    world: World, directory: Directory, port: int, docs: int, rate: float
) -> dict[bytes, dict[str, float]]:
    marks: dict[bytes, dict[str, float]] = {}

    def on_sender(_topic: str, payload: bytes) -> None:
        at = time.perf_counter()
        message = transport.decode(payload)
        if isinstance(message, transport.ReceiptsMsg):
            for entry in verify_receipts(message.frame, directory).batch.entries:
                if entry.msg_id is not None:
                    marks.setdefault(entry.msg_id, {})[entry.status.value] = at

    recipient: BrokerLink | None = None

    def on_recipient(_topic: str, payload: bytes) -> None:
        at = time.perf_counter()
        message = transport.decode(payload)
        if not isinstance(message, transport.EnvelopeMsg) or message.body is None:
            return
        envelope = verify_envelope(message.frame, directory)
        open_bytes(envelope, RECIPIENT, world.keys[RECIPIENT].encryption, message.body)
        now = time.time_ns() // 1_000_000
        entry = ReceiptEntry(
            msg_id=envelope.header.msg_id,
            recipient=RECIPIENT,
            status=ReceiptStatus.DELIVERED,
            at=now,
            subject=envelope.digest,
            classification=envelope.header.classification,
            reason=None,
            detail=None,
            retriable=False,
        )
        frame = sign_receipts(RECIPIENT, world.keys[RECIPIENT].signing, [entry], at=now)
        mark = marks.setdefault(envelope.header.msg_id, {})
        mark["in"], mark["out"] = at, time.perf_counter()
        assert recipient is not None
        up = topics.up(CHANNEL, RECIPIENT)
        recipient.enqueue(up, transport.encode(transport.ReceiptsMsg(frame, 0)))

    def hello(org: str) -> list[tuple[str, bytes]]:
        online = (topics.presence(CHANNEL, org), topics.ONLINE)
        return [online, (topics.up(CHANNEL, org), transport.encode(transport.HelloMsg(0)))]

    downs = {org: [topics.down(CHANNEL, org)] for org in (SENDER, RECIPIENT)}
    sender, stop_sender, sending = await spoke_link(
        port, "legs-sender", downs[SENDER], on_sender, hello(SENDER)
    )
    recipient, stop_recipient, receiving = await spoke_link(
        port, "legs-recipient", downs[RECIPIENT], on_recipient, hello(RECIPIENT)
    )
    await asyncio.sleep(0.5)
    content = b"x" * 1024
    for _ in range(docs):
        draft = Draft(
            sender=SENDER,
            to=(RECIPIENT,),
            classification=Classification.INTERNAL,
            precedence=Precedence.ROUTINE,
            doc_type=DocType.NOTICE,  # a 函 from jl.gov down to jl.cc is refused
            title="legs",
            created_at=time.time_ns() // 1_000_000,
            files=[file_entry("doc.bin", "application/octet-stream", content)],
        )
        sealed, body = seal_bytes(draft, world.keys[SENDER].signing, directory, [content])
        marks.setdefault(sealed.header.msg_id, {})["sent"] = time.perf_counter()
        payload = transport.encode(transport.EnvelopeMsg(sealed.frame, body))
        sender.enqueue(topics.up(CHANNEL, SENDER), payload)
        await asyncio.sleep(1 / rate)
    await asyncio.sleep(2)
    stop_sender.set()
    stop_recipient.set()
    await asyncio.gather(sending, receiving)
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    startup.configure("json", "warning")
    world = make_world()
    directory = live_directory(world)
    tmp = Path(tempfile.mkdtemp(prefix="govx-legs-"))
    broker = Mosquitto(tmp / "mosquitto").start()
    hub = HubProcess(tmp / "hub", world.hub_key, directory, broker_port=broker.port)
    hub.start()
    try:
        marks = loop_run(measure(world, directory, broker.port, args.docs, args.rate))
    finally:
        hub.terminate()
        broker.stop()
    legs = [
        ("send -> ACCEPTED back", "sent", "ACCEPTED"),
        ("send -> recipient has it", "sent", "in"),
        ("recipient verify+open+sign", "in", "out"),
        ("its DELIVERED -> sender", "out", "DELIVERED"),
        ("send -> DELIVERED", "sent", "DELIVERED"),
    ]
    for name, start, end in legs:
        spans = sorted(
            (m[end] - m[start]) * 1000 for m in marks.values() if start in m and end in m
        )
        if spans:
            print(
                f"{name:28s} n={len(spans):4d}  p50 {statistics.median(spans):6.1f} ms  "
                f"p90 {spans[int(len(spans) * 0.9)]:6.1f} ms  max {spans[-1]:6.1f} ms"
            )


if __name__ == "__main__":
    main()
