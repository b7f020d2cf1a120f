"""One store, several writers: what a replica's group commit does that a lone hub's need not
(docs/architecture.md, "Replicas and leases").

A lone hub keeps where the audit chain, its Merkle tree and each receipt numbering stand in
memory: nobody else writes. Replicas share the PostgreSQL store, so each commit of a
replica

- takes one transaction-scoped advisory lock (:data:`WRITERS_LOCK`) before it writes: the
  ledger is one chain and the numbering of a destination's receipt batches one sequence,
  so commits that extend them are serialised across replicas (a batch holds the lock for
  the length of one commit, which is what a lone hub's writer does anyway);
- reads the chain's head under that lock and, when another replica extended it, picks up
  its tree's right edge again (:func:`catch_up`);
- reads the numbering of every destination the batch numbers for (:func:`numbering`);
- drops the operations of a caller whose leases were lost (:func:`hubd.store.leases.lost_buckets`);
- tells the other replicas which new messages have deliveries (:func:`announce`,
  ``NOTIFY`` on :data:`JOBS_CHANNEL`, sent by PostgreSQL when the commit lands): the
  replica that owns a recipient delivers to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from sqlalchemy import Connection, func, select, text, tuple_

from hubd.store import ledger as ledgerstore
from hubd.store import tables as t
from schemas import merkle
from schemas.ids import msg_id_text

WRITERS_LOCK: Final = 0x676F7678_6C656467  # "govxledg": one writer at a time on the chain
# A replica frozen (SIGSTOP, a paused VM) in the middle of a commit holds the writers' lock
# and its lease rows: the server ends its session after this long idle in the transaction,
# so the others wait that long at most. A commit never idles between its statements for
# more than milliseconds.
IDLE_IN_COMMIT_MS: Final = 2_000
SESSION: Final = {"idle_in_transaction_session_timeout": str(IDLE_IN_COMMIT_MS)}
IDLE_ENDED_TEXT: Final = (
    "数据库结束了本副本的会话（提交中途停顿超过 2 秒，或数据库重启），本次写入已回滚，"
    "发送方将重发 / the database ended this replica's session (it stood still in the middle "
    "of a commit for longer than 2 s, or the database restarted): the write was rolled back "
    "and its senders send again; the next commit opens a new session"
)
JOBS_CHANNEL: Final = "govxchg_jobs"
_NOTIFY_IDS: Final = 200  # 32 hex characters each: well under NOTIFY's 8,000-byte payload


def lock_writers(conn: Connection) -> None:
    """Serialise this commit with every other replica's, until it ends."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITERS_LOCK})


def catch_up(
    conn: Connection, seq: int, chain: bytes, tree: merkle.Frontier
) -> tuple[int, bytes, merkle.Frontier]:
    """Where the chain stands now: ours if no other replica extended it since our last
    commit, else the head row and the tree's right edge read from the store."""
    row = conn.execute(
        select(t.audit.c.seq, t.audit.c.hash).order_by(t.audit.c.seq.desc()).limit(1)
    ).first()
    if row is None or (int(row.seq) == seq and bytes(row.hash) == chain):
        return seq, chain, tree
    head = int(row.seq)
    return head, bytes(row.hash), ledgerstore.load_frontier(conn, head)


def numbering(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The last number committed (or the floor set) for each (dest, channel) in ``keys``."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    o, n = t.receipt_outbox.c, t.receipt_numbering.c
    found: dict[tuple[str, str], int] = {}
    for chunk in (wanted[i : i + 500] for i in range(0, len(wanted), 500)):
        rows = conn.execute(
            select(o.dest, o.channel, func.max(o.seq))
            .where(tuple_(o.dest, o.channel).in_(chunk))
            .group_by(o.dest, o.channel)
        )
        for dest, channel, top in rows:
            found[(dest, channel)] = int(top)
        floors = conn.execute(
            select(n.dest, n.channel, n.floor).where(tuple_(n.dest, n.channel).in_(chunk))
        )
        for dest, channel, floor in floors:
            found[(dest, channel)] = max(found.get((dest, channel), 0), int(floor))
    return found


RECALLED_MARK = "-"  # an announcement of recalled messages (Replicas._notified)


def announce(
    conn: Connection, msg_ids: Sequence[bytes], sender: str, *, recalled: bool = False
) -> None:
    """Tell every replica (when this transaction commits) that these messages have new
    deliveries; a replica loads those whose recipient it owns. The payload is the sending
    replica's id (which leaves its own announcements alone), a space, and the msg_ids;
    with ``recalled``, a ``-`` before them: their senders recalled them, and a replica
    drops what it delivers of them (hubd.engine.flows)."""
    mark = RECALLED_MARK if recalled else ""
    for start in range(0, len(msg_ids), _NOTIFY_IDS):
        ids = ",".join(msg_id_text(m) for m in msg_ids[start : start + _NOTIFY_IDS])
        payload = f"{sender} {mark}{ids}"
        conn.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": JOBS_CHANNEL, "payload": payload},
        )


def backend_pid(conn: Connection) -> int:
    """The server process of ``conn``: a NOTIFY names the one that sent it."""
    pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
    conn.rollback()
    return pid
