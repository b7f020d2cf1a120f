"""A receipt that waits in the hub's numbered outbox reaches its sender even when the
sender's hello was lost: a spoke that connected while the hub was away from the broker
(a broker restart the spoke rejoined first, a hub restart) is seen online by its retained
presence, and the hub asks it to say hello again (issue: "A DELIVERED receipt can stay
missing at the sender for ever"). Real hubd, real spoke processes, Mosquitto.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubproc import MOSQUITTO
from tests.spoke.procs import Exchange, eventually, make_exchange
from tests.world import World

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed")


@pytest.fixture
def exchange(tmp_path: Path, world: World) -> Iterator[Exchange]:
    made = make_exchange(tmp_path / "x", world, "mosquitto")
    try:
        yield made
    finally:
        made.close()


async def test_a_sender_whose_hello_the_hub_never_read_still_gets_its_delivered(
    exchange: Exchange,
) -> None:
    hub = exchange.hub
    assert hub is not None
    (gov,) = await exchange.running("jl.gov")
    cc = exchange.spoke("jl.cc")
    meta = {"主送": "jl.cc", "密级": "内部", "文种": "通知", "标题": "关于报送材料的通知"}
    gov.drop("材料.txt", b"please send the figures\n", meta)
    status = await gov.wait_status("材料.txt", "jl.cc", "PENDING")
    assert status["hub"] == "ACCEPTED"

    # The sender goes away; the recipient comes, takes it and answers DELIVERED, which the
    # hub numbers for the sender and publishes into the void (no session is kept).
    assert gov.terminate() == 0
    await cc.started()
    await cc.wait_logged("inbox.received")
    await eventually(
        lambda: numbered_for(hub.folder, "jl.gov"), "the DELIVERED numbered for jl.gov"
    )

    # The hub goes away; the sender comes back and says hello to nobody ...
    assert hub.terminate() == 0
    await gov.started()
    # ... and the hub, back, sees it online and asks: the DELIVERED is replayed.
    hub.start()
    await gov.wait_logged("spoke.hello_asked", this_run=True, channel=status["channel"])
    await gov.wait_status("材料.txt", "jl.cc", "DELIVERED")


def numbered_for(folder: Path, dest: str) -> int:
    """Receipt batches the hub's store holds numbered for ``dest``."""
    with sqlite3.connect(folder / "state" / "hub.db") as db:
        (count,) = db.execute(
            "SELECT count(*) FROM receipt_outbox WHERE dest = ?", (dest,)
        ).fetchone()
    return int(count)
