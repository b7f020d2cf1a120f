"""The spoke's file-system rules: names it accepts, names it writes, and atomic writes.

A drop's files are taken only if each is a regular file (not a symlink, device or hard
link), not empty, not over the size limit, and named in a way every receiving system can
store: valid UTF-8, no path separators or ``..``, no control characters, no Windows
reserved names. Received files are written under sanitised names for the same reason.

Names the spoke never takes: temporaries (a file still being written: dot-names such as
rsync's ``.NAME.XXXXXX``, ``*.part``, ``*.tmp``, Office's ``~$`` and LibreOffice's
``.~lock.NAME#`` lock files) and clutter file managers leave behind (``.DS_Store``,
``._NAME``, ``Thumbs.db``, ``desktop.ini``). A folder drop holding a temporary is not
complete; clutter in it stays with the drop, unsent.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import unicodedata
from collections.abc import Container
from pathlib import Path
from typing import Any

from runtime.files import atomic_write, fsync_dir, name_max
from schemas.metadata import name_key
from spoke.refusals import refuse

MAX_NAME_BYTES = 255
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)
}
_WINDOWS_BAD = set('<>:"|?*')


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot travel as a file name (English), or None if it can."""
    found = _name_problem(name)
    return None if found is None else found[0]


def name_problem_zh(name: str) -> str | None:
    """The same as :func:`name_problem`, in Chinese."""
    found = _name_problem(name)
    return None if found is None else found[1]


def _name_problem(name: str) -> tuple[str, str] | None:
    if any("\udc80" <= c <= "\udcff" for c in name):  # os.fsdecode's undecodable bytes
        return "is not valid UTF-8", "不是有效的 UTF-8 文本（可能是 GBK 编码的文件名）"
    if not name or name in {".", ".."}:
        return "is empty or a dot name", "为空或是 . / .."
    if "/" in name or "\\" in name:
        return (
            "contains a path separator ('/' or '\\\\'), which could climb out of a folder",
            "含有路径分隔符（/ 或 \\），可能越出文件夹",
        )
    if name.startswith(".."):
        return "starts with '..'", "以 .. 开头"
    if any(unicodedata.category(c) in {"Cc", "Cf"} and c != "\u200d" for c in name):
        return "contains a control character", "含有控制字符"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes", f"超过 {MAX_NAME_BYTES} 字节"
    if _WINDOWS_BAD & set(name):
        return (
            'contains one of < > : " | ? *, which Windows file systems refuse',
            '含有 Windows 文件系统不允许的字符 < > : " | ? *',
        )
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in _WINDOWS_RESERVED:
        return f"is the Windows reserved device name {stem}", f"是 Windows 保留的设备名 {stem}"
    if name.endswith((" ", ".")):
        return (
            "ends with a space or a dot, which Windows file systems drop",
            "以空格或点结尾，Windows 文件系统会去掉它们",
        )
    return None


def shown_name(name: str) -> str:
    """A name as people read it: undecodable bytes as ``\\xNN`` (a GBK name from a Windows
    share reads ``\\xb9\\xab``), control characters escaped."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fit_name(name: str, *, room: int, limit: int = MAX_NAME_BYTES) -> str:
    """``name`` if ``room`` more bytes still fit within ``limit``; else a shorter name that
    keeps its beginning and extension, made unique by a digest of the whole name."""
    if len(name.encode("utf-8", "surrogateescape")) + room <= limit:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    clean = sanitise(name, set())
    stem, dot, ext = clean.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        stem, ext = clean, ""
    tail = f"~{digest}" + (f".{ext}" if ext else "")
    budget = limit - room - len(tail.encode())
    while len(stem.encode()) > budget:
        stem = stem[:-1]
    return (stem.rstrip(" .") or "drop") + tail


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
    lowered = {name_key(t) for t in taken}
    while name_key(candidate) in lowered or name_problem(candidate) is not None:
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
    if isinstance(value, str):  # line breaks kept: sentences may span lines
        return "\n".join(shown_name(line) for line in value.split("\n"))
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


def check_regular(path: Path, *, max_bytes: int) -> os.stat_result:
    """``path``'s status if it is a file the spoke may send; Refusal otherwise."""
    st = path.lstat()
    shown = shown_name(path.name)
    if stat.S_ISLNK(st.st_mode):
        raise refuse("drop.symlink", file=shown)
    if not stat.S_ISREG(st.st_mode):
        raise refuse("drop.not_a_file", file=shown)
    if st.st_nlink > 1:
        raise refuse("drop.hard_link", file=shown, links=st.st_nlink)
    if st.st_size == 0:
        raise refuse("drop.empty_file", file=shown)
    if st.st_size > max_bytes:
        raise refuse("drop.file_too_large", file=shown, size=st.st_size, limit=max_bytes)
    return st


