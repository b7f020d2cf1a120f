"""Fail closed on an expired directory, with real processes on a clock the test moves
(tests/timewarp.py): a running spoke whose directory reaches its ``expires_at`` without a
fresher one stops sending, says why once, shows it in ``spoke status``, keeps the drop
waiting in the outbox, and sends it by itself once the hub publishes a fresh directory.

The hub and both spokes share one clock; moving it a day ahead makes the directory the
hub published (valid for a day) expire for everyone at once.
"""

from __future__ import annotations

from pathlib import Path

from schemas.clock import DAY_MS, ms_to_text
from tests.ops.keysite import OperatorSite
from tests.spoke.conftest import ExchangeFactory
from tests.spoke.procs import eventually
from tests.timewarp import TestClock
from tests.world import World

LAUNCH_SPOKE = ("-m", "tests.timewarp", "spoke")
LAUNCH_HUB = ("-m", "tests.timewarp", "hubd")


def notice(title: str, to: str) -> dict[str, object]:
    return {"主送": to, "密级": "内部", "文种": "通知", "标题": title}


def index_of(events: list[dict[str, object]], event: str, **fields: object) -> int:
    for i, e in enumerate(events):
        if e["event"] == event and all(e.get(k) == v for k, v in fields.items()):
            return i
    raise AssertionError(f"no {event} {fields} in the log")


async def test_a_spoke_stops_sending_at_directory_expiry_and_resumes_on_a_fresh_one(
    exchanges: ExchangeFactory, world: World, tmp_path: Path
) -> None:
    clock = TestClock(tmp_path / "clock.offset")
    exchange = exchanges(start_hub=False)
    hub = exchange.hub
    assert hub is not None
    hub.launcher = LAUNCH_HUB
    hub.start(env=clock.env)
    site = OperatorSite(hub, world, tmp_path / "operator")
    for org in ("jl.gov", "jl.cc"):
        spoke = exchange.spoke(org)
        spoke.launcher, spoke.env = LAUNCH_SPOKE, clock.env
    gov, cc = await exchange.running("jl.gov", "jl.cc")
    gov.drop("first.txt", b"while the directory is valid\n", notice("有效期内", "jl.cc"))
    await gov.wait_status("first.txt", "jl.cc")
    expires = hub.directory.expires_at

    clock.advance(DAY_MS + 60_000)  # a minute past the directory's expiry, for everyone

    expired = await gov.wait_logged("spoke.directory_expired", this_run=True)
    assert expired["expires_at"] == ms_to_text(expires)
    assert expired["directory_version"] == 1
    assert "nothing is sent until the hub publishes one" in str(expired["detail"])
    gov.drop("waiting.txt", b"dropped after the expiry\n", notice("过期后", "jl.cc"))

    def held() -> str | None:
        shown = gov.cli("status").stdout
        return shown if "sending: HELD" in shown and "1 drop waiting" in shown else None

    shown = await eventually(held, "spoke status to say HELD with one drop waiting")
    assert "(spoke.directory_expired)" in shown
    assert f"directory v1 expired at {ms_to_text(expires)}" in shown
    assert (gov.outbox / "waiting.txt").exists()
    assert gov.state_rows("SELECT name FROM outbound WHERE name = 'waiting.txt'") == []

    site.build()  # a fresh directory (v2, 30 days), published with SIGHUP
    hub.hup()

    await gov.wait_logged("directory.updated", this_run=True, version=2)
    # (a spoke that scanned before its first directory arrived logged one for that too)
    resumed = await gov.wait_logged(
        "spoke.sending_resumed", this_run=True, held_for="spoke.directory_expired"
    )
    assert resumed["directory_version"] == 2
    status = await gov.wait_status("waiting.txt", "jl.cc")
    assert cc.received_titled("过期后")[0]["msg_id"] == status["msg_id"]
    assert "sending: yes" in gov.cli("status").stdout
    events = gov.events(this_run=True)
    assert len([e for e in events if e["event"] == "spoke.directory_expired"]) == 1  # said once
    # it waited: the drop was taken only after sending resumed, and the hub accepted it
    # only after it had reloaded
    assert index_of(events, "spoke.sending_resumed", held_for="spoke.directory_expired") < index_of(
        events, "drop.claimed", name="waiting.txt"
    )
    hub_events = hub.log_events()
    assert index_of(hub_events, "directory.reloaded", version=2) < index_of(
        hub_events, "message.accepted", msg_id=status["msg_id"]
    )
