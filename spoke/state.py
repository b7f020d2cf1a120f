"""The spoke's durable local state: one SQLite file (WAL, synchronous=FULL) in ``.spoke/``.

- ``outbound``: every sealed envelope until the hub's ACCEPTED or REJECTED, and after it
  for ``spoke status``; ``outbound_notes``: what status.json adds about it (copies auto_cc
  added, 份号, rule warnings);
- ``inbound``: every msg_id written to the inbox (a duplicate is never written twice);
- ``receipts``: what each recipient said about what we sent (the first of each status);
  ``receipt_log``: every such receipt in the order it arrived (a recipient's history:
  DEAD, then DELIVERED after a redelivery), for status.json (:mod:`spoke.tracking`);
- ``failed_drops``: every drop that ended in failed/, by the msg_id it was given when the
  spoke took it (refused by the spoke: never sent) or sent with (refused by the hub), for
  ``spoke status ID`` and ``spoke status NAME``;
- ``outbound_drops``: what each send was (a fingerprint of its metadata and bytes, its
  发文字号), so that the same document dropped twice is not sent twice by accident;
- ``cursors``: per channel, the last numbered receipt batch durably processed;
- ``dir_root`` / ``dir_entries``: the newest verified directory root (version and digest:
  rollback refusal) and the entries fetched under it (spoke.dirbook); ``directory``: the
  whole directory an earlier release kept (its version and digest: rollback refusal
  across the upgrade);
- ``receipt_frames`` / ``receipt_frame_messages``: every verified receipt batch frame that
  speaks of a message this spoke sent, and the DELIVERED/SIGNED_FOR batches it signed,
  by SHA-256, linked to each msg_id it speaks of (for evidence files, ``spoke prove``);
- ``ledger_alarms``: ledger forks, declared restores and unproven checkpoints the witness
  recorded, and who (or which proof) closed each (``spoke witness reset``);
- ``ledger_held`` / ``ledger_log``: the hub checkpoint the witness holds (beside
  ``.spoke/ledger/checkpoint.ckpt``, which is restored from it), and the checkpoints it
  adopted, bounded (the last :data:`LOG_KEEP` and the first of each day);
- ``sending``: whether the agent sends or holds (fail closed) and why, since when, and the
  key it signs with, for ``spoke status``;
- ``recalls_sent`` / ``flow_log``: the recalls (撤回) this spoke asked for and what the hub
  said, and what the recipients said of the recalls and returns (退文) of what we sent;
  ``recalls_received`` / ``flow_out``: recalls of documents sent to this spoke, its
  decision, and the statements it signed about them (spoke.flows), its reports of
  handling (办理) among them; the ``note_key`` of each document sent or received opens the
  words of those statements, never a body;
- ``reminders``: the hub's reminders (催办) of a deadline, about a document this spoke
  received (it is late) or sent (a recipient is), for reminders.json and status.json;
- ``own_keys``: what the agent found wrong, at start and at its last directory change, with
  how the directory lists this spoke's keys (spoke.keyring.own_key_problems), for
  ``spoke status``.

The standard library's sqlite3 in a worker thread: the spoke's volumes are small, and the
spoke does not need SQLAlchemy in its import path.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
CREATE TABLE IF NOT EXISTS outbound_notes (
    msg_id BLOB PRIMARY KEY,       -- an outbound row's, written in the same transaction
    notes TEXT NOT NULL            -- JSON for status.json: added_cc, copy_numbers, rule_warnings
);
CREATE TABLE IF NOT EXISTS outbound_drops (
    msg_id BLOB PRIMARY KEY,       -- an outbound row's, written in the same transaction
    fingerprint BLOB NOT NULL,     -- SHA-256 of the metadata as read and every file's digest
    doc_number TEXT,               -- 发文字号, if any
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbound_drops_fingerprint ON outbound_drops (fingerprint);
CREATE INDEX IF NOT EXISTS outbound_drops_doc_number ON outbound_drops (doc_number);
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
CREATE TABLE IF NOT EXISTS receipt_log (
    id INTEGER PRIMARY KEY,        -- arrival order
    msg_id BLOB NOT NULL,
    recipient TEXT NOT NULL,
    status TEXT NOT NULL,
    at INTEGER NOT NULL,
    reason TEXT,
    detail TEXT,
    UNIQUE (msg_id, recipient, status, at)  -- the same receipt twice is one event
);
CREATE TABLE IF NOT EXISTS failed_drops (
    msg_id BLOB PRIMARY KEY,       -- its tracking id (never sent if refused_by = 'spoke')
    name TEXT NOT NULL,            -- the drop's NAME when dropped
    failed TEXT NOT NULL,          -- its name in failed/ (NAME, or NAME (2), ...)
    rule TEXT NOT NULL,
    refused_by TEXT NOT NULL,      -- spoke | hub
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS failed_drops_name ON failed_drops (name);
CREATE TABLE IF NOT EXISTS cursors (channel TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS directory (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    digest BLOB NOT NULL,
    frame BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dir_root (     -- the directory root taken from dirroot (7a)
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    digest BLOB NOT NULL,          -- SHA-256 of the root's signed bytes
    frame BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dir_entries (  -- entries fetched, each proven when it came
    key TEXT PRIMARY KEY,
    leaf BLOB NOT NULL,
    version INTEGER NOT NULL       -- the root version it holds for (another: stale)
);
CREATE TABLE IF NOT EXISTS receipt_frames (
    sha256 BLOB PRIMARY KEY,       -- SHA-256 of the frame (the ledger's batch_sha256)
    frame BLOB NOT NULL,           -- the signed batch as received or sent, verified
    issuer TEXT NOT NULL,          -- its "from": the hub or an organisation
    stored_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS receipt_frame_messages (
    msg_id BLOB NOT NULL,
    sha256 BLOB NOT NULL,          -- a receipt_frames row
    PRIMARY KEY (msg_id, sha256)
);
CREATE TABLE IF NOT EXISTS ledger_alarms (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,            -- fork | restored | unproven
    pair BLOB NOT NULL UNIQUE,     -- SHA-256 of both checkpoint frames: recorded once
    at INTEGER NOT NULL,
    held_size INTEGER NOT NULL,
    held_root BLOB NOT NULL,
    held_at INTEGER NOT NULL,
    new_size INTEGER NOT NULL,
    new_root BLOB NOT NULL,
    new_at INTEGER NOT NULL,
    why TEXT NOT NULL,
    folder TEXT NOT NULL,          -- where both frames are kept
    cleared_at INTEGER,            -- a fork: when an operator accepted the hub's checkpoint
    cleared_by TEXT,
    cleared_why TEXT
);
CREATE TABLE IF NOT EXISTS ledger_held (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    frame BLOB NOT NULL            -- the checkpoint frame the witness holds, verified
);
CREATE TABLE IF NOT EXISTS ledger_log (
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    at INTEGER NOT NULL,           -- when the hub signed it (ms)
    frame BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sending (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    held TEXT,                     -- NULL: sending; else why not (spoke.directory_expired, ...)
    detail TEXT NOT NULL,          -- the sentence the agent logged
    since INTEGER NOT NULL,
    directory_version INTEGER,
    signing_kid TEXT               -- the key it signs with while sending
);
CREATE TABLE IF NOT EXISTS recalls_sent (   -- 撤回 this spoke asked for (spoke.flows)
    msg_id BLOB PRIMARY KEY,       -- an outbound row's
    requested_at INTEGER NOT NULL,
    reason TEXT,                   -- the words sealed in the note (NULL: none given)
    frame BLOB,                    -- the signed RECALL batch, resent as it is (NULL: not yet)
    hub TEXT NOT NULL,             -- SENT | RECORDED | REFUSED
    refusal TEXT,                  -- REFUSED: the hub's flow.* reason
    detail TEXT,                   -- REFUSED: the hub's sentence
    answered_at INTEGER
);
CREATE TABLE IF NOT EXISTS flow_log (       -- flow statements about documents we sent
    id INTEGER PRIMARY KEY,        -- arrival order
    msg_id BLOB NOT NULL,
    recipient TEXT NOT NULL,
    status TEXT NOT NULL,          -- RECALLED | WITHDRAWN | ... | RETURNED | READ | ... | DONE
    at INTEGER NOT NULL,
    note TEXT,                     -- the recipient's words, opened (NULL: none, or unreadable)
    UNIQUE (msg_id, recipient, status, at)
);
CREATE TABLE IF NOT EXISTS recalls_received (  -- 撤回 of documents sent to this spoke
    msg_id BLOB PRIMARY KEY,
    sender TEXT NOT NULL,          -- the RECALL's issuer
    subject BLOB NOT NULL,         -- the envelope frame's SHA-256 it names
    channel TEXT NOT NULL,
    classification TEXT NOT NULL,
    reason TEXT,                   -- the sender's words, opened (NULL: none, or unreadable)
    at INTEGER NOT NULL,           -- when it came
    decision TEXT NOT NULL,        -- withdrawn | pending | accepted | refused
    answer TEXT,                   -- refused: this spoke's words
    answered_at INTEGER
);
CREATE TABLE IF NOT EXISTS flow_out (       -- this spoke's own flow statements as a recipient
    msg_id BLOB NOT NULL,
    status TEXT NOT NULL,          -- WITHDRAWN | ... | RETURNED, or a report: READ | ... | DONE
    channel TEXT NOT NULL,
    frame BLOB NOT NULL,           -- the signed one-entry batch
    published INTEGER NOT NULL,    -- 0 until the broker took it (then it is not resent)
    refusal TEXT,                  -- the hub's REFUSED reason, if it came
    at INTEGER NOT NULL,
    PRIMARY KEY (msg_id, status)
);
CREATE TABLE IF NOT EXISTS reminders (      -- 催办 the hub sent about a document (spoke.handling)
    id INTEGER PRIMARY KEY,        -- arrival order
    msg_id BLOB NOT NULL,          -- a document this spoke sent or received
    recipient TEXT NOT NULL,       -- the late recipient (this spoke, for one it received)
    deadline TEXT NOT NULL,        -- sign_by | accept_by | done_by
    at INTEGER NOT NULL,           -- when the hub reminded
    detail TEXT,                   -- the hub's sentence (Chinese / English)
    UNIQUE (msg_id, recipient, deadline, at)  -- a numbered batch replayed is one reminder
);
CREATE TABLE IF NOT EXISTS own_keys (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    problems TEXT NOT NULL,        -- JSON list of sentences; [] when the directory is right
    directory_version INTEGER,
    at INTEGER NOT NULL
);
"""
LOG_KEEP = 200  # checkpoints the witness's log keeps besides the first of each day
DAY_MS = 86_400_000
# columns added after a release: (table, column, definition)
ADDED_COLUMNS = (
    ("ledger_alarms", "lost_from", "INTEGER"),  # a restore: entries lost after it
    ("outbound", "slots", "BLOB"),  # a large group's recipient slots, sent with the frame
    # receipts recorded since status.json was last written (NULL: none)
    ("outbound", "status_due", "INTEGER"),
    # a document's note key (schemas.notes): opens the notes of its flows, not its body
    ("outbound", "note_key", "BLOB"),
    ("inbound", "note_key", "BLOB"),
    # a recall that came before its document: its sealed note, opened when the document
    # (and with it the note key) arrives
    ("recalls_received", "note", "BLOB"),
    ("flow_out", "refusal_detail", "TEXT"),  # the hub's sentence with its REFUSED
    # a received document's 文种 (a petition may be accepted or declined: spoke.handling)
    ("inbound", "doc_type", "TEXT"),
    ("inbound", "in_reply_to", "BLOB"),  # a 批复's 请示: it counts as handled (done_by)
)


