"""Helpers for the spoke's commands: making a drop, rehearsing one, printing status."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from schemas.clock import ms_to_text
from schemas.directory import Directory
from schemas.display import table
from schemas.ids import msg_id_text, parse_msg_id
from schemas.metadata import MetadataError, parse_metadata
from schemas.receipts import REPORTS, ReceiptStatus
from schemas.rules import Document, settings_of
from schemas.whatif import WhatIf, what_if
from spoke.checks import address, bad_metadata, not_addressed, sealable
from spoke.config import SpokeConfig
from spoke.files import is_clutter, is_temporary
from spoke.refusals import Refusal, hub_reason_zh
from spoke.state import Sending, SpokeState
from spoke.tracking import later_handling, recall_state, recipient_status


def declaration(path: Path) -> list[dict[str, object]]:
    """The ``files`` of a drop as it stands at ``path`` (a file, or a folder of files): each
    file's name, size and SHA-256. ValueError, in both languages, for what the spoke would
    not send (a link, a nested folder, a file still being written)."""
    if path.is_symlink() or not (path.is_file() or path.is_dir()):
        raise ValueError(
            f"{path} 不是普通文件或文件夹 / {path} is not an ordinary file or a folder"
        )
    if path.is_file():
        return [{"name": path.name, **size_and_digest(path)}]
    names = {p.name for p in path.iterdir()}
    found = []
    for entry in sorted(path.iterdir()):
        if is_clutter(entry.name, names):
            continue
        if is_temporary(entry.name, names) or entry.is_symlink() or not entry.is_file():
            raise ValueError(
                f"{entry} 是临时文件、链接或文件夹，请写完或移走后再声明 / {entry} is a "
                "temporary file, a link or a folder: finish or move it, then declare again"
            )
        found.append({"name": entry.name, **size_and_digest(entry)})
    return found


def declaration_toml(files: list[dict[str, object]]) -> str:
    """``[[files]]`` tables to append to NAME.meta.toml (its other fields come first)."""
    lines = []
    for file in files:
        lines += ["", "[[files]]"]
        lines += [f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in file.items()]
    return "\n".join(lines) + "\n"


def size_and_digest(path: Path) -> dict[str, object]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
            size += len(block)
    if size == 0:  # refused as an empty file, by the agent, not as bad metadata here
        return {"sha256": digest.hexdigest()}
    return {"size": size, "sha256": digest.hexdigest()}


def rehearse(
    meta: dict[str, object],
    *,
    meta_name: str,
    org: str,
    directory: Directory,
    now: int | None = None,
) -> WhatIf | Refusal:
    """``spoke send --dry-run``: the what-if report on the drop ``meta`` would make (the
    same Document the agent judges), or the spoke's own refusal before the rules (with
    ``now``, also a recipient the agent could not seal to then)."""
    try:
        metadata = parse_metadata(json.dumps(meta).encode(), source=meta_name)
        to, cc = address(metadata, org=org, directory=directory)
        doc = Document.from_metadata(metadata, org, to, cc)
        if now is not None:
            sealable(doc, directory, now)
    except MetadataError as exc:
        return bad_metadata(meta_name, exc)
    except Refusal as refusal:
        return refusal
    settings = settings_of(directory)
    return what_if(
        doc,
        directory,
        settings,
        looked_up=False,
        auto_cc=metadata.auto_cc,
        not_addressed=not_addressed(metadata, org=org, directory=directory),
    )


def drop_name(files: list[Path], name: str | None) -> str:
    """The drop's NAME: ``name``, or the single file's name, or the first file's stem."""
    return name or (files[0].name if len(files) == 1 else files[0].stem)


def waiting_drops(settings: SpokeConfig) -> int:
    """Drops in the outbox (metadata files: each is one drop); 0 if it cannot be read."""
    try:
        return sum(
            1
            for p in settings.folder("outbox").iterdir()
            if p.name.endswith((".meta.toml", ".meta.json")) and not p.name.startswith(".")
        )
    except OSError:
        return 0


def sending_line(sending: Sending | None, *, waiting: int, kept: int | None = None) -> str:
    """The first line of 'spoke status': whether the agent sends, and if not, why, under
    the directory version the agent last said it uses; and a second sentence when the
    directory kept in its state file (``kept``) is another version."""
    if sending is None:
        line = "sending: unknown (the agent has not run yet)"
    elif sending.held is None:
        line = f"sending: yes, since {ms_to_text(sending.since)}; {sending.detail}"
    else:
        since = ms_to_text(sending.since)
        drops = f"{waiting} drop{'s' if waiting != 1 else ''} waiting in the outbox"
        line = f"sending: HELD since {since} ({sending.held}): {sending.detail}. {drops}"
    used = None if sending is None else sending.directory_version
    if kept is not None and used is not None and kept != used:
        line += (
            f" / 注意：交换程序在用通讯录 v{used}，状态文件中已存 v{kept}，尚未启用；若持续存在，"
            "请确认交换程序在运行（spoke run）并查看其日志"
            f" / NOTE: the agent last reported directory v{used}, but its state file holds "
            f"v{kept}, not yet in use; if this lasts, check that the agent runs (spoke run) "
            "and read its log"
        )
    return line


