"""Failover under a steady load (issue 15, part 3): nothing lost, doubled or misrouted.

The lean form of bench/soak_replicas.py, on one Mosquitto (the NATS node kill has its own
test in tests/spoke/test_nats_e2e.py): two hubd replicas on a fresh PostgreSQL database,
six govnet-only spokes, and documents dropped at 5 a second in total, each with a unique
title and one addressee, for the whole schedule: a kill -9 of replica a while documents
are in flight (started again after 3 s), then a SIGSTOP of replica b for its lease + 2 s
(SIGCONT). Once the load stops and the backlog drains, the checker of tests/soak.py reads
every sender's sent/ and every inbox: each document accepted, in its addressee's inbox
exactly once and in no other. The takeover times are printed (figures for
docs/benchmarks.md come from the script), not asserted.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.soak import Load, Soak, exact
from tests.world import World

pytestmark = pytest.mark.slow

RATE = 5.0  # documents a second, in total
STEADY = 5.0  # seconds of load before, between and after the faults
DRAIN = 120.0  # a bound on the backlog's draining, not a measured figure


async def test_no_document_is_lost_doubled_or_misrouted_when_a_replica_is_killed_or_paused(
    world: World, tmp_path: Path, pg_url: str
) -> None:
    soak = Soak(tmp_path, world, pg_url, broker="mosquitto", lease=3.0, renew=1.0)
    try:
        checker = await soak.start()
        load = Load(checker, soak.spokes, RATE, seed=15)
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(stop))
        try:
            await asyncio.sleep(STEADY)
            killed = await soak.kill_replica("a", checker)
            await asyncio.sleep(STEADY)
            paused = await soak.pause_replica("b", checker)
            await asyncio.sleep(STEADY)
        finally:
            stop.set()
            await running
        drained = await checker.drain(DRAIN)
        await asyncio.sleep(2.0)  # a late duplicate would land now
        counts = checker.tally()
        print(json.dumps({"counts": counts, "faults": soak.faults}, ensure_ascii=False))
        assert drained, f"not delivered within {DRAIN:.0f} s: {checker.missing()[:10]}"
        assert counts == exact(counts)
        assert counts["sent"] >= RATE * STEADY  # the load ran through the faults
        assert killed["in_flight"] > 0, "nothing was in flight at the kill"
        # a replica killed under load starts again at once (its peer goes on appending to
        # the ledger meanwhile)
        assert killed["refused"] == []
        assert killed["restarted"]
        assert killed["takeover_s"] is not None
        assert paused["takeover_s"] is not None
        assert soak.hub_errors() == {"a": [], "b": []}
    finally:
        await soak.aclose()
