"""Where is my document? ``spoke status ID_OR_NAME``: every place a drop can be, by the
tracking id it got when the spoke took it (its msg_id) or by its file name.

A drop is in ``outbox/`` until the spoke takes it; then in ``.spoke/work/<ms>-<msg_id>/``
while it is checked and sealed; then queued for the hub, ``sent/<msg_id>/`` once the hub
accepted it, or ``failed/NAME`` when the spoke or the hub refused it (under the same
msg_id, which the hub never saw if the spoke refused it). A received document is in
``inbox/<msg_id>/``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from schemas.clock import ms_to_text
from schemas.ids import msg_id_text, parse_msg_id
from spoke.config import SpokeConfig
from spoke.files import META_SUFFIXES, shown_name
from spoke.outbox import work_msg_id
from spoke.state import SpokeState
from spoke.tracking import overall_status, recipient_status

Row = tuple[str, str, str, str, str]  # msg_id, drop, where, when, what
HEAD = ("msg_id", "drop", "where", "since", "what")


def whereabouts(settings: SpokeConfig, state: SpokeState, query: str) -> list[Row]:
    """Every place the drop or message ``query`` (a msg_id or a drop's name) is known."""
    msg_id = None
    with contextlib.suppress(ValueError):
        msg_id = parse_msg_id(query)
    rows: list[Row] = []
    if msg_id is None:
        rows += _outbox(settings, query)
    rows += _claimed(settings, state, msg_id, None if msg_id is not None else query)
    sent = (
        state.outbound("WHERE msg_id = ?", [msg_id])
        if msg_id is not None
        else state.outbound("WHERE name = ?", [query])
    )
    failed = {f.msg_id: f for f in state.failed_drops(msg_id=msg_id, name=shown_name(query))}
    for out in sent:
        text = msg_id_text(out.msg_id)
        if out.state == "QUEUED":
            where, what = "sealed, waiting for the hub's answer", "resent until the hub answers"
        elif out.state == "ACCEPTED":
            where, what = f"sent/{text}/", _recipients(state, out.msg_id)
        else:
            refused = failed.pop(out.msg_id, None)
            where = "refused by the hub" + (f": failed/{refused.failed}" if refused else "")
            what = f"FAILED ({refused.rule})" if refused else "FAILED: see failed/"
        rows.append((text, shown_name(out.name), where, ms_to_text(out.created_at), what))
    for refused in failed.values():
        by = "the spoke (never sent)" if refused.refused_by == "spoke" else "the hub"
        rows.append(
            (
                msg_id_text(refused.msg_id),
                refused.name,
                f"refused by {by}: failed/{refused.failed}",
                ms_to_text(refused.at),
                f"FAILED ({refused.rule}); why: failed/{refused.failed}.error.txt",
            )
        )
    for kind in ("inbox", "recalled", "sentback"):  # received, then recalled or returned
        if msg_id is not None and (settings.folder(kind) / query).is_dir():
            rows.append((query, "-", f"received: {kind}/{query}/", "-", "-"))
    return rows


def _recipients(state: SpokeState, msg_id: bytes) -> str:
    heard: dict[str, list[str]] = {r: [] for r in state.recipients(msg_id)}
    for recipient, status, *_ in state.receipts(msg_id):
        heard.setdefault(recipient, []).append(status)
    statuses = {r: recipient_status(s) for r, s in heard.items()}
    each = ", ".join(f"{r}: {s}" for r, s in statuses.items())
    return f"{overall_status(statuses.values())} ({each})"


def _outbox(settings: SpokeConfig, name: str) -> list[Row]:
    outbox = settings.folder("outbox")
    if not _exists(outbox / name):
        return []
    metas = [s for s in META_SUFFIXES if _exists(outbox / f"{name}{s}")]
    what = (
        "not taken yet: waiting until it is complete, or for the agent (is it running?)"
        if metas
        else "not taken: its metadata file (NAME.meta.toml or NAME.meta.json) is missing"
    )
    return [("-", shown_name(name), "outbox/", "-", what)]


def _claimed(
    settings: SpokeConfig, state: SpokeState, msg_id: bytes | None, name: str | None
) -> list[Row]:
    """Drops the spoke has taken and is checking or sealing (a work folder not sealed yet)."""
    rows: list[Row] = []
    with contextlib.suppress(OSError):
        for work in sorted((settings.work / "work").iterdir()):
            tracked = work_msg_id(work)
            if tracked is None or (msg_id is not None and tracked != msg_id):
                continue
            if state.sealed_from(work):
                continue  # its outbound row says where it is
            names = [p.name for p in work.iterdir() if not p.name.endswith(META_SUFFIXES)]
            if name is not None and name not in names:
                continue
            shown = shown_name(names[0]) if names else "-"
            rows.append((msg_id_text(tracked), shown, "taken: being checked and sealed", "-", "-"))
    return rows


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()
