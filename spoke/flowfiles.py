"""The folders of recall (撤回) and return (退文): what the integrators' systems read.

- ``recalled/<msg_id>/``: a received document its sender recalled, moved out of the inbox
  (or filed there straight, had the recall come first), with ``recall.json`` and
  ``recall.txt``; a recalled document already signed for stays in ``inbox/<msg_id>/`` with
  a ``recall.json`` whose decision is ``pending`` until the organisation answers;
- ``sentback/<msg_id>/``: a received document this organisation returned, with
  ``return.json``;
- ``returned/<msg_id>/``: at the sender, a copy of what it sent that a recipient returned,
  with ``<recipient>.return.json`` and ``<recipient>.return.txt``.

Every move is a rename made durable in both folders, every file an atomic write; each
function is blocking (call it in a worker thread) and may be called again after a crash.
The state records a decision first and the folders follow it (:func:`settle_recall`), so
whatever a crash left between the two is done again wherever the decision is read again: a
repeated RECALL, the periodic resend, the agent's start.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import structlog

from runtime.files import atomic_write, fsync_dir
from schemas.clock import ms_to_text
from schemas.errors import PeerError
from schemas.ids import msg_id_text
from schemas.notes import open_note
from spoke.context import SpokeContext
from spoke.files import durable_rename, fsync_tree, write_json
from spoke.refusals import hub_reason_zh
from spoke.state import RecallReceived

log = structlog.get_logger("spoke.flows")
RECALL_JSON, RECALL_TXT, RETURN_JSON = "recall.json", "recall.txt", "return.json"
RETURN_ERROR_JSON, RETURN_ERROR_TXT = "return.error.json", "return.error.txt"
TAKEN_OUT = frozenset({"withdrawn", "accepted"})  # decisions that take it out of the inbox
_DECISION_ZH = {
    "withdrawn": "已撤出收件箱（未签收）",
    "pending": "待答复（已签收）",
    "accepted": "已同意撤回",
    "refused": "不同意撤回，文件保留",
}
_DECISION_EN = {
    "withdrawn": "taken out of the inbox (it had not been signed for)",
    "pending": "waiting for this organisation's answer (it had been signed for)",
    "accepted": "recall accepted",
    "refused": "recall refused: the document is kept",
}


def recall_record(recall: RecallReceived, decision: str) -> dict[str, object]:
    """What ``recall.json`` says: for people and for the document system."""
    todo = {
        "withdrawn": "nothing: the sender withdrew it; do not act on it",
        "pending": (
            "answer: spoke recall-answer MSG_ID --accept, or --refuse --reason TEXT "
            "(or a file recall-answers/MSG_ID.accept or .refuse)"
        ),
        "accepted": "nothing: stop acting on it",
        "refused": "nothing: the sender has been told why",
    }[decision]
    return {
        "msg_id": msg_id_text(recall.msg_id),
        "sender": recall.sender,
        "reason": recall.reason,
        "recalled_at": ms_to_text(recall.at, precise=True),
        "decision": decision,
        "answer": recall.answer if decision == "refused" else None,
        "answered_at": None
        if recall.answered_at is None or decision == "pending"
        else ms_to_text(recall.answered_at, precise=True),
        "what_to_do": todo,
    }


def recall_text(recall: RecallReceived, decision: str) -> str:
    reason = recall.reason or "（未说明）"
    todo_zh = {
        "withdrawn": "发文机关已撤回此文，请勿办理。",
        "pending": "此文已签收：请以 spoke recall-answer MSG_ID --accept 同意，"
        "或 --refuse --reason 说明理由不同意"
        "（或放置 recall-answers/MSG_ID.accept 或 .refuse 文件）。",
        "accepted": "已同意撤回，请停止办理。",
        "refused": "已不同意撤回并告知发文机关，文件保留。",
    }[decision]
    todo_en = str(recall_record(recall, decision)["what_to_do"])
    at = ms_to_text(recall.at, precise=True)
    return (
        f"{recall.sender} 于 {at} 撤回文件 {msg_id_text(recall.msg_id)}。\n"
        f"理由：{reason}\n状态：{_DECISION_ZH[decision]}\n{todo_zh}\n\n"
        f"{recall.sender} recalled document {msg_id_text(recall.msg_id)} at {at}.\n"
        f"Reason: {recall.reason or '(none given)'}\nState: {_DECISION_EN[decision]}\n"
        f"What to do: {todo_en}\n"
    )


def write_recall(folder: Path, recall: RecallReceived, decision: str) -> None:
    """``recall.txt``, then ``recall.json`` (the one a system watches for) into ``folder``;
    nothing if ``recall.json`` already says exactly that (a rewrite would wake a watcher)."""
    record = recall_record(recall, decision)
    with contextlib.suppress(OSError, ValueError):
        if json.loads((folder / RECALL_JSON).read_text(encoding="utf-8")) == record:
            return
    atomic_write(folder / RECALL_TXT, recall_text(recall, decision).encode(), mode=0o644)
    write_json(folder / RECALL_JSON, record)


def file_recalled(
    ctx: SpokeContext,
    msg_id: bytes,
    folder: Path,
    recall: RecallReceived,
    decision: str = "withdrawn",
) -> Path:
    """Move a received document's folder into ``recalled/`` with its recall record; the
    folder it is in now (done already if the move was, before a crash)."""
    dest = ctx.config.folder("recalled") / msg_id_text(msg_id)
    if folder.exists() and folder != dest:
        write_recall(folder, recall, decision)  # the record travels with it
        durable_rename(folder, dest)
    elif dest.exists():
        write_recall(dest, recall, decision)
    else:
        return folder  # not held here (moved away by its system): nothing to file
    ctx.state.move_inbound(msg_id, dest)
    return dest


def settle_recall(ctx: SpokeContext, recall: RecallReceived) -> Path | None:
    """Make the folders say what the recorded decision says (idempotent: done again after a
    crash between the record and the move). Withdrawn or accepted: the document's folder,
    still in ``inbox/``, moves to ``recalled/`` with its ``recall.json``; pending: a
    ``recall.json`` in ``inbox/<msg_id>/`` or, the folder no longer there (its system moved
    it), in ``recalled/<msg_id>/``; refused: ``recall.json`` says so where the document is.
    The folder it is in (None: nothing here to file, or not the recalled document)."""
    msg_id = recall.msg_id
    row = ctx.state.inbound(msg_id)
    if row is None or (row[0], bytes(row[3])) != (recall.sender, recall.subject):
        return None  # not held yet (filed when it comes), or another frame than recalled
    name = msg_id_text(msg_id)
    inbox, recalled = ctx.config.folder("inbox") / name, ctx.config.folder("recalled") / name
    here = inbox if inbox.is_dir() else recalled
    if recall.decision in TAKEN_OUT:
        if not here.is_dir():
            return None
        return file_recalled(ctx, msg_id, here, recall, recall.decision)
    if recall.decision == "pending":
        here.mkdir(parents=True, exist_ok=True)
    elif not here.is_dir():
        return None
    write_recall(here, recall, recall.decision)
    return here


def open_kept_note(ctx: SpokeContext, recall: RecallReceived, key: bytes) -> RecallReceived:
    """A recall that came before its document kept its sealed reason: opened now that the
    document (and its note key) is here, and recorded (logged without its words)."""
    if recall.note is None:
        return recall
    try:
        reason: str | None = open_note(
            key, recall.note, msg_id=recall.msg_id, status="RECALL", issuer=recall.sender
        )
    except PeerError as exc:
        log.warning(
            "flow.bad_note", msg_id=msg_id_text(recall.msg_id), issuer=recall.sender,
            status="RECALL", reason=exc.reason.value,
        )  # fmt: skip
        reason = None
    ctx.state.set_recall_reason(recall.msg_id, reason)
    return replace(recall, reason=reason, note=None)


def return_refused(
    ctx: SpokeContext, msg_id: bytes, reason: str, detail: str | None
) -> Path | None:
    """The hub refused this spoke's RETURNED: the document goes back from ``sentback/`` to
    ``inbox/`` (unless an ``inbox/<msg_id>/`` is there already) with ``return.error.json``
    and ``return.error.txt`` saying so; if it cannot go back, they are written into
    ``sentback/<msg_id>/``. Idempotent; the folder holding them (None: neither exists)."""
    name = msg_id_text(msg_id)
    inbox, back = ctx.config.folder("inbox") / name, ctx.config.folder("sentback") / name
    if not back.is_dir():
        if inbox.is_dir():  # moved back before a crash: what it left
            (inbox / RETURN_JSON).unlink(missing_ok=True)
            ctx.state.move_inbound(msg_id, inbox)
            return inbox
        log.warning("return.refused_not_held", msg_id=name, reason=reason)
        return None
    moving = not inbox.exists()
    _write_return_error(back, reason, detail, moved_back=moving)
    if not moving:
        return back
    durable_rename(back, inbox)
    (inbox / RETURN_JSON).unlink(missing_ok=True)  # it was not returned
    ctx.state.move_inbound(msg_id, inbox)
    return inbox


def _write_return_error(folder: Path, reason: str, detail: str | None, *, moved_back: bool) -> None:
    what_zh, todo_zh = hub_reason_zh(reason, retriable=False)
    said: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        said = json.loads((folder / RETURN_JSON).read_text(encoding="utf-8"))
    if moved_back:
        where_zh = "文件已放回收件箱（inbox/），可照常办理或签收"
        where_en = "the document is back in inbox/: handle or sign for it as usual"
    else:
        where_zh = "文件仍在 sentback/（inbox/ 中已有同名文件夹，未放回）"
        where_en = "the document stays in sentback/ (inbox/ already holds a folder of its name)"
    text = (
        f"退文未成功：枢纽驳回了本机的退文（{reason}）：{what_zh}。枢纽的说明：{detail or '无'}。"
        f"{where_zh}。{todo_zh}\n"
        f"The return was not made: the hub refused it ({reason}): {detail or 'no detail'}. "
        f"{where_en}; return it again only once what the hub names is settled.\n"
    )
    record = {
        "msg_id": said.get("msg_id", folder.name),
        "rule": reason,
        "detail": detail,
        "what_zh": what_zh,
        "what_to_do_zh": todo_zh,
        "where": "inbox" if moved_back else "sentback",
        "return": said or None,  # what this organisation asked for (return.json)
    }
    atomic_write(folder / RETURN_ERROR_TXT, text.encode(), mode=0o644)
    write_json(folder / RETURN_ERROR_JSON, record)


def file_sentback(
    ctx: SpokeContext, msg_id: bytes, folder: Path, record: dict[str, object]
) -> Path:
    """Move a returned document's folder from the inbox into ``sentback/``."""
    dest = ctx.config.folder("sentback") / msg_id_text(msg_id)
    if folder.exists() and folder != dest:
        for old in (RETURN_ERROR_JSON, RETURN_ERROR_TXT):  # an earlier return the hub refused
            (folder / old).unlink(missing_ok=True)
        write_json(folder / RETURN_JSON, record)
        durable_rename(folder, dest)
    ctx.state.move_inbound(msg_id, dest)
    return dest


