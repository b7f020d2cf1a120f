"""Precedence orders the hub's real queues (ARCHITECTURE section 2, "Precedence").

"A FLASH emergency notice must not wait behind a 500 MB routine upload": with thousands
of ROUTINE documents waiting for an offline recipient, a FLASH accepted after all of them
is the first document the recipient opens when it comes back. The hub never resends
within the test, so what arrives is what the dispatcher chose to publish, in its order.
"""

from __future__ import annotations

import asyncio

import pytest

from schemas.labels import Precedence
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import NO_RETRIES, HubFactory, RecordingSpoke, SpokeMaker
from tests.hubproc import HubProcess

BACKLOG = 3000
PIPELINE = 200  # publishes in flight at once from the test's sender


@pytest.fixture
def hub(hub_factory: HubFactory) -> HubProcess:
    return hub_factory(extra_toml=NO_RETRIES)


async def queue_routine(sender: RecordingSpoke, to: str, count: int) -> list[bytes]:
    sealed = [sender.seal([to], contents=[f"routine {n}".encode()]) for n in range(count)]
    for start in range(0, count, PIPELINE):
        await asyncio.gather(
            *(sender.publish_envelope(s, body) for s, body in sealed[start : start + PIPELINE])
        )
    ids = [s.header.msg_id for s, _ in sealed]
    await sender.wait_for(lambda: all(sender.has(m, ReceiptStatus.ACCEPTED) for m in ids), 120)
    return ids


async def test_flash_queued_after_thousands_of_routine_documents_is_delivered_first(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc = spokes_at(hub, "jl.gov"), spokes_at(hub, "jl.cc")
    await gov.connect()
    routine = await queue_routine(gov, "jl.cc", BACKLOG)
    flash = await gov.send(["jl.cc"], precedence=Precedence.FLASH, contents=[b"emergency"])
    await gov.wait_for(lambda: gov.has(flash.header.msg_id, ReceiptStatus.ACCEPTED))
    assert not cc.order  # jl.cc has never connected: everything waits at the hub

    await cc.connect()
    await cc.wait_for(lambda: flash.header.msg_id in cc.received, within=60)

    assert cc.order[0] == flash.header.msg_id, (
        f"the FLASH notice came {cc.order.index(flash.header.msg_id) + 1}th, after "
        f"{cc.order.index(flash.header.msg_id)} routine documents"
    )
    # The backlog follows, each once: precedence reordered the queue, it did not drop it.
    await cc.wait_for(lambda: len(cc.received) == BACKLOG + 1, within=120)
    assert sorted(cc.order[1:]) == sorted(routine)
