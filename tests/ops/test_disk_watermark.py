"""The disk watermark with a real hubd: below it, new messages are REJECTED as retriable.

The test moves the real free space of the hub's file system: the watermark is set 256 MiB
under what is free now, then a 512 MiB file is allocated next to the store (fallocate
takes real blocks at once) and removed again. Other writers on the machine would have to
move the free space by 256 MiB within seconds to disturb it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schemas.errors import Reason
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import HubSpawner, SpokeSpawner
from tests.hubproc import HubProcess
from tests.ops.test_metrics import get, scrape, until, value

MIB = 2**20
MARGIN = 256 * MIB


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def logged(hub: HubProcess, event: str) -> bool:
    return any(e.get("event") == event for e in hub.log_events())


async def test_below_the_watermark_new_messages_are_refused_as_retriable_and_taken_again_after(
    spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner, tmp_path: Path
) -> None:
    free = free_bytes(tmp_path)
    if free < 4 * MARGIN:
        pytest.skip(f"only {free // MIB} MiB free here: too little to move it safely")
    hub = spawn_hub(
        extra_toml="\n".join(
            ["[disk]", f"min_free = {free - MARGIN}", "min_free_percent = 0", "check_every = 0.2"]
        )
    )
    gov, cc = spawn_spoke(hub, "jl.gov"), spawn_spoke(hub, "jl.cc")
    await gov.connect()
    await cc.connect()

    before = await gov.send(["jl.cc"])
    await gov.wait_for(lambda: gov.has(before.header.msg_id, ReceiptStatus.DELIVERED), within=30)

    ballast = tmp_path / "ballast"
    with ballast.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, 2 * MARGIN)
    try:
        await until(lambda: _async(logged(hub, "disk.low")), bool, "the hub to see the low disk")
        refused = await gov.send(["jl.cc"])
        await gov.wait_for(lambda: gov.answer(refused.header.msg_id) is not None, within=30)
        answer = gov.answer(refused.header.msg_id)
        assert answer is not None
        assert answer.status is ReceiptStatus.REJECTED
        assert answer.reason == Reason.HUB_DISK_LOW.value
        assert answer.retriable
        assert answer.detail is not None
        assert "below its minimum" in answer.detail
        assert "Send it again later" in answer.detail
        assert refused.header.msg_id not in cc.received  # never stored, never delivered

        assert hub.metrics_port is not None
        health = await get(hub.metrics_port, "/healthz")
        assert health.status == 503
        assert "disk.low" in health.body.decode()
        assert value(await scrape(hub), "govxchg_intake_open") == 0
    finally:
        ballast.unlink()

    await until(lambda: _async(logged(hub, "disk.ok")), bool, "the hub to see the disk recover")
    again = await gov.send(["jl.cc"])  # what an integrator does: drop the document again
    await gov.wait_for(lambda: gov.has(again.header.msg_id, ReceiptStatus.DELIVERED), within=30)
    assert value(await scrape(hub), "govxchg_intake_open") == 1


async def _async(value: bool) -> bool:
    return value
