"""hubctl status, trace, queue and dead against a real hubd and its store (issue 6, section 1).

A real hub process, simulated spokes that seal with ``schemas``, and the commands run for
real through typer's CliRunner on the hub's configuration: they read the store directly,
read-only, while the hub runs. Recipients that never connect keep their deliveries
PENDING; a recipient that receives without confirming lets a test decide when DELIVERED
and SIGNED_FOR happen, so the order of the timeline is the test's, not a race's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
from typer.testing import CliRunner, Result

from hubd.cli import hubctl_app
from schemas.directory import Directory
from schemas.ids import msg_id_text, new_msg_id
from schemas.labels import Classification, Precedence
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import HubSpawner, SpokeSpawner
from tests.hubproc import HubProcess
from tests.spokesim import SIGNATORY, SimSpoke

WITHIN = 20.0
TITLE = "测试文件"  # what SimSpoke.seal puts in every document's inner record
# Retries that cannot fire within a test: what the store shows is what the test did.
NO_RETRIES = "[delivery]\nretry_initial = 600.0\nretry_max = 600.0\n"
# One publish, then a retry timer of ~0.2 s finds the limit reached: DEAD.
GIVES_UP_AT_ONCE = "[delivery]\nretry_initial = 0.2\nretry_max = 0.4\nmax_attempts = 1\n"


class HubMaker(Protocol):
    def __call__(self, *, store_url: str = "", extra_toml: str = NO_RETRIES) -> HubProcess:
        """A started hubd with its own folder (killed at teardown)."""


SpokeMaker = Callable[..., Awaitable[SimSpoke]]


@pytest.fixture
def postgres(request: pytest.FixtureRequest) -> str:
    """A fresh PostgreSQL database on the machine's server (tests/hub/conftest.py)."""
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def hubs(spawn_hub: HubSpawner) -> HubMaker:
    def make(*, store_url: str = "", extra_toml: str = NO_RETRIES) -> HubProcess:
        return spawn_hub(store_url=store_url, extra_toml=extra_toml)

    return make


@pytest.fixture
def spokes(spawn_spoke: SpokeSpawner) -> SpokeMaker:
    """``spokes(hub, "jl.gov", auto_deliver=...)``: a connected SimSpoke (disconnected at
    teardown, before the hubs stop)."""

    async def make(hub: HubProcess, org: str, **kw: object) -> SimSpoke:
        spoke = spawn_spoke(hub, org, **kw)
        await spoke.connect()
        return spoke

    return make


async def hubctl(hub: HubProcess | None, *args: str) -> Result:
    """``hubctl ARGS --config HUB/hub.toml`` (no --config without a hub)."""
    argv = [*args, *(["--config", str(hub.folder / "hub.toml")] if hub is not None else [])]
    return await asyncio.to_thread(CliRunner().invoke, hubctl_app, argv)


async def as_json(hub: HubProcess, *args: str) -> dict[str, Any]:
    result = await hubctl(hub, *args, "--json")
    assert result.exit_code == 0, result.output
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


