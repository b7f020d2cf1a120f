"""Requests from the ``spoke`` command to the running agent, as files in ``.spoke/control/``.

Some commands need the agent's broker connection (``spoke prove`` asks the hub; ``spoke
witness check`` may ask it for a consistency proof; ``spoke witness reset`` changes what
the running witness holds). A second MQTT connection with the agent's client id would
throw the agent off the broker, so the command writes ``requests/<id>.json`` (atomically)
and waits for ``answers/<id>.json``; the agent looks at ``requests/`` every
:data:`POLL` seconds, takes each request (removing it), and writes the answer atomically.
A request says until when its asker waits (``expires_at``); the agent drops late ones,
and answers nobody collected are removed after an hour.

Only the agent's own user may ask: the tree is mode 0700 (the agent sets it so at start),
and a request file that is a symbolic link or belongs to another user is refused
(``control.refused``) and removed, whatever the folder's mode.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import structlog

from runtime.clock import now_ms
from runtime.files import atomic_write

log = structlog.get_logger("spoke.control")

POLL = 0.2  # seconds between the agent's looks at requests/
REQUEST_MAX = 64 * 1024  # a request is small: a msg_id, or one checkpoint frame
ANSWER_MAX = 1024 * 1024
STALE_MS = 3600_000

Doc = dict[str, Any]


def folder(work: Path, name: str) -> Path:
    root = work / "control"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = root / name
    path.mkdir(exist_ok=True, mode=0o700)
    return path


def secure(work: Path) -> None:
    """Make the control tree and set it (and folders made by an older version) to 0700."""
    for name in ("requests", "answers"):
        folder(work, name)
    root = work / "control"
    for path in (root, root / "requests", root / "answers"):
        path.chmod(0o700)


ALIVE_EVERY = 5.0  # seconds between the agent's marks that it takes requests
ALIVE_FOR = 3 * ALIVE_EVERY  # a mark older than this: no agent is taking requests


def mark_alive(work: Path) -> None:
    """The agent says it takes requests (the mtime of ``control/alive``)."""
    path = work / "control" / "alive"
    path.touch(mode=0o600, exist_ok=True)
    os.utime(path)


def agent_alive(work: Path) -> bool:
    """Whether an agent marked itself alive lately (the CLI side: ask it, or do not wait)."""
    try:
        age = now_ms() / 1000 - (work / "control" / "alive").stat().st_mtime
    except OSError:
        return False
    return -ALIVE_FOR < age < ALIVE_FOR


def submit(work: Path, kind: str, args: Doc, *, timeout: float) -> str:
    """Write a request for the agent; its id (the CLI side)."""
    rid = secrets.token_hex(8)
    now = now_ms()
    doc = {"kind": kind, "args": args, "made_at": now, "expires_at": now + int(timeout * 1000)}
    atomic_write(folder(work, "requests") / f"{rid}.json", json.dumps(doc).encode(), mode=0o600)
    return rid


def wait_answer(work: Path, rid: str, *, timeout: float, every: float = 0.1) -> Doc | None:
    """The agent's answer, or None after ``timeout`` seconds (then the request is withdrawn)."""
    answer = folder(work, "answers") / f"{rid}.json"
    deadline = time.monotonic() + timeout
    while True:
        doc = _read(answer, ANSWER_MAX)
        if doc is not None:
            answer.unlink(missing_ok=True)
            return doc
        if time.monotonic() >= deadline:
            (folder(work, "requests") / f"{rid}.json").unlink(missing_ok=True)
            return None
        time.sleep(every)  # a command waiting for another process's file


def take(work: Path, now: int) -> list[tuple[str, str, Doc, int]]:
    """The requests waiting (removed as taken): (id, kind, args, the asker's uid); late or
    bad ones dropped, another user's or a symbolic link refused."""
    requests = folder(work, "requests")
    taken = []
    for entry in sorted(os.scandir(requests), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        path = Path(entry.path)
        read = _read_own(path)
        path.unlink(missing_ok=True)
        if read is None:
            continue
        doc, uid = read
        kind, args, expires = doc.get("kind"), doc.get("args"), doc.get("expires_at")
        if not isinstance(kind, str) or not isinstance(args, dict) or type(expires) is not int:
            continue
        if expires > now:
            taken.append((path.stem, kind, args, uid))
    _sweep(folder(work, "answers"), now)
    return taken


def _read_own(path: Path) -> tuple[Doc, int] | None:
    """A request file of this user (not a link, never followed), and its owner's uid."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError:  # ELOOP: a symbolic link
        _refuse(path, path.lstat().st_uid if path.is_symlink() else None, "a symbolic link")
        return None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if st.st_uid != os.getuid():
            _refuse(path, st.st_uid, f"owned by uid {st.st_uid}, not the agent's {os.getuid()}")
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        data = handle.read(REQUEST_MAX + 1)
    doc = _parse(data, REQUEST_MAX)
    return None if doc is None else (doc, st.st_uid)


def _refuse(path: Path, uid: int | None, why: str) -> None:
    log.warning(
        "control.refused",
        file=path.name,
        uid=uid,
        detail=f"a request file {why}: removed unread; only the agent's own user may ask it",
    )


def answer(work: Path, rid: str, doc: Doc) -> None:
    data = json.dumps(doc, ensure_ascii=False).encode()
    atomic_write(folder(work, "answers") / f"{rid}.json", data, mode=0o600)


def _read(path: Path, limit: int) -> Doc | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except (FileNotFoundError, IsADirectoryError):
        return None
    return _parse(data, limit)


def _parse(data: bytes, limit: int) -> Doc | None:
    if len(data) > limit:
        return None
    with contextlib.suppress(ValueError, RecursionError):
        value = json.loads(data)
        if isinstance(value, dict):
            return value
    return None


def _sweep(answers: Path, now: int) -> None:
    for entry in os.scandir(answers):
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime_ns // 1_000_000 < now - STALE_MS:
                Path(entry.path).unlink()
