"""A claimed drop never sits in the work area; a group too large is refused before sealing.

Testers (issue 14) sent to ``@channel.govnet`` at 3,000 organisations: ``spoke send``
said "queued", ``--dry-run`` said the hub would accept it, and the agent's sealing then
failed on the envelope's recipient limit (then 1000). Now more than 16 recipients travel
as slots (schemas.slots) and one envelope carries up to 20,000; the spoke's checks
(spoke.checks.prepare, shared by ``spoke send`` and the agent) count the recipients as
sealing does (groups expanded, members awaiting keys left out, copies added) and refuse a
drop over the limit, naming the count, the limit and what to do. The refusals are shown
with the limit lowered to 600 (``small_limit``): a directory of 20,000 organisations is
the benchmark's (bench/groupnotice.py), not the suite's.

And whatever goes wrong once a drop is claimed ends with the drop in failed/ with its
reason, never left in ``.spoke/work/`` for a restart to trip on again; only what is not
the document's fault (a full disk) keeps it waiting, said once in the log, tried again
at every scan.

A directory of a thousand-odd organisations is the world's with counties added
(World.crowded); one sender spoke, offline (no broker: whatever is sealed stays QUEUED).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

import schemas.slots
import spoke.checks
import spoke.failed
import spoke.files
import spoke.sealing
from runtime.clock import now_ms
from schemas.directory import VerifiedDirectory, sign_directory, verify_directory
from schemas.slots import MAX_SLOTS
from spoke.cli import app
from spoke.dirbook import DirectoryUnavailableError
from spoke.failed import FailedFolder
from spoke.sender import Sender
from spoke.state import SpokeState
from spoke.whereis import whereabouts
from tests.hubproc import live_directory
from tests.spoke.conftest import OfflineSpoke, OfflineSpokeFactory, snapshot
from tests.spoke.procs import SpokeProcess, toml_meta
from tests.spoke.test_send_refusals import unused_port
from tests.world import REPO, World, seed_held

EVERYONE = "@channel.govnet"
NOTICE = {"密级": "内部", "文种": "通知", "标题": "关于做好冬季供暖工作的通知", "签发人": "王某"}
BODY = "关于做好冬季供暖工作的通知。\n".encode()
EXTRA = 1000  # counties added: @channel.govnet then reaches more than 1000 (the old limit)
LIMIT = 600  # the limit the refusals are shown with (small_limit)


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """The spoke's recipient limit, lowered so that the crowded world is over it."""
    monkeypatch.setattr(spoke.checks, "MAX_SLOTS", LIMIT)
    return LIMIT


@pytest.fixture(scope="module")
def crowded(world: World) -> World:
    """The world with enough counties that everyone on govnet is more than one envelope."""
    return world.crowded(EXTRA)


def verified(world: World, *, awaiting: tuple[str, ...] = ()) -> VerifiedDirectory:
    """``world``'s directory around the real clock, ``awaiting`` listed without keys."""
    held = {o: k for o, k in world.keys.items() if o not in awaiting}
    directory = live_directory(dataclasses.replace(world, keys=held))
    frame = sign_directory(directory, world.hub_key)
    return verify_directory(frame, world.hub_key.public, now=now_ms())


def on_govnet(world: World) -> int:
    """How many @channel.govnet reaches from jl.gov (itself left out)."""
    group = world.directory.group("channel.govnet")
    assert group is not None
    return len([m for m in group.members if m != "jl.gov"])


def province(offline_spoke: OfflineSpokeFactory, directory: VerifiedDirectory) -> OfflineSpoke:
    gov = offline_spoke("jl.gov")
    gov.ctx.verified = directory
    return gov