async def accepted(sender: SimSpoke, to: list[str], **kw: object) -> bytes:
    """Send and wait for the hub's ACCEPTED: from then on the store holds the deliveries."""
    sealed = await sender.send(to, **kw)
    msg_id = sealed.header.msg_id
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.ACCEPTED), WITHIN)
    return msg_id


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Ask again until ``check`` holds (state another process commits in its own time)."""
    async with asyncio.timeout(WITHIN):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)  # polling another process's store, bounded above


def line_with(text: str, *words: str) -> int:
    """The index of the first line of ``text`` that holds every one of ``words``."""
    for index, line in enumerate(text.splitlines()):
        if all(w in line for w in words):
            return index
    raise AssertionError(f"no line with {words} in:\n{text}")


# ---------------------------------------------------------------------------- status


async def test_status_shows_an_offline_recipients_pending_deliveries_by_precedence_and_oldest(
    hubs: HubMaker, spokes: SpokeMaker, live_dir: Directory
) -> None:
    hub = hubs()
    sender = await spokes(hub, "jl.gov")  # jl.cc never connects
    first = await accepted(sender, ["jl.cc"])  # ROUTINE, the oldest
    flash = await accepted(sender, ["jl.cc"], precedence=Precedence.FLASH)
    await accepted(sender, ["jl.cc"])

    text = await hubctl(hub, "status")
    report = await as_json(hub, "status")

    assert text.exit_code == 0, text.output
    pending = report["pending"]
    assert pending["total"] == 3
    groups = [(g["recipient"], g["precedence"], g["count"], g["sent"]) for g in pending["groups"]]
    assert groups == [("jl.cc", "FLASH", 1, 0), ("jl.cc", "ROUTINE", 2, 0)]
    assert pending["oldest"]["msg_id"] == msg_id_text(first)
    assert pending["oldest"]["msg_id"] != msg_id_text(flash)
    assert report["dead"] == 0
    assert report["deliveries"]["PENDING"] == 3
    assert report["directory"]["version"] == live_dir.version
    assert report["directory"]["expired"] is False
    assert report["store"]["kind"] == "sqlite"
    assert report["store"]["bytes"] > 0
    assert report["presence_known"] is True  # the running hub answered on its socket
    assert report["hub"]["answered"] is True
    spoke = {s["org"]: s for s in report["spokes"]}
    assert [s["org"] for s in report["spokes"]] == [o.id for o in live_dir.orgs]
    assert spoke["jl.cc"]["pending"] == 3
    # never seen since the hub started: offline, since unknown
    assert spoke["jl.cc"]["channels"] == {"govnet": {"online": False, "since": None}}
    assert spoke["jl.gov"]["channels"]["govnet"]["online"] is True
    assert spoke["jl.gov"]["last_heard_at"] is not None  # it sent three messages
    assert spoke["jl.cc"]["last_heard_at"] is None

    out = text.stdout
    lines = out.splitlines()
    at = line_with(out, "recipient", "channel", "sent", "oldest")
    assert lines[at].index("FLASH 特提") < lines[at].index("ROUTINE 平件")
    row = lines[at + 1].split()
    assert row[:7] == ["jl.cc", "govnet", "1", "-", "-", "2", "0"]
    assert f"oldest pending: {msg_id_text(first)} to jl.cc on govnet, ROUTINE 平件" in out
    assert "deliveries pending: 3 (3 not yet sent, 0 sent and not yet confirmed)" in out
    assert "presence unknown" not in out
    assert "running, answered on" in out
    assert f"v{live_dir.version} of jl.hub" in out


# ---------------------------------------------------------------------------- trace


async def test_trace_shows_accepted_then_sent_then_delivered_then_signed_for_in_order(
    hubs: HubMaker, spokes: SpokeMaker
) -> None:
    hub = hubs()
    recipient = await spokes(hub, "jl.cc", auto_deliver=False)  # confirms when told
    sender = await spokes(hub, "jl.gov")
    msg_id = await accepted(sender, ["jl.cc"], doc_number="吉政函〔2026〕12号")
    text_id = msg_id_text(msg_id)
    await recipient.wait_for(lambda: msg_id in recipient.received, WITHIN)

    async def sent() -> bool:
        events = [s["event"] for s in (await as_json(hub, "trace", text_id))["timeline"]]
        return "delivery.sent" in events

    await until(sent)
    envelope = recipient.received[msg_id].envelope
    await recipient.acknowledge(envelope, ReceiptStatus.DELIVERED)
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.DELIVERED, "jl.cc"), WITHIN)
    await recipient.acknowledge(envelope, ReceiptStatus.SIGNED_FOR)
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.SIGNED_FOR, "jl.cc"), WITHIN)

    async def signed_for_stored() -> bool:  # 签收 after DELIVERED closed the delivery
        deliveries = (await as_json(hub, "trace", text_id))["deliveries"]
        return [d["state"] for d in deliveries] == ["SIGNED_FOR"]

    await until(signed_for_stored)
    text = await hubctl(hub, "trace", text_id)
    report = await as_json(hub, "trace", text_id)

    assert text.exit_code == 0, text.output
    timeline = report["timeline"]
    assert [(s["event"], s["org"]) for s in timeline] == [
        ("message.accepted", "jl.gov"),
        ("delivery.sent", "jl.cc"),
        ("receipt.delivered", "jl.cc"),
        ("receipt.signed_for", "jl.cc"),
    ]
    assert [s["at"] for s in timeline] == sorted(s["at"] for s in timeline)
    assert timeline[0]["detail"]["routes"] == {"jl.cc": "govnet"}
    assert timeline[1]["detail"] == {"channel": "govnet", "attempt": 1}
    assert report["message"]["sender"] == "jl.gov"
    assert report["message"]["state"] == "ACCEPTED"
    [delivery] = report["deliveries"]
    assert delivery["recipient"] == "jl.cc"
    assert delivery["state"] == "SIGNED_FOR"

    out = text.stdout
    steps = [
        line_with(out, "accepted", "from jl.gov on govnet; routed on govnet to jl.cc"),
        line_with(out, "sent", "published to jl.cc on govnet, attempt 1"),
        line_with(out, "DELIVERED", "receipt signed by jl.cc"),
        line_with(out, "SIGNED_FOR", "receipt signed by jl.cc"),
    ]
    assert steps == sorted(steps)
    assert len(set(steps)) == 4
    delivery_row = out.splitlines()[line_with(out, "deliveries now:") + 2].split()
    # last receipt, and no next hub: delivered by this hub to its own spoke
    assert (delivery_row[0], delivery_row[-2], delivery_row[-1]) == ("jl.cc", "SIGNED_FOR", "-")
    for secret in (TITLE, SIGNATORY, "吉政函〔2026〕12号"):
        assert secret not in out
        assert secret not in json.dumps(report, ensure_ascii=False)


async def test_trace_of_a_quarantined_message_says_so_and_shows_no_delivery(
    hubs: HubMaker, spokes: SpokeMaker
) -> None:
    hub = hubs()
    prefecture = await spokes(hub, "jl.cc")
    sealed = await prefecture.send(["jl.gov"], classification=Classification.SECRET)
    msg_id = sealed.header.msg_id
    await prefecture.wait_for(lambda: prefecture.has(msg_id, ReceiptStatus.REJECTED), WITHIN)

    text = await hubctl(hub, "trace", msg_id_text(msg_id))
    report = await as_json(hub, "trace", msg_id_text(msg_id))

    assert text.exit_code == 0, text.output
    assert [s["event"] for s in report["timeline"]] == ["message.quarantined"]
    assert report["message"]["state"] == "QUARANTINED"
    assert report["message"]["reason"] == "policy.arrival_channel_below_label"
    assert report["deliveries"] == []
    assert "QUARANTINED (policy.arrival_channel_below_label)" in text.stdout
    assert "never forwarded" in text.stdout


async def test_trace_of_a_msg_id_the_store_does_not_know_exits_1_with_a_sentence(
    hubs: HubMaker,
) -> None:
    hub = hubs()
    unknown = msg_id_text(new_msg_id())

    result = await hubctl(hub, "trace", unknown)

    assert result.exit_code == 1, result.output
    assert f"the hub's store holds no message {unknown}" in result.stderr
    assert "message.rejected" in result.stderr  # where to look instead
    assert result.stdout == ""


# ---------------------------------------------------------------------------- queue


async def test_queue_lists_flash_before_older_routine_and_only_the_organisation_asked_for(
    hubs: HubMaker, spokes: SpokeMaker
) -> None:
    hub = hubs()
    sender = await spokes(hub, "jl.gov")  # jl.cc and jl.jl stay offline
    routine_cc = await accepted(sender, ["jl.cc"])
    flash_cc = await accepted(sender, ["jl.cc"], precedence=Precedence.FLASH)
    routine_jl = await accepted(sender, ["jl.jl"])

    everyone = await as_json(hub, "queue")
    only_cc = await as_json(hub, "queue", "jl.cc")
    text = await hubctl(hub, "queue", "jl.cc")
    first = await as_json(hub, "queue", "--limit", "1")
    cut = await hubctl(hub, "queue", "--limit", "1")

    order = [(d["msg_id"], d["recipient"]) for d in everyone["deliveries"]]
    assert order == [
        (msg_id_text(flash_cc), "jl.cc"),
        (msg_id_text(routine_cc), "jl.cc"),
        (msg_id_text(routine_jl), "jl.jl"),
    ]
    assert [d["msg_id"] for d in only_cc["deliveries"]] == [
        msg_id_text(flash_cc),
        msg_id_text(routine_cc),
    ]
    assert only_cc["total"] == 2
    assert {d["state"] for d in everyone["deliveries"]} == {"PENDING"}
    assert everyone["deliveries"][0]["classification"] == "INTERNAL"
    assert everyone["deliveries"][0]["attempts"] == 0
    assert text.exit_code == 0, text.output
    assert line_with(text.stdout, msg_id_text(flash_cc), "FLASH 特提") < line_with(
        text.stdout, msg_id_text(routine_cc), "ROUTINE 平件"
    )
    assert msg_id_text(routine_jl) not in text.stdout
    assert (first["total"], first["shown"]) == (3, 1)
    assert "... and 2 more" in cut.stdout
    # why they wait, from the running hub's presence: jl.cc and jl.jl never came online
    assert everyone["presence_known"] is True
    assert {d["waiting"]["code"] for d in everyone["deliveries"]} == {"recipient_not_seen"}
    assert "jl.cc has not been online on govnet since the hub started" in text.stdout
    assert {d["expires_at"] for d in everyone["deliveries"]} == {None}


# ---------------------------------------------------------------------------- dead


async def test_dead_lists_a_delivery_given_up_after_max_attempts_with_reason_and_attempts(
    hubs: HubMaker, spokes: SpokeMaker
) -> None:
    hub = hubs(extra_toml=GIVES_UP_AT_ONCE)  # max_attempts = 1
    await spokes(hub, "jl.cc", auto_deliver=False)  # receives, never confirms
    sender = await spokes(hub, "jl.gov")
    msg_id = await accepted(sender, ["jl.cc"], precedence=Precedence.URGENT)
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.DEAD, "jl.cc"), WITHIN)

    async def recorded() -> bool:  # the DEAD receipt and the row are separate commits
        return bool((await as_json(hub, "dead"))["total"])

    await until(recorded)
    report = await as_json(hub, "dead")
    text = await hubctl(hub, "dead")
    for_cc = await as_json(hub, "dead", "jl.cc")
    for_jl = await as_json(hub, "dead", "jl.jl")
    status = await as_json(hub, "status")
    queue = await as_json(hub, "queue")

    [dead] = report["deliveries"]
    assert (dead["msg_id"], dead["recipient"], dead["sender"]) == (
        msg_id_text(msg_id),
        "jl.cc",
        "jl.gov",
    )
    assert (dead["state"], dead["attempts"], dead["reason"]) == ("DEAD", 1, "delivery.gave_up")
    assert dead["precedence"] == "URGENT"
    assert for_cc["total"] == 1
    assert for_jl["total"] == 0
    assert status["dead"] == 1
    assert queue["total"] == 0  # no longer pending
    assert text.exit_code == 0, text.output
    line = text.stdout.splitlines()[line_with(text.stdout, msg_id_text(msg_id))]
    assert "DEAD" in line
    assert "gave up: no DELIVERED from jl.cc after 1 attempt" in line


async def test_queue_trace_and_status_read_the_store_of_a_stopped_hub_without_changing_it(
    hubs: HubMaker, spokes: SpokeMaker
) -> None:
    hub = hubs()
    sender = await spokes(hub, "jl.gov")  # jl.cc stays offline
    msg_id = await accepted(sender, ["jl.cc"])
    await sender.disconnect()
    assert hub.terminate() == 0  # a clean stop: SQLite folds its write-ahead log back
    database = hub.folder / "state" / "hub.db"
    before = database.read_bytes()

    queue = await as_json(hub, "queue")
    trace = await as_json(hub, "trace", msg_id_text(msg_id))
    status = await as_json(hub, "status")

    assert [d["msg_id"] for d in queue["deliveries"]] == [msg_id_text(msg_id)]
    assert [s["event"] for s in trace["timeline"]] == ["message.accepted"]
    assert status["pending"]["total"] == 1
    assert database.read_bytes() == before
    # SQLite's shared-memory index may appear beside it (a reader of a WAL database makes
    # one); the write-ahead log stays empty: nothing was written.
    wal = database.with_name("hub.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("command", "value"),
    [
        ("trace", "61A070D374B748BFE08A02599B441EE2"),  # capitals
        ("trace", "61a070d374b748bf"),  # too short
        ("queue", "JL.CC"),
        ("queue", "jl.cc/#"),
        ("dead", "jl..cc"),
    ],
)
async def test_an_invalid_msg_id_or_org_exits_2_naming_it_before_any_store_is_read(
    command: str, value: str, tmp_path: Path
) -> None:
    missing = f"sqlite+aiosqlite:///{tmp_path / 'nowhere.db'}"

    result = await hubctl(None, command, value, "--store", missing)

    assert result.exit_code == 2, result.output
    assert repr(value) in result.stderr
    assert "nowhere.db" not in result.stderr  # refused before the store was looked at
    assert result.stdout == ""


@pytest.mark.parametrize("command", [["status"], ["queue"], ["dead"], ["trace", "0" * 32]])
async def test_a_missing_store_or_configuration_exits_2_with_a_sentence(
    command: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.db"
    no_config = tmp_path / "hub.toml"

    from_config = await hubctl(None, *command, "--config", str(no_config))
    if command != ["status"]:  # status reads the directory, so it always reads --config
        from_store = await hubctl(None, *command, "--store", f"sqlite+aiosqlite:///{missing}")
        assert from_store.exit_code == 2, from_store.output
        assert f"there is no hub store at '{missing}'" in from_store.stderr

    assert from_config.exit_code == 2, from_config.output
    assert str(no_config) in from_config.stderr


# ---------------------------------------------------------------------------- PostgreSQL


async def test_status_queue_and_trace_read_a_postgresql_store(
    hubs: HubMaker, spokes: SpokeMaker, postgres: str
) -> None:
    hub = hubs(store_url=postgres)
    sender = await spokes(hub, "jl.gov")  # jl.cc stays offline
    msg_id = await accepted(sender, ["jl.cc"], precedence=Precedence.EXTRA_URGENT)

    status = await as_json(hub, "status")
    queue = await as_json(hub, "queue", "jl.cc")
    trace = await as_json(hub, "trace", msg_id_text(msg_id))

    assert status["store"]["kind"] == "postgresql"
    assert status["store"]["bytes"] > 0
    assert status["store"]["wal_bytes"] is None
    assert status["pending"]["groups"][0]["precedence"] == "EXTRA_URGENT"
    assert status["pending"]["oldest"]["msg_id"] == msg_id_text(msg_id)
    assert [d["msg_id"] for d in queue["deliveries"]] == [msg_id_text(msg_id)]
    assert [s["event"] for s in trace["timeline"]] == ["message.accepted"]


# ---------------------------------------------------------------------------- find


async def test_find_by_doc_number_finds_what_the_hub_stored_below_mimi_only(
    hubs: HubMaker, spokes: SpokeMaker
) -> None:
    hub = hubs()
    prefecture = await spokes(hub, "jl.cc")  # jl.gov stays offline: its deliveries wait
    number = "长政发〔2026〕3号"
    internal = await accepted(prefecture, ["jl.gov"], doc_number=number)
    quarantined = (  # a 机密 document on govnet: quarantined, stored, with the same number
        await prefecture.send(["jl.gov"], classification=Classification.SECRET, doc_number=number)
    ).header.msg_id
    await prefecture.wait_for(lambda: prefecture.has(quarantined, ReceiptStatus.REJECTED), WITHIN)

    by_number = await as_json(hub, "find", "--doc-number", number)
    by_sender = await as_json(hub, "find", "--from", "jl.cc")
    text = await hubctl(hub, "find", "--doc-number", number)

    assert [m["msg_id"] for m in by_number["messages"]] == [msg_id_text(internal)]
    assert msg_id_text(quarantined) in [m["msg_id"] for m in by_sender["messages"]]
    assert [r["recipient"] for r in by_number["messages"][0]["recipients"]] == ["jl.gov"]
    assert text.exit_code == 0, text.output
    assert number not in text.stdout
    assert TITLE not in text.stdout
