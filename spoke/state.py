"""The spoke's durable local state: one SQLite file (WAL, synchronous=FULL) in ``.spoke/``.

- ``outbound``: every sealed envelope until the hub's ACCEPTED or REJECTED, and after it
  for ``spoke status``;
- ``inbound``: every msg_id written to the inbox (a duplicate is never written twice);
- ``receipts``: what each recipient said about what we sent;
- ``cursors``: per channel, the last numbered receipt batch durably processed;
- ``directory``: the newest verified directory (version and digest: rollback refusal).

The standard library's sqlite3 in a worker thread: the spoke's volumes are small, and the
spoke does not need SQLAlchemy in its import path.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbound (
    msg_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,            -- the drop's NAME
    work TEXT NOT NULL,            -- its folder in .spoke/work while waiting
    channel TEXT NOT NULL,
    frame BLOB NOT NULL,
    body_path TEXT NOT NULL,
    body_size INTEGER NOT NULL,
    recipients TEXT NOT NULL,      -- JSON list
    classification TEXT NOT NULL,
    precedence TEXT NOT NULL,
    state TEXT NOT NULL,           -- QUEUED | ACCEPTED | REJECTED
    created_at INTEGER NOT NULL,
    answered_at INTEGER
);
CREATE TABLE IF NOT EXISTS inbound (
    msg_id BLOB PRIMARY KEY,
    sender TEXT NOT NULL,
    channel TEXT NOT NULL,
    folder TEXT NOT NULL,
    frame_sha256 BLOB NOT NULL,
    classification TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    signed_for_at INTEGER
);
CREATE TABLE IF NOT EXISTS receipts (
    msg_id BLOB NOT NULL,
    recipient TEXT,
    status TEXT NOT NULL,
    at INTEGER NOT NULL,
    reason TEXT,
    detail TEXT,
    PRIMARY KEY (msg_id, recipient, status)
);
CREATE TABLE IF NOT EXISTS cursors (channel TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS directory (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    digest BLOB NOT NULL,
    frame BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Outbound:
    msg_id: bytes
    name: str
    work: Path
    channel: str
    frame: bytes
    body_path: Path
    body_size: int
    state: str
    created_at: int


class SpokeState:
    """Serialised access to the state file from the event loop (one thread at a time)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one transaction in a worker thread; durable when it returns."""
        return await asyncio.to_thread(self._run, fn)

    def run_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """The same, synchronously (start-up and the CLI)."""
        return self._run(fn)

    # ------------------------------------------------------------------ queries

    @staticmethod
    def outbound_rows(
        db: sqlite3.Connection, where: str = "", args: Sequence[Any] = ()
    ) -> list[Outbound]:
        columns = "msg_id, name, work, channel, frame, body_path, body_size, state, created_at"
        query = f"SELECT {columns} FROM outbound {where} ORDER BY created_at"  # noqa: S608
        rows = db.execute(query, args).fetchall()  # where: fixed fragments, values as args
        return [
            Outbound(bytes(r[0]), r[1], Path(r[2]), r[3], bytes(r[4]), Path(r[5]), r[6], r[7], r[8])
            for r in rows
        ]
