"""Whether a replica can serve what it would own (hubd.engine.replicas.Reach): it holds
leases only while it reaches a broker, so a replica cut off from the brokers hands its
organisations to one that is not, and a starting one takes nothing before it can read."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hubd.engine.replicas import Reach


@dataclass
class Conn:
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    channels: list[str] = field(default_factory=lambda: ["govnet"])


async def test_a_replica_reaches_nothing_before_its_first_connection() -> None:
    links = [Conn(), Conn()]
    reach = Reach(lambda: links, grace_s=3.0, clock=lambda: 0.0)
    assert not reach()
    links[1].connected.set()
    assert reach()


async def test_a_short_outage_moves_nothing_a_long_one_hands_everything_over() -> None:
    now = [0.0]
    link = Conn()
    reach = Reach(lambda: [link], grace_s=3.0, clock=lambda: now[0])
    link.connected.set()
    assert reach()
    link.connected.clear()  # failing over to another node of the cluster
    now[0] = 1.0
    assert reach()
    now[0] = 3.9
    assert reach()  # down since 1.0: within the grace
    now[0] = 4.1
    assert not reach()
    link.connected.set()
    assert reach()
    link.connected.clear()  # a new outage counts from now
    now[0] = 5.0
    assert reach()


async def test_the_channels_reached_are_those_of_links_up_or_down_within_the_grace() -> None:
    now = [0.0]
    govnet, secure = Conn(channels=["govnet", "jinji"]), Conn(channels=["secure"])
    reach = Reach(lambda: [govnet, secure], grace_s=3.0, clock=lambda: now[0])
    assert reach.channels() == frozenset()  # nothing connected yet: nothing reached
    govnet.connected.set()
    assert reach.channels() == {"govnet", "jinji"}  # secure never connected: not reached
    secure.connected.set()
    assert reach.channels() == {"govnet", "jinji", "secure"}
    secure.connected.clear()  # the secure channel's broker goes away
    now[0] = 1.0
    assert reach.channels() == {"govnet", "jinji", "secure"}  # within the grace
    now[0] = 4.1
    assert reach.channels() == {"govnet", "jinji"}  # down since 1.0: past the grace
    assert reach()  # the replica still reaches a broker: it is ready, with less reach
    secure.connected.set()
    assert reach.channels() == {"govnet", "jinji", "secure"}
    secure.connected.clear()  # a new outage counts from now
    now[0] = 5.0
    assert reach.channels() == {"govnet", "jinji", "secure"}
    now[0] = 8.1
    said = reach.channel_reach()  # what its heartbeat says: configured, and reached
    assert said.configured == {"govnet", "jinji", "secure"}
    assert said.reached == {"govnet", "jinji"}
    assert said.missing == {"secure"}