@dataclass(frozen=True, slots=True)
class Sending:
    """What the agent last decided about sending (spoke.keyring.sending_gate)."""

    held: str | None
    detail: str
    since: int
    directory_version: int | None
    signing_kid: str | None


@dataclass(frozen=True, slots=True)
class LedgerAlarm:
    """A ledger fork, a declared restore or an unproven checkpoint (spoke.witness)."""

    kind: str
    at: int
    held_size: int
    held_root: bytes
    held_at: int
    new_size: int
    new_root: bytes
    new_at: int
    why: str
    folder: str
    cleared_at: int | None = None
    cleared_by: str | None = None
    cleared_why: str | None = None
    lost_from: int | None = None  # a restore: the restored ledger's size


@dataclass(frozen=True, slots=True)
class LoggedCheckpoint:
    """A checkpoint the witness adopted, as its log keeps it."""

    size: int
    root: bytes
    at: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class FailedDrop:
    """A drop that ended in failed/ (spoke.failures), under its tracking id."""

    msg_id: bytes
    name: str
    failed: str
    rule: str
    refused_by: str  # spoke | hub
    at: int


@dataclass(frozen=True, slots=True)
class RecallSent:
    """A recall this spoke asked for, and what the hub said of it (spoke.flows)."""

    msg_id: bytes
    requested_at: int
    reason: str | None
    frame: bytes | None
    hub: str  # SENT | RECORDED | REFUSED
    refusal: str | None = None
    detail: str | None = None
    answered_at: int | None = None


