"""Reports of handling (办理) and the hub's reminders (催办): what the integrators' systems
read, and which report a recipient may make.

As a recipient, the spoke reports what it did with a document it received: 已阅 READ,
办理中 HANDLING, 办结 DONE and, on a petition (信访件), 受理 CASE_ACCEPTED or 不予受理
CASE_DECLINED, each with an optional comment sealed for the document's parties (the result:
"answered by <msg_id>"). :func:`report_refusal` says which it may make (the agent and the
``spoke report`` command judge alike); ``inbox/<msg_id>/handling.json`` holds the latest it
made, and the hub's refusal of it (:func:`write_handling`, :func:`handling_refused`).

The hub reminds a late recipient of a deadline of the document's terms (before it, when it
is due, and while it is overdue), numbered to that recipient and to the sender
(:func:`take_reminder`). The late recipient's spoke keeps each in
``inbox/<msg_id>/reminders.json``, which its document system watches
(:func:`write_reminders`); the sender's status.json lists them per recipient.

Every file is an atomic write, each function blocking (call it in a worker thread). Logs
name the document, the organisation, the status and the deadline, never a comment or a
title.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import structlog

from schemas import codec
from schemas.clock import ms_to_text
from schemas.envelope import Header, read_frame_sender
from schemas.errors import Reason
from schemas.ids import msg_id_text
from schemas.receipts import ReceiptEntry, ReceiptStatus
from schemas.terms import Terms
from spoke.config import SpokeConfig
from spoke.context import SpokeContext
from spoke.files import write_json
from spoke.flowrequests import RequestRefusedError
from spoke.inbox import META
from spoke.refusals import hub_reason_zh
from spoke.state import SpokeState

log = structlog.get_logger("spoke.flows")
HANDLING_JSON, REMINDERS_JSON = "handling.json", "reminders.json"
PETITION_ONLY = frozenset({ReceiptStatus.CASE_ACCEPTED, ReceiptStatus.CASE_DECLINED})
DEADLINES = ("sign_by", "accept_by", "done_by")
_DEADLINE_ZH = {"sign_by": "签收时限", "accept_by": "受理时限", "done_by": "办理时限"}


def report_refusal(
    config: SpokeConfig, state: SpokeState, msg_id: bytes, status: ReceiptStatus
) -> None:
    """Raise RequestRefusedError if this spoke cannot report ``status`` on ``msg_id``: it
    must have received it, hold it in ``inbox/`` (or have signed for it: its system may
    have taken the folder away), not have returned it, and its sender must not have
    recalled it (the hub refuses a report then: flow.not_received); 受理 and 不予受理 only
    on a petition (flow.not_a_petition)."""
    shown = msg_id_text(msg_id)
    row = state.inbound(msg_id)
    held = row is not None and (config.folder("inbox") / shown).is_dir()
    why_zh = why_en = None
    if row is None:
        why_zh, why_en = "本机没有收到此文件", "this spoke never received it"
    elif state.recall_received(msg_id) is not None:
        why_zh, why_en = "发文机关已撤回此文件", "its sender recalled it"
    elif Path(row[2]).parent.name == "sentback":
        why_zh, why_en = "此文件已退文", "this organisation returned it"
    elif not held and row[5] is None:
        why_zh = "收件箱中没有此文件，也未签收"
        why_en = "it is not in inbox/ and was not signed for"
    if why_zh is not None or why_en is not None:
        raise RequestRefusedError(
            Reason.FLOW_NOT_RECEIVED.value,
            f"不能报告 {shown} 的办理情况（{status.zh}）：{why_zh}。"
            "只能报告收件箱中（或已签收）的文件",
            f"cannot report {status.value} on {shown}: {why_en}; only a document in inbox/ "
            "(or signed for) is reported on",
        )
    if status in PETITION_ONLY:
        doc_type = received_doc_type(state, msg_id)
        if doc_type != "PETITION":
            raise RequestRefusedError(
                Reason.FLOW_NOT_PETITION.value,
                f"{shown} 不是信访件（文种：{doc_type or '未知'}），无所谓{status.zh}："
                "请改报已阅、办理中或办结",
                f"{shown} is not a petition (信访件; its doc_type is {doc_type or 'unknown'}): "
                f"it is not {status.value}; report READ, HANDLING or DONE",
            )


def received_doc_type(state: SpokeState, msg_id: bytes) -> str | None:
    """A received document's doc_type: as recorded when it came, else (received before the
    spoke recorded it) as its meta.json says."""
    kept = state.inbound_doc_type(msg_id)
    if kept is not None:
        return kept
    row = state.inbound(msg_id)
    if row is None:
        return None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        meta = json.loads((Path(row[2]) / META).read_text(encoding="utf-8"))
        return str(meta["doc_type"]) if isinstance(meta.get("doc_type"), str) else None
    return None


def _folder(ctx: SpokeContext, msg_id: bytes) -> Path | None:
    """Where a received document lies now (None: not here, or taken away by its system)."""
    row = ctx.state.inbound(msg_id)
    if row is None:
        return None
    folder = Path(row[2])
    return folder if folder.is_dir() else None


def write_handling(
    ctx: SpokeContext, msg_id: bytes, status: ReceiptStatus, at: int, comment: str | None
) -> Path | None:
    """``handling.json`` in the received document's folder: the latest report this
    organisation made (the file, or None if the folder is no longer here)."""
    folder = _folder(ctx, msg_id)
    if folder is None:
        return None
    record: dict[str, Any] = {
        "msg_id": msg_id_text(msg_id),
        "status": status.value,
        "status_zh": status.zh,
        "at": ms_to_text(at, precise=True),
        "comment": comment,
        "refused": None,  # the hub's refusal of it, if one comes
    }
    write_json(folder / HANDLING_JSON, record)
    return folder / HANDLING_JSON


def handling_refused(
    ctx: SpokeContext, msg_id: bytes, status: str, reason: str, detail: str | None
) -> Path | None:
    """The hub refused this spoke's report ``status``: ``handling.json`` says so (written
    afresh if it is missing or speaks of another report)."""
    folder = _folder(ctx, msg_id)
    if folder is None:
        return None
    path = folder / HANDLING_JSON
    record: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        record = dict(json.loads(path.read_text(encoding="utf-8")))
    what_zh, todo_zh = hub_reason_zh(reason, retriable=False)
    refused = {"status": status, "reason": reason, "detail": detail, "what_zh": what_zh}
    refused["what_to_do_zh"] = todo_zh
    if record.get("status") != status:
        known = ReceiptStatus(status)
        record = {"msg_id": msg_id_text(msg_id), "status": status, "status_zh": known.zh}
        record |= {"at": None, "comment": None}
    record["refused"] = refused
    write_json(path, record)
    return path


# ---------------------------------------------------------------- reminders


def take_reminder(ctx: SpokeContext, entry: ReceiptEntry) -> set[bytes]:
    """A REMINDED from the hub (verified): about a document this spoke received, kept and
    written into its ``reminders.json``; about one it sent, kept for status.json. The
    msg_ids whose status.json it changed."""
    assert entry.msg_id is not None  # noqa: S101 - checked by the caller
    msg_id, state, shown = entry.msg_id, ctx.state, msg_id_text(entry.msg_id)
    deadline = (entry.reason or "").removeprefix("deadline.")
    recipient = entry.recipient
    sent = state.outbound("WHERE msg_id = ?", [msg_id])
    if recipient is not None and sent and recipient in state.recipients(msg_id):
        if state.add_reminder(msg_id, recipient, deadline, entry.at, entry.detail):
            log.info("deadline.reminded", msg_id=shown, recipient=recipient, deadline=deadline)
        return {msg_id}
    if recipient == ctx.org:  # this spoke is late: kept even before the document is here
        if state.add_reminder(msg_id, recipient, deadline, entry.at, entry.detail):
            log.info(
                "deadline.reminded", msg_id=shown, recipient=recipient, deadline=deadline,
                held=state.inbound(msg_id) is not None,
            )  # fmt: skip
        write_reminders(ctx, msg_id)
        return set()
    log.warning("flow.ignored", msg_id=shown, status=entry.status.value, reason="not ours")
    return set()


def write_reminders(ctx: SpokeContext, msg_id: bytes) -> Path | None:
    """``reminders.json`` in a received document's folder: every reminder (催办) the hub
    sent this organisation about it, oldest first; nothing if there is none, or if the file
    already says exactly that (a rewrite would wake a watcher)."""
    folder = _folder(ctx, msg_id)
    mine = [r for r in ctx.state.reminders(msg_id) if r[0] == ctx.org]
    if folder is None or not mine:
        return None
    record = [
        {
            "deadline": deadline,
            "deadline_zh": _DEADLINE_ZH.get(deadline),
            "at": ms_to_text(at, precise=True),
            "detail": detail,
        }
        for _, deadline, at, detail in mine
    ]
    path = folder / REMINDERS_JSON
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")) == record:
            return path
    write_json(path, record)
    return path


def own_terms(frame: bytes) -> Terms | None:
    """The terms of an envelope this spoke sealed (its own frame: read, not verified);
    None if it set none or the frame does not read."""
    with contextlib.suppress(Exception):
        _, _, hdr, _ = read_frame_sender(frame)
        core = codec.decode_map(hdr, codec.HDR_LIMITS)["core"]
        header = Header.from_wire(codec.decode_map(core, codec.HEADER_LIMITS), what="header")
        return header.terms
    return None
