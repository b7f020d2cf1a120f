"""The document rules (行文规则) at the hub, end to end (issue 5, section 2).

A real hubd and simulated spokes that seal directly with ``schemas`` and never run the
rules themselves: whatever is refused here, the hub's own check refused. The documents
come from the Jilin topology (config/topology.toml): jl.gov (province) above jl.cc
(prefecture) above jl.cc.nongan (county). ``hubctl route`` is run for real through
typer's CliRunner against the files and store of a real hub.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from typer.testing import CliRunner, Result

from hubd.cli import hubctl_app
from schemas.directory import Directory
from schemas.ids import msg_id_text, new_msg_id
from schemas.labels import Classification, DocType
from schemas.receipts import ReceiptEntry, ReceiptStatus
from schemas.rules import (
    REPLY_REQUEST,
    REQUEST_RECIPIENT,
    REQUEST_REPORT_MIXED,
    SKIP_LEVEL,
    SKIP_LEVEL_DOWN,
)
from schemas.seal import Sealed
from tests.hub.conftest import FAST_RETRIES, RecordingSpoke, SpokeMaker, wait_for_log
from tests.hubproc import HubProcess
from tests.spokesim import SimSpoke
from tests.world import World

TITLE = "测试文件"  # what SimSpoke.seal puts in every inner record
WITHIN = 20.0


class RulesHub(Protocol):
    def __call__(self, rules: dict[str, str] | None = None, *, start: bool = True) -> HubProcess:
        """A hubd whose directory carries ``rules`` (over the topology's own settings)."""


@pytest.fixture
def rules_hub(world: World, live_dir: Directory, tmp_path: Path) -> Iterator[RulesHub]:
    made: list[HubProcess] = []

    def make(rules: dict[str, str] | None = None, *, start: bool = True) -> HubProcess:
        directory = live_dir
        if rules is not None:
            directory = live_dir.model_copy(update={"rules": {**live_dir.rules, **rules}})
        process = HubProcess(
            tmp_path / f"hub{len(made)}", world.hub_key, directory, extra_toml=FAST_RETRIES
        )
        made.append(process)
        if start:
            process.start()
        else:
            process.write()
        return process

    yield make
    for process in made:
        process.stop()


async def connected(spokes_at: SpokeMaker, hub: HubProcess, *orgs: str) -> list[RecordingSpoke]:
    made = [spokes_at(hub, org, directory=hub.directory) for org in orgs]
    for spoke in made:
        await spoke.connect()
    return made


async def answer(spoke: SimSpoke, sealed: Sealed) -> ReceiptEntry:
    """The hub's ACCEPTED or REJECTED for ``sealed``."""
    msg_id = sealed.header.msg_id
    await spoke.wait_for(lambda: spoke.answer(msg_id) is not None, WITHIN)
    entry = spoke.answer(msg_id)
    assert entry is not None
    return entry


async def delivered_to(sender: SimSpoke, sealed: Sealed, *recipients: SimSpoke) -> None:
    msg_id = sealed.header.msg_id
    for recipient in recipients:
        await recipient.wait_for(lambda r=recipient: msg_id in r.received, WITHIN)
        await sender.wait_for(
            lambda r=recipient: sender.has(msg_id, ReceiptStatus.DELIVERED, r.org), WITHIN
        )


def events(hub: HubProcess, name: str, msg_id: bytes) -> list[dict[str, object]]:
    return [
        e
        for e in hub.log_events()
        if e.get("event") == name and e.get("msg_id") == msg_id_text(msg_id)
    ]


def audit_detail(hub: HubProcess, event: str, msg_id: bytes) -> dict[str, object]:
    with sqlite3.connect(f"file:{hub.folder / 'state' / 'hub.db'}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT detail FROM audit WHERE event = ? AND msg_id = ?", (event, msg_id)
        ).fetchone()
    assert row is not None, f"no {event} in the audit ledger for {msg_id_text(msg_id)}"
    detail = json.loads(row[0])
    assert isinstance(detail, dict)
    return detail


# ---------------------------------------------------------------------------- refusals


async def test_a_request_to_two_superiors_is_rejected_naming_rule_article_and_both_languages(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub()
    (county,) = await connected(spokes_at, hub, "jl.cc.nongan")

    sealed = await county.send(["jl.cc", "jl.gov"], doc_type=DocType.REQUEST)
    entry = await answer(county, sealed)

    assert entry.status is ReceiptStatus.REJECTED
    assert entry.reason == "rule.request_recipient"
    detail = entry.detail or ""
    assert "[request_recipient]" in detail
    assert REQUEST_RECIPIENT.article in detail
    assert "请示只能主送一个上级机关" in detail  # Chinese
    assert "a request goes to exactly one superior" in detail  # English
    assert "jl.cc" in detail
    assert "jl.gov" in detail
    assert not entry.retriable
    (rejected,) = events(hub, "message.rejected", sealed.header.msg_id)
    assert rejected["reason"] == "rule.request_recipient"
    assert rejected["rules"] == ["request_recipient"]
    assert events(hub, "message.accepted", sealed.header.msg_id) == []


async def test_a_skip_level_report_is_rejected_and_accepted_once_the_skipped_organ_is_copied(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub()
    county, prefecture, province = await connected(
        spokes_at, hub, "jl.cc.nongan", "jl.cc", "jl.gov"
    )
    report = {"doc_type": DocType.REPORT, "contents": [b"2026 harvest report"]}

    skipping = await county.send(["jl.gov"], **report)
    refused = await answer(county, skipping)
    copied = await county.send(["jl.gov"], cc=["jl.cc"], **report)
    accepted = await answer(county, copied)

    assert refused.status is ReceiptStatus.REJECTED
    assert refused.reason == "rule.skip_level"
    assert SKIP_LEVEL.article in (refused.detail or "")
    assert "jl.cc" in (refused.detail or "")  # the organ skipped and not copied
    assert "--auto-cc" in (refused.detail or "")  # what to do
    assert accepted.status is ReceiptStatus.ACCEPTED
    await delivered_to(county, copied, province, prefecture)
    assert skipping.header.msg_id not in province.received


async def test_a_reply_whose_in_reply_to_names_no_message_is_rejected(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub()
    (province,) = await connected(spokes_at, hub, "jl.gov")
    nothing = new_msg_id()

    sealed = await province.send(["jl.cc"], doc_type=DocType.REPLY, in_reply_to=nothing)
    entry = await answer(province, sealed)

    assert entry.status is ReceiptStatus.REJECTED
    assert entry.reason == "rule.reply_request"
    assert REPLY_REQUEST.article in (entry.detail or "")
    assert msg_id_text(nothing) in (entry.detail or "")
    assert "the hub holds no message" in (entry.detail or "")


async def test_a_reply_to_a_request_the_recipient_sent_to_the_sender_is_accepted(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub()
    prefecture, province = await connected(spokes_at, hub, "jl.cc", "jl.gov")
    request = await prefecture.send(["jl.gov"], doc_type=DocType.REQUEST)
    await delivered_to(prefecture, request, province)

    reply = await province.send(
        ["jl.cc"], doc_type=DocType.REPLY, in_reply_to=request.header.msg_id
    )

    assert (await answer(province, reply)).status is ReceiptStatus.ACCEPTED
    await delivered_to(province, reply, prefecture)


async def test_a_reply_answering_a_report_is_rejected(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub()
    prefecture, province = await connected(spokes_at, hub, "jl.cc", "jl.gov")
    report = await prefecture.send(["jl.gov"], doc_type=DocType.REPORT)
    await delivered_to(prefecture, report, province)

    reply = await province.send(["jl.cc"], doc_type=DocType.REPLY, in_reply_to=report.header.msg_id)
    entry = await answer(province, reply)

    assert entry.status is ReceiptStatus.REJECTED
    assert entry.reason == "rule.reply_request"
    assert f"{msg_id_text(report.header.msg_id)} 是报告，不是请示" in (entry.detail or "")
    assert "not a request" in (entry.detail or "")


async def test_a_reply_to_a_quarantined_request_is_rejected_as_unknown(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    """Only what the hub accepted counts: a quarantined 请示 was never delivered."""
    hub = rules_hub()
    prefecture, province = await connected(spokes_at, hub, "jl.cc", "jl.gov")
    leaked = await prefecture.send(
        ["jl.gov"], doc_type=DocType.REQUEST, classification=Classification.SECRET
    )
    await wait_for_log(hub, lambda e: e.get("event") == "message.quarantined")

    reply = await province.send(["jl.cc"], doc_type=DocType.REPLY, in_reply_to=leaked.header.msg_id)
    entry = await answer(province, reply)

    assert entry.status is ReceiptStatus.REJECTED
    assert entry.reason == "rule.reply_request"
    assert "the hub holds no message" in (entry.detail or "")


@pytest.mark.parametrize(
    "number",
    ["吉政发[2026]7号", "吉政发〔2026〕7号\u3000", "吉政发〔2026〕07号\t", "吉政发[2026]7号\u200b"],
    ids=["ascii-brackets", "ideographic-space", "tab", "zero-width-space"],
)
async def test_a_rejection_for_a_document_number_never_logs_the_number(
    rules_hub: RulesHub, spokes_at: SpokeMaker, number: str
) -> None:
    hub = rules_hub()
    (province,) = await connected(spokes_at, hub, "jl.gov")

    sealed = await province.send(["jl.cc"], doc_number=number)
    entry = await answer(province, sealed)

    assert entry.reason == "rule.doc_number_form"
    assert repr(number) in (entry.detail or "")  # the sender is told which value is wrong
    (rejected,) = events(hub, "message.rejected", sealed.header.msg_id)
    assert rejected["rules"] == ["doc_number_form"]
    logged = json.dumps(rejected, ensure_ascii=False)
    assert number.strip() not in logged
    assert "吉政发" not in logged  # nor any escaped form of it


# ---------------------------------------------------------------------------- warn and off


async def test_warn_mode_delivers_and_logs_rule_warned_without_the_title(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub({"request_recipient": "warn"})
    county, prefecture, province = await connected(
        spokes_at, hub, "jl.cc.nongan", "jl.cc", "jl.gov"
    )

    sealed = await county.send(["jl.cc", "jl.gov"], doc_type=DocType.REQUEST)

    assert (await answer(county, sealed)).status is ReceiptStatus.ACCEPTED
    await delivered_to(county, sealed, prefecture, province)
    (warned,) = events(hub, "rule.warned", sealed.header.msg_id)
    assert warned["level"] == "warning"
    assert warned["rule"] == "request_recipient"
    assert warned["article"] == REQUEST_RECIPIENT.article
    assert warned["sender"] == "jl.cc.nongan"
    assert TITLE not in json.dumps(warned, ensure_ascii=False)
    detail = audit_detail(hub, "message.accepted", sealed.header.msg_id)
    assert detail["rule_warnings"] == [
        {"rule": "request_recipient", "article": REQUEST_RECIPIENT.article}
    ]


async def test_off_mode_delivers_without_a_warning(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub({"request_recipient": "off"})
    county, prefecture, province = await connected(
        spokes_at, hub, "jl.cc.nongan", "jl.cc", "jl.gov"
    )

    sealed = await county.send(["jl.cc", "jl.gov"], doc_type=DocType.REQUEST)

    assert (await answer(county, sealed)).status is ReceiptStatus.ACCEPTED
    await delivered_to(county, sealed, prefecture, province)
    assert not [e for e in hub.log_events() if e.get("event") == "rule.warned"]
    assert "rule_warnings" not in audit_detail(hub, "message.accepted", sealed.header.msg_id)


# ------------------------------------------------------------- 函, 议案, 越级下行, titles


async def test_a_letter_down_the_reporting_line_is_rejected_naming_the_direction(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub()
    (province,) = await connected(spokes_at, hub, "jl.gov")

    sealed = await province.send(["jl.cc"], doc_type=DocType.LETTER)
    entry = await answer(province, sealed)

    assert entry.status is ReceiptStatus.REJECTED
    assert entry.reason == "rule.letter_direction"
    assert "addressed to jl.cc (downward)" in (entry.detail or "")
    assert "use a notice 通知" in (entry.detail or "")
    assert "函主送 jl.cc（长春市人民政府）（下行）" in (entry.detail or "")


async def test_a_motion_reaches_the_congress_of_its_level_and_is_rejected_elsewhere(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub()
    province, congress = await connected(spokes_at, hub, "jl.gov", "jl.congress")

    motion = await province.send(["jl.congress"], doc_type=DocType.MOTION)
    astray = await province.send(["jl.cc"], doc_type=DocType.MOTION)

    assert (await answer(province, motion)).status is ReceiptStatus.ACCEPTED
    await delivered_to(province, motion, congress)
    refused = await answer(province, astray)
    assert refused.status is ReceiptStatus.REJECTED
    assert refused.reason == "rule.motion_recipient"
    assert "address it to jl.congress" in (refused.detail or "")


async def test_a_letter_between_a_government_and_its_congress_is_delivered(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub()
    province, congress = await connected(spokes_at, hub, "jl.gov", "jl.congress")

    sealed = await congress.send(["jl.gov"], doc_type=DocType.LETTER)

    assert (await answer(congress, sealed)).status is ReceiptStatus.ACCEPTED
    await delivered_to(congress, sealed, province)


async def test_a_notice_down_past_a_level_is_delivered_with_a_warning_by_default(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub()
    province, county = await connected(spokes_at, hub, "jl.gov", "jl.cc.nongan")

    sealed = await province.send(["jl.cc.nongan"])

    assert (await answer(province, sealed)).status is ReceiptStatus.ACCEPTED
    await delivered_to(province, sealed, county)
    (warned,) = events(hub, "rule.warned", sealed.header.msg_id)
    assert warned["rule"] == "skip_level_down"
    assert warned["article"] == SKIP_LEVEL_DOWN.article


async def test_a_notice_down_past_a_level_is_rejected_when_the_setting_enforces_it(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub({"skip_level_down": "enforce"})
    (province,) = await connected(spokes_at, hub, "jl.gov")

    skipping = await province.send(["jl.cc.nongan"])
    copied = await province.send(["jl.cc.nongan"], cc=["jl.cc"])

    refused = await answer(province, skipping)
    assert refused.status is ReceiptStatus.REJECTED
    assert refused.reason == "rule.skip_level_down"
    assert "passes over jl.cc, and jl.cc is not copied" in (refused.detail or "")
    assert (await answer(province, copied)).status is ReceiptStatus.ACCEPTED


async def test_the_hub_cannot_see_a_title_so_a_mixed_report_passes_even_when_enforced(
    rules_hub: RulesHub, spokes_at: SpokeMaker
) -> None:
    hub = rules_hub({"request_report_mixed": "enforce"})
    county, prefecture = await connected(spokes_at, hub, "jl.cc.nongan", "jl.cc")

    sealed = await county.send(
        ["jl.cc"], doc_type=DocType.REPORT, title="关于防汛工作情况的报告并请批准追加经费"
    )

    assert (await answer(county, sealed)).status is ReceiptStatus.ACCEPTED
    await delivered_to(county, sealed, prefecture)
    assert not [e for e in hub.log_events() if e.get("rule") == REQUEST_REPORT_MIXED.id]


# ---------------------------------------------------------------------------- large documents


async def test_a_large_document_refused_by_a_rule_is_rejected_before_its_body_is_sent(
    rules_hub: RulesHub, spokes_at: SpokeMaker, tmp_path: Path
) -> None:
    hub = rules_hub()
    county, prefecture = await connected(spokes_at, hub, "jl.cc.nongan", "jl.cc")
    source = tmp_path / "big.bin"
    with source.open("wb") as handle:
        handle.truncate(3 << 20)  # well above what travels inline

    refused = await asyncio.to_thread(
        county.seal_file,
        ["jl.cc", "jl.gov"],
        source,
        tmp_path / "refused.sealed",
        doc_type=DocType.REQUEST,
    )
    await county.send_file(refused, tmp_path / "refused.sealed")
    entry = await answer(county, refused)
    # the same size, valid: the control that shows this hub does ask for a body
    valid = await asyncio.to_thread(
        county.seal_file, ["jl.cc"], source, tmp_path / "valid.sealed", doc_type=DocType.REQUEST
    )
    await county.send_file(valid, tmp_path / "valid.sealed")
    await delivered_to(county, valid, prefecture)

    assert entry.status is ReceiptStatus.REJECTED
    assert entry.reason == "rule.request_recipient"
    assert [m for m, _ in county.resumes if m == refused.header.msg_id] == []
    assert [m for m, _ in county.resumes if m == valid.header.msg_id] != []
    spooled = list((hub.folder / "state" / "spool").glob(f"{msg_id_text(refused.header.msg_id)}*"))
    assert spooled == []


# ---------------------------------------------------------------------------- hubctl route


def hubctl_route(hub: HubProcess, meta: Path, sender: str, *options: str) -> Result:
    args = ["route", str(meta), "--from", sender, "--config", str(hub.folder / "hub.toml")]
    return CliRunner().invoke(hubctl_app, [*args, *options])


def meta_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


REQUEST_TO_TWO = """\
"主送" = "jl.cc, jl.gov"
"密级" = "内部"
"文种" = "请示"
"标题" = "关于申请防汛资金的请示"
"签发人" = "王某"
"""
REPORT_COPIED = """\
"主送" = "jl.gov"
"抄送" = "jl.cc"
"密级" = "内部"
"文种" = "报告"
"标题" = "关于秋粮收购情况的报告"
"签发人" = "王某"
"""


async def test_hubctl_route_prints_the_verdict_and_exits_1_for_a_refused_document(
    rules_hub: RulesHub, tmp_path: Path
) -> None:
    hub = rules_hub(start=False)
    meta = meta_file(tmp_path, "request.meta.toml", REQUEST_TO_TWO)

    result = await asyncio.to_thread(hubctl_route, hub, meta, "jl.cc.nongan")

    assert result.exit_code == 1, result.output
    assert "Nothing is sent" in result.stdout
    assert "jl.cc 长春市人民政府" in result.stdout
    assert "上行 upward" in result.stdout
    assert "govnet" in result.stdout
    assert "request_recipient" in result.stdout
    assert REQUEST_RECIPIENT.article in result.stdout
    assert "verdict: REFUSED (request_recipient)" in result.stdout


async def test_hubctl_route_exits_0_for_a_document_the_hub_would_accept_and_json_parses(
    rules_hub: RulesHub, tmp_path: Path
) -> None:
    hub = rules_hub(start=False)
    meta = meta_file(tmp_path, "report.meta.toml", REPORT_COPIED)

    text = await asyncio.to_thread(hubctl_route, hub, meta, "jl.cc.nongan")
    as_json = await asyncio.to_thread(hubctl_route, hub, meta, "jl.cc.nongan", "--json")

    assert text.exit_code == 0, text.output
    assert "verdict: the hub would accept it" in text.stdout
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["accepted"] is True
    assert [r["recipient"] for r in report["recipients"]] == ["jl.gov", "jl.cc"]
    assert {r["rule"]: r["verdict"] for r in report["rules"]}["skip_level"] == "pass"


async def test_hubctl_route_auto_cc_adds_the_skipped_organ(
    rules_hub: RulesHub, tmp_path: Path
) -> None:
    hub = rules_hub(start=False)
    skipping = REPORT_COPIED.replace('"抄送" = "jl.cc"\n', "")
    meta = meta_file(tmp_path, "report.meta.toml", skipping)

    plain = await asyncio.to_thread(hubctl_route, hub, meta, "jl.cc.nongan")
    auto = await asyncio.to_thread(hubctl_route, hub, meta, "jl.cc.nongan", "--auto-cc")

    assert plain.exit_code == 1, plain.output
    assert "copies --auto-cc would add: jl.cc" in plain.stdout
    assert auto.exit_code == 0, auto.output
    assert "copies added by --auto-cc: jl.cc" in auto.stdout


async def test_hubctl_route_looks_a_replys_request_up_in_the_running_hubs_store(
    rules_hub: RulesHub, spokes_at: SpokeMaker, tmp_path: Path
) -> None:
    hub = rules_hub()
    prefecture, province = await connected(spokes_at, hub, "jl.cc", "jl.gov")
    request = await prefecture.send(["jl.gov"], doc_type=DocType.REQUEST)
    report = await prefecture.send(["jl.gov"], doc_type=DocType.REPORT)
    await delivered_to(prefecture, request, province)
    await delivered_to(prefecture, report, province)

    def reply_to(msg_id: bytes) -> Path:
        return meta_file(
            tmp_path,
            f"reply-{msg_id_text(msg_id)}.meta.json",
            json.dumps(
                {
                    "to": ["jl.cc"],
                    "classification": "INTERNAL",
                    "doc_type": "批复",
                    "title": "关于同意拨付防汛资金的批复",
                    "in_reply_to": msg_id_text(msg_id),
                },
                ensure_ascii=False,
            ),
        )

    answered = await asyncio.to_thread(
        hubctl_route, hub, reply_to(request.header.msg_id), "jl.gov", "--json"
    )
    wrong = await asyncio.to_thread(
        hubctl_route, hub, reply_to(report.header.msg_id), "jl.gov", "--json"
    )

    assert answered.exit_code == 0, answered.output
    verdicts = {r["rule"]: r["verdict"] for r in json.loads(answered.stdout)["rules"]}
    assert verdicts["reply_request"] == "pass"
    assert json.loads(answered.stdout)["in_reply_to_checked"] is True
    assert wrong.exit_code == 1, wrong.output
    assert "not a request" in wrong.stdout


async def test_hubctl_route_says_when_the_store_could_not_be_read(
    rules_hub: RulesHub, tmp_path: Path
) -> None:
    hub = rules_hub(start=False)  # configured, never started: there is no store yet
    meta = meta_file(
        tmp_path,
        "reply.meta.toml",
        f'to = "jl.cc"\nclassification = "INTERNAL"\ndoc_type = "REPLY"\ntitle = "批复"\n'
        f'in_reply_to = "{msg_id_text(new_msg_id())}"\n',
    )

    result = await asyncio.to_thread(hubctl_route, hub, meta, "jl.gov")

    assert result.exit_code == 0, result.output  # the hub decides on arrival
    assert "unchecked here" in result.stdout
    assert "the hub's store could not be read" in result.stdout


async def test_hubctl_route_names_the_problem_and_exits_2_for_an_unknown_sender(
    rules_hub: RulesHub, tmp_path: Path
) -> None:
    hub = rules_hub(start=False)
    meta = meta_file(tmp_path, "report.meta.toml", REPORT_COPIED)

    result = await asyncio.to_thread(hubctl_route, hub, meta, "jl.nowhere")

    assert result.exit_code == 2
    assert "--from jl.nowhere: no such organisation" in result.stderr
