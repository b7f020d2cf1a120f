"""A 1 GiB document through hubd, against the same bytes through the raw broker.

    python bench/large.py [--mib 1024] [--write]

- **hub**: a sender seals a 1 GiB (sparse, zero) file to disk, streams the ciphertext in
  256 KiB chunks to hubd over Mosquitto; hubd spools it, checks its SHA-256, stores and
  ACCEPTs it, and streams it on to the recipient, which stages it to disk, opens it
  streaming (every chunk authenticated, every file hashed) and answers DELIVERED. Timed
  from the first chunk to DELIVERED at the sender; hubd's peak RSS (VmHWM) is reported.
- **raw**: the same number of bytes in 256 KiB QoS 1 messages from a publisher through
  Mosquitto and a minimal aiomqtt relay to a subscriber that writes them to disk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiomqtt

from bench.e2e import replace_block
from bench.runfolder import kept_on_failure
from schemas.receipts import ReceiptStatus
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.spokesim import SimSpoke
from tests.world import make_world

CHUNK = 256 * 1024


async def hub_run(mib: int, tmp: Path) -> tuple[float, float]:
    world = make_world()
    directory = live_directory(world)
    broker = Mosquitto(tmp / "mosquitto-hub").start()
    hub = HubProcess(tmp / "hub", world.hub_key, directory, broker_port=broker.port)
    hub.start()
    try:
        sender = SimSpoke("jl.gov", world.keys["jl.gov"].signing, world.keys["jl.gov"].encryption,
                          directory, "127.0.0.1", broker.port)  # fmt: skip
        keys = world.keys["jl.cc"]
        recipient = SimSpoke("jl.cc", keys.signing, keys.encryption, directory, "127.0.0.1",
                             broker.port, stream_dir=tmp / "inbox")  # fmt: skip
        source = tmp / "source.bin"
        with source.open("wb") as handle:
            handle.truncate(mib * 1024 * 1024)
        ciphertext = tmp / "sealed.bin"
        sealed = await asyncio.to_thread(sender.seal_file, ["jl.cc"], source, ciphertext)
        msg_id = sealed.header.msg_id
        await recipient.connect()
        await sender.connect()
        start = time.perf_counter()
        await sender.send_file(sealed, ciphertext)
        await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.DELIVERED), 1800)
        elapsed = time.perf_counter() - start
        rss = hub.peak_rss_kib() / 1024
        await sender.disconnect()
        await recipient.disconnect()
    finally:
        hub.terminate()
        broker.stop()
    return sealed.body.size / 1e6 / elapsed, rss


async def raw_run(mib: int, tmp: Path) -> float:
    broker = Mosquitto(tmp / "mosquitto-raw").start()
    total = mib * 1024 * 1024
    chunk = os.urandom(CHUNK)
    done = asyncio.Event()
    try:
        async with (
            aiomqtt.Client("127.0.0.1", broker.port, identifier="raw-pub") as pub,
            aiomqtt.Client("127.0.0.1", broker.port, identifier="raw-relay") as relay,
            aiomqtt.Client("127.0.0.1", broker.port, identifier="raw-sub") as sub,
        ):
            await relay.subscribe("raw/up", qos=1)
            await sub.subscribe("raw/down", qos=1)
            out = (tmp / "raw.bin").open("wb")

            async def forward() -> None:
                async for message in relay.messages:
                    await relay.publish("raw/down", message.payload, qos=1)

            async def receive() -> None:
                got = 0
                async for message in sub.messages:
                    out.write(message.payload)  # type: ignore[arg-type]
                    got += len(message.payload)  # type: ignore[arg-type]
                    if got >= total:
                        done.set()
                        return

            tasks = [asyncio.create_task(forward()), asyncio.create_task(receive())]
            start = time.perf_counter()
            for _ in range(total // CHUNK):
                await pub.publish("raw/up", chunk, qos=1)
            async with asyncio.timeout(1800):
                await done.wait()
            elapsed = time.perf_counter() - start
            for task in tasks:
                task.cancel()
            out.close()
    finally:
        broker.stop()
    return total / 1e6 / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder in /tmp")
    args = parser.parse_args()
    with kept_on_failure(Path(tempfile.mkdtemp(prefix="govx-large-")), keep=args.keep) as tmp:
        raw = asyncio.run(raw_run(args.mib, tmp))
        hub, rss = asyncio.run(hub_run(args.mib, tmp))
    table = "\n".join(
        [
            "| path | MB/s | hub peak RSS |",
            "| --- | ---: | ---: |",
            f"| raw broker + relay, {args.mib} MiB in 256 KiB messages | {raw:.0f} | |",
            (
                f"| hubd (spool, hash, store, deliver, open, DELIVERED), {args.mib} MiB "
                f"document | {hub:.0f} | {rss:.0f} MB |"
            ),
            "",
            f"Ratio hub / raw: **{hub / raw:.2f}**",
        ]
    )
    print(table)
    if args.write:
        replace_block("large", f"python bench/large.py --mib {args.mib}", table)


if __name__ == "__main__":
    main()