def file_returned(
    ctx: SpokeContext, msg_id: bytes, recipient: str, at: int, reason: str | None
) -> Path:
    """At the sender: ``returned/<msg_id>/`` holds a copy of what was sent (once), and
    what ``recipient`` said when it returned it."""
    name = msg_id_text(msg_id)
    returned = ctx.config.folder("returned")
    dest = returned / name
    if not dest.exists():
        returned.mkdir(parents=True, exist_ok=True)
        staging = returned / f".tmp-{name}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        sent = ctx.config.folder("sent") / name
        for item in sorted(sent.iterdir()) if sent.is_dir() else []:
            if item.name == "status.json" or item.name.startswith("."):
                continue
            if item.is_dir():
                shutil.copytree(item, staging / item.name)
            elif item.is_file():
                shutil.copy2(item, staging / item.name)
        fsync_tree(staging)
        staging.rename(dest)
        fsync_dir(returned)
    when = ms_to_text(at, precise=True)
    record = {"msg_id": name, "recipient": recipient, "at": when, "reason": reason}
    shown = reason or "（未说明）"
    text = (
        f"{recipient} 于 {when} 退回文件 {name}（退文）。\n理由：{shown}\n"
        "请按理由修改后重新发文，或与收文机关联系；原件副本在本文件夹中。\n\n"
        f"{recipient} returned document {name} at {when}.\nReason: {reason or '(none given)'}\n"
        "What to do: correct what the reason names and send it again as a new document, or "
        "talk to the recipient; a copy of what was sent is in this folder.\n"
    )
    atomic_write(dest / f"{recipient}.return.txt", text.encode(), mode=0o644)
    write_json(dest / f"{recipient}.return.json", record)
    return dest
