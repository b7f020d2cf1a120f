"""Reports of handling (办理) and the hub's reminders (催办) at the spokes (spoke.flows,
spoke.handling), against the hub's contract.

The same offline pair as tests/spoke/test_flows.py: jl.gov sends to jl.cc, the test plays
the hub, forwarding jl.cc's signed reports unchanged to jl.gov and sending both its own
hub-signed REMINDED and REFUSED.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from schemas.notes import open_note
from schemas.receipts import ReceiptEntry, ReceiptStatus
from spoke.cli import app
from spoke.handling import HANDLING_JSON, REMINDERS_JSON
from spoke.tools import flow_lines
from spoke.tracking import later_handling, overdue
from tests.spoke.conftest import OfflineSpokeFactory
from tests.spoke.test_flows import Pair, config_file, party, read_json, sent
from tests.spoke.test_tracking import entry, status_json
from tests.world import World

ANSWERED = "已于本月答复群众，见复函"  # a comment: never in a log
TITLE = "关于做好冬季供暖工作的通知"
HOUR = 3_600_000


# ---------------------------------------------------------------- pure tables


@pytest.mark.parametrize(
    ("reports", "held"),
    [
        (["READ"], "READ"),
        (["READ", "HANDLING", "DONE"], "DONE"),
        (["DONE", "READ"], "DONE"),  # a late 已阅 after 办结 leaves 办结
        (["DONE", "HANDLING"], "DONE"),
        (["HANDLING", "CASE_ACCEPTED"], "CASE_ACCEPTED"),  # equal rank: the later one
        (["CASE_ACCEPTED", "CASE_DECLINED"], "CASE_DECLINED"),
        (["CASE_DECLINED", "DONE"], "DONE"),
        (["DONE", "CASE_ACCEPTED"], "DONE"),
    ],
)
def test_a_recipients_handling_never_goes_back(reports: list[str], held: str) -> None:
    now: str | None = None
    for report in reports:
        now = later_handling(now, report)
    assert now == held


def test_a_deadline_is_overdue_once_passed_and_unmet_and_never_for_a_stopped_delivery() -> None:
    deadlines = {"sign_by": 100, "accept_by": 100, "done_by": 300}
    assert overdue(deadlines, "DELIVERED", None, now=200, stopped=False) == {
        "sign_by": True,
        "accept_by": True,
        "done_by": False,
    }
    assert overdue(deadlines, "SIGNED_FOR", "CASE_ACCEPTED", now=400, stopped=False) == {
        "sign_by": False,
        "accept_by": False,
        "done_by": True,
    }
    assert overdue(deadlines, "SIGNED_FOR", "CASE_DECLINED", now=400, stopped=False) == {
        "sign_by": False,
        "accept_by": False,
        "done_by": False,
    }
    assert not any(overdue(deadlines, "PENDING", None, now=400, stopped=True).values())


# ---------------------------------------------------------------- the pair


def meta(doc_type: str, terms: str = "") -> str:
    return (
        f'to = "jl.cc"\nclassification = "内部"\ndoc_type = "{doc_type}"\ntitle = "{TITLE}"\n'
        + terms
    )


async def sent_as(
    offline_spoke: OfflineSpokeFactory, world: World, metadata: str, *, delivered: bool = True
) -> tuple[Pair, bytes]:
    """As test_flows.sent, with this metadata (a petition, deadlines), and the body the hub
    keeps to deliver (the sender's copy goes at ACCEPTED)."""
    gov_spoke = offline_spoke("jl.gov")
    gov_spoke.drop("来信.txt", "群众来信一件。\n".encode(), metadata)
    await gov_spoke.settle()
    [out] = gov_spoke.outbound()
    body = out.body_path.read_bytes()
    pair = Pair(
        party(gov_spoke, out.channel), party(offline_spoke("jl.cc"), out.channel), out, world
    )
    if delivered:
        await pair.deliver()
    await pair.gov.take(pair.hub(entry(out, ReceiptStatus.ACCEPTED, None)))
    return pair, body


def reminded(pair: Pair, deadline: str, at: int | None = None) -> ReceiptEntry:
    more = {} if at is None else {"at": at}
    return entry(
        pair.out,
        ReceiptStatus.REMINDED,
        "jl.cc",
        reason=f"deadline.{deadline}",
        detail=f"催办：{deadline} 将到 / reminder: the {deadline} deadline is near",
        **more,
    )


def logged(logs: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(logs, ensure_ascii=False, default=str)


# ---------------------------------------------------------------- reporting


async def test_a_report_by_command_sends_a_signed_done_whose_comment_opens(
    offline_spoke: OfflineSpokeFactory, world: World, tmp_path: Path
) -> None:
    pair = await sent(offline_spoke, world)
    cc = pair.cc
    await cc.receiver.flush()  # its DELIVERED
    await pair.forward(cc, pair.gov)
    config = str(config_file(cc.spoke, tmp_path))
    result = CliRunner().invoke(
        app, ["report", pair.name, "--status", "办结", "--comment", ANSWERED, "--config", config]
    )
    assert result.exit_code == 0, result.output
    request = cc.root / "reports" / f"{pair.name}.done"
    assert request.read_text(encoding="utf-8") == ANSWERED
    with capture_logs() as logs:
        await cc.flows.requests()
    assert not request.exists()
    [frame] = cc.new_frames()
    batch = cc.batch(frame)
    assert (batch.v, len(batch.entries)) == (2, 1)
    [done] = batch.entries
    assert (done.status, done.msg_id, done.recipient) == (
        ReceiptStatus.DONE,
        pair.out.msg_id,
        "jl.cc",
    )
    assert done.subject == hashlib.sha256(pair.out.frame).digest()
    assert done.note is not None
    key = pair.gov.spoke.ctx.state.note_key(pair.out.msg_id)
    assert key is not None
    opened = open_note(key, done.note, msg_id=pair.out.msg_id, status="DONE", issuer="jl.cc")
    assert opened == ANSWERED
    handling = read_json(cc.root / "inbox" / pair.name / HANDLING_JSON)
    assert (handling["status"], handling["status_zh"], handling["comment"]) == (
        "DONE",
        "办结",
        ANSWERED,
    )
    assert handling["refused"] is None
    assert ANSWERED not in logged(logs)
    assert any(e["event"] == "report.sent" for e in logs)

    with capture_logs() as logs:
        await pair.gov.take(frame)  # forwarded unchanged by the hub
    mine = status_json(pair.gov.spoke, pair.out)["recipients"]["jl.cc"]
    assert mine["handling"]["status"] == "DONE"
    assert mine["handling"]["status_zh"] == "办结"
    assert mine["handling"]["comment"] == ANSWERED
    assert [r["status"] for r in mine["reports"]] == ["DONE"]
    assert mine["status"] == "DELIVERED"  # the transport status is its own
    assert ANSWERED not in logged(logs)
    assert any("handling at jl.cc: 办结 DONE" in line for line in flow_lines(
        pair.gov.spoke.ctx.state, pair.name
    ))  # fmt: skip


async def test_a_report_by_file_named_in_chinese_sends_it_and_removes_the_file(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    comment = "已阅，转各科室办理"
    with capture_logs() as logs:
        request = await pair.cc.request("reports", f"{pair.name}.已阅", comment + "\n")
    assert not request.exists()
    assert comment not in logged(logs)
    [read] = await pair.forward(pair.cc, pair.gov)
    [said] = read.entries
    assert (said.status, said.recipient) == (ReceiptStatus.READ, "jl.cc")
    assert said.subject == hashlib.sha256(pair.out.frame).digest()
    key = pair.cc.spoke.ctx.state.note_key(pair.out.msg_id)
    assert key is not None
    assert said.note is not None
    assert open_note(key, said.note, msg_id=pair.out.msg_id, status="READ", issuer="jl.cc") == (
        comment
    )
    handling = read_json(pair.cc.root / "inbox" / pair.name / HANDLING_JSON)
    assert (handling["status"], handling["comment"]) == ("READ", comment)
    mine = status_json(pair.gov.spoke, pair.out)["recipients"]["jl.cc"]
    assert (mine["handling"]["status"], mine["handling"]["comment"]) == ("READ", comment)

    await pair.cc.request("reports", f"{pair.name}.办理中")  # no comment: no note
    [handling_now] = await pair.forward(pair.cc, pair.gov)
    assert handling_now.entries[0].status is ReceiptStatus.HANDLING
    assert handling_now.entries[0].note is None


async def test_a_late_read_after_done_leaves_done_in_the_senders_status_json(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    await pair.cc.request("reports", f"{pair.name}.done", ANSWERED)
    await pair.cc.request("reports", f"{pair.name}.READ", "")  # any case
    await pair.forward(pair.cc, pair.gov)
    mine = status_json(pair.gov.spoke, pair.out)["recipients"]["jl.cc"]
    assert mine["handling"]["status"] == "DONE"
    assert mine["handling"]["comment"] == ANSWERED
    assert [r["status"] for r in mine["reports"]] == ["DONE", "READ"]
    # the recipient's own handling.json shows what it said last
    assert read_json(pair.cc.root / "inbox" / pair.name / HANDLING_JSON)["status"] == "READ"


async def test_accepting_a_document_that_is_not_a_petition_is_refused_at_the_spoke(
    offline_spoke: OfflineSpokeFactory, world: World, tmp_path: Path
) -> None:
    pair = await sent(offline_spoke, world)  # a 通知
    config = str(config_file(pair.cc.spoke, tmp_path))
    result = CliRunner().invoke(app, ["report", pair.name, "--status", "受理", "--config", config])
    assert result.exit_code == 2
    assert "flow.not_a_petition" in result.output
    assert "信访件" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not any((pair.cc.root / "reports").iterdir())

    request = await pair.cc.request("reports", f"{pair.name}.case_declined", "不属本机关职责")
    assert not request.exists()
    error = (request.parent / f"{request.name}.error.txt").read_text(encoding="utf-8")
    assert "flow.not_a_petition" in error
    assert pair.cc.new_frames() == []


async def test_a_petition_is_accepted_and_its_sender_sees_the_terms_it_set(
    offline_spoke: OfflineSpokeFactory, world: World, tmp_path: Path
) -> None:
    terms = '"信访件编号" = "吉信〔2026〕0815号"\n"受理时限" = "15天"\n"办理时限" = "60天"\n'
    pair, _ = await sent_as(offline_spoke, world, meta("信访件", terms))
    config = str(config_file(pair.cc.spoke, tmp_path))
    result = CliRunner().invoke(
        app, ["report", pair.name, "--status", "case_accepted", "--config", config]
    )
    assert result.exit_code == 0, result.output
    await pair.cc.flows.requests()
    [accepted] = await pair.forward(pair.cc, pair.gov)
    assert accepted.entries[0].status is ReceiptStatus.CASE_ACCEPTED
    status = status_json(pair.gov.spoke, pair.out)
    assert status["terms"]["case"] == "吉信〔2026〕0815号"
    assert status["terms"]["accept_by"] is not None
    assert status["terms"]["sign_by"] is None
    mine = status["recipients"]["jl.cc"]
    assert mine["handling"]["status_zh"] == "受理"
    assert mine["overdue"] == {"accept_by": False, "done_by": False}


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("SENT", "flow.bad_request"),  # no status named
        ("SENT.maybe", "flow.bad_request"),
        ("0" * 32 + ".done", "flow.not_received"),
        ("not-a-msg-id.done", "flow.bad_request"),
    ],
)
async def test_a_report_that_cannot_be_made_gets_an_error_file_and_is_removed(
    offline_spoke: OfflineSpokeFactory, world: World, name: str, rule: str
) -> None:
    pair = await sent(offline_spoke, world)
    name = name.replace("SENT", pair.name)
    request = await pair.cc.request("reports", name, "")
    assert not request.exists()
    zh, en = (request.parent / f"{name}.error.txt").read_text(encoding="utf-8").splitlines()
    assert rule in zh
    assert rule in en
    assert en.isascii()
    assert pair.cc.new_frames() == []


async def test_a_report_the_hub_refuses_is_shown_in_handling_json_and_spoke_status(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    cc = pair.cc
    await cc.request("reports", f"{pair.name}.done", ANSWERED)
    [frame] = cc.new_frames()
    detail = "jl.cc cannot report DONE on this message: its sender recalled it"
    refused = entry(
        pair.out,
        ReceiptStatus.REFUSED,
        "jl.cc",
        subject=hashlib.sha256(frame).digest(),
        reason="flow.not_received",
        detail=detail,
    )
    with capture_logs() as logs:
        await cc.take(pair.hub(refused))
    assert any(e["event"] == "flow.refused" and e["log_level"] == "warning" for e in logs)
    handling = read_json(cc.root / "inbox" / pair.name / HANDLING_JSON)
    assert handling["status"] == "DONE"
    assert handling["comment"] == ANSWERED  # what was asked for is still there to read
    assert handling["refused"]["reason"] == "flow.not_received"
    assert handling["refused"]["detail"] == detail
    assert handling["refused"]["what_zh"]
    lines = flow_lines(cc.spoke.ctx.state, pair.name)
    assert any("flow.not_received" in line and "DONE" in line for line in lines)


# ---------------------------------------------------------------- reminders


async def test_a_reminder_to_the_late_recipient_goes_into_its_reminders_json_once(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair, _ = await sent_as(offline_spoke, world, meta("通知", '"办理时限" = "3天"\n'))
    reminder = pair.hub(reminded(pair, "done_by"))
    with capture_logs() as logs:
        await pair.cc.take(reminder)
        await pair.cc.take(reminder)  # a numbered batch replayed after a hello
    [said] = read_json_list(pair.cc.root / "inbox" / pair.name / REMINDERS_JSON)
    assert said["deadline"] == "done_by"
    assert said["deadline_zh"] == "办理时限"
    assert "催办" in said["detail"]
    events = [e for e in logs if e["event"] == "deadline.reminded"]
    assert len(events) == 1
    assert events[0]["log_level"] == "info"
    assert events[0]["deadline"] == "done_by"
    assert TITLE not in logged(logs)
    assert "催办" not in logged(logs)  # the hub's sentence stays in the file
    lines = flow_lines(pair.cc.spoke.ctx.state, pair.name)
    assert any(line.startswith("reminded (催办) jl.cc of done_by") for line in lines)
    assert pair.cc.new_frames() == []  # a reminder is not answered


async def test_a_reminder_that_comes_before_its_document_is_written_when_it_arrives(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    terms = meta("通知", '"签收时限" = "2小时"\n')
    pair, body = await sent_as(offline_spoke, world, terms, delivered=False)
    await pair.cc.take(pair.hub(reminded(pair, "sign_by")))
    assert not (pair.cc.root / "inbox" / pair.name).exists()
    await pair.cc.receiver.envelope(pair.out.channel, pair.out.frame, body)
    [said] = read_json_list(pair.cc.root / "inbox" / pair.name / REMINDERS_JSON)
    assert said["deadline"] == "sign_by"


async def test_a_reminder_about_a_late_recipient_goes_into_the_senders_status_json(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair, _ = await sent_as(offline_spoke, world, meta("通知", '"签收时限" = "1小时"\n'))
    gov = pair.gov
    status = status_json(gov.spoke, pair.out)
    assert status["terms"]["sign_by"] is not None
    assert status["recipients"]["jl.cc"]["overdue"] == {"sign_by": False}

    late = pair.out.created_at + 2 * HOUR
    gov.spoke.ctx.clock = lambda: late  # the deadline has passed
    with capture_logs() as logs:
        await gov.take(pair.hub(reminded(pair, "sign_by", at=late)))
    mine = status_json(gov.spoke, pair.out)["recipients"]["jl.cc"]
    assert [r["deadline"] for r in mine["reminders"]] == ["sign_by"]
    assert mine["overdue"] == {"sign_by": True}
    assert any(e["event"] == "deadline.reminded" and e["recipient"] == "jl.cc" for e in logs)

    assert await pair.cc.receiver.sign_for(pair.out.msg_id)  # 签收, late
    await pair.cc.receiver.flush()
    await pair.forward(pair.cc, gov)
    assert status_json(gov.spoke, pair.out)["recipients"]["jl.cc"]["overdue"] == {"sign_by": False}


def read_json_list(path: Path) -> list[dict[str, Any]]:
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, list)
    return loaded


async def test_a_reply_to_a_request_counts_as_handled_in_the_requesters_status_json(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    cc_spoke = offline_spoke("jl.cc")
    asking = (
        'to = "jl.gov"\nclassification = "内部"\ndoc_type = "请示"\nsignatory = "王某"\n'
        'title = "关于增拨供暖经费的请示"\n"办理时限" = "1小时"\n'
    )
    cc_spoke.drop("请示.txt", "请予批准。\n".encode(), asking)
    await cc_spoke.settle()
    [request] = cc_spoke.outbound()
    asked = Pair(
        party(cc_spoke, request.channel),
        party(offline_spoke("jl.gov"), request.channel),
        request,
        world,
    )
    await asked.deliver()
    await asked.gov.take(asked.hub(entry(request, ReceiptStatus.ACCEPTED, None)))
    gov = asked.cc.spoke  # the one asked (the Pair's second party)
    answer = (
        'to = "jl.cc"\nclassification = "内部"\ndoc_type = "批复"\n'
        'title = "关于增拨供暖经费的批复"\n'
        f'in_reply_to = "{request.msg_id.hex()}"\n'
    )
    gov.drop("批复.txt", "同意。\n".encode(), answer)
    await gov.settle()
    [reply] = gov.outbound()
    replied: list[bytes] = []
    asked.gov.receiver.on_reply = replied.append
    await asked.gov.receiver.envelope(reply.channel, reply.frame, reply.body_path.read_bytes())
    assert replied == [request.msg_id]  # the agent rewrites the request's status.json

    cc_spoke.ctx.clock = lambda: request.created_at + 2 * HOUR  # done_by has passed
    cc_spoke.sender.status.write(request.msg_id)
    mine = status_json(cc_spoke, request)["recipients"]["jl.gov"]
    assert mine["replied"]["msg_id"] == reply.msg_id.hex()
    assert mine["overdue"] == {"done_by": False}
