"""Rotating an organisation's signing key with the default 7-day overlap, on a real hub whose
clock the test moves (tests/timewarp.py): during the overlap envelopes signed with either
key are accepted; a week later the old key is refused with a reason naming it and its
window, and the new one carries on. The operator's side is typed as on the server
(``spoke keygen --rotate``, ``hubctl directory build``, SIGHUP).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.files import load_signing_key, write_private
from schemas.clock import DAY_MS
from schemas.keys import dump_secret_key
from schemas.receipts import ReceiptEntry, ReceiptStatus
from schemas.seal import Sealed
from tests.hub.conftest import SpokeSpawner, wait_for_log
from tests.hubproc import HubProcess, live_directory
from tests.ops.keysite import OperatorSite
from tests.spoke.procs import spoke_command
from tests.spokesim import SimSpoke
from tests.timewarp import TestClock
from tests.world import World

WITHIN = 20.0
MINUTE_MS = 60_000


async def answer(spoke: SimSpoke, sealed: Sealed) -> ReceiptEntry:
    subject = hashlib.sha256(sealed.frame).digest()

    def found() -> ReceiptEntry | None:
        for entry in [*spoke.receipts.get(sealed.header.msg_id, []), *spoke.receipts.get(None, [])]:
            if entry.subject == subject and entry.status in {
                ReceiptStatus.ACCEPTED,
                ReceiptStatus.REJECTED,
            }:
                return entry
        return None

    await spoke.wait_for(lambda: found() is not None, within=WITHIN)
    entry = found()
    assert entry is not None
    return entry


@pytest.fixture
def clock(tmp_path: Path) -> TestClock:
    return TestClock(tmp_path / "clock.offset")


@pytest.fixture
def warped_hub(world: World, tmp_path: Path, clock: TestClock) -> Iterator[HubProcess]:
    """hubd (embedded broker) on the test's clock."""
    hub = HubProcess(
        tmp_path / "hub",
        world.hub_key,
        live_directory(world),
        launcher=("-m", "tests.timewarp", "hubd"),
    )
    hub.start(env=clock.env)
    yield hub
    hub.stop()


async def test_both_keys_verify_during_the_overlap_and_the_old_one_is_refused_after_it(
    warped_hub: HubProcess,
    world: World,
    tmp_path: Path,
    clock: TestClock,
    spawn_spoke: SpokeSpawner,
) -> None:
    hub = warped_hub
    site = OperatorSite(hub, world, tmp_path / "operator")
    # jl.cc's server: its keys, then a new pair beside them, as the organisation makes it
    server = tmp_path / "jl.cc-keys"
    write_private(server / "jl.cc.sign.key", dump_secret_key("jl.cc", world.keys["jl.cc"].signing))
    write_private(
        server / "jl.cc.enc.key", dump_secret_key("jl.cc", world.keys["jl.cc"].encryption)
    )
    made = spoke_command("keygen", "--org", "jl.cc", "--out", str(server), "--rotate")
    assert made.returncode == 0, made.stderr
    (new_pub,) = server.glob("jl.cc.*.pub.json")
    new_keys = site.hand_over(new_pub)
    _, new_key = load_signing_key(server / f"jl.cc.sign.{new_keys.sign_kid}.key")
    old_key = world.keys["jl.cc"].signing

    built = site.build()  # the default overlap: 7 days
    hub.hup()
    await wait_for_log(hub, lambda e: e["event"] == "directory.reloaded" and e["version"] == 2)
    v2 = site.directory
    old_window = next(k for k in v2.org("jl.cc").sign_keys if k.kid == old_key.kid)  # type: ignore[union-attr]
    assert old_window.not_after == v2.issued_at + 7 * DAY_MS
    assert "rotated in" in built.stdout

    spoke = spawn_spoke(hub, "jl.cc")
    spoke.directory = v2
    await spoke.connect()

    # during the overlap: either key
    for key in (old_key, new_key):
        spoke.signing = key
        sealed = await spoke.send(["jl.gov"], created_at=clock.now())
        got = await answer(spoke, sealed)
        assert (got.status, got.reason) == (ReceiptStatus.ACCEPTED, None), key.kid

    # a week and a minute later, by the hub's clock
    clock.advance(7 * DAY_MS + MINUTE_MS)
    spoke.signing = old_key
    late = await spoke.send(["jl.gov"], created_at=clock.now())
    refused = await answer(spoke, late)
    assert refused.status is ReceiptStatus.REJECTED
    assert refused.reason == "sig.key_expired"
    assert refused.detail is not None
    assert f"key {old_key.kid} of jl.cc was valid from" in refused.detail
    assert "after its window closed" in refused.detail
    logged = await wait_for_log(
        hub, lambda e: e["event"] == "message.rejected" and e.get("reason") == "sig.key_expired"
    )
    assert old_key.kid in str(logged["detail"])

    spoke.signing = new_key
    fresh = await answer(spoke, await spoke.send(["jl.gov"], created_at=clock.now()))
    assert fresh.status is ReceiptStatus.ACCEPTED


def test_the_timewarp_launcher_refuses_a_bad_command_line() -> None:
    import subprocess  # noqa: PLC0415

    result = subprocess.run(
        [sys.executable, "-m", "tests.timewarp", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "usage: python -m tests.timewarp" in result.stderr