def error_of(spoke: OfflineSpoke, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((spoke.failed / f"{name}.error.json").read_text("utf-8"))
    return data


def restart(spoke: OfflineSpoke) -> None:
    """A new Sender on the same folders and state, as the agent makes at start."""
    spoke.sender = Sender(spoke.ctx)
    spoke.sender.recover()


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


# ------------------------------------------------------------------ a group too large


async def test_a_group_of_more_than_a_thousand_is_sealed_as_one_envelope_with_slots(
    offline_spoke: OfflineSpokeFactory, crowded: World
) -> None:
    gov = province(offline_spoke, verified(crowded))
    count = on_govnet(crowded)
    assert 1000 < count <= MAX_SLOTS

    gov.drop("通知.txt", BODY, toml_meta({**NOTICE, "主送": [EVERYONE]}))
    await gov.settle()

    assert list(gov.failed.iterdir()) == []
    (out,) = gov.outbound()
    assert out.slots is not None  # kept with the frame: a restart sends them again
    sealed = gov.sealed(out)
    assert sealed.header.v == 2
    assert sealed.header.slots is not None
    assert sealed.header.slots.count == count
    assert len(sealed.header.recipients) == count  # every slot, as the hub reads them
    gov.ctx.state.set_outbound_state(out.msg_id, "ACCEPTED", 1)  # the hub's answer came
    [answered] = gov.ctx.state.outbound("WHERE msg_id = ?", [out.msg_id])
    assert answered.slots is None  # never sent again: not kept


async def test_a_group_larger_than_one_envelope_is_refused_with_its_count_and_the_limit(
    offline_spoke: OfflineSpokeFactory, crowded: World, small_limit: int
) -> None:
    gov = province(offline_spoke, verified(crowded))
    count = on_govnet(crowded)
    assert count > small_limit

    with capture_logs() as logs:
        gov.drop("通知.txt", BODY, toml_meta({**NOTICE, "主送": [EVERYONE]}))
        await gov.settle()

    error = error_of(gov, "通知.txt")
    assert error["rule"] == "drop.too_many_recipients"
    assert error["values"] == {
        "count": count,
        "limit": small_limit,
        "groups": {EVERYONE: count},  # jl.gov, a member too, never sends to itself
    }
    assert f"{count} recipients" in error["message"]
    assert f"{small_limit}" in error["message"]
    assert f"{count} 个收文机关" in error["message_zh"]
    assert "Split the recipients" in error["hint"]
    assert "分成几批" in error["hint_zh"]
    assert (gov.failed / "通知.txt").read_bytes() == BODY
    assert gov.outbound() == []  # never sealed
    assert gov.queued() == []
    assert list(gov.work.iterdir()) == []
    assert events(logs, "drop.error") == []  # a refusal, not a defect


async def test_the_limit_counts_recipients_as_sealing_does_without_members_awaiting_keys(
    offline_spoke: OfflineSpokeFactory, crowded: World, small_limit: int
) -> None:
    over = on_govnet(crowded) - small_limit
    awaiting = tuple(f"jl.cc.c{i:04d}" for i in range(over))  # exactly the limit is left
    gov = province(offline_spoke, verified(crowded, awaiting=awaiting))

    gov.drop("通知.txt", BODY, toml_meta({**NOTICE, "主送": [EVERYONE]}))
    await gov.settle()

    assert list(gov.failed.iterdir()) == []
    (out,) = gov.outbound()
    assert len(gov.sealed(out).header.recipients) == small_limit


@pytest.fixture
def idle_crowded(crowded: World, tmp_path: Path) -> SpokeProcess:
    """jl.gov installed, holding the crowded directory, its agent not running."""
    installed = SpokeProcess(tmp_path / "jl.gov", "jl.gov", crowded, unused_port(), ("govnet",))
    installed.write()
    for name in ("outbox", "failed", "sent", "inbox", "signfor"):
        (installed.root / name).mkdir(parents=True)
    held = verified(crowded)
    state = SpokeState(installed.root / ".spoke" / "state.db")
    seed_held(state, held.directory, crowded.hub_key)
    state.close()
    return installed


SEND = ["--to", EVERYONE, "--classification", "内部", "--type", "通知", "--title", "关于供暖的通知"]
SEND += ["--signatory", "王某"]


def spoke_cli(spoke: SpokeProcess, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--config", str(spoke.config)])


def test_spoke_send_to_a_group_larger_than_one_envelope_exits_1_naming_count_and_limit(
    idle_crowded: SpokeProcess, crowded: World, tmp_path: Path, small_limit: int
) -> None:
    path = tmp_path / "通知.txt"
    path.write_bytes(BODY)

    done = spoke_cli(idle_crowded, "send", str(path), *SEND)

    assert done.exit_code == 1, done.output
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("spoke send: 交换程序拒收（drop.too_many_recipients），未发送")
    count = on_govnet(crowded)
    assert f"the drop has {count} recipients" in line
    assert f"more than the {small_limit} one envelope can carry" in line
    assert "Split the recipients into several drops" in line
    assert list(idle_crowded.outbox.iterdir()) == []  # nothing queued for the agent
    assert (idle_crowded.failed / "通知.txt").read_bytes() == BODY


def test_spoke_send_dry_run_to_a_group_larger_than_one_envelope_says_it_would_be_refused(
    idle_crowded: SpokeProcess, crowded: World, tmp_path: Path, small_limit: int
) -> None:
    path = tmp_path / "通知.txt"
    path.write_bytes(BODY)

    done = spoke_cli(idle_crowded, "send", str(path), *SEND, "--dry-run")

    assert done.exit_code == 1, done.output
    assert "The spoke would refuse it (drop.too_many_recipients)" in done.stdout
    assert f"{on_govnet(crowded)} recipients" in done.stdout
    assert f"{small_limit} one envelope can carry" in done.stdout
    assert list(idle_crowded.outbox.iterdir()) == []
    assert list(idle_crowded.failed.iterdir()) == []  # a dry run writes nothing


def test_spoke_send_dry_run_to_a_group_of_a_thousand_says_one_envelope_carries_them_as_slots(
    idle_crowded: SpokeProcess, crowded: World, tmp_path: Path
) -> None:
    path = tmp_path / "通知.txt"
    path.write_bytes(BODY)

    done = spoke_cli(idle_crowded, "send", str(path), *SEND, "--dry-run")
    as_json = spoke_cli(idle_crowded, "send", str(path), *SEND, "--dry-run", "--json")

    assert done.exit_code == 0, done.output
    count = on_govnet(crowded)
    assert f"envelope: one envelope to {count} recipients, who travel as slots" in done.stdout
    assert "verdict: the hub would accept it" in done.stdout
    assert json.loads(as_json.stdout)["slots"] is True
    assert list(idle_crowded.outbox.iterdir()) == []


def test_the_integrators_guide_states_the_recipient_limit_the_spoke_applies() -> None:
    guide = (REPO / "docs" / "integrators.md").read_text(encoding="utf-8")
    assert f"`drop.too_many_recipients`: {MAX_SLOTS:,}," in guide


# ------------------------------------------------------------------ what sealing would refuse


def revoked(world: World, org: str) -> VerifiedDirectory:
    """``world``'s directory around the real clock with ``org``'s encryption key revoked."""
    kid = world.directory.org(org).enc_keys[0].kid  # type: ignore[union-attr]
    directory = live_directory(world, version=2, revoked=[kid])
    frame = sign_directory(directory, world.hub_key)
    return verify_directory(frame, world.hub_key.public, now=now_ms())


async def test_a_recipient_without_a_valid_encryption_key_is_refused_before_sealing(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    gov = province(offline_spoke, revoked(world, "jl.cc"))

    with capture_logs() as logs:
        gov.drop("通知.txt", BODY, toml_meta({**NOTICE, "主送": ["jl.cc"]}))
        await gov.settle()

    error = error_of(gov, "通知.txt")
    assert error["rule"] == "drop.recipient_no_key"  # was drop.not_sealed, found by the seal
    assert "recipient jl.cc" in error["message"]
    assert gov.outbound() == []
    assert events(logs, "drop.error") == []


def test_spoke_send_to_a_recipient_without_a_valid_encryption_key_exits_1(
    world: World, tmp_path: Path
) -> None:
    installed = SpokeProcess(tmp_path / "jl.gov", "jl.gov", world, unused_port(), ("govnet",))
    installed.write()
    for name in ("outbox", "failed", "sent", "inbox", "signfor"):
        (installed.root / name).mkdir(parents=True)
    held = revoked(world, "jl.cc")
    state = SpokeState(installed.root / ".spoke" / "state.db")
    seed_held(state, held.directory, world.hub_key)
    state.close()
    path = tmp_path / "通知.txt"
    path.write_bytes(BODY)

    done = spoke_cli(installed, "send", str(path), *SEND[:1], "jl.cc", *SEND[2:])

    assert done.exit_code == 1, done.output  # was 0, "queued", for a drop certain to fail
    [line] = done.stderr.splitlines()
    assert "drop.recipient_no_key" in line
    assert list(installed.outbox.iterdir()) == []

    rehearsed = spoke_cli(installed, "send", str(path), *SEND[:1], "jl.cc", *SEND[2:], "--dry-run")
    assert rehearsed.exit_code == 1, rehearsed.output  # was 0: "it would be accepted"
    assert "The spoke would refuse it (drop.recipient_no_key)" in rehearsed.stdout


# ------------------------------------------------------------------ failures after the claim


def failing_seal(
    monkeypatch: pytest.MonkeyPatch, error: Callable[[], BaseException], times: int = 1_000
) -> list[int]:
    """Sealing raises ``error()`` ``times`` times, then seals; the list counts the calls."""
    calls: list[int] = []
    real = spoke.sealing.seal_drop

    def seal(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) <= times:
            raise error()
        return real(*args, **kw)

    monkeypatch.setattr(spoke.sealing, "seal_drop", seal)
    return calls


async def test_a_drop_whose_sealing_fails_ends_in_failed_with_its_reason_and_stays_there(
    offline_spoke: OfflineSpokeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_seal(monkeypatch, lambda: RuntimeError("the sealer broke"))
    gov = offline_spoke("jl.gov")

    with capture_logs() as logs:
        gov.drop("通知.txt", BODY, toml_meta({**NOTICE, "主送": ["jl.cc"]}))
        await gov.settle()

    error = error_of(gov, "通知.txt")
    assert (error["status"], error["rule"]) == ("FAILED", "drop.internal_error")
    assert "RuntimeError: the sealer broke" in error["message"]
    assert (gov.failed / "通知.txt").read_bytes() == BODY
    assert list(gov.work.iterdir()) == []
    [bug] = events(logs, "drop.error")  # one event, with its traceback
    assert isinstance(bug["exc_info"], RuntimeError)
    [row] = whereabouts(gov.ctx.config, gov.ctx.state, error["msg_id"])
    assert row[2] == "refused by the spoke (never sent): failed/通知.txt"
    assert row[4].startswith("FAILED (drop.internal_error)")

    before = snapshot(gov.failed)
    with capture_logs() as logs:
        restart(gov)
        await gov.settle()
    assert snapshot(gov.failed) == before
    assert list(gov.work.iterdir()) == []
    assert [e for e in logs if e["event"].startswith("drop.")] == []


async def test_a_header_the_envelope_refuses_at_sealing_ends_in_failed_as_not_sealed(
    offline_spoke: OfflineSpokeFactory, crowded: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the checks and the envelope disagree (as before issue 14): sealing meets the limit
    monkeypatch.setattr(schemas.slots, "MAX_SLOTS", LIMIT)
    gov = province(offline_spoke, verified(crowded))

    with capture_logs() as logs:
        gov.drop("通知.txt", BODY, toml_meta({**NOTICE, "主送": [EVERYONE]}))
        await gov.settle()

    error = error_of(gov, "通知.txt")
    assert (error["status"], error["rule"]) == ("FAILED", "drop.not_sealed")
    assert f"an envelope with slots carries 17 to {LIMIT}" in error["message"]
    assert (gov.failed / "通知.txt").read_bytes() == BODY
    assert list(gov.work.iterdir()) == []
    assert gov.queued() == []
    assert events(logs, "drop.error") == []  # the envelope's refusal, not a defect
    assert NOTICE["标题"] not in json.dumps(logs, ensure_ascii=False, default=str)


async def test_a_full_disk_while_sealing_keeps_the_drop_waiting_until_there_is_room(
    offline_spoke: OfflineSpokeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full() -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    calls = failing_seal(monkeypatch, full, times=3)
    gov = offline_spoke("jl.gov")

    with capture_logs() as logs:
        gov.drop("通知.txt", BODY, toml_meta({**NOTICE, "主送": ["jl.cc"]}))
        await gov.settle(lambda: len(calls) == 3)

    assert list(gov.failed.iterdir()) == []  # not the document's fault: not failed
    [claimed] = gov.work.iterdir()
    assert sorted(p.name for p in claimed.iterdir()) == ["通知.txt", "通知.txt.meta.toml"]
    [waiting] = events(logs, "drop.waiting")  # said once, not at every scan
    assert "the disk is full" in waiting["detail"]
    assert waiting["msg_id"] == claimed.name.rpartition("-")[2]

    await gov.settle(lambda: bool(gov.outbound()))  # room again: sealed at the next scan
    (out,) = gov.outbound()
    assert out.msg_id.hex() == waiting["msg_id"]
    assert list(gov.failed.iterdir()) == []


async def test_a_drop_that_cannot_be_moved_to_failed_waits_and_lands_there_once_it_can(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    gov = offline_spoke("jl.gov")
    gov.failed.rmdir()
    gov.failed.write_bytes(b"")  # failed/ is not a folder: nothing can be moved into it

    with capture_logs() as logs:
        gov.drop("坏.txt", BODY, toml_meta({**NOTICE, "主送": ["jl.nowhere"]}))
        await gov.settle(lambda: bool(events(logs, "drop.waiting")))
        await gov.sender.scan()

    [waiting] = events(logs, "drop.waiting")
    assert waiting["rule"] == "drop.unknown_recipient"
    assert "moving it to failed/ failed" in waiting["detail"]
    [claimed] = gov.work.iterdir()  # claimed, waiting: not lost, not given back
    assert "坏.txt" in {p.name for p in claimed.iterdir()}

    gov.failed.unlink()
    gov.failed.mkdir()
    await gov.settle((gov.failed / "坏.txt.error.json").exists)
    assert error_of(gov, "坏.txt")["rule"] == "drop.unknown_recipient"
    assert (gov.failed / "坏.txt").read_bytes() == BODY
    assert list(gov.work.iterdir()) == []


async def test_start_up_recovery_fails_a_claim_that_cannot_be_sealed_and_not_again(
    offline_spoke: OfflineSpokeFactory, crowded: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schemas.slots, "MAX_SLOTS", LIMIT)  # sealing refuses what checks took
    gov = province(offline_spoke, verified(crowded))
    # what a crash between the claim and the seal leaves: a work folder named by its id
    work = gov.work / "1796588398877-57c166f95cd33051332d4df0784a1d70"
    work.mkdir()
    (work / "通知.txt").write_bytes(BODY)
    (work / "通知.txt.meta.toml").write_text(toml_meta({**NOTICE, "主送": [EVERYONE]}), "utf-8")

    restart(gov)
    await gov.settle()

    error = error_of(gov, "通知.txt")
    assert error["rule"] == "drop.not_sealed"
    assert error["msg_id"] == "57c166f95cd33051332d4df0784a1d70"  # the id it was taken under
    assert list(gov.work.iterdir()) == []
    before = snapshot(gov.failed)
    with capture_logs() as logs:
        restart(gov)
        await gov.settle()
    assert snapshot(gov.failed) == before
    assert [e for e in logs if e["event"].startswith("drop.")] == []


async def test_a_drop_whose_explanation_cannot_be_written_gets_it_under_its_own_name_later(
    offline_spoke: OfflineSpokeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = offline_spoke("jl.gov")
    real = FailedFolder.explain
    tries: list[int] = []

    def explain(folder: FailedFolder, *args: Any, **kw: Any) -> None:
        tries.append(1)
        if len(tries) == 1:  # the disk fills up between the move and the explanation
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(folder, *args, **kw)

    monkeypatch.setattr(FailedFolder, "explain", explain)

    with capture_logs() as logs:
        gov.drop("坏.txt", BODY, toml_meta({**NOTICE, "主送": ["jl.nowhere"]}))
        await gov.settle((gov.failed / "坏.txt.error.json").exists)

    assert sorted(p.name for p in gov.failed.iterdir()) == [
        "坏.txt",
        "坏.txt.error.json",
        "坏.txt.error.txt",
        "坏.txt.meta.toml",
    ]  # moved once: the explanation followed it, not a second copy as '坏 (2).txt'
    assert error_of(gov, "坏.txt")["rule"] == "drop.unknown_recipient"
    assert list(gov.work.iterdir()) == []
    [waiting] = events(logs, "drop.waiting")
    assert "No space left on device" in waiting["detail"]


@pytest.mark.parametrize(
    ("extra", "rule"),
    [
        (".通知.txt.Xk3q9Z", "drop.incomplete"),  # a temporary beside it, taken to be refused
        ("通知.txt.meta.json", "drop.two_metadata"),  # two metadata files, taken to be refused
    ],
)
async def test_start_up_recovery_keeps_the_refusal_of_a_drop_taken_to_be_refused(
    offline_spoke: OfflineSpokeFactory, extra: str, rule: str
) -> None:
    gov = offline_spoke("jl.gov")
    # a crash between taking a drop to be refused and moving it to failed/
    work = gov.work / "1796588398877-57c166f95cd33051332d4df0784a1d70"
    work.mkdir()
    (work / "通知.txt").write_bytes(BODY)
    (work / "通知.txt.meta.toml").write_text(toml_meta({**NOTICE, "主送": ["jl.cc"]}), "utf-8")
    other = json.dumps({"to": "jl.cc", "classification": "内部", "doc_type": "通知", "title": "t"})
    (work / extra).write_text(other if extra.endswith(".json") else "half a copy", "utf-8")

    restart(gov)
    await gov.settle()

    assert gov.outbound() == []  # never sealed: neither the temporary nor the document
    assert error_of(gov, "通知.txt")["rule"] == rule
    assert extra in {p.name for p in gov.failed.iterdir()}  # moved there with it, unchanged
    assert list(gov.work.iterdir()) == []


async def test_a_move_to_failed_cut_half_way_is_finished_under_the_same_name(
    offline_spoke: OfflineSpokeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = offline_spoke("jl.gov")
    real = spoke.files.durable_rename  # what spoke.failed moves with
    moves: list[Path] = []

    def rename(source: Path, target: Path) -> None:
        moves.append(source)
        if len(moves) == 2:  # the document has moved; its metadata file cannot, this once
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(source, target)

    monkeypatch.setattr(spoke.failed, "durable_rename", rename)

    with capture_logs() as logs:
        gov.drop("坏.txt", BODY, toml_meta({**NOTICE, "主送": ["jl.nowhere"]}))
        await gov.settle((gov.failed / "坏.txt.error.json").exists)

    assert sorted(p.name for p in gov.failed.iterdir()) == [
        "坏.txt",
        "坏.txt.error.json",
        "坏.txt.error.txt",
        "坏.txt.meta.toml",
    ]  # not '坏 (2).txt.meta.toml' explained beside a document that is not there
    assert error_of(gov, "坏.txt")["name"] == "坏.txt"
    assert list(gov.work.iterdir()) == []
    assert len(events(logs, "drop.waiting")) == 1


def test_two_drops_of_one_name_placed_while_failed_was_unwritable_both_land(
    tmp_path: Path,
) -> None:
    """Each waiting claim chose failed/NAME while the folder could not be written; the
    second move must not replace the first drop (a rename overwrites)."""
    failures = FailedFolder(tmp_path / "failed")
    failures.folder.mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "report.pdf", tmp_path / "b" / "report.pdf"
    first.write_bytes(b"A")
    second.write_bytes(b"B")
    place_a = failures.place("report.pdf")
    place_b = failures.place("report.pdf")
    assert place_a == place_b  # nothing took the place yet: both were told the same one
    got_a = failures.take(first, [], "report.pdf", target=place_a)
    got_b = failures.take(second, [], "report.pdf", target=place_b)
    assert got_a.path != got_b.path
    assert sorted(p.read_bytes() for p in failures.folder.iterdir()) == [b"A", b"B"]


class AwayBook:
    """A spoke's directory book while the hub does not answer (then while it does)."""

    def __init__(self) -> None:
        self.away = True
        self.asked = 0

    async def closure(self, addresses: object, sender: str) -> None:
        del addresses, sender
        self.asked += 1
        if self.away:
            raise DirectoryUnavailableError("the hub did not answer a request for entries")


async def test_drops_whose_directory_entries_cannot_be_fetched_wait_claimed_and_go_later(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    gov = offline_spoke("jl.gov")
    book = AwayBook()
    gov.ctx.book = book  # type: ignore[assignment]
    gov.drop("甲.txt", b"first\n", toml_meta({**NOTICE, "主送": ["jl.cc"]}))
    gov.drop("乙.txt", b"second\n", toml_meta({**NOTICE, "主送": ["jl.cc"], "标题": "第二件"}))
    with capture_logs() as logs:
        await gov.settle(lambda: len(list(gov.work.iterdir())) == 2)
    assert gov.outbound() == []
    assert book.asked == 1  # the second of the scan waited without asking again
    waiting = [e for e in logs if e["event"] == "drop.waiting"]
    assert {e["name"] for e in waiting} == {"甲.txt", "乙.txt"}
    assert all("directory entries" in e["detail"] for e in waiting)
    book.away = False
    await gov.settle(lambda: len(gov.outbound()) == 2)
    assert list(gov.work.iterdir()) == [] or all(
        gov.ctx.state.sealed_from(w) for w in gov.work.iterdir()
    )