def write_json(path: Path, value: Any, *, mode: int = 0o644) -> None:
    data = json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    # a name that is not valid UTF-8 (kept as surrogates) is written escaped, not refused
    atomic_write(path, data.encode("utf-8", "backslashreplace"), mode=mode)


def unique_path(folder: Path, name: str, *, room: int = 0) -> Path:
    """``folder/name``, or ``folder/name (2)``... if taken; shortened (:func:`fit_name`)
    where ``room`` more bytes (a suffix the caller adds) would not fit the file system."""
    limit = name_max(folder)
    base = fit_name(name, room=room, limit=limit)
    candidate, n = folder / base, 2
    while candidate.exists() or candidate.is_symlink():
        numbered = f" ({n})"
        candidate = folder / f"{fit_name(name, room=room + len(numbered), limit=limit)}{numbered}"
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


META_SUFFIXES = (".meta.toml", ".meta.json")
_TEMPORARY = re.compile(r"(^\.(?!\.))|(^~\$)|(\.part$)|(\.tmp$)", re.IGNORECASE)
_CLUTTER = re.compile(r"^(\.DS_Store|Thumbs\.db|desktop\.ini)$", re.IGNORECASE)
_ERROR_FILE = re.compile(r"\.error\.(txt|json)$", re.IGNORECASE)


def is_temporary(name: str, siblings: Container[str] = ()) -> bool:
    """A file still being written or held open: a dot-name (rsync's ``.NAME.XXXXXX``,
    LibreOffice's ``.~lock.NAME#``; ``..NAME`` is no temporary but a bad name),
    ``*.part``, ``*.tmp`` (any case), Office's ``~$`` lock files. Clutter is not."""
    return bool(_TEMPORARY.search(name)) and not is_clutter(name, siblings)


def is_clutter(name: str, siblings: Container[str] = ()) -> bool:
    """What file managers leave beside files: .DS_Store, Thumbs.db, desktop.ini, and a
    Mac's ``._NAME`` beside ``NAME`` (among ``siblings``)."""
    return bool(_CLUTTER.match(name)) or (name.startswith("._") and name[2:] in siblings)


def is_ignored(name: str) -> bool:
    """Never picked up from the outbox: temporaries, clutter and error files."""
    return is_temporary(name) or is_clutter(name) or bool(_ERROR_FILE.search(name))


def temporary_of(temporary: str, name: str) -> bool:
    """Whether the temporary ``temporary`` is ``name`` being written or held open:
    ``.NAME.XXXXXX`` (rsync, and most tools' ``.NAME.tmp``), ``NAME.part``, ``NAME.tmp``,
    ``.~lock.NAME#`` (LibreOffice), ``~$NAME`` or ``~$`` and NAME less its first two
    characters (Word, while the document is open)."""
    lowered = temporary.lower()
    return (
        temporary.startswith(f".{name}.")
        or lowered in (f"{name}.part".lower(), f"{name}.tmp".lower())
        or temporary == f".~lock.{name}#"
        or (temporary.startswith("~$") and temporary[2:] in (name, name[2:]) and len(name) > 2)
    )


def meta_payload_name(meta_name: str) -> str | None:
    """The document ``NAME.meta.toml`` / ``NAME.meta.json`` names, or None."""
    for suffix in META_SUFFIXES:
        if meta_name.endswith(suffix) and len(meta_name) > len(suffix):
            return meta_name[: -len(suffix)]
    return None
