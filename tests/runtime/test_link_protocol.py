"""BrokerLink and FakeLink both keep the Link protocol, and behave alike where it matters.

mypy checks the protocol statically (``_links_of_both_kinds`` below, and every user typed
with ``Link``); these tests check the signatures at run time as well, so that a fake that
drifts from the real link fails here and not in a neighbour's test, and run one exchange
against Mosquitto and against the fake to see both tell the same story.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.fakelink import FakeBroker, FakeLink
from runtime.link import Link, LinkMaker, OnConnected
from runtime.mqtt import BrokerLink
from tests.hubproc import Mosquitto

# Every public member of the protocol: properties and methods.
MEMBERS = sorted(name for name in vars(Link) if not name.startswith("_"))
PROPERTIES: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "channels": list,
    "connected": asyncio.Event,
    "node": (str, type(None)),
}


def _links_of_both_kinds(real: BrokerLink, fake: FakeLink) -> list[Link]:
    """Never called: mypy fails here if either class stops being a Link."""
    return [real, fake]


def _makers_of_both_kinds(broker: FakeBroker) -> list[LinkMaker]:
    """Never called: mypy fails here if either stops being made with the same arguments."""
    return [BrokerLink, broker.link]


def test_the_protocol_has_the_members_its_users_rely_on() -> None:
    assert (
        sorted(
            ["channels", "connected", "enqueue", "name", "node", "publish", "run", "set_reading"]
        )
        == MEMBERS
    )


def _parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any, Any]]:
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in inspect.signature(function).parameters.values()
    ]


@pytest.mark.parametrize("implementation", [BrokerLink, FakeLink], ids=lambda c: c.__name__)
@pytest.mark.parametrize("member", sorted(set(MEMBERS) - set(PROPERTIES)))
def test_each_link_method_has_the_protocols_signature(implementation: type, member: str) -> None:
    wanted = getattr(Link, member)
    method = getattr(implementation, member, None)
    assert method is not None, f"{implementation.__name__} has no {member}()"
    assert _parameters(method) == _parameters(wanted)
    assert inspect.signature(method).return_annotation == (
        inspect.signature(wanted).return_annotation
    )
    assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(wanted)


async def _nothing(_link: Link) -> None:
    return None


def _arguments(on_connected: OnConnected) -> dict[str, Any]:
    return {
        "name": "govnet",
        "host": "127.0.0.1",
        "port": 1883,
        "channels": ["govnet"],
        "subscriptions": ["xchg/v1/govnet/down/jl.cc"],
        "client_id": "spoke-jl.cc-govnet",
        "sink": lambda _topic, _payload: None,
        "on_connected": on_connected,
    }


@pytest.mark.parametrize("kind", ["real", "fake"])
def test_each_link_has_the_protocols_properties(kind: str) -> None:
    maker: LinkMaker = BrokerLink if kind == "real" else FakeBroker().link
    link = maker(**_arguments(_nothing))
    for name, kind_of_value in PROPERTIES.items():
        assert isinstance(getattr(link, name), kind_of_value), name
    assert link.name == "govnet"
    assert link.channels == ["govnet"]
    assert not link.connected.is_set()
    assert link.node is None  # not connected to any node yet


def test_a_fake_link_is_made_with_the_real_links_arguments() -> None:
    real = _parameters(BrokerLink)
    assert _parameters(FakeBroker().link) == real
    assert _parameters(LinkMaker.__call__)[1:] == real  # without self


# ---------------------------------------------------------------- the same story on both


@pytest.fixture(params=["mosquitto", "fake"])
async def maker(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[LinkMaker, int]]:
    """How to make a link, and the broker's port."""
    if request.param == "fake":
        yield FakeBroker().link, 1883
        return
    broker = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield BrokerLink, broker.port
    finally:
        broker.stop()


async def test_retained_then_live_messages_reach_a_wildcard_subscriber_in_order(
    maker: tuple[LinkMaker, int],
) -> None:
    make_link, port = maker
    received: list[tuple[str, bytes]] = []
    published: list[bool] = []

    async def greet(link: Link) -> None:  # as the hub publishes its directory
        published.append(await link.publish("xchg/v1/govnet/directory", b"v7", retain=True))

    def make(client_id: str, subscriptions: list[str], on_connected: OnConnected) -> Link:
        return make_link(
            client_id,
            "127.0.0.1",
            port,
            ["govnet"],
            subscriptions=subscriptions,
            client_id=client_id,
            sink=lambda topic, payload: received.append((topic, payload)),
            on_connected=on_connected,
        )

    hub = make("hub", [], greet)
    spoke = make("spoke", ["xchg/v1/+/directory", "xchg/v1/govnet/down/#"], _nothing)
    assert await hub.publish("xchg/v1/govnet/down/jl.cc", b"early") is False  # not connected
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(hub.run(stop))
        async with asyncio.timeout(20):
            while True:  # the greeting's publish was acknowledged
                if published:
                    break
                await asyncio.sleep(0.01)
            tasks.create_task(spoke.run(stop))
            await spoke.connected.wait()
            assert spoke.node is not None
            assert spoke.node.endswith(f"://127.0.0.1:{port}")  # the node it is on
            acks = [hub.enqueue("xchg/v1/govnet/down/jl.cc", bytes([n])) for n in range(5)]
            assert await asyncio.gather(*acks) == [True] * 5
            while True:  # the broker passes them on
                if len(received) >= 6:
                    break
                await asyncio.sleep(0.01)
        stop.set()
    assert published == [True]
    assert received == [
        ("xchg/v1/govnet/directory", b"v7"),  # retained, on connection
        *[("xchg/v1/govnet/down/jl.cc", bytes([n])) for n in range(5)],
    ]
