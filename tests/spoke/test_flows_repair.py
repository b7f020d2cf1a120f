"""Recall (撤回) and return (退文) at a recipient after a crash, a refusal by the hub, and
the edges a review found (spoke.flows, spoke.flowfiles).

The spoke records a decision before it moves a folder; a crash between the two leaves the
decision recorded and the folder where it was. That state is made here directly (the
record without the move) and the spoke must finish the move wherever it reads the decision
again: a repeated RECALL (the numbered batch replayed), ``resend()``, the agent's start
(``Flows.repair``), a late copy of the document delivered again. Same offline spokes as
tests/spoke/test_flows.py, the test playing the hub.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from structlog.testing import capture_logs
from typer.testing import CliRunner

from schemas.receipts import ReceiptStatus
from spoke.cli import app
from spoke.flows import Flows
from spoke.receiver import Receiver
from spoke.state import RecallReceived
from spoke.tools import flow_lines
from tests.spoke.conftest import OfflineSpokeFactory
from tests.spoke.test_flows import (
    TO_CC,
    WHY,
    Pair,
    config_file,
    party,
    read_json,
    recalled_entry,
    sent,
)
from tests.spoke.test_tracking import entry, status_json
from tests.world import World


async def sent_keeping_body(offline_spoke: OfflineSpokeFactory, world: World) -> tuple[Pair, bytes]:
    """As test_flows.sent, not delivered yet, with the body the hub keeps to deliver."""
    gov_spoke = offline_spoke("jl.gov")
    gov_spoke.drop("通知.txt", "关于做好冬季供暖工作的通知。\n".encode(), TO_CC)
    await gov_spoke.settle()
    [out] = gov_spoke.outbound()
    body = out.body_path.read_bytes()  # the sender's copy goes at ACCEPTED
    pair = Pair(
        party(gov_spoke, out.channel), party(offline_spoke("jl.cc"), out.channel), out, world
    )
    await pair.gov.take(pair.hub(entry(out, ReceiptStatus.ACCEPTED, None)))
    return pair, body


async def deliver(pair: Pair, body: bytes) -> None:
    await pair.cc.receiver.envelope(pair.out.channel, pair.out.frame, body)


async def recall_frame(pair: Pair) -> bytes:
    """jl.gov's signed RECALL, as the hub forwards it (not taken yet)."""
    await pair.gov.request("recall", pair.name, WHY)
    [frame] = pair.gov.new_frames()
    return frame


def crashed_after_recording(pair: Pair, decision: str) -> RecallReceived:
    """What a crash leaves at jl.cc between recording its decision and moving the folder:
    the decision in state.db, the folder untouched, nothing said."""
    state = pair.cc.spoke.ctx.state
    row = state.inbound(pair.out.msg_id)
    assert row is not None
    now = pair.cc.spoke.ctx.clock()
    recall = RecallReceived(
        pair.out.msg_id, "jl.gov", hashlib.sha256(pair.out.frame).digest(), row[1],
        row[4], WHY, now, decision, None, None if decision == "pending" else now,
    )  # fmt: skip
    state.add_recall_received(recall)
    return recall


def inbox(pair: Pair) -> Path:
    return pair.cc.root / "inbox" / pair.name


def recalled(pair: Pair) -> Path:
    return pair.cc.root / "recalled" / pair.name


def said(pair: Pair) -> list[ReceiptStatus]:
    return [pair.cc.batch(f).entries[0].status for f in pair.cc.new_frames()]


# ---------------------------------------------------------------- 1. crash safety of filing


