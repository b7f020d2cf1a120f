"""The hub puts its directory back when a broker's retained one was replaced, without
feeding itself: its own frame coming back is left alone, an older frame of its own is no
security event, a newer frame of its own is left in place, a publisher that keeps replacing
it is answered at most once per REPUBLISH_EVERY seconds and alarmed about once per
ALARM_EVERY, and two hubs answering each other stop (the process-level check:
tests/hub/test_broker_loss.py)."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from hubd.engine import brokerwatch
from hubd.engine.brokerwatch import BrokerWatch
from hubd.engine.presencebook import PresenceBook
from runtime.fakelink import FakeBroker, FakeLink
from schemas import topics
from schemas.directory import VerifiedDirectory, sign_directory, verify_directory
from tests.spoke.procs import eventually
from tests.world import World, make_world

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


@pytest.mark.parametrize("payload", [b"rogue", b"", "another hub"])
async def test_a_foreign_frame_is_a_security_event_and_the_served_one_goes_back(
    world: World, payload: bytes | str
) -> None:
    served = served_by(world, 3)
    if payload == "another hub":
        payload = make_world().signed_directory()
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


async def test_a_newer_directory_of_the_hubs_own_is_left_in_place_with_a_warning_once(
    world: World,
) -> None:
    served = served_by(world, 5)
    newer = served_by(world, 6).frame  # another replica's, or an operator's newer build
    watch, sent = guard(world, served)
    with capture_logs() as logs:
        for _ in range(3):
            watch.on_directory(CHANNEL, newer)
    assert sent == [], "the newer directory is not overwritten"
    [event] = logs
    assert event["event"] == "directory.newer_retained"
    assert event["log_level"] == "warning"
    assert (event["version"], event["serving"]) == (6, 5)
    assert "hubctl reload" in event["hint"]
    assert "v5" in event["hint"]
    assert "v6" in event["hint"]
    assert watch.holds_newer(CHANNEL), "a reconnection does not publish v5 over it either"


async def test_the_hubs_own_frame_back_on_the_broker_ends_the_newer_one_held(
    world: World,
) -> None:
    served = served_by(world, 5)
    watch, _sent = guard(world, served)
    watch.on_directory(CHANNEL, served_by(world, 6).frame)
    watch.on_directory(CHANNEL, served.frame)
    assert not watch.holds_newer(CHANNEL)


async def test_fifty_foreign_frames_are_one_security_event_and_one_count_of_the_rest(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(brokerwatch, "ALARM_EVERY", 1.0)  # the 50 calls take far less
    served = served_by(world, 3)
    watch, _sent = guard(world, served)
    with capture_logs() as logs:
        for n in range(50):
            watch.on_directory(CHANNEL, b"rogue %d" % n)
        replaced = [e for e in logs if e["event"] == "directory.replaced"]
        assert len(replaced) == 1
        await eventually(
            lambda: any(e["event"] == "directory.replaced_again" for e in logs),
            "the count of the suppressed events at the end of the window",
        )
        [again] = [e for e in logs if e["event"] == "directory.replaced_again"]
        assert again["times"] == 49
        assert again["log_level"] == "error"
        watch.on_directory(CHANNEL, b"rogue after the window")
    assert [e["event"] for e in logs].count("directory.replaced") == 2, "a new window alarms"


async def test_the_same_rogue_frame_again_is_not_verified_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real = verify_directory

    def counting(frame: bytes, *args: object, **kw: object) -> VerifiedDirectory:
        calls.append(frame)
        return real(frame, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(brokerwatch, "verify_directory", counting)
    served = served_by(world, 3)
    watch, _sent = guard(world, served)
    rogue = make_world().signed_directory()  # a real frame: verifying it costs a signature check
    for _ in range(50):
        watch.on_directory(CHANNEL, rogue)
    assert calls == [rogue]


def contender(world: World, broker: FakeBroker, sent: list[bytes]) -> tuple[BrokerWatch, FakeLink]:
    """A hub's watch on ``broker``'s govnet directory topic, answering through the broker."""
    served = served_by(world, 1)

    def republish(channel: str, frame: bytes) -> None:
        sent.append(frame)
        broker.publish(topics.directory(channel), frame, retain=True)

    watch = BrokerWatch(
        PresenceBook(lambda: 0),
        [CHANNEL],
        served=lambda: served,
        hub_public=lambda: world.hub_key.public,
        republish=republish,
    )

    async def greet(_link: object) -> None:
        await asyncio.Event().wait()

    link = broker.link(
        "fake",
        "fake",
        0,
        [CHANNEL],
        subscriptions=[topics.directory(CHANNEL)],
        client_id=f"hubd-{world.hub_key.kid}",
        sink=watch.sink(lambda *_: None),
        on_connected=greet,
    )
    return watch, link


async def test_two_hubs_with_different_keys_on_one_channel_stop_answering_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(brokerwatch, "REPUBLISH_EVERY", 0.01)
    monkeypatch.setattr(brokerwatch, "CONTEST_LIMIT", 3)
    broker = FakeBroker()
    sent_a: list[bytes] = []
    sent_b: list[bytes] = []
    _, link_a = contender(make_world(), broker, sent_a)
    _, link_b = contender(make_world(), broker, sent_b)
    stop = asyncio.Event()
    with capture_logs() as logs:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(link_a.run(stop))
            tasks.create_task(link_b.run(stop))
            await link_a.connected.wait()
            await link_b.connected.wait()
            broker.publish(topics.directory(CHANNEL), b"the first hub's", retain=True)
            contested = await eventually(
                lambda: [e for e in logs if e["event"] == "directory.contested"],
                "a hub to give up answering",
            )
            stop.set()
    assert len(contested) <= 2, "one error from each hub at most"
    for event in contested:
        assert event["log_level"] == "error"
        assert "ACL" in event["error"]
        assert event["channel"] == CHANNEL
    assert len(sent_a) <= 3
    assert len(sent_b) <= 3


async def test_a_hub_that_gave_up_on_a_contested_channel_answers_again_once_reloaded(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(brokerwatch, "REPUBLISH_EVERY", 0.0)
    monkeypatch.setattr(brokerwatch, "CONTEST_LIMIT", 2)
    serving = [served_by(world, 3)]
    sent: list[bytes] = []
    watch = BrokerWatch(
        PresenceBook(lambda: 0),
        [CHANNEL],
        served=lambda: serving[-1],
        hub_public=lambda: world.hub_key.public,
        republish=lambda _channel, frame: sent.append(frame),
    )
    with capture_logs() as logs:
        for n in range(6):
            watch.on_directory(CHANNEL, b"rogue %d" % n)
    assert len(sent) == 2
    assert [e["event"] for e in logs].count("directory.contested") == 1

    serving.append(served_by(world, 4))  # hubctl reload: a new directory
    watch.on_directory(CHANNEL, b"rogue again")
    assert sent[-1] == serving[-1].frame


async def test_a_hub_that_gave_up_answers_again_once_its_own_directory_is_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(brokerwatch, "REPUBLISH_EVERY", 0.0)
    monkeypatch.setattr(brokerwatch, "CONTEST_LIMIT", 2)
    served = served_by(world, 3)
    watch, sent = guard(world, served)
    for n in range(4):
        watch.on_directory(CHANNEL, b"rogue %d" % n)
    assert len(sent) == 2, "gave up"

    watch.on_directory(CHANNEL, served.frame)  # hubctl reload published it again (the ACL fixed)
    watch.on_directory(CHANNEL, b"rogue later")
    assert len(sent) == 3


async def test_a_newer_frame_replaced_by_another_is_no_longer_held(world: World) -> None:
    served = served_by(world, 5)
    watch, _sent = guard(world, served)
    watch.on_directory(CHANNEL, served_by(world, 6).frame)
    watch.on_directory(CHANNEL, b"rogue")
    assert not watch.holds_newer(CHANNEL), "a reconnection publishes the served one again"
