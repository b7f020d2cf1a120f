"""``spoke send``: a drop written into the outbox, unless the spoke can already tell it fails.

The files and the metadata are staged in ``outbox/.NAME.XXXX.tmp/`` (a temporary the
agent never takes) and checked exactly as the agent will check them
(:func:`spoke.checks.prepare`: the metadata, the files and their sizes, the recipients,
the hub's gating, the document rules; and the duplicate window) against the directory the
agent holds. A drop certain to fail goes to ``failed/`` as the agent would put it there,
with ``NAME.error.txt`` and ``NAME.error.json`` under a fresh tracking id (its msg_id, never
sent); anything else is moved into the outbox, the document first and the metadata last.
Without a valid directory nothing can be told: the drop is queued, and the agent decides.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from runtime.files import atomic_write
from schemas.directory import Directory, NotAddressed
from schemas.errors import XchgError
from schemas.ids import msg_id_text, new_msg_id
from spoke.checks import Prepared, prepare
from spoke.config import SpokeConfig
from spoke.failed import Failed, FailedFolder
from spoke.files import durable_rename, name_problem, shown_name
from spoke.outbox import Claimed, Completeness
from spoke.refusals import Refusal
from spoke.sealing import digests, fingerprint, refuse_duplicate
from spoke.state import FailedDrop, SpokeState
from spoke.tools import drop_name, size_and_digest


@dataclass(frozen=True)
class Queued:
    """In the outbox for the agent; ``checked``: it passed the agent's checks here."""

    name: str
    checked: bool
    not_addressed: tuple[NotAddressed, ...] = ()  # members of its groups it will not reach


@dataclass(frozen=True)
class Refused:
    """Certain to fail: in failed/ with its explanation, under ``msg_id``."""

    name: str
    msg_id: bytes
    failed: Failed
    refusal: Refusal


def send_drop(
    settings: SpokeConfig,
    files: list[Path],
    meta: dict[str, object],
    *,
    name: str | None,
    directory: Directory | None,
    now: int,
) -> Queued | Refused:
    """Stage, check and place one drop; ValueError (nothing written) for bad arguments."""
    outbox = settings.folder("outbox")
    if not files:
        raise ValueError("give at least one file")
    for path in files:
        if not path.is_file():
            raise ValueError(f"{path} is not a file")
    drop = drop_name(files, name)
    problem = name_problem(drop)
    if problem is not None:
        raise ValueError(f"the drop name {drop!r} {problem}")
    meta_name = f"{drop}.meta.json"
    if (outbox / drop).exists() or any(
        (outbox / f"{drop}{s}").exists() for s in (".meta.toml", ".meta.json")
    ):
        raise ValueError(f"a drop called {drop!r} is already in the outbox; pass --name")
    staging = outbox / f".{drop}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()
    try:
        _stage(staging, drop, meta_name, files, meta)
        claimed = Claimed(drop, staging, (meta_name,), Completeness.DECLARED)
        checked = None if directory is None else _check(settings, claimed, directory, now)
        if isinstance(checked, Refusal):
            return _refuse(settings, claimed, checked, now)
        durable_rename(staging / drop, outbox / drop)
        durable_rename(staging / meta_name, outbox / meta_name)  # the commit: last
        left_out = () if checked is None else checked.not_addressed
        return Queued(drop, checked=directory is not None, not_addressed=left_out)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)


def _stage(
    staging: Path, drop: str, meta_name: str, files: list[Path], meta: dict[str, object]
) -> None:
    """The copies, then the metadata declaring each (size and SHA-256): the agent takes
    the drop once they match, and refuses it if a copy is not what was read here."""
    if len(files) == 1:
        shutil.copyfile(files[0], staging / drop)
        copies = [(drop, staging / drop)]
    else:
        (staging / drop).mkdir()
        for path in files:
            shutil.copyfile(path, staging / drop / path.name)
        copies = [(path.name, staging / drop / path.name) for path in files]
    declared = [{"name": n, **size_and_digest(p)} for n, p in copies]
    data = json.dumps({**meta, "files": declared}, ensure_ascii=False, indent=2).encode()
    atomic_write(staging / meta_name, data, mode=0o644)


def _check(
    settings: SpokeConfig, claimed: Claimed, directory: Directory, now: int
) -> Refusal | Prepared | None:
    """The agent's own checks (spoke.sender: prepare, then the duplicate window): what
    passed them, the refusal, or None when it is not certain either way."""
    limits = settings.limits
    try:
        prepared = prepare(
            claimed,
            org=settings.org,
            directory=directory,
            max_file_bytes=limits.max_file_bytes,
            max_files=limits.max_files,
            now=now,
        )
        state = SpokeState(settings.work / "state.db")
        try:
            entries = digests(prepared)
            window_ms = int(limits.duplicate_window * 1000)
            refuse_duplicate(
                state, prepared, fingerprint(prepared, entries), now=now, window_ms=window_ms
            )
        finally:
            state.close()
    except Refusal as refusal:
        return refusal
    except (XchgError, ValidationError):
        return None  # not certain (or a defect of ours): the agent decides, and explains
    return prepared


def _refuse(settings: SpokeConfig, claimed: Claimed, refusal: Refusal, now: int) -> Refused:
    """Into failed/ as the agent puts a drop there, under a fresh tracking id."""
    msg_id = new_msg_id()
    failures = FailedFolder(settings.folder("failed"))
    failed = failures.take(claimed.payload, [claimed.meta], claimed.name)
    failures.explain(failed, refusal, original=claimed.name, at=now, msg_id=msg_id, by="spoke")
    state = SpokeState(settings.work / "state.db")
    try:
        shown = shown_name(claimed.name), shown_name(failed.path.name)
        state.add_failed(FailedDrop(msg_id, *shown, refusal.rule, "spoke", now))
    finally:
        state.close()
    return Refused(claimed.name, msg_id, failed, refusal)


def refused_line(refused: Refused, failed_folder: Path) -> str:
    """One line, in Chinese and in English: what was refused, why, what to do, where the
    drop is now and its tracking id."""
    r, where = refused.refusal, failed_folder / refused.failed.path.name
    text = msg_id_text(refused.msg_id)
    line = (
        f"交换程序拒收（{r.rule}），未发送：{r.message_zh} 处理办法：{r.hint_zh} "
        f"文件已移至 {where}，编号 {text}。 / The spoke refused it ({r.rule}); nothing was "
        f"sent: {r.message} What to do: {r.hint} It is in {where}, tracking id {text}."
    )
    if r.findings:  # the document rules: each finding, Chinese then English
        line += " " + " ".join(f.sentence() for f in r.findings)
    return " ".join(shown_name(part) for part in line.split())  # one line, whatever it quotes
