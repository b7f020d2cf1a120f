"""A numbered receipt batch that never came is asked for again, without a reconnect.

Found by test_crash under load: the hub numbered a DELIVERED batch for the sender, was
killed before publishing it, and came back on the same Mosquitto; the sender never
reconnected, so no hello asked for the missing number, and its document stayed PENDING
although the recipient had it. A spoke that holds later numbers but not one before them now
says hello again (with the highest contiguous number), and the hub replays what follows.
"""

from __future__ import annotations

import aiomqtt

from runtime.clock import now_ms
from schemas import topics, transport
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts
from tests.spoke.conftest import ExchangeFactory
from tests.spoke.procs import eventually
from tests.world import World


def delivered_by_jl_cc(world: World) -> bytes:
    """A receipt batch jl.cc signed: DELIVERED, about a message nobody sent."""
    entry = ReceiptEntry(
        msg_id=bytes(16),
        recipient="jl.cc",
        status=ReceiptStatus.DELIVERED,
        at=now_ms(),
        subject=bytes(32),
        classification=Classification.INTERNAL,
        reason=None,
        detail=None,
        retriable=False,
    )
    return sign_receipts("jl.cc", world.keys["jl.cc"].signing, [entry], at=now_ms())


async def test_a_spoke_holding_a_later_receipt_batch_asks_the_hub_for_the_missing_one(
    exchanges: ExchangeFactory, world: World
) -> None:
    exchange = exchanges("mosquitto")
    gov, _ = await exchange.running("jl.gov", "jl.cc")
    assert exchange.hub is not None
    hub_log = exchange.hub.folder / "hubd.log"
    hellos_before = hub_log.read_text(encoding="utf-8").count('"spoke.hello"')

    # batch 2 for jl.gov arrives, batch 1 never will: as if the hub died between the two
    frame = delivered_by_jl_cc(world)
    message = transport.encode(transport.ReceiptsMsg(frame, 2))
    async with aiomqtt.Client("127.0.0.1", exchange.port, identifier="test-hub-double") as client:
        await client.publish(topics.down("govnet", "jl.gov"), message, qos=1)

    gap = await gov.wait_logged("receipts.gap", channel="govnet", within=20)
    assert (gap["last_seq"], gap["next_held"]) == (0, 2)
    await eventually(  # the hub heard it, and replays what follows 0
        lambda: hub_log.read_text(encoding="utf-8").count('"spoke.hello"') > hellos_before,
        "the hub to log the spoke's hello",
    )
