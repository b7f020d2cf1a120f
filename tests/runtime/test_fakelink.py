"""The in-memory broker and link: MQTT's matching, retained messages, acks and wills.

The fake stands in for a broker in the tests of the link's users, so what it promises is
what these tests state. Its matching is checked against paho's own matcher; its link
against the Link protocol in test_link_protocol.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import aiomqtt
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from runtime.fakelink import FakeBroker, FakeLink, Published, check_filter, topic_matches
from runtime.link import Link, OnConnected

Received = list[tuple[str, bytes]]


async def nothing(_link: Link) -> None:
    return None


def make(
    broker: FakeBroker,
    client_id: str,
    subscriptions: list[str],
    *,
    will: aiomqtt.Will | None = None,
    on_connected: OnConnected | None = None,
) -> tuple[FakeLink, Received]:
    received: Received = []
    greet = nothing if on_connected is None else on_connected
    link = broker.link(
        client_id,
        "fake",
        1883,
        ["govnet"],
        subscriptions=subscriptions,
        client_id=client_id,
        sink=lambda topic, payload: received.append((topic, payload)),
        will=will,
        on_connected=greet,
    )
    return link, received


@contextlib.asynccontextmanager
async def running(*links: FakeLink) -> AsyncIterator[asyncio.Event]:
    """The links run (connected when this yields) until the block ends."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(link.run(stop)) for link in links]
    try:
        async with asyncio.timeout(5):
            for link in links:
                await link.connected.wait()
        yield stop
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await asyncio.gather(*tasks)


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (the fake does no I/O: a few turns)."""
    async with asyncio.timeout(5):
        while True:
            if condition():
                return
            await asyncio.sleep(0)


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("xchg/v1/govnet/up/jl.cc", "xchg/v1/govnet/up/jl.cc", True),
        ("xchg/v1/govnet/up/jl.cc", "xchg/v1/govnet/up/jl.cc.cs", False),
        ("xchg/v1/+/up/jl.cc", "xchg/v1/govnet/up/jl.cc", True),
        ("xchg/v1/+/up/jl.cc", "xchg/v1/govnet/x/up/jl.cc", False),  # + is one level
        ("xchg/v1/govnet/up/+", "xchg/v1/govnet/up/", True),  # ... which may be empty
        ("xchg/v1/govnet/#", "xchg/v1/govnet/up/jl.cc", True),
        ("xchg/v1/govnet/#", "xchg/v1/govnet", True),  # # covers the level above it too
        ("xchg/v1/govnet/#", "xchg/v1/internet/up/jl.cc", False),
        ("#", "xchg/v1/govnet", True),
        ("#", "$SYS/broker/uptime", False),  # no wildcard at the top reaches $ topics
        ("+/broker/uptime", "$SYS/broker/uptime", False),
        ("$SYS/#", "$SYS/broker/uptime", True),
        ("xchg/+", "xchg/v1/govnet", False),
    ],
)
def test_topic_filters_match_as_mqtt_3_1_1_says(pattern: str, topic: str, matches: bool) -> None:
    assert topic_matches(pattern, topic) is matches
    assert topic_matches_sub(pattern, topic) is matches  # paho agrees with the table


LEVELS = st.sampled_from(["a", "b", "", "$s"])


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(LEVELS, st.just("+")), min_size=0, max_size=4))
    if draw(st.booleans()) or not levels:
        levels.append("#")
    return "/".join(levels)


@given(pattern=filters(), topic=st.lists(LEVELS, min_size=1, max_size=5).map("/".join))
def test_topic_matching_agrees_with_pahos_matcher(pattern: str, topic: str) -> None:
    assert topic_matches(pattern, topic) is topic_matches_sub(pattern, topic)


@pytest.mark.parametrize("pattern", ["", "a/#/b", "a/b#", "a/+b", "a+/b"])
def test_a_filter_with_a_misplaced_wildcard_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="filter"):
        check_filter(pattern)
    with pytest.raises(ValueError, match="filter"):
        make(FakeBroker(), "spoke", [pattern])


@pytest.mark.parametrize("topic", ["", "xchg/+/up", "xchg/#"])
async def test_a_publish_to_a_topic_with_wildcards_is_refused(topic: str) -> None:
    broker = FakeBroker()
    link, _ = make(broker, "spoke", [])
    async with running(link):
        with pytest.raises(ValueError, match="cannot publish"):
            link.enqueue(topic, b"x")
    with pytest.raises(ValueError, match="cannot publish"):
        broker.publish(topic, b"x")


# ---------------------------------------------------------------- delivery and acks


async def test_a_message_reaches_each_link_whose_filter_matches_once_and_no_other() -> None:
    broker = FakeBroker()
    hub, at_hub = make(broker, "hub", ["xchg/v1/+/up/+", "xchg/v1/govnet/#"])
    other, at_other = make(broker, "other", ["xchg/v1/internet/#"])
    spoke, _ = make(broker, "spoke", [])
    async with running(hub, other, spoke):
        assert await spoke.publish("xchg/v1/govnet/up/jl.cc", b"hello") is True
        await until(lambda: bool(at_hub))
    assert at_hub == [("xchg/v1/govnet/up/jl.cc", b"hello")]  # two filters match: one copy
    assert at_other == []


async def test_a_publish_is_acknowledged_after_it_reached_the_reading_subscribers() -> None:
    broker = FakeBroker()
    hub, at_hub = make(broker, "hub", ["xchg/v1/govnet/up/+"])
    spoke, _ = make(broker, "spoke", [])
    async with running(hub, spoke):
        acked = await spoke.publish("xchg/v1/govnet/up/jl.cc", b"one")
        assert acked is True
        assert at_hub == [("xchg/v1/govnet/up/jl.cc", b"one")]  # no waiting needed
    assert broker.published == [Published("xchg/v1/govnet/up/jl.cc", b"one", False)]


async def test_a_publish_without_a_connection_is_not_acknowledged() -> None:
    broker = FakeBroker()
    spoke, _ = make(broker, "spoke", [])
    assert await spoke.publish("xchg/v1/govnet/up/jl.cc", b"lost") is False
    assert broker.published == []


async def test_enqueued_publishes_reach_a_subscriber_in_call_order() -> None:
    broker = FakeBroker()
    spoke, at_spoke = make(broker, "spoke", ["xchg/v1/govnet/down/jl.cc"])
    hub, _ = make(broker, "hub", [])
    payloads = [f"seq {n}".encode() for n in range(50)]
    async with running(hub, spoke):
        acks = [hub.enqueue("xchg/v1/govnet/down/jl.cc", p) for p in payloads]
        assert await asyncio.gather(*acks) == [True] * 50
    assert [payload for _, payload in at_spoke] == payloads


async def test_held_acknowledgements_fail_when_the_connection_drops_or_succeed_when_released() -> (
    None
):
    broker = FakeBroker()
    hub, _ = make(broker, "hub", [])
    async with running(hub):
        broker.hold_acks()
        first = hub.enqueue("xchg/v1/govnet/down/jl.cc", b"1")
        await asyncio.sleep(0)
        assert not first.done()
        broker.drop(hub)  # the connection goes: nothing sent on it will be acknowledged
        assert first.result() is False
        await until(lambda: hub.connections == 2)
        second = hub.enqueue("xchg/v1/govnet/down/jl.cc", b"2")
        third = hub.enqueue("xchg/v1/govnet/down/jl.cc", b"3")
        broker.release_acks()
        assert await second is True
        assert await third is True
        broker.hold_acks()
        fourth = hub.enqueue("xchg/v1/govnet/down/jl.cc", b"4")
        broker.release_acks(acked=False)  # as a broker that never answers: the timeout
        assert await fourth is False


# ---------------------------------------------------------------- retained, wills, reconnection


async def test_a_retained_message_reaches_later_links_and_an_empty_one_clears_it() -> None:
    broker = FakeBroker()
    broker.publish("xchg/v1/govnet/directory", b"v7", retain=True)
    broker.publish("xchg/v1/govnet/presence/jl.cc", b"online", retain=True)
    spoke, at_spoke = make(broker, "spoke", ["xchg/v1/govnet/directory"])
    async with running(spoke):
        await until(lambda: bool(at_spoke))
    assert at_spoke == [("xchg/v1/govnet/directory", b"v7")]
    broker.publish("xchg/v1/govnet/directory", b"", retain=True)
    assert broker.retained == {"xchg/v1/govnet/presence/jl.cc": b"online"}
    late, at_late = make(broker, "late", ["xchg/v1/govnet/#"])
    async with running(late):
        await until(lambda: bool(at_late))
    assert at_late == [("xchg/v1/govnet/presence/jl.cc", b"online")]


async def test_a_dropped_link_reconnects_greets_again_and_its_will_reaches_the_others() -> None:
    broker = FakeBroker()
    greetings: list[str] = []

    async def greet(link: Link) -> None:
        greetings.append(link.name)
        await link.publish("xchg/v1/govnet/presence/jl.cc", b"online", retain=True)

    will = aiomqtt.Will("xchg/v1/govnet/presence/jl.cc", b"offline", qos=1, retain=True)
    spoke, _ = make(broker, "spoke", [], will=will, on_connected=greet)
    hub, at_hub = make(broker, "hub", ["xchg/v1/govnet/presence/+"])
    async with running(hub, spoke):
        await until(lambda: at_hub == [("xchg/v1/govnet/presence/jl.cc", b"online")])
        broker.drop(spoke)
        await until(lambda: len(at_hub) == 3)
        assert spoke.connections == 2
    assert greetings == ["spoke", "spoke"]
    assert [payload for _, payload in at_hub] == [b"online", b"offline", b"online"]
    assert broker.retained["xchg/v1/govnet/presence/jl.cc"] == b"online"


async def test_a_link_that_stops_cleanly_leaves_no_will() -> None:
    broker = FakeBroker()
    will = aiomqtt.Will("xchg/v1/govnet/presence/jl.cc", b"offline", qos=1, retain=True)
    spoke, _ = make(broker, "spoke", [], will=will)
    async with running(spoke):
        assert broker.connected() == ["spoke"]
    assert broker.connected() == []
    assert broker.published == []
    assert not spoke.connected.is_set()


async def test_links_wait_for_a_stopped_broker_and_one_without_persistence_forgets_retained() -> (
    None
):
    broker = FakeBroker()
    broker.publish("xchg/v1/govnet/directory", b"v7", retain=True)
    hub, _ = make(broker, "hub", [])
    async with running(hub):
        broker.stop(keep_retained=False)
        await until(lambda: not hub.connected.is_set())
        assert await hub.publish("xchg/v1/govnet/down/jl.cc", b"x") is False
        assert broker.connected() == []
        broker.start()
        async with asyncio.timeout(5):
            await hub.connected.wait()
        assert hub.connections == 2
    assert broker.retained == {}


async def test_a_link_that_stops_reading_gets_what_waited_in_order_when_it_reads_again() -> None:
    broker = FakeBroker()
    hub, at_hub = make(broker, "hub", ["xchg/v1/govnet/up/+"])
    spoke, _ = make(broker, "spoke", [])
    async with running(hub, spoke):
        hub.set_reading(False)
        broker.drop(hub)  # the switch is kept across a reconnection
        await until(lambda: hub.connections == 2 and hub.connected.is_set())
        for n in range(3):  # taken and acknowledged: waiting at the broker
            assert await spoke.publish("xchg/v1/govnet/up/jl.cc", bytes([n])) is True
        assert at_hub == []
        hub.set_reading(True)
        await until(lambda: len(at_hub) == 3)
    assert [payload for _, payload in at_hub] == [b"\x00", b"\x01", b"\x02"]


async def test_messages_a_link_had_not_read_are_lost_with_its_connection() -> None:
    broker = FakeBroker()
    hub, at_hub = make(broker, "hub", ["xchg/v1/govnet/up/+"])
    async with running(hub):
        hub.set_reading(False)
        broker.publish("xchg/v1/govnet/up/jl.cc", b"unread")
        broker.drop(hub)  # clean_session: the broker keeps nothing for it
        await until(lambda: hub.connections == 2)
        hub.set_reading(True)
        broker.publish("xchg/v1/govnet/up/jl.cc", b"after")
        await until(lambda: bool(at_hub))
    assert at_hub == [("xchg/v1/govnet/up/jl.cc", b"after")]


async def test_a_sink_that_raises_costs_one_message_not_the_connection() -> None:
    broker = FakeBroker()
    seen: list[bytes] = []

    def sink(_topic: str, payload: bytes) -> None:
        seen.append(payload)
        if payload == b"first":
            raise ValueError("a bug in the owner")

    hub = broker.link(
        "hub",
        "fake",
        1883,
        ["govnet"],
        subscriptions=["xchg/v1/govnet/up/+"],
        client_id="hub",
        sink=sink,
        on_connected=nothing,
    )
    with structlog.testing.capture_logs() as logs:
        async with running(hub):
            broker.publish("xchg/v1/govnet/up/jl.cc", b"first")
            broker.publish("xchg/v1/govnet/up/jl.cc", b"second")
            await until(lambda: len(seen) == 2)
    assert seen == [b"first", b"second"]
    assert hub.connections == 1
    assert [entry["event"] for entry in logs] == ["broker.sink_failed"]


async def test_a_greeting_that_raises_comes_out_of_run() -> None:
    broker = FakeBroker()

    async def broken(_link: Link) -> None:
        raise RuntimeError("a bug in the greeting")

    hub, _ = make(broker, "hub", [], on_connected=broken)
    with pytest.raises(RuntimeError, match="a bug in the greeting"):
        async with asyncio.timeout(5):
            await hub.run(asyncio.Event())
    assert broker.connected() == []
