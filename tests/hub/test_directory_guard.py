"""The hub puts its directory back when a broker's retained one was replaced, without
feeding itself: its own frame coming back is left alone, an older frame of its own is no
security event, and a publisher that keeps replacing it is answered at most once per
REPUBLISH_EVERY seconds (the process-level check: tests/hub/test_broker_loss.py)."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from hubd.engine import brokerwatch
from hubd.engine.brokerwatch import BrokerWatch
from hubd.engine.presencebook import PresenceBook
from schemas.directory import VerifiedDirectory, sign_directory, verify_directory
from tests.spoke.procs import eventually
from tests.world import World

CHANNEL = "govnet"


def served_by(world: World, version: int) -> VerifiedDirectory:
    frame = sign_directory(world.rebuild(version=version), world.hub_key)
    return verify_directory(frame, world.hub_key.public, now=None)


def guard(world: World, served: VerifiedDirectory) -> tuple[BrokerWatch, list[bytes]]:
    sent: list[bytes] = []
    watch = BrokerWatch(
        PresenceBook(lambda: 0),
        [CHANNEL],
        served=lambda: served,
        hub_public=lambda: world.hub_key.public,
        republish=lambda _channel, frame: sent.append(frame),
    )
    return watch, sent


async def test_the_hubs_own_directory_coming_back_is_left_alone(world: World) -> None:
    served = served_by(world, 3)
    watch, sent = guard(world, served)
    with capture_logs() as logs:
        watch.on_directory(CHANNEL, served.frame)
    assert sent == []
    assert logs == []


@pytest.mark.parametrize("payload", [b"rogue", b"", "another hub", "its own newer"])
async def test_a_foreign_frame_is_a_security_event_and_the_served_one_goes_back(
    world: World, payload: bytes | str
) -> None:
    served = served_by(world, 3)
    if payload == "another hub":
        from tests.world import make_world  # noqa: PLC0415 - a second, unrelated exchange

        payload = make_world().signed_directory()
    elif payload == "its own newer":  # signed with the hub's key, but not what it serves
        payload = served_by(world, 4).frame
    assert isinstance(payload, bytes)
    watch, sent = guard(world, served)
    with capture_logs() as logs:
        watch.on_directory(CHANNEL, payload)
    assert [e["event"] for e in logs] == ["directory.replaced", "directory.republished"]
    assert logs[0]["log_level"] == "error"
    assert sent == [served.frame]


async def test_an_older_directory_of_the_hubs_own_is_put_back_without_alarm(world: World) -> None:
    served = served_by(world, 3)
    watch, sent = guard(world, served)
    with capture_logs() as logs:
        watch.on_directory(CHANNEL, served_by(world, 2).frame)
    assert [e["event"] for e in logs] == ["directory.stale_retained", "directory.republished"]
    assert sent == [served.frame]


async def test_a_publisher_that_keeps_replacing_it_is_answered_once_per_window(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(brokerwatch, "REPUBLISH_EVERY", 0.2)
    served = served_by(world, 3)
    watch, sent = guard(world, served)
    for n in range(50):
        watch.on_directory(CHANNEL, b"rogue %d" % n)
    assert sent == [served.frame], "one answer now"
    await eventually(lambda: len(sent) == 2, "the answer at the end of the window")
    await asyncio.sleep(0)
    assert sent == [served.frame, served.frame], "and one more, not fifty"
