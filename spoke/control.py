"""Requests from the ``spoke`` command to the running agent, as files in ``.spoke/control/``.

Some commands need the agent's broker connection (``spoke prove`` asks the hub; ``spoke
witness check`` may ask it for a consistency proof; ``spoke witness reset`` changes what
the running witness holds). A second MQTT connection with the agent's client id would
throw the agent off the broker, so the command writes ``requests/<id>.json`` (atomically)
and waits for ``answers/<id>.json``; the agent looks at ``requests/`` every
:data:`POLL` seconds, takes each request (removing it), and writes the answer atomically.
A request says until when its asker waits (``expires_at``); the agent drops late ones,
and answers nobody collected are removed after an hour.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from schemas.localfs import atomic_write

POLL = 0.2  # seconds between the agent's looks at requests/
REQUEST_MAX = 64 * 1024  # a request is small: a msg_id, or one checkpoint frame
ANSWER_MAX = 1024 * 1024
STALE_MS = 3600_000

Doc = dict[str, Any]


def folder(work: Path, name: str) -> Path:
    path = work / "control" / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def submit(work: Path, kind: str, args: Doc, *, timeout: float) -> str:
    """Write a request for the agent; its id (the CLI side)."""
    rid = secrets.token_hex(8)
    now = time.time_ns() // 1_000_000
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


def take(work: Path, now: int) -> list[tuple[str, str, Doc]]:
    """The requests waiting (removed as taken): (id, kind, args); late or bad ones dropped."""
    requests = folder(work, "requests")
    taken = []
    for entry in sorted(os.scandir(requests), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        path = Path(entry.path)
        doc = _read(path, REQUEST_MAX)
        path.unlink(missing_ok=True)
        if doc is None:
            continue
        kind, args, expires = doc.get("kind"), doc.get("args"), doc.get("expires_at")
        if not isinstance(kind, str) or not isinstance(args, dict) or type(expires) is not int:
            continue
        if expires > now:
            taken.append((path.stem, kind, args))
    _sweep(folder(work, "answers"), now)
    return taken


def answer(work: Path, rid: str, doc: Doc) -> None:
    data = json.dumps(doc, ensure_ascii=False).encode()
    atomic_write(folder(work, "answers") / f"{rid}.json", data, mode=0o600)


def _read(path: Path, limit: int) -> Doc | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except (FileNotFoundError, IsADirectoryError):
        return None
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