def own_keys_lines(found: tuple[list[str], int | None, int] | None) -> list[str]:
    """What the agent found wrong with how its directory lists this spoke's keys."""
    if found is None:
        return []
    problems, version, at = found
    return [f"KEYS (directory v{version}, {ms_to_text(at)}): {p}" for p in problems]


def status_table(state: SpokeState, *, msg_id: str | None, limit: int) -> str:
    if msg_id is not None:
        rows = state.outbound("WHERE msg_id = ?", [parse_msg_id(msg_id)])
    else:
        rows = state.outbound()[-limit:]
    lines = []
    for out in reversed(rows):
        heard: dict[str, list[str]] = {r: [] for r in state.recipients(out.msg_id)}
        for recipient, status, *_ in state.receipts(out.msg_id):
            heard.setdefault(recipient, []).append(status)
        latest = {r: recipient_status(statuses) for r, statuses in heard.items()}
        summary = ", ".join(f"{r}: {s}" for r, s in latest.items()) or "-"
        lines.append(
            (
                msg_id_text(out.msg_id),
                out.name[:30],
                out.channel,
                out.state,
                ms_to_text(out.created_at),
                summary,
            )
        )
    if not lines:
        return "no sends yet"
    text = table(("msg_id", "drop", "channel", "hub", "sent", "recipients"), lines)
    if msg_id is not None:
        text += "\n\n" + files_table(state.notes(rows[0].msg_id))
    return text


def files_table(notes: dict[str, object]) -> str:
    """Every file as sealed, with its size and SHA-256 (compare: sha256sum FILE)."""
    files = notes.get("files")
    if not isinstance(files, list) or not files:
        return "files: not recorded (sealed before the spoke recorded them)"
    rows = [(str(f["name"]), f"{f['size']:,} B", str(f["sha256"])) for f in files]
    taken = notes.get("completeness")
    head = "files as sealed (compare with sha256sum)" + (
        f"; taken as complete: {taken}" if taken else ""
    )
    return head + "\n" + table(("file", "size", "sha256"), rows)


def flow_lines(state: SpokeState, query: str) -> list[str]:
    """``spoke status MSG_ID``'s lines on a recall (撤回), a return (退文), reports of
    handling (办理) and reminders (催办) of the document, sent or received; none for
    anything else."""
    try:
        msg_id = parse_msg_id(query)
    except ValueError:
        return []
    lines = []
    recall = state.recall_sent(msg_id)
    if recall is not None:
        hub = {"SENT": "sent, no answer yet", "RECORDED": "recorded by the hub"}.get(
            recall.hub, f"refused by the hub: {recall.refusal}: {recall.detail}"
        )
        lines.append(f"recall: asked {ms_to_text(recall.requested_at)}, {hub}")
    said: dict[str, list[str]] = {}
    for recipient, status, at, _ in state.flows(msg_id):
        said.setdefault(recipient, []).append(status)
        if status == "RETURNED":
            lines.append(f"returned by {recipient} at {ms_to_text(at)}: see returned/{query}/")
    for recipient in state.recipients(msg_id) if recall is not None else said:
        shown = recall_state(said.get(recipient, []), requested=recall is not None)
        if shown is not None:
            lines.append(f"recall at {recipient}: {shown}")
    received = state.recall_received(msg_id)
    if received is not None:
        lines.append(
            f"recalled by {received.sender} at {ms_to_text(received.at)}: {received.decision}"
        )
    row = state.inbound(msg_id)
    if row is not None and Path(row[2]).parent.name == "sentback":
        lines.append(f"returned to {row[0]}: see sentback/{query}/")
    lines += handling_lines(state, msg_id)
    for _, status, reason, detail in state.flow_out_refusals(msg_id):
        what_zh, todo_zh = hub_reason_zh(reason, retriable=False)
        where = " (see inbox/ or sentback/ return.error.txt)" if status == "RETURNED" else ""
        lines.append(
            f"本机的 {status} 声明被枢纽驳回（{reason}）：{what_zh}。{todo_zh} / this spoke's "
            f"{status} was refused by the hub ({reason}): {detail or 'no detail'}{where}"
        )
    return lines


def handling_lines(state: SpokeState, msg_id: bytes) -> list[str]:
    """What the recipients reported of their handling (办理) of a document this spoke sent,
    and the reminders (催办) the hub sent of its deadlines; or, for one it received, its own
    latest report and the reminders it got. Never a comment's words."""
    lines = []
    handling: dict[str, tuple[str, int]] = {}
    for recipient, status, at, _ in state.flows(msg_id):
        if status in REPORTS:
            held = handling.get(recipient)
            if later_handling(None if held is None else held[0], status) == status:
                handling[recipient] = (status, at)
    for recipient, (status, at) in handling.items():
        zh = ReceiptStatus(status).zh
        lines.append(f"handling at {recipient}: {zh} {status} (reported {ms_to_text(at)})")
    reports = state.reports_out(msg_id)
    if reports:
        status, at, refused = reports[-1]
        said = f", refused by the hub ({refused})" if refused else ""
        zh = ReceiptStatus(status).zh
        lines.append(f"handling reported: {zh} {status} at {ms_to_text(at)}{said}")
    for recipient, deadline, at, detail in state.reminders(msg_id):
        when = ms_to_text(at)
        lines.append(f"reminded (催办) {recipient} of {deadline} at {when}: {detail or '-'}")
    return lines
