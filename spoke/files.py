"""The spoke's file-system rules: names it accepts, names it writes, and atomic writes.

A drop's files are taken only if each is a regular file (not a symlink, device or hard
link), not empty, not over the size limit, and named in a way every receiving system can
store: valid UTF-8, no path separators or ``..``, no control characters, no Windows
reserved names. Received files are written under sanitised names for the same reason.
"""

from __future__ import annotations

import json
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.localfs import atomic_write, fsync_dir
from schemas.rules import Finding, Mode

MAX_NAME_BYTES = 255
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)
}
_WINDOWS_BAD = set('<>:"|?*')


@dataclass(frozen=True)
class Refusal(Exception):  # noqa: N818 - a refusal is a value that also travels as an exception
    """Why a drop is not sent: a rule id, a sentence with the values, and what to do.

    A refusal by the document rules also carries every finding (``rule`` is then the
    first one's reason, ``rule.<id>``)."""

    rule: str
    message: str
    hint: str
    values: dict[str, Any] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message} {self.hint}"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "message": self.message,
            "hint": self.hint,
            "values": self.values,
        }
        if self.findings:
            out["findings"] = [f.as_dict(Mode.ENFORCE) for f in self.findings]
        return out


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot travel as a file name, or None if it can."""
    if any("\udc80" <= c <= "\udcff" for c in name):  # os.fsdecode's undecodable bytes
        return "is not valid UTF-8"
    if not name or name in {".", ".."}:
        return "is empty or a dot name"
    if "/" in name or "\\" in name:
        return "contains a path separator ('/' or '\\\\'), which could climb out of a folder"
    if name.startswith(".."):
        return "starts with '..'"
    if any(unicodedata.category(c) in {"Cc", "Cf"} and c != "\u200d" for c in name):
        return "contains a control character"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    if _WINDOWS_BAD & set(name):
        return 'contains one of < > : " | ? *, which Windows file systems refuse'
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in _WINDOWS_RESERVED:
        return f"is the Windows reserved device name {stem}"
    if name.endswith((" ", ".")):
        return "ends with a space or a dot, which Windows file systems drop"
    return None


def sanitise(name: str, taken: set[str]) -> str:
    """A name safe to write on any file system, unique among ``taken`` (which it updates).

    Always a name :func:`name_problem` accepts: unsafe, control, format and undecodable
    characters become ``_``, Windows device names get a ``_`` prefix, long names are cut
    in the stem (the extension kept), and clashes get `` (2)``.
    """
    clean = "".join(
        "_"
        if (c in _WINDOWS_BAD or c in "/\\" or unicodedata.category(c) in {"Cc", "Cf", "Cs"})
        else c
        for c in name
    )
    stem, dot, ext = clean.rpartition(".") if "." in clean.lstrip(".") else (clean, "", "")
    stem = stem.rstrip(" .").lstrip(" ") or "file"
    ext = ext.strip(" .")
    if stem.startswith("."):
        stem = "_" + stem.lstrip(".")
    if stem.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        stem = f"_{stem}"
    while len(f"{stem}.{ext}".encode()) > 200 and len(stem) > 1:
        stem = stem[:-1].rstrip(" .") or "_"
    candidate = f"{stem}.{ext}" if dot and ext else stem
    n = 2
    lowered = {t.lower() for t in taken}
    while candidate.lower() in lowered or name_problem(candidate) is not None:
        candidate = f"{stem} ({n}).{ext}" if dot and ext else f"{stem} ({n})"
        n += 1
        if n > 10_000:  # pragma: no cover - only a pathological name could get here
            candidate = f"file-{len(taken)}"
            break
    taken.add(candidate)
    return candidate


def printable(value: Any) -> Any:
    """Text safe to show: undecodable bytes as ``\\xNN``, control characters escaped.

    Applied to everything written into error files, so that a hostile file name can
    neither break the UTF-8 of the file nor send escape sequences to a terminal.
    """
    if isinstance(value, str):
        shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in shown)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


def check_regular(path: Path, *, max_bytes: int) -> int:
    """The size of ``path`` if it is a file the spoke may send; Refusal otherwise."""
    st = path.lstat()
    shown = path.name
    if stat.S_ISLNK(st.st_mode):
        raise Refusal(
            "drop.symlink",
            f"'{shown}' is a symbolic link.",
            "Put the file itself in the outbox, not a link to it.",
            {"file": shown},
        )
    if not stat.S_ISREG(st.st_mode):
        raise Refusal(
            "drop.not_a_file",
            f"'{shown}' is not a regular file (a device, a pipe or a socket).",
            "Only ordinary files can be sent.",
            {"file": shown},
        )
    if st.st_nlink > 1:
        raise Refusal(
            "drop.hard_link",
            f"'{shown}' has {st.st_nlink} hard links.",
            "Copy the file into the outbox instead of linking it, so it cannot change "
            "while it is sent.",
            {"file": shown, "links": st.st_nlink},
        )
    if st.st_size == 0:
        raise Refusal(
            "drop.empty_file",
            f"'{shown}' is empty (0 bytes).",
            "Check that the document was written completely.",
            {"file": shown},
        )
    if st.st_size > max_bytes:
        raise Refusal(
            "drop.file_too_large",
            f"'{shown}' is {st.st_size} bytes; the limit is {max_bytes}.",
            "Split the document, or ask the operator to raise [limits] max_file_bytes.",
            {"file": shown, "size": st.st_size, "limit": max_bytes},
        )
    return st.st_size


def write_json(path: Path, value: Any, *, mode: int = 0o644) -> None:
    data = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    # a name that is not valid UTF-8 (kept as surrogates) is written escaped, not refused
    atomic_write(path, data.encode("utf-8", "backslashreplace"), mode=mode)


def unique_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/name (2)``... if taken."""
    candidate, n = folder / name, 2
    while candidate.exists() or candidate.is_symlink():
        candidate = folder / f"{name} ({n})"
        n += 1
    return candidate


def durable_rename(src: Path, dest: Path) -> None:
    """Rename and make both folders' entries durable."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dest)
    fsync_dir(dest.parent)
    if src.parent != dest.parent:
        fsync_dir(src.parent)


def fsync_tree(folder: Path) -> None:
    """fsync every file in ``folder`` (one level) and the folder itself."""
    for entry in folder.iterdir():
        if entry.is_file():
            fd = os.open(entry, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(folder)


_DROP_SUFFIXES = (".meta.toml", ".meta.json")
_IGNORED = re.compile(r"(^\.)|(^~\$)|(\.part$)|(\.tmp$)|(\.error\.(txt|json)$)", re.IGNORECASE)


def is_ignored(name: str) -> bool:
    """Dot-files, ``*.part`` / ``*.tmp`` (any case) and Office's ``~$`` lock files are
    never picked up."""
    return bool(_IGNORED.search(name))


def meta_payload_name(meta_name: str) -> str | None:
    for suffix in _DROP_SUFFIXES:
        if meta_name.endswith(suffix) and len(meta_name) > len(suffix):
            return meta_name[: -len(suffix)]
    return None