def _recall_sent(r: Sequence[Any]) -> RecallSent:
    return RecallSent(bytes(r[0]), r[1], r[2], None if r[3] is None else bytes(r[3]), *r[4:])


@dataclass(frozen=True, slots=True)
class RecallReceived:
    """A recall of a document sent to this spoke, and this spoke's decision (spoke.flows)."""

    msg_id: bytes
    sender: str
    subject: bytes
    channel: str
    classification: str
    reason: str | None
    at: int
    decision: str  # withdrawn | pending | accepted | refused
    answer: str | None = None
    answered_at: int | None = None
    note: bytes | None = None  # the sealed reason, kept while it could not be opened


_RECALL_RECEIVED = (
    "SELECT msg_id, sender, subject, channel, classification, reason, at, decision, "
    "answer, answered_at, note FROM recalls_received r"
)


def _recall_received(r: Sequence[Any]) -> RecallReceived:
    channel, label, reason, at, decision, answer, answered_at, note = r[3:11]
    return RecallReceived(
        bytes(r[0]), r[1], bytes(r[2]), channel, label, reason, at, decision, answer,
        answered_at, None if note is None else bytes(note),
    )  # fmt: skip


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
    slots: bytes | None = None  # more than 16 recipients: their slots (schemas.slots)


class SpokeState:
    """One connection, one lock; each method is one transaction, durable when it returns.

    Writes fsync (synchronous=FULL): from the event loop, call them through
    ``asyncio.to_thread``. Reads are cheap and may be called directly.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        had_log = bool(
            self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'receipt_log'"
            ).fetchall()
        )
        self._db.executescript(SCHEMA)
        if not had_log:  # a state file from before the log: its receipts start it, by time
            self._db.execute(
                "INSERT OR IGNORE INTO receipt_log (msg_id, recipient, status, at, reason, "
                "detail) SELECT msg_id, recipient, status, at, reason, detail FROM receipts "
                "WHERE recipient IS NOT NULL ORDER BY at"
            )
        for table, column, definition in ADDED_COLUMNS:
            known = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in known:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return cursor

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ directory, cursors

    def directory_version(self) -> int | None:
        """The version of the directory root kept here (the newest the agent verified)."""
        rows = self._read("SELECT version FROM dir_root WHERE id = 1")
        if rows:
            return int(rows[0][0])
        seen = self.directory_seen()  # the whole directory an earlier release kept
        return None if seen is None else seen[0]

    def directory_seen(self) -> tuple[int, bytes] | None:
        """(version, SHA-256 of ``dir``) of the whole directory an earlier release kept."""
        rows = self._read("SELECT version, digest FROM directory WHERE id = 1")
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def dir_root(self) -> bytes | None:
        rows = self._read("SELECT frame FROM dir_root WHERE id = 1")
        return bytes(rows[0][0]) if rows else None

    def dir_root_seen(self) -> tuple[int, bytes] | None:
        """(version, digest) of the root kept: what a rollback is judged against."""
        rows = self._read("SELECT version, digest FROM dir_root WHERE id = 1")
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    def dir_entries(self) -> list[tuple[str, bytes, int]]:
        """(key, leaf, the root version it was proven under) of every entry kept."""
        rows = self._read("SELECT key, leaf, version FROM dir_entries")
        return [(str(k), bytes(v), int(n)) for k, v, n in rows]

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def save_dir_root(
        self, version: int, digest: bytes, frame: bytes, prior: int | None, changed: list[str]
    ) -> None:
        """A new root, in one step with what it says of the entries kept: with ``prior``
        (its change was from that version), those proven under it and not ``changed`` hold
        for the new one too; every other entry is stale until asked again."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO dir_root (id, version, digest, frame) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
                "digest = excluded.digest, frame = excluded.frame",
                (version, digest, frame),
            )
            if prior is not None:
                db.execute("UPDATE dir_entries SET version = ? WHERE version = ?", (version, prior))
                db.executemany(
                    "UPDATE dir_entries SET version = ? WHERE key = ?",
                    [(prior, k) for k in changed],
                )

    def save_dir_entries(
        self, entries: list[tuple[str, bytes]], version: int, gone: list[str]
    ) -> None:
        """Entries proven under root ``version``; ``gone``: keys proven no longer listed."""
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO dir_entries (key, leaf, version) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET leaf = excluded.leaf, version = excluded.version",
                [(k, leaf, version) for k, leaf in entries],
            )
            db.executemany("DELETE FROM dir_entries WHERE key = ?", [(k,) for k in gone])

    def sending(self) -> Sending | None:
        rows = self._read(
            "SELECT held, detail, since, directory_version, signing_kid FROM sending WHERE id = 1"
        )
        return Sending(*rows[0]) if rows else None

    def save_sending(self, sending: Sending) -> None:
        self._tx(
            "INSERT INTO sending (id, held, detail, since, directory_version, signing_kid) "
            "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET held = excluded.held, "
            "detail = excluded.detail, since = excluded.since, "
            "directory_version = excluded.directory_version, "
            "signing_kid = excluded.signing_kid",
            (
                sending.held,
                sending.detail,
                sending.since,
                sending.directory_version,
                sending.signing_kid,
            ),
        )

    def own_keys(self) -> tuple[list[str], int | None, int] | None:
        """What the agent last found wrong with how the directory lists this spoke's keys:
        (bilingual sentences, directory version, when); None if it never looked."""
        rows = self._read("SELECT problems, directory_version, at FROM own_keys WHERE id = 1")
        if not rows:
            return None
        return [str(p) for p in json.loads(rows[0][0])], rows[0][1], int(rows[0][2])

    def save_own_keys(self, problems: Sequence[str], version: int | None, at: int) -> None:
        self._tx(
            "INSERT INTO own_keys (id, problems, directory_version, at) VALUES (1, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET problems = excluded.problems, "
            "directory_version = excluded.directory_version, at = excluded.at",
            (json.dumps(list(problems), ensure_ascii=False), version, at),
        )

    def cursors(self) -> dict[str, int]:
        return {c: int(n) for c, n in self._read("SELECT channel, last_seq FROM cursors")}

    def save_cursor(self, channel: str, seq: int) -> None:
        self._tx(
            "INSERT INTO cursors (channel, last_seq) VALUES (?, ?) "
            "ON CONFLICT (channel) DO UPDATE SET last_seq = excluded.last_seq",
            (channel, seq),
        )

    # ------------------------------------------------------------------ outbound

    def add_outbound(
        self,
        out: Outbound,
        recipients: Sequence[str],
        classification: str,
        precedence: str,
        *,
        notes: Mapping[str, object] | None = None,
        fingerprint: bytes | None = None,
        doc_number: str | None = None,
        note_key: bytes | None = None,
    ) -> None:
        """Record a sealed envelope, its notes and what it was, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO outbound (msg_id, name, work, channel, frame, body_path, "
                    "body_size, recipients, classification, precedence, state, created_at, "
                    "slots, note_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        out.msg_id,
                        out.name,
                        str(out.work),
                        out.channel,
                        out.frame,
                        str(out.body_path),
                        out.body_size,
                        json.dumps(list(recipients)),
                        classification,
                        precedence,
                        out.state,
                        out.created_at,
                        out.slots,
                        note_key,
                    ),
                )
                if notes:
                    self._db.execute(
                        "INSERT INTO outbound_notes (msg_id, notes) VALUES (?, ?)",
                        (out.msg_id, json.dumps(notes, ensure_ascii=False)),
                    )
                if fingerprint is not None:
                    self._db.execute(
                        "INSERT INTO outbound_drops (msg_id, fingerprint, doc_number, created_at) "
                        "VALUES (?, ?, ?, ?)",
                        (out.msg_id, fingerprint, doc_number, out.created_at),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def sent_before(
        self, fingerprint: bytes, doc_number: str | None, *, since: int
    ) -> tuple[bytes, int, bool] | None:
        """The earliest send since ``since`` (ms) that is queued for or accepted by the hub
        with this fingerprint or this 发文字号: (msg_id, created_at, same fingerprint)."""
        rows = self._read(
            "SELECT d.msg_id, d.created_at, d.fingerprint = ? FROM outbound_drops d "
            "JOIN outbound o ON o.msg_id = d.msg_id "
            "WHERE (d.fingerprint = ? OR (? IS NOT NULL AND d.doc_number = ?)) "
            "AND d.created_at >= ? AND o.state IN ('QUEUED', 'ACCEPTED') "
            "ORDER BY d.fingerprint = ? DESC, d.created_at LIMIT 1",
            (fingerprint, fingerprint, doc_number, doc_number, since, fingerprint),
        )
        return (bytes(rows[0][0]), int(rows[0][1]), bool(rows[0][2])) if rows else None

    def notes(self, msg_id: bytes) -> dict[str, Any]:
        """What status.json adds about a send ({} if nothing was recorded)."""
        rows = self._read("SELECT notes FROM outbound_notes WHERE msg_id = ?", (msg_id,))
        return dict(json.loads(rows[0][0])) if rows else {}

    def set_outbound_state(self, msg_id: bytes, state: str, at: int) -> None:
        """The hub answered: its state, and its slots (only ever sent again) go."""
        self._tx(
            "UPDATE outbound SET state = ?, answered_at = ?, slots = NULL WHERE msg_id = ?",
            (state, at, msg_id),
        )

    def outbound(self, where: str = "", args: Sequence[Any] = ()) -> list[Outbound]:
        """Rows matching ``where`` (a fixed SQL fragment; values go in ``args``)."""
        columns = (
            "msg_id, name, work, channel, frame, body_path, body_size, state, created_at, slots"
        )
        query = f"SELECT {columns} FROM outbound {where} ORDER BY created_at"  # noqa: S608
        return [
            Outbound(
                bytes(r[0]), r[1], Path(r[2]), r[3], bytes(r[4]), Path(r[5]), r[6], r[7], r[8],
                None if r[9] is None else bytes(r[9]),
            )
            for r in self._read(query, args)
        ]  # fmt: skip

    def sealed_from(self, work: Path) -> bool:
        return bool(self._read("SELECT 1 FROM outbound WHERE work = ?", (str(work),)))

    def recipients(self, msg_id: bytes) -> list[str]:
        rows = self._read("SELECT recipients FROM outbound WHERE msg_id = ?", (msg_id,))
        return list(json.loads(rows[0][0])) if rows else []

    def summary(self, msg_id: bytes) -> tuple[Any, ...] | None:
        rows = self._read(
            "SELECT name, channel, recipients, classification, precedence, state, created_at, "
            "answered_at FROM outbound WHERE msg_id = ?",
            (msg_id,),
        )
        return tuple(rows[0]) if rows else None

    def add_failed(self, failed: FailedDrop) -> None:
        self._tx(
            "INSERT OR REPLACE INTO failed_drops (msg_id, name, failed, rule, refused_by, at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (failed.msg_id, failed.name, failed.failed, failed.rule, failed.refused_by, failed.at),
        )

    def failed_drops(
        self, *, msg_id: bytes | None = None, name: str | None = None
    ) -> list[FailedDrop]:
        """Drops that ended in failed/, with this tracking id or this name (as dropped, or
        as it lies in failed/), oldest first."""
        rows = self._read(
            "SELECT msg_id, name, failed, rule, refused_by, at FROM failed_drops "
            "WHERE msg_id = ? OR name = ? OR failed = ? ORDER BY at",
            (msg_id, name, name),
        )
        return [FailedDrop(bytes(r[0]), *r[1:]) for r in rows]

    # ------------------------------------------------------------------ receipts

    def add_receipt(
        self,
        *,
        msg_id: bytes,
        recipient: str,
        status: str,
        at: int,
        reason: str | None,
        detail: str | None,
    ) -> None:
        """Record a receipt, and add it to the recipient's history in arrival order."""
        args = (msg_id, recipient, status, at, reason, detail)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO receipts (msg_id, recipient, status, at, reason, "
                    "detail) VALUES (?, ?, ?, ?, ?, ?)",
                    args,
                )
                self._db.execute(
                    "INSERT OR IGNORE INTO receipt_log (msg_id, recipient, status, at, reason, "
                    "detail) VALUES (?, ?, ?, ?, ?, ?)",
                    args,
                )
                # status.json follows soon (spoke.sendstatus: later), or after a crash
                self._db.execute(
                    "UPDATE outbound SET status_due = COALESCE(status_due, 0) + 1 WHERE msg_id = ?",
                    (msg_id,),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def status_mark(self, msg_id: bytes) -> int | None:
        """How many receipts came since ``msg_id``'s status.json was last written: read it
        before reading the receipts, give it back to :meth:`status_written`."""
        rows = self._read("SELECT status_due FROM outbound WHERE msg_id = ?", (msg_id,))
        return rows[0][0] if rows else None

    def status_written(self, msg_id: bytes, mark: int | None) -> None:
        """status.json shows every receipt recorded up to ``mark`` (and none came since)."""
        if mark is not None:
            self._tx(
                "UPDATE outbound SET status_due = NULL WHERE msg_id = ? AND status_due = ?",
                (msg_id, mark),
            )

    def status_due(self) -> list[bytes]:
        """Sends with receipts their status.json does not show yet (a crash came first)."""
        query = "SELECT msg_id FROM outbound WHERE status_due IS NOT NULL"
        return [bytes(r[0]) for r in self._read(query)]

    def receipts(self, msg_id: bytes) -> list[tuple[str, str, int, str | None, str | None]]:
        """(recipient, status, at, reason, detail) of every receipt about ``msg_id``, in
        the order they arrived."""
        return [
            tuple(r)
            for r in self._read(
                "SELECT recipient, status, at, reason, detail FROM receipt_log WHERE msg_id = ? "
                "ORDER BY id",
                (msg_id,),
            )
        ]

    # ------------------------------------------------------------------ inbound

    def received(self, msg_id: bytes) -> bool:
        return bool(self._read("SELECT 1 FROM inbound WHERE msg_id = ?", (msg_id,)))

    def add_inbound(
        self,
        *,
        msg_id: bytes,
        sender: str,
        channel: str,
        folder: Path,
        digest: bytes,
        classification: str,
        at: int,
        note_key: bytes | None = None,
        doc_type: str | None = None,
        in_reply_to: bytes | None = None,
    ) -> None:
        self._tx(
            "INSERT OR IGNORE INTO inbound (msg_id, sender, channel, folder, frame_sha256, "
            "classification, received_at, note_key, doc_type, in_reply_to) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                msg_id, sender, channel, str(folder), digest, classification, at, note_key,
                doc_type, in_reply_to,
            ),
        )  # fmt: skip

    def replies_to(self, msg_id: bytes) -> list[tuple[str, bytes, int]]:
        """(sender, msg_id, received_at) of every 批复 (REPLY) received answering ``msg_id``."""
        rows = self._read(
            "SELECT sender, msg_id, received_at FROM inbound WHERE in_reply_to = ? "
            "AND doc_type = 'REPLY' ORDER BY received_at",
            (msg_id,),
        )
        return [(str(s), bytes(m), int(a)) for s, m, a in rows]

    def inbound_doc_type(self, msg_id: bytes) -> str | None:
        """A received document's doc_type name (None: unknown, received before it was kept)."""
        rows = self._read("SELECT doc_type FROM inbound WHERE msg_id = ?", (msg_id,))
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def inbound(self, msg_id: bytes) -> tuple[Any, ...] | None:
        """(sender, channel, folder, frame_sha256, classification, signed_for_at)."""
        rows = self._read(
            "SELECT sender, channel, folder, frame_sha256, classification, signed_for_at "
            "FROM inbound WHERE msg_id = ?",
            (msg_id,),
        )
        return tuple(rows[0]) if rows else None

    def set_signed_for(self, msg_id: bytes, at: int) -> None:
        self._tx("UPDATE inbound SET signed_for_at = ? WHERE msg_id = ?", (at, msg_id))

    def move_inbound(self, msg_id: bytes, folder: Path) -> None:
        """The received document's folder is now ``folder`` (recalled/, sentback/)."""
        self._tx("UPDATE inbound SET folder = ? WHERE msg_id = ?", (str(folder), msg_id))

    # ------------------------------------------------------------------ flows

    def note_key(self, msg_id: bytes) -> bytes | None:
        """The note key of a document this spoke sent or received (None if not kept)."""
        for table in ("outbound", "inbound"):
            rows = self._read(f"SELECT note_key FROM {table} WHERE msg_id = ?", (msg_id,))  # noqa: S608 - fixed names
            if rows and rows[0][0] is not None:
                return bytes(rows[0][0])
        return None

    def recall_sent(self, msg_id: bytes) -> RecallSent | None:
        rows = self._read(
            "SELECT msg_id, requested_at, reason, frame, hub, refusal, detail, answered_at "
            "FROM recalls_sent WHERE msg_id = ?",
            (msg_id,),
        )
        return _recall_sent(rows[0]) if rows else None

    def recalls_waiting(self) -> list[RecallSent]:
        """Recalls the hub has not answered yet (resent until it does)."""
        rows = self._read(
            "SELECT msg_id, requested_at, reason, frame, hub, refusal, detail, answered_at "
            "FROM recalls_sent WHERE hub = 'SENT' ORDER BY requested_at"
        )
        return [_recall_sent(r) for r in rows]

    def request_recall(self, msg_id: bytes, at: int, reason: str | None) -> None:
        """A recall asked for (again): sent afresh, whatever the hub said before."""
        self._tx(
            "INSERT INTO recalls_sent (msg_id, requested_at, reason, hub) VALUES (?, ?, ?, 'SENT') "
            "ON CONFLICT (msg_id) DO UPDATE SET requested_at = excluded.requested_at, "
            "reason = excluded.reason, frame = NULL, hub = 'SENT', refusal = NULL, "
            "detail = NULL, answered_at = NULL",
            (msg_id, at, reason),
        )

    def set_recall_frame(self, msg_id: bytes, frame: bytes) -> None:
        self._tx("UPDATE recalls_sent SET frame = ? WHERE msg_id = ?", (frame, msg_id))

    def answer_recall(
        self,
        msg_id: bytes,
        hub: str,
        at: int,
        refusal: str | None = None,
        detail: str | None = None,
    ) -> None:
        self._tx(
            "UPDATE recalls_sent SET hub = ?, refusal = ?, detail = ?, answered_at = ? "
            "WHERE msg_id = ?",
            (hub, refusal, detail, at, msg_id),
        )

    def add_flow(
        self, msg_id: bytes, recipient: str, status: str, at: int, note: str | None
    ) -> bool:
        """A flow statement about a document we sent; False if it was already recorded."""
        cursor = self._tx(
            "INSERT OR IGNORE INTO flow_log (msg_id, recipient, status, at, note) "
            "VALUES (?, ?, ?, ?, ?)",
            (msg_id, recipient, status, at, note),
        )
        return cursor.rowcount == 1

    def flows(self, msg_id: bytes) -> list[tuple[str, str, int, str | None]]:
        """(recipient, status, at, note) of every flow statement about ``msg_id``, in order."""
        rows = self._read(
            "SELECT recipient, status, at, note FROM flow_log WHERE msg_id = ? ORDER BY id",
            (msg_id,),
        )
        return [(str(r), str(s), int(a), n) for r, s, a, n in rows]

    def recall_received(self, msg_id: bytes) -> RecallReceived | None:
        rows = self._read(f"{_RECALL_RECEIVED} WHERE msg_id = ?", (msg_id,))
        return _recall_received(rows[0]) if rows else None

    def recalls_received(self) -> list[RecallReceived]:
        """Every recall of a document sent to this spoke (the start-up repair reads them)."""
        return [_recall_received(r) for r in self._read(f"{_RECALL_RECEIVED} ORDER BY at")]

    def add_recall_received(self, recall: RecallReceived) -> None:
        self._tx(
            "INSERT OR IGNORE INTO recalls_received (msg_id, sender, subject, channel, "
            "classification, reason, at, decision, answer, answered_at, note) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                recall.msg_id,
                recall.sender,
                recall.subject,
                recall.channel,
                recall.classification,
                recall.reason,
                recall.at,
                recall.decision,
                recall.answer,
                recall.answered_at,
                recall.note,
            ),
        )

    def set_recall_reason(self, msg_id: bytes, reason: str | None) -> None:
        """The recall's sealed note, opened once the document came: its words kept, the
        sealed bytes dropped (NULL reason: it did not open)."""
        self._tx(
            "UPDATE recalls_received SET reason = ?, note = NULL WHERE msg_id = ?",
            (reason, msg_id),
        )

    def recalls_unstated(self) -> list[RecallReceived]:
        """Recalls this spoke decided whose statement it never signed (it was held)."""
        rows = self._read(
            f"{_RECALL_RECEIVED} WHERE decision != 'pending' AND NOT "  # noqa: S608 - fixed text
            "EXISTS (SELECT 1 FROM flow_out f WHERE f.msg_id = r.msg_id AND f.status = CASE "
            "r.decision WHEN 'withdrawn' THEN 'WITHDRAWN' WHEN 'accepted' THEN 'RECALL_ACCEPTED' "
            "ELSE 'RECALL_REFUSED' END)"
        )
        return [_recall_received(r) for r in rows]

    def decide_recall(self, msg_id: bytes, decision: str, at: int, answer: str | None) -> None:
        self._tx(
            "UPDATE recalls_received SET decision = ?, answer = ?, answered_at = ? "
            "WHERE msg_id = ?",
            (decision, answer, at, msg_id),
        )

    def add_flow_out(self, msg_id: bytes, status: str, channel: str, frame: bytes, at: int) -> None:
        """A statement this spoke signed as a recipient (the latest of each status kept)."""
        self._tx(
            "INSERT INTO flow_out (msg_id, status, channel, frame, published, at) "
            "VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (msg_id, status) DO UPDATE SET "
            "channel = excluded.channel, frame = excluded.frame, published = 0, "
            "refusal = NULL, refusal_detail = NULL, at = excluded.at",
            (msg_id, status, channel, frame, at),
        )

    def flow_out(self, *, unpublished: bool = False) -> list[tuple[bytes, str, str, bytes]]:
        """(msg_id, status, channel, frame) of this spoke's statements (or those not yet
        taken by the broker)."""
        rows = self._read(
            "SELECT msg_id, status, channel, frame FROM flow_out WHERE ? = 0 OR published = 0 "
            "ORDER BY at",
            (int(unpublished),),
        )
        return [(bytes(m), str(s), str(c), bytes(f)) for m, s, c, f in rows]

    def flow_out_published(self, msg_id: bytes, status: str) -> None:
        self._tx(
            "UPDATE flow_out SET published = 1 WHERE msg_id = ? AND status = ?", (msg_id, status)
        )

    def flow_out_refused(
        self, msg_id: bytes, status: str, reason: str, detail: str | None = None
    ) -> None:
        self._tx(
            "UPDATE flow_out SET refusal = ?, refusal_detail = ? WHERE msg_id = ? AND status = ?",
            (reason, detail, msg_id, status),
        )

    def flow_out_refusals(
        self, msg_id: bytes | None = None
    ) -> list[tuple[bytes, str, str, str | None]]:
        """(msg_id, status, reason, detail) of this spoke's statements the hub refused
        (about ``msg_id``, or every document)."""
        rows = self._read(
            "SELECT msg_id, status, refusal, refusal_detail FROM flow_out "
            "WHERE refusal IS NOT NULL AND (? IS NULL OR msg_id = ?) ORDER BY at",
            (msg_id, msg_id),
        )
        return [(bytes(m), str(s), str(r), d) for m, s, r, d in rows]

    def flow_said(self, msg_id: bytes, status: str) -> str | None:
        """Whether this spoke signed ``status`` about ``msg_id``: None if not; else its
        refusal by the hub, or '' (not refused)."""
        rows = self._read(
            "SELECT refusal FROM flow_out WHERE msg_id = ? AND status = ?", (msg_id, status)
        )
        return None if not rows else (rows[0][0] or "")

    def reports_out(self, msg_id: bytes) -> list[tuple[str, int, str | None]]:
        """(status, at, the hub's refusal or None) of this spoke's reports of handling
        about ``msg_id``, oldest first (one row a status: the latest of each)."""
        rows = self._read(
            "SELECT status, at, refusal FROM flow_out WHERE msg_id = ? AND status IN "
            "('READ', 'HANDLING', 'DONE', 'CASE_ACCEPTED', 'CASE_DECLINED') ORDER BY at",
            (msg_id,),
        )
        return [(str(s), int(a), r) for s, a, r in rows]

    def add_reminder(
        self, msg_id: bytes, recipient: str, deadline: str, at: int, detail: str | None
    ) -> bool:
        """A reminder (催办) from the hub; False if it was already recorded."""
        cursor = self._tx(
            "INSERT OR IGNORE INTO reminders (msg_id, recipient, deadline, at, detail) "
            "VALUES (?, ?, ?, ?, ?)",
            (msg_id, recipient, deadline, at, detail),
        )
        return cursor.rowcount == 1

    def reminders(self, msg_id: bytes) -> list[tuple[str, str, int, str | None]]:
        """(recipient, deadline, at, detail) of every reminder about ``msg_id``, in order."""
        rows = self._read(
            "SELECT recipient, deadline, at, detail FROM reminders WHERE msg_id = ? ORDER BY id",
            (msg_id,),
        )
        return [(str(r), str(d), int(a), t) for r, d, a, t in rows]

    # ------------------------------------------------------------------ evidence

    def keep_receipt_frame(
        self,
        frame: bytes,
        digest: bytes,
        issuer: str,
        msg_ids: Sequence[bytes],
        *,
        at: int,
        sent_only: bool,
    ) -> int:
        """Keep a verified receipt batch for the messages it speaks of (``sent_only``: only
        those this spoke sent); the number of messages it was kept for."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                linked = 0
                for msg_id in dict.fromkeys(msg_ids):
                    if sent_only:
                        sql = (
                            "INSERT OR IGNORE INTO receipt_frame_messages (msg_id, sha256) "
                            "SELECT msg_id, ? FROM outbound WHERE msg_id = ?"
                        )
                        args = (digest, msg_id)
                    else:
                        sql = (
                            "INSERT OR IGNORE INTO receipt_frame_messages (msg_id, sha256) "
                            "VALUES (?, ?)"
                        )
                        args = (msg_id, digest)
                    linked += self._db.execute(sql, args).rowcount
                if linked:
                    self._db.execute(
                        "INSERT OR IGNORE INTO receipt_frames (sha256, frame, issuer, stored_at) "
                        "VALUES (?, ?, ?, ?)",
                        (digest, frame, issuer, at),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return linked

    def receipt_frames(self, msg_id: bytes) -> list[tuple[str, bytes]]:
        """(issuer, frame) of every receipt batch kept for ``msg_id``, oldest first."""
        rows = self._read(
            "SELECT f.issuer, f.frame FROM receipt_frame_messages m "
            "JOIN receipt_frames f ON f.sha256 = m.sha256 WHERE m.msg_id = ? ORDER BY f.stored_at",
            (msg_id,),
        )
        return [(str(issuer), bytes(frame)) for issuer, frame in rows]

    def message_channel(self, msg_id: bytes) -> tuple[str, str] | None:
        """(channel, "sent" | "received") of a message this spoke sent or received."""
        rows = self._read("SELECT channel FROM outbound WHERE msg_id = ?", (msg_id,))
        if rows:
            return str(rows[0][0]), "sent"
        rows = self._read("SELECT channel FROM inbound WHERE msg_id = ?", (msg_id,))
        return (str(rows[0][0]), "received") if rows else None

    # ------------------------------------------------------------------ ledger alarms

    def add_alarm(self, pair: bytes, alarm: LedgerAlarm) -> bool:
        """Record an alarm once per pair of checkpoints; False if it was already."""
        cursor = self._tx(
            "INSERT OR IGNORE INTO ledger_alarms (kind, pair, at, held_size, held_root, held_at, "
            "new_size, new_root, new_at, why, folder, lost_from) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alarm.kind,
                pair,
                alarm.at,
                alarm.held_size,
                alarm.held_root,
                alarm.held_at,
                alarm.new_size,
                alarm.new_root,
                alarm.new_at,
                alarm.why,
                alarm.folder,
                alarm.lost_from,
            ),
        )
        return cursor.rowcount == 1

    def alarms(self, *, kind: str | None = None, open_only: bool = False) -> list[LedgerAlarm]:
        rows = self._read(
            "SELECT kind, at, held_size, held_root, held_at, new_size, new_root, new_at, why, "
            "folder, cleared_at, cleared_by, cleared_why, lost_from FROM ledger_alarms "
            "WHERE (? IS NULL OR kind = ?) AND (? = 0 OR cleared_at IS NULL) ORDER BY id",
            (kind, kind, int(open_only)),
        )
        return [
            LedgerAlarm(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], bytes(r[6]), *r[7:])
            for r in rows
        ]

    def alarm_folder(self, pair: bytes) -> str | None:
        rows = self._read("SELECT folder FROM ledger_alarms WHERE pair = ?", (pair,))
        return str(rows[0][0]) if rows else None

    def clear_alarms(
        self, *, at: int, by: str, why: str, kinds: Sequence[str] = ("fork", "restored", "unproven")
    ) -> int:
        """Close every open alarm of ``kinds`` (an operator's reset, or a proof that came)."""
        marks = ", ".join("?" for _ in kinds)
        cursor = self._tx(
            "UPDATE ledger_alarms SET cleared_at = ?, cleared_by = ?, cleared_why = ? "  # noqa: S608 - placeholders only
            f"WHERE kind IN ({marks}) AND cleared_at IS NULL",
            (at, by, why, *kinds),
        )
        return cursor.rowcount

    # ------------------------------------------------------------------ the witness's checkpoints

    def held_checkpoint(self) -> bytes | None:
        rows = self._read("SELECT frame FROM ledger_held WHERE id = 1")
        return bytes(rows[0][0]) if rows else None

    def hold_checkpoint(self, logged: LoggedCheckpoint | None, *, log: bool = True) -> None:
        """Hold ``logged`` (None: nothing) and add it to the log (unless ``log`` is False),
        pruned to the last :data:`LOG_KEEP` and the first of each day, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if logged is None:
                    self._db.execute("DELETE FROM ledger_held")
                else:
                    self._db.execute(
                        "INSERT INTO ledger_held (id, frame) VALUES (1, ?) "
                        "ON CONFLICT (id) DO UPDATE SET frame = excluded.frame",
                        (logged.frame,),
                    )
                if logged is not None and log:
                    self._db.execute(
                        "INSERT INTO ledger_log (size, root, at, frame) VALUES (?, ?, ?, ?)",
                        (logged.size, logged.root, logged.at, logged.frame),
                    )
                    self._db.execute(
                        "DELETE FROM ledger_log WHERE id NOT IN "
                        "(SELECT id FROM ledger_log ORDER BY id DESC LIMIT ?) AND id NOT IN "
                        "(SELECT min(id) FROM ledger_log GROUP BY at / ?)",
                        (LOG_KEEP, DAY_MS),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def logged_checkpoints(self) -> list[LoggedCheckpoint]:
        """The witness's log, oldest first."""
        rows = self._read("SELECT size, root, at, frame FROM ledger_log ORDER BY id")
        return [LoggedCheckpoint(r[0], bytes(r[1]), r[2], bytes(r[3])) for r in rows]

    def forget_logged(self, *, above: int | None = None) -> int:
        """Drop logged checkpoints larger than ``above`` (a declared loss), or all (None)."""
        cursor = self._tx("DELETE FROM ledger_log WHERE ? IS NULL OR size > ?", (above, above))
        return cursor.rowcount
