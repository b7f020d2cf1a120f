"""A hub restored from a backup numbers receipts after what its spokes already hold.

A spoke keeps the highest receipt-batch number it holds on a channel and takes lower ones
for repeats. A store restored from a backup numbers again from where the backup stood, so
the hub continues after the number a spoke names in its hello, and remembers that.
"""

from __future__ import annotations

from schemas.receipts import ReceiptStatus
from tests.hub.conftest import HubSpawner, SpokeSpawner
from tests.ops.test_metrics import until

HELD = 50  # what the sender already holds from before the restore


async def test_after_a_restore_new_receipts_are_numbered_above_what_the_spoke_holds(
    spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub()
    gov, cc = spawn_spoke(hub, "jl.gov"), spawn_spoke(hub, "jl.cc")
    gov.last_seq["govnet"] = HELD  # its hello says: I hold up to 50 (the store has none)
    await gov.connect()

    async def advanced() -> list[dict[str, object]]:
        return [e for e in hub.log_events() if e.get("event") == "receipts.numbering_advanced"]

    seen = await until(advanced, bool, "the hub to continue the numbering after 50")
    assert [(e["org"], e["store_had"], e["spoke_holds"]) for e in seen] == [("jl.gov", 0, HELD)]

    # Restarted before it numbered anything, and greeted with 0 this time: the next batch
    # still comes after 50, so the floor is in the store, not only in memory.
    await gov.disconnect()
    hub.terminate()  # the embedded broker goes with it
    hub.start()
    gov.last_seq["govnet"] = 0
    await cc.connect()
    await gov.connect()
    sealed = await gov.send(["jl.cc"])
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.DELIVERED, "jl.cc"), within=30)

    numbered = [seq for (_channel, seq, _entries) in gov.receipt_batches if seq]
    assert numbered == [HELD + 1]
