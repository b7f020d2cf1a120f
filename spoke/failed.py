"""``failed/``: drops that were not sent, unchanged, each with NAME.error.txt and .json.

Whatever the name, the drop lands here with its explanation: a name too long to carry a
suffix on this file system is shortened for the error files (and, when ``NAME (2)`` is
needed, for the drop too), and the original name is written inside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.files import atomic_write, name_max
from schemas.clock import ms_to_text
from schemas.ids import msg_id_text
from spoke.files import (
    META_SUFFIXES,
    durable_rename,
    fit_name,
    printable,
    shown_name,
    unique_path,
    write_json,
)
from spoke.refusals import Refusal

ERROR_SUFFIXES = (".error.txt", ".error.json")
_ROOM = max(len(s) for s in (*META_SUFFIXES, *ERROR_SUFFIXES))


@dataclass(frozen=True)
class Failed:
    """Where a failed drop now lies, and its error files' common stem."""

    path: Path
    error_stem: str


@dataclass
class FailedFolder:
    folder: Path

    def place(self, name: str) -> Path:
        """A free path for the drop ``name``, with room for its metadata and error files."""
        return unique_path(self.folder, name, room=_ROOM)

    def take(
        self,
        source: Path,
        metas: list[Path],
        name: str,
        extras: list[Path] | None = None,
        *,
        target: Path | None = None,
    ) -> Failed:
        """Move the drop ``source`` (if it is there), its metadata files and ``extras``
        (temporaries of it) into failed/: to ``target`` if given (a move cut half-way is
        finished where it began; what is no longer there is not moved), else to a free
        :meth:`place`."""
        source_there = source.exists() or source.is_symlink()
        if target is None or (source_there and (target.exists() or target.is_symlink())):
            target = self.place(name)  # never over another drop that took that place since
        if source_there:
            durable_rename(source, target)
        for meta in metas:
            suffix = next((s for s in META_SUFFIXES if meta.name.endswith(s)), "")
            if meta.exists() or meta.is_symlink():
                durable_rename(meta, unique_path(self.folder, f"{target.name}{suffix}"))
        for extra in extras or []:
            if extra.exists() or extra.is_symlink():
                durable_rename(extra, unique_path(self.folder, extra.name))
        return Failed(target, self.error_stem(target.name))

    def error_stem(self, name: str) -> str:
        """``name``, or a shortened form of it where ``name.error.json`` would not fit."""
        return fit_name(name, room=len(".error.json"), limit=name_max(self.folder))

    def explain(
        self,
        failed: Failed,
        refusal: Refusal,
        *,
        original: str,
        at: int,
        msg_id: bytes | None = None,
        by: str = "spoke",
    ) -> None:
        """NAME.error.txt (for people) and NAME.error.json (for systems), saying the same,
        in Chinese and in English; ``msg_id`` is the drop's tracking id, ``by`` who refused
        it (``spoke``: never sent; ``hub``)."""
        shown = shown_name(failed.path.name)
        detail: dict[str, Any] = printable(refusal.as_json())
        when = ms_to_text(at)
        lines = [f"{shown} 未发送。 / {shown} was not sent.", ""]
        if shown_name(original) != shown:
            lines += [f"投递时的名称 / Name when dropped: {shown_name(original)}", ""]
        if failed.error_stem != failed.path.name:
            lines += [
                "本说明文件的名称已缩短，以适应文件系统的长度限制。",
                "This file's name was shortened to fit the file system's limit.",
                "",
            ]
        lines += [f"原因：{detail['message_zh']}", f"Why: {detail['message']}"]
        if refusal.findings:  # the document rules: every finding, Chinese then English
            lines += ["", *(f"  {printable(f.sentence())}" for f in refusal.findings)]
        lines += ["", f"处理办法：{detail['hint_zh']}", f"What to do: {detail['hint']}", ""]
        lines += [f"规则 Rule: {detail['rule']}", f"时间 When: {when}"]
        if msg_id is not None:
            never = "（编号，未发送给枢纽） / (its tracking id; never sent to the hub)"
            lines.append(f"msg_id: {msg_id_text(msg_id)}" + (f" {never}" if by == "spoke" else ""))
            lines.append(f"查询 Look it up: spoke status {msg_id_text(msg_id)}")
        lines.append(
            "文件及其元数据原样放在本文件旁。 / "
            "The document and its metadata are next to this file, unchanged."
        )
        text = ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")
        atomic_write(self.folder / f"{failed.error_stem}.error.txt", text, mode=0o644)
        machine = {
            **detail,
            "status": "FAILED",  # as sent/<msg_id>/status.json says where a sent one is
            "name": shown,
            "original_name": shown_name(original),
            "at": when,
            "msg_id": None if msg_id is None else msg_id_text(msg_id),
            "refused_by": by,
        }
        write_json(self.folder / f"{failed.error_stem}.error.json", machine)
