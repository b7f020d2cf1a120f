"""End to end through a real hubd and a real broker: delivery and every receipt."""

from __future__ import annotations

from schemas.labels import Classification
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import SpokeFactory
from tests.hubproc import HubProcess


async def test_document_reaches_its_recipient_and_the_sender_gets_accepted_then_delivered(
    hub: HubProcess, spokes: SpokeFactory
) -> None:
    gov, cc = spokes("jl.gov"), spokes("jl.cc")
    await cc.connect()
    await gov.connect()

    sealed = await gov.send(["jl.cc"], contents=[b"notice body"])
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.DELIVERED, "jl.cc"))

    assert [s for s, _ in gov.statuses(msg_id)] == [ReceiptStatus.ACCEPTED, ReceiptStatus.DELIVERED]
    assert cc.received[msg_id].files == [b"notice body"]
    assert cc.deliveries[msg_id] == 1


async def test_secret_document_on_govnet_is_quarantined_and_refused(
    hub: HubProcess, spokes: SpokeFactory
) -> None:
    gov, cc = spokes("jl.gov"), spokes("cn.gov")
    await cc.connect()
    await gov.connect()

    sealed = await gov.send(["cn.gov"], classification=Classification.SECRET)
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.REJECTED))

    entry = gov.receipts[msg_id][0]
    assert entry.reason == "policy.arrival_channel_below_label"
    assert "govnet" in (entry.detail or "")
    assert msg_id not in cc.received