async def test_a_repeated_recall_files_a_withdrawn_document_a_crash_left_in_the_inbox(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    frame = await recall_frame(pair)
    crashed_after_recording(pair, "withdrawn")

    await pair.cc.take(frame)  # the numbered batch, replayed after the restart's hello

    assert not inbox(pair).exists()
    assert read_json(recalled(pair) / "recall.json")["decision"] == "withdrawn"
    assert (recalled(pair) / "recall.txt").is_file()
    assert (recalled(pair) / "通知.txt").is_file()
    assert said(pair) == [ReceiptStatus.WITHDRAWN]
    assert not await pair.cc.receiver.sign_for(pair.out.msg_id)


async def test_resend_files_a_withdrawn_document_a_crash_left_in_the_inbox(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    crashed_after_recording(pair, "withdrawn")

    await pair.cc.flows.resend()  # at the reconnection, or a minute later

    assert not inbox(pair).exists()
    assert read_json(recalled(pair) / "recall.json")["decision"] == "withdrawn"
    assert said(pair) == [ReceiptStatus.WITHDRAWN]


async def test_the_start_repair_files_withdrawn_and_accepted_documents_still_in_the_inbox(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    crashed_after_recording(pair, "accepted")
    flows = Flows(pair.cc.spoke.ctx, Receiver(pair.cc.spoke.ctx), pair.cc.spoke.sender)

    flows.repair()  # as the agent does at start, before any link

    assert not inbox(pair).exists()
    assert read_json(recalled(pair) / "recall.json")["decision"] == "accepted"
    row = pair.cc.spoke.ctx.state.inbound(pair.out.msg_id)
    assert row is not None
    assert Path(row[2]) == recalled(pair)
    flows.repair()  # again: nothing moves twice, nothing fails
    assert (recalled(pair) / "通知.txt").is_file()


async def test_a_pending_recall_a_crash_left_without_recall_json_gets_it_when_read_again(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    assert await pair.cc.receiver.sign_for(pair.out.msg_id)
    frame = await recall_frame(pair)
    crashed_after_recording(pair, "pending")
    assert not (inbox(pair) / "recall.json").exists()

    await pair.cc.take(frame)  # the replayed batch
    assert read_json(inbox(pair) / "recall.json")["decision"] == "pending"
    assert said(pair) == []  # still waiting for the organisation's answer

    (inbox(pair) / "recall.json").unlink()  # the same crash, found at the agent's start
    pair.cc.flows.repair()
    assert read_json(inbox(pair) / "recall.json")["decision"] == "pending"


async def test_a_late_copy_of_a_recalled_document_a_crash_left_in_the_inbox_is_filed(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair, body = await sent_keeping_body(offline_spoke, world)
    await deliver(pair, body)
    # recalled before it came; the copy written and recorded, then the crash before the move
    crashed_after_recording(pair, "withdrawn")
    assert inbox(pair).is_dir()

    await deliver(pair, body)  # the hub sends it again: no DELIVERED was heard

    assert not inbox(pair).exists()
    assert read_json(recalled(pair) / "recall.json")["decision"] == "withdrawn"


async def test_sign_for_is_refused_for_a_document_its_sender_withdrew(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    crashed_after_recording(pair, "withdrawn")
    assert inbox(pair).is_dir()  # not filed yet
    assert not await pair.cc.receiver.sign_for(pair.out.msg_id)
    assert pair.cc.spoke.ctx.state.inbound(pair.out.msg_id)[5] is None  # type: ignore[index]


# ---------------------------------------------------------------- 5. signed for, moved away


async def test_a_signed_for_document_its_system_moved_away_waits_for_an_answer_in_recalled(
    offline_spoke: OfflineSpokeFactory, world: World, tmp_path: Path
) -> None:
    pair = await sent(offline_spoke, world)
    assert await pair.cc.receiver.sign_for(pair.out.msg_id)
    shutil.move(inbox(pair), tmp_path / "the-document-system")  # taken into its own store
    await pair.gov.request("recall", pair.name, WHY)

    await pair.forward(pair.gov, pair.cc)

    assert said(pair) == []  # not WITHDRAWN: it was signed for, the organisation answers
    record = read_json(recalled(pair) / "recall.json")
    assert (record["decision"], record["reason"]) == ("pending", WHY)
    recall = pair.cc.spoke.ctx.state.recall_received(pair.out.msg_id)
    assert recall is not None
    assert recall.decision == "pending"

    await pair.cc.request("recall-answers", f"{pair.name}.refuse", "已归档办理")
    assert read_json(recalled(pair) / "recall.json")["decision"] == "refused"
    assert said(pair) == [ReceiptStatus.RECALL_REFUSED]


# ---------------------------------------------------------------- 6. recall before document


async def test_a_recall_before_its_document_gives_recall_json_the_senders_reason(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair, body = await sent_keeping_body(offline_spoke, world)
    await pair.gov.request("recall", pair.name, WHY)
    with capture_logs() as logs:
        await pair.forward(pair.gov, pair.cc)
        await deliver(pair, body)
    assert not inbox(pair).exists()
    assert read_json(recalled(pair) / "recall.json")["reason"] == WHY
    assert WHY in (recalled(pair) / "recall.txt").read_text(encoding="utf-8")
    kept = pair.cc.spoke.ctx.state.recall_received(pair.out.msg_id)
    assert kept is not None
    assert (kept.reason, kept.note) == (WHY, None)
    assert not any(e["event"] == "flow.no_note_key" for e in logs)
    assert WHY not in json.dumps(logs, ensure_ascii=False, default=str)


# ---------------------------------------------------------------- 3. the hub refuses ours


async def refused_by_hub(pair: Pair, status: ReceiptStatus, reason: str) -> None:
    """The hub's REFUSED of the statement jl.cc published last."""
    [frame] = pair.cc.new_frames()
    assert pair.cc.batch(frame).entries[0].status is status
    refusal = entry(
        pair.out,
        ReceiptStatus.REFUSED,
        "jl.cc",
        subject=hashlib.sha256(frame).digest(),
        reason=reason,
        detail="jl.cc's delivery of this message was recalled",
    )
    await pair.cc.take(pair.hub(refusal))


async def test_a_return_the_hub_refuses_goes_back_to_the_inbox_with_an_error_file(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    because = "附件缺失"
    await pair.cc.request("return", pair.name, because)
    assert (pair.cc.root / "sentback" / pair.name / "return.json").is_file()

    with capture_logs() as logs:
        await refused_by_hub(pair, ReceiptStatus.RETURNED, "flow.not_received")

    assert not (pair.cc.root / "sentback" / pair.name).exists()
    assert (inbox(pair) / "通知.txt").is_file()
    assert not (inbox(pair) / "return.json").exists()
    error = read_json(inbox(pair) / "return.error.json")
    assert (error["rule"], error["where"]) == ("flow.not_received", "inbox")
    assert error["return"]["reason"] == because
    zh, en = (inbox(pair) / "return.error.txt").read_text(encoding="utf-8").splitlines()
    assert "flow.not_received" in zh
    assert "退文未成功" in zh
    assert "refused" in en
    assert any(e["event"] == "return.refused" for e in logs)
    assert because not in json.dumps(logs, ensure_ascii=False, default=str)
    assert await pair.cc.receiver.sign_for(pair.out.msg_id)  # an inbox document again
    lines = flow_lines(pair.cc.spoke.ctx.state, pair.name)
    assert any("RETURNED was refused by the hub (flow.not_received)" in line for line in lines)


async def test_a_refused_return_whose_inbox_folder_is_taken_leaves_the_error_in_sentback(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    await pair.cc.request("return", pair.name, "附件缺失")
    inbox(pair).mkdir()  # something else took the name meanwhile
    await refused_by_hub(pair, ReceiptStatus.RETURNED, "flow.not_received")
    back = pair.cc.root / "sentback" / pair.name
    assert read_json(back / "return.error.json")["where"] == "sentback"
    assert (back / "return.error.txt").is_file()


async def test_a_refused_recall_answer_is_logged_and_shown_by_spoke_status(
    offline_spoke: OfflineSpokeFactory, world: World, tmp_path: Path
) -> None:
    pair = await sent(offline_spoke, world)
    await pair.gov.request("recall", pair.name, WHY)
    await pair.forward(pair.gov, pair.cc)
    with capture_logs() as logs:
        await refused_by_hub(pair, ReceiptStatus.WITHDRAWN, "flow.not_recalled")
    [warned] = [e for e in logs if e["event"] == "flow.refused"]
    assert (warned["status"], warned["reason"]) == ("WITHDRAWN", "flow.not_recalled")
    result = CliRunner().invoke(
        app, ["status", pair.name, "--config", str(config_file(pair.cc.spoke, tmp_path))]
    )
    assert "WITHDRAWN was refused by the hub (flow.not_recalled)" in result.output
    assert "被枢纽驳回" in result.output


# ---------------------------------------------------------------- 7. the hub's answers


async def test_a_refusal_after_the_hub_recorded_the_recall_leaves_it_recorded(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    frame = await recall_frame(pair)
    await pair.gov.take(pair.hub(recalled_entry(pair, None)))
    late = entry(
        pair.out,
        ReceiptStatus.REFUSED,
        None,
        subject=hashlib.sha256(frame).digest(),
        reason="flow.not_sender",
        detail="late",
    )
    pair.gov.flows._from_hub(late)
    recall = pair.gov.spoke.ctx.state.recall_sent(pair.out.msg_id)
    assert recall is not None
    assert recall.hub == "RECORDED"


# ---------------------------------------------------------------- 2. recalled, then its word


async def test_a_recipient_the_hub_stopped_that_had_the_copy_is_shown_with_its_own_answer(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    assert await pair.cc.receiver.sign_for(pair.out.msg_id)
    await pair.gov.request("recall", pair.name, WHY)
    # the hub stopped jl.cc's SENT delivery, which had reached it all the same
    await pair.gov.take(pair.hub(recalled_entry(pair, None), recalled_entry(pair, "jl.cc")))
    await pair.forward(pair.gov, pair.cc)
    keep = "已按此文部署"
    await pair.cc.request("recall-answers", f"{pair.name}.refuse", keep)
    await pair.forward(pair.cc, pair.gov)
    mine = status_json(pair.gov.spoke, pair.out)["recipients"]["jl.cc"]
    assert (mine["recall"], mine["recall_note"]) == ("refused", keep)
    assert mine["delivery_stopped"] is True  # still not waited for in the overall status


# ---------------------------------------------------------------- 8. commands and requests


async def test_the_recall_answer_command_refuses_a_refusal_after_an_acceptance(
    offline_spoke: OfflineSpokeFactory, world: World, tmp_path: Path
) -> None:
    pair = await sent(offline_spoke, world)
    assert await pair.cc.receiver.sign_for(pair.out.msg_id)
    await pair.gov.request("recall", pair.name, WHY)
    await pair.forward(pair.gov, pair.cc)
    await pair.cc.request("recall-answers", f"{pair.name}.accept")
    config = str(config_file(pair.cc.spoke, tmp_path))
    result = CliRunner().invoke(
        app, ["recall-answer", pair.name, "--refuse", "--reason", "仍需办理", "--config", config]
    )
    assert result.exit_code == 2
    assert "flow.not_recalled" in result.output
    assert "accepted" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (pair.cc.root / "recall-answers" / f"{pair.name}.refuse").exists()


async def test_a_return_request_run_again_after_the_move_is_taken_as_done(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    await pair.cc.request("return", pair.name, "附件缺失")
    assert said(pair) == [ReceiptStatus.RETURNED]
    # the crash between the move and the request's removal: the request is there again
    request = await pair.cc.request("return", pair.name, "附件缺失")
    assert not request.exists()
    assert not (request.parent / f"{pair.name}.error.txt").exists()
    assert said(pair) == []  # not returned twice


async def test_a_return_while_the_spoke_may_not_send_waits_in_the_inbox(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    pair = await sent(offline_spoke, world)
    ctx = pair.cc.spoke.ctx
    verified = ctx.verified
    assert verified is not None
    ctx.verified = None  # no directory in use: the spoke signs nothing (fail closed)
    request = await pair.cc.request("return", pair.name, "附件缺失")
    assert request.exists()  # kept for a later scan
    assert inbox(pair).is_dir()
    ctx.verified = verified
    await pair.cc.flows.requests()
    assert not request.exists()
    assert (pair.cc.root / "sentback" / pair.name / "return.json").is_file()
    assert said(pair) == [ReceiptStatus.RETURNED]
