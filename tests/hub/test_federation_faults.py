"""Three real hubds under faults (issue 17): the national hub with Jilin's and Liaoning's
hubs as members, each on a Mosquitto of its own that outlives it. Letters go county to
prefecture across the provinces both ways, and the State Council writes to both general
offices, while each hubd in turn is killed -9 and started again. At the end the checker
holds every document in its recipient's inbox once, nothing there that was not sent, and
every sender holding each recipient's DELIVERED."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.directory import Directory
from schemas.keys import SigningKey
from schemas.labels import DocType
from schemas.receipts import ReceiptStatus
from tests.federation import (
    LIAONING_KEY,
    LIAONING_KEYS,
    liaoning_view,
    national_view,
    provincial_view,
)
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.spokesim import SimSpoke
from tests.world import OrgKeys, World

NATIONAL_KEY = SigningKey.generate()
FAST = "[delivery]\nretry_initial = 1.0\nretry_max = 4.0\n"


@dataclass
class Three:
    hubs: dict[str, HubProcess]
    directories: dict[str, Directory]


def uplink(national: HubProcess, channels: tuple[str, ...]) -> str:
    return "[upstream]\nhello_every = 2.0\n" + "".join(
        f'[upstream.channels.{ch}]\nurl = "mqtt://127.0.0.1:{national.port}"\n' for ch in channels
    )


@pytest.fixture
def three(world: World, tmp_path: Path) -> Iterator[Three]:
    base = live_directory(world)
    directories = {
        "cn.hub": national_view(world, base, NATIONAL_KEY),
        "jl.hub": provincial_view(base, NATIONAL_KEY),
        "ln.hub": liaoning_view(world, base, NATIONAL_KEY),
    }
    brokers = {name: Mosquitto(tmp_path / f"m-{name}").start() for name in directories}
    national = HubProcess(
        tmp_path / "cn.hub", NATIONAL_KEY, directories["cn.hub"],
        broker_port=brokers["cn.hub"].port, extra_toml=FAST,
    )  # fmt: skip
    keys = {"jl.hub": world.hub_key, "ln.hub": LIAONING_KEY}
    links = {"jl.hub": ("govnet", "classified"), "ln.hub": ("govnet",)}
    hubs = {"cn.hub": national}
    for name in ("jl.hub", "ln.hub"):
        hubs[name] = HubProcess(
            tmp_path / name, keys[name], directories[name], broker_port=brokers[name].port,
            extra_toml=FAST + uplink(national, links[name]),
        )  # fmt: skip
    try:
        for hub in hubs.values():
            hub.start()
        yield Three(hubs, directories)
    finally:
        for hub in hubs.values():
            hub.stop()
        for broker in brokers.values():
            broker.stop()


def keys_of(world: World, org: str) -> OrgKeys:
    return LIAONING_KEYS[org] if org.startswith("ln.") else world.keys[org]


async def test_letters_across_provinces_survive_kill9_of_each_of_three_hubs_in_turn(
    world: World, three: Three
) -> None:
    homes = {"cn.gov": "cn.hub", "jl.gov": "jl.hub", "jl.cc.nongan": "jl.hub"}
    homes |= {"ln.gov": "ln.hub", "ln.sy": "ln.hub"}
    spokes: dict[str, SimSpoke] = {}
    for org, hub in homes.items():
        keys = keys_of(world, org)
        spoke = SimSpoke(
            org, keys.signing, keys.encryption, three.directories[hub], "127.0.0.1",
            three.hubs[hub].port,
        )  # fmt: skip
        spoke.start_reliable(resend_every=1.0)
        await spoke.connect()
        spokes[org] = spoke
    sent: dict[bytes, tuple[str, str]] = {}  # msg_id -> (sender, recipient)

    async def send(sender: str, recipient: str, **kw: object) -> None:
        sealed = await spokes[sender].send_reliably((recipient,), **kw)
        sent[sealed.header.msg_id] = (sender, recipient)

    async def load(rounds: int) -> None:
        for _ in range(rounds):
            await send("jl.cc.nongan", "ln.sy", doc_type=DocType.LETTER)
            await send("ln.sy", "jl.cc.nongan", doc_type=DocType.LETTER)
            await send("cn.gov", "ln.gov")
            await send("cn.gov", "jl.gov")
            await asyncio.sleep(0.05)

    try:
        await load(3)
        for name in ("jl.hub", "cn.hub", "ln.hub"):  # each in turn, with traffic on its way
            three.hubs[name].kill9()
            await load(3)
            three.hubs[name].start()
            await load(2)

        for msg_id, (sender, recipient) in sent.items():
            await spokes[sender].wait_for(
                lambda m=msg_id, s=sender, r=recipient: spokes[s].has(
                    m, ReceiptStatus.DELIVERED, r
                ),
                90,
            )
        for org, spoke in spokes.items():
            expected = {m for m, (_, r) in sent.items() if r == org}
            assert set(spoke.received) == expected, org  # nothing lost, nothing foreign
            assert not spoke.outstanding(), org  # every send answered by its own hub
        refused = [
            (m, e.reason)
            for m, (s, _) in sent.items()
            for e in spokes[s].receipts[m]
            if e.status is ReceiptStatus.REJECTED
        ]
        assert not refused
    finally:
        for spoke in spokes.values():
            await spoke.disconnect()
