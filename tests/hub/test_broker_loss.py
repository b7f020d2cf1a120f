"""hubd on a real Mosquitto that is stopped and started again, with a rogue publisher.

The process-level half of tests/hub/test_presence_known.py (which holds the table of the
presence model and the in-process checks): what /metrics says while the broker is gone and
after it is back, and the retained directory the hub puts back when someone replaced it.
"""

from __future__ import annotations

from pathlib import Path

import aiomqtt

from schemas import topics
from schemas.directory import Directory
from tests.hub.conftest import Observer, wait_for_log
from tests.hubproc import HubProcess, Mosquitto
from tests.ops.test_metrics import Samples, scrape, series, until, value
from tests.spokesim import SimSpoke
from tests.world import World

CHANNEL = "govnet"
ORG = "jl.cc"


def govnet_up(samples: Samples) -> dict[str, float]:
    """govxchg_spoke_up on govnet, per organisation (absent: presence unknown)."""
    return {
        dict(labels)["org"]: v
        for labels, v in series(samples, "govxchg_spoke_up").items()
        if dict(labels)["channel"] == CHANNEL
    }


async def test_a_stopped_broker_leaves_presence_unknown_and_a_replaced_directory_is_put_back(
    world: World, live_dir: Directory, tmp_path: Path
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    hub = HubProcess(tmp_path / "hub", world.hub_key, live_dir, broker_port=broker.port)
    keys = world.keys[ORG]
    spoke = SimSpoke(ORG, keys.signing, keys.encryption, live_dir, "127.0.0.1", broker.port)
    try:
        hub.start()
        spoke.start_reliable()  # reconnects by itself when the broker comes back
        await spoke.connect()
        await until(lambda: scrape(hub), lambda s: govnet_up(s).get(ORG) == 1, "jl.cc up")

        # Someone replaces the retained directory: the hub notices and puts its own back.
        served = (hub.folder / "keys" / "directory.bin").read_bytes()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="rogue") as rogue:
            await rogue.publish(topics.directory(CHANNEL), b"not a directory", qos=1, retain=True)
        replaced = await wait_for_log(hub, lambda e: e.get("event") == "directory.replaced")
        assert replaced["channel"] == CHANNEL
        assert replaced["level"] == "error"
        async with Observer(broker.port, topics.directory(CHANNEL)) as newcomer:
            await newcomer.wait_for(lambda: bool(newcomer.messages))
            assert newcomer.messages[0][1:] == (served, True), "the retained one is the hub's"

        # The broker goes away: every spoke on it is unknown, none is "down".
        broker.stop()
        lost = await until(
            lambda: scrape(hub),
            lambda s: value(s, "govxchg_broker_up", channel=CHANNEL) == 0,
            "the hub to notice the broker gone",
        )
        assert govnet_up(lost) == {}, "no govxchg_spoke_up series while presence is unknown"
        assert value(lost, "govxchg_spoke_presence_known", org=ORG, channel=CHANNEL) == 0
        assert value(lost, "govxchg_spokes_online", channel=CHANNEL) == 0

        # Back (without its retained messages): presence is learned again.
        broker = Mosquitto(tmp_path / "mosquitto", port=broker.port).start()
        back = await until(lambda: scrape(hub), lambda s: govnet_up(s).get(ORG) == 1, "jl.cc up")
        assert value(back, "govxchg_broker_up", channel=CHANNEL) == 1
        assert value(back, "govxchg_spoke_presence_known", org=ORG, channel=CHANNEL) == 1
    finally:
        try:
            await spoke.disconnect()
        finally:  # no process outlives the test, whatever the spoke did
            hub.stop()
            broker.stop()
