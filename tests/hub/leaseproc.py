"""A replica in a process of its own, for the SIGSTOP test: a LeaseKeeper on a database,
driven by lines on stdin, answering in JSON lines on stdout.

    python -m tests.hub.leaseproc URL REPLICA LEASE_MS RENEW_MS

``fence``: take a fence for an organisation in the lowest bucket it holds (answers
``fenced`` with bucket and token); ``write``: a write as owner under that fence
(``wrote``, or ``lost`` with the buckets); ``held``: what it believes it holds. EOF: it
leaves (releasing its buckets) and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys

from sqlalchemy import Connection, insert

from hubd.core.leases import LeaseSettings, bucket_of
from hubd.store import tables as t
from hubd.store.connections import engine_for
from hubd.store.leasekeeper import LeaseKeeper
from hubd.store.leases import Fence, LeaseLostError, check_fence


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def write(conn: Connection, fence: Fence, dest: str) -> None:
    check_fence(conn, fence)
    conn.execute(insert(t.receipt_numbering).values(dest=dest, channel="govnet", floor=1, set_at=0))


async def main(url: str, replica: str, lease_ms: int, renew_ms: int) -> None:
    engine = engine_for(url)
    settings = LeaseSettings(lease_ms=lease_ms, renew_ms=renew_ms)
    loop = asyncio.get_running_loop()
    fence: Fence | None = None
    try:
        async with LeaseKeeper(engine, replica=replica, settings=settings) as keeper:
            say(event="joined", replica=keeper.replica)
            while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
                if line == "fence":
                    held = keeper.held
                    org = next(
                        f"org{n}" for n in range(100_000) if bucket_of(f"org{n}") == min(held)
                    )
                    fence = keeper.fence([org])
                    bucket, token = next(iter(fence.tokens.items()))
                    say(event="fenced", bucket=bucket, token=token)
                elif line == "write" and fence is not None:
                    try:
                        async with engine.begin() as conn:
                            await conn.run_sync(write, fence, f"by.{replica}")
                    except LeaseLostError as exc:
                        say(event="lost", buckets=list(exc.buckets))
                    else:
                        say(event="wrote")
                elif line == "held":
                    say(event="held", tokens={str(b): tok for b, tok in keeper.held.items()})
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
