"""What the hub says of spokes when it loses a broker: unknown, never offline.

The presence model (:class:`PresenceBook`) as a table of events; then the real hub and
spoke agents in this process on an in-memory broker that is stopped and started again
(tests/runtime/test_fakelink_world.py), read through what operators read: the status
snapshot's words, ``hubctl status``'s admin answer, and /metrics with the alert rule that
docs/operations.md recommends, evaluated on the scraped text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hubd.admin.ops import HubAdmin
from hubd.daemon import Hub
from hubd.engine.presencebook import PresenceBook
from tests.runtime.test_fakelink_world import RECIPIENT, SENDER, WITHIN, exchange
from tests.spoke.procs import eventually
from tests.world import REPO, World

CHANNEL = "govnet"


# ---------------------------------------------------------------------- the model


@pytest.mark.parametrize(
    ("events", "state", "routes_online"),
    [
        ([], "unseen", False),
        (["online"], "online", True),
        (["online", "offline"], "offline", False),
        (["online", "lost"], "unknown", True),  # the last word still routes
        (["offline", "lost"], "unknown", False),
        (["lost"], "unknown", False),
        (["online", "lost", "back"], "unknown", True),  # stale until heard again
        (["online", "lost", "back", "online"], "online", True),
        (["online", "lost", "back", "offline"], "offline", False),
        (["online", "lost", "online", "back"], "online", True),  # retained, read while subscribing
        (["online", "lost", "back", "settled"], "unseen", False),  # the broker held nothing
        (["online", "lost", "settled"], "unknown", True),  # settling a lost link changes nothing
        (["online", "lost", "back", "online", "settled"], "online", True),
    ],
)
def test_presence_is_unknown_from_a_lost_link_until_the_broker_says_it_again(
    events: list[str], state: str, routes_online: bool
) -> None:
    book = PresenceBook(lambda: 1)
    for event in events:
        match event:
            case "online" | "offline":
                book.set(CHANNEL, "jl.cc", online=event == "online")
            case "lost":
                book.lost([CHANNEL])
            case "back":
                book.back([CHANNEL])
            case "settled":
                book.settled([CHANNEL])
    assert book.state(CHANNEL, "jl.cc")[0] == state
    assert book.is_online(CHANNEL, "jl.cc") is routes_online
    assert book.state("internet", "jl.cc")[0] == "unseen", "another channel is untouched"


# ---------------------------------------------------------------------- the alert rule

Scrape = dict[str, dict[frozenset[tuple[str, str]], float]]


def parse(text: str) -> Scrape:
    found: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


SPOKE_DOWN = "govxchg_spoke_up == 0 and on(org, channel) (max_over_time(govxchg_spoke_up[1d]) == 1)"


def spoke_down_fires(history: Sequence[Scrape]) -> set[tuple[str, str]]:
    """:data:`SPOKE_DOWN` at the last scrape, the day being ``history``: an absent series is
    no sample, so neither side of the ``and`` holds it."""
    now = history[-1].get("govxchg_spoke_up", {})
    ever_up = {
        labels
        for scrape in history
        for labels, v in scrape.get("govxchg_spoke_up", {}).items()
        if v == 1
    }
    return {
        (dict(labels)["org"], dict(labels)["channel"])
        for labels, v in now.items()
        if v == 0 and labels in ever_up
    }


def test_the_documented_spoke_alert_is_the_expression_evaluated_here() -> None:
    guide = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert re.search(r"expr: " + re.escape(SPOKE_DOWN) + "\n", guide)
    assert "expr: govxchg_broker_up == 0\n" in guide


# ---------------------------------------------------------------------- the running hub


def words(hub: Hub, org: str) -> tuple[str, object]:
    """(the state the status page and /metrics use, the admin answer's ``online``)."""
    assert hub.dispatcher is not None
    answer = HubAdmin(hub).presence()
    [spoke] = [s for s in answer["spokes"] if s["org"] == org and s["channel"] == CHANNEL]
    return hub.dispatcher.spokes.state(CHANNEL, org)[0], spoke["online"]


async def test_a_lost_broker_makes_its_spokes_unknown_and_pages_nobody_until_it_is_back(
    world: World, tmp_path: Path
) -> None:
    async with exchange(world, tmp_path) as ex:
        hub = ex.hub
        assert hub is not None
        history = [parse(hub.metrics.exposition().decode())]
        assert words(hub, SENDER) == ("online", True)
        assert words(hub, RECIPIENT) == ("online", True)

        ex.broker.stop()  # keeps its retained messages, as Mosquitto with persistence
        await eventually(lambda: words(hub, SENDER)[0] == "unknown", "presence unknown")
        assert words(hub, SENDER) == ("unknown", None)
        assert words(hub, RECIPIENT) == ("unknown", None)
        lost = parse(hub.metrics.exposition().decode())
        history.append(lost)
        assert not any(
            dict(labels)["channel"] == CHANNEL for labels in lost.get("govxchg_spoke_up", {})
        ), "no govxchg_spoke_up series while presence is unknown"
        known = lost["govxchg_spoke_presence_known"]
        assert known[frozenset({("org", SENDER), ("channel", CHANNEL)})] == 0
        assert lost["govxchg_broker_up"][frozenset({("channel", CHANNEL)})] == 0
        assert spoke_down_fires(history) == set(), "a lost broker pages no spoke"

        ex.broker.start()
        await eventually(
            lambda: words(hub, SENDER)[0] == "online" and words(hub, RECIPIENT)[0] == "online",
            "presence learned again from the broker",
            within=WITHIN,
        )
        back = parse(hub.metrics.exposition().decode())
        history.append(back)
        assert back["govxchg_broker_up"][frozenset({("channel", CHANNEL)})] == 1
        assert back["govxchg_spoke_up"][frozenset({("org", SENDER), ("channel", CHANNEL)})] == 1

        # a spoke that really goes away is offline, and its alert would fire
        ex.agents[RECIPIENT].stop()
        await eventually(lambda: words(hub, RECIPIENT)[0] == "offline", "the recipient's will")
        history.append(parse(hub.metrics.exposition().decode()))
        assert spoke_down_fires(history) == {(RECIPIENT, CHANNEL)}
