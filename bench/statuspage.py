"""What the status page and /metrics cost the hub with a national directory.

    python bench/statuspage.py [--orgs 10000] [--rounds 20]

In-process: a directory of ``--orgs`` organisations (tests/national.py), every spoke
online but twenty offline with deliveries waiting for them, and the hub's real
:class:`~hubd.web.statuspage.StatusPage`, :class:`~hubd.web.metrics.HubMetrics` and the
h11 server's ``reply`` (no socket: the request bytes are handed to it). Each round moves
the hub's clock on by the page's 2 s. The hub builds the page's data at most once a
second however many pages ask: the first page to ask pays for the build ("built anew"),
every other page gets that build ("another page"). Prints the bytes per refresh (the
whole HTTP answer) and the hub's CPU per request, as a share of one core at one request
every 2 s; a refresh that sends the previous answer's ETag back is counted apart (304 once
the hub supports it). The tree's pages (once the hub has them) and /metrics likewise.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hubd.core.states import DeliveryState
from hubd.engine.presencebook import PresenceBook
from hubd.web.metrics import HubMetrics, Readiness, readiness
from hubd.web.server import MetricsServer
from hubd.web.statuspage import StatusPage
from schemas.labels import Precedence
from tests.national import Clock, PageDispatcher, PageHub, Waiting, national_directory
from tests.world import NOW, make_world

POLL_S = 2.0  # the page's refresh
OFFLINE = 20  # spokes offline with deliveries waiting


def national_hub(orgs: int, clock: Clock) -> PageHub:
    directory = national_directory(make_world().directory, orgs)
    book = PresenceBook(clock)
    jobs = []
    for i, org in enumerate(directory.orgs):
        for channel in org.channels:
            book.set(channel, org.id, online=i % (len(directory.orgs) // OFFLINE) != 1)
            if i % (len(directory.orgs) // OFFLINE) == 1:
                jobs += [
                    Waiting(
                        bytes([n, i % 256, i // 256]) * 5 + b"\0",
                        org.id,
                        channel,
                        Precedence.ROUTINE,
                        DeliveryState.PENDING,
                        NOW - 60_000,
                    )
                    for n in range(3)
                ]
    hub = PageHub(directory, PageDispatcher(book, jobs))
    hub.metrics = HubMetrics(hub)  # type: ignore[arg-type]
    return hub


def ask(path: str, etag: str | None = None) -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:9464\r\n"
    if etag is not None:
        head += f"If-None-Match: {etag}\r\n"
    return (head + "\r\n").encode()


async def answer(server: MetricsServer, raw: bytes) -> bytes:
    sent = [raw]

    async def receive(_n: int) -> bytes:
        return sent.pop() if sent else b""

    reply = await server.reply(receive)
    assert reply is not None
    return reply


def etag_of(reply: bytes) -> str | None:
    for line in reply.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.decode().partition(":")
        if name.lower() == "etag":
            return value.strip()
    return None


async def measure(
    server: MetricsServer, clock: Clock, path: str, rounds: int, *, conditional: bool, fresh: bool
) -> tuple[int, float, str]:
    """(bytes of the answer, median CPU seconds per request, status line). ``fresh``: the
    clock moves on by a refresh first, so the hub builds anew (the first page to ask in a
    second); otherwise the answer comes from that build (every other page)."""
    sizes, cpu, status = [], [], ""
    etag = etag_of(await answer(server, ask(path))) if conditional else None
    for _ in range(rounds):
        if fresh:
            clock.now += int(POLL_S * 1000)
        else:
            clock.now += int(POLL_S * 1000)
            await answer(server, ask(path))  # the build of this second, by another page
        c = time.process_time()
        reply = await answer(server, ask(path, etag))
        cpu.append(time.process_time() - c)
        sizes.append(len(reply))
        status = reply.partition(b"\r\n")[0].decode().removeprefix("HTTP/1.1 ")
    return int(statistics.median(sizes)), statistics.median(cpu), status


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orgs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    clock = Clock()
    hub = national_hub(args.orgs, clock)
    page = StatusPage(hub, clock=clock)  # type: ignore[arg-type]

    def health() -> Readiness:
        return readiness(hub)  # type: ignore[arg-type]

    server = MetricsServer(
        "127.0.0.1", 0, metrics=hub.metrics.exposition, health=health, pages=page
    )
    print(f"{len(hub.current_directory.orgs)} organisations, {OFFLINE} offline with deliveries")
    paths = [
        ("/status.json", False, True, "refresh, built anew"),
        ("/status.json", True, True, "refresh with ETag, built anew"),
        ("/status.json", False, False, "refresh, another page"),
        ("/status.json", True, False, "refresh with ETag, another page"),
    ]
    if "/status/orgs.json" in page.paths:
        paths += [
            ("/status/orgs.json", False, False, "tree opened: top level"),
            ("/status/orgs.json?under=jl.cc", False, False, "tree: below jl.cc (100)"),
            ("/status/orgs.json?under=jl.cc", True, False, "tree page again, with ETag"),
        ]
    paths.append(("/metrics", False, True, "a scrape"))
    for path, conditional, fresh, what in paths:
        size, cpu, status = await measure(
            server, clock, path, args.rounds, conditional=conditional, fresh=fresh
        )
        share = 100 * cpu / POLL_S
        print(
            f"{what:32} {path:30} {status:16} {size:>10,} B {cpu * 1000:7.1f} ms CPU"
            f" = {share:5.2f}% of a core every {POLL_S:g} s"
        )


if __name__ == "__main__":
    asyncio.run(main())
