"""Helpers for the spoke's commands: making a drop, printing status."""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

from schemas.clock import ms_to_text
from schemas.display import table
from schemas.ids import msg_id_text, parse_msg_id
from schemas.localfs import atomic_write
from spoke.files import name_problem
from spoke.state import SpokeState


def make_drop(
    outbox: Path, files: list[Path], meta: dict[str, object], *, name: str | None = None
) -> str:
    """Copy ``files`` into the outbox as one drop and write its metadata last (the commit)."""
    if not files:
        raise ValueError("give at least one file")
    for path in files:
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
    drop = name or (files[0].name if len(files) == 1 else files[0].stem)
    problem = name_problem(drop)
    if problem is not None:
        raise ValueError(f"the drop name {drop!r} {problem}")
    if (outbox / drop).exists() or any(
        (outbox / f"{drop}{s}").exists() for s in (".meta.toml", ".meta.json")
    ):
        raise ValueError(f"a drop called {drop!r} is already in the outbox; pass --name")
    staging = outbox / f".{drop}.{secrets.token_hex(4)}.tmp"
    if len(files) == 1:
        shutil.copyfile(files[0], staging)
    else:
        staging.mkdir()
        for path in files:
            shutil.copyfile(path, staging / path.name)
    staging.rename(outbox / drop)
    atomic_write(
        outbox / f"{drop}.meta.json",
        json.dumps(meta, ensure_ascii=False, indent=2).encode(),
        mode=0o644,
    )
    return drop


def status_table(state: SpokeState, *, msg_id: str | None, limit: int) -> str:
    if msg_id is not None:
        rows = state.outbound("WHERE msg_id = ?", [parse_msg_id(msg_id)])
    else:
        rows = state.outbound()[-limit:]
    lines = []
    for out in reversed(rows):
        latest = dict.fromkeys(state.recipients(out.msg_id), "PENDING")
        latest.update({recipient: status for recipient, status, *_ in state.receipts(out.msg_id)})
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
    return table(("msg_id", "drop", "channel", "hub", "sent", "recipients"), lines)
