"""The ledger's Merkle tree in the store: its nodes, its proofs and its checkpoints.

Leaf ``i`` is audit row ``seq = i + 1`` (schemas.ledger.Entry); the hashes of perfect
subtrees of level >= 1 are rows of ``ledger_nodes``, written by the group commit that
completes them (hubd.store.db), so a proof reads O(log n) rows and never rebuilds the tree.
Functions here take a synchronous SQLAlchemy ``Connection``: the store's writer thread,
a ``run_sync`` from ``hubctl``, or the migration that builds the nodes of an old ledger.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select

from hubd.store import tables as t
from hubd.store.rowwriter import RowWriter
from schemas import merkle
from schemas.errors import StoreError
from schemas.ledger import Entry

_LEVEL_SHIFT = 48  # index < 2**48 leaves; level < 64: the key fits a signed 64-bit integer
_BUILD_BATCH = 10_000


def node_key(level: int, index: int) -> int:
    return (level << _LEVEL_SHIFT) | index


def entry_of(row: Any) -> Entry:
    return Entry(
        seq=int(row.seq),
        at=int(row.at),
        event=row.event,
        msg_id=None if row.msg_id is None else bytes(row.msg_id),
        org=row.org,
        detail=row.detail,
    )


_ENTRY_COLUMNS = ("seq", "at", "event", "msg_id", "org", "detail")


class LedgerGapError(StoreError):
    """The store lacks rows its tree needs: entries deleted, or nodes never written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=False)


def read_entries(conn: Connection, seqs: Iterable[int]) -> dict[int, Entry]:
    rows = RowWriter(conn).select_in(t.audit, _ENTRY_COLUMNS, "seq", list(seqs))
    return {
        int(r[0]): Entry(
            int(r[0]), int(r[1]), r[2], None if r[3] is None else bytes(r[3]), r[4], r[5]
        )
        for r in rows
    }


def read_nodes(conn: Connection, coords: Iterable[merkle.Coord]) -> dict[merkle.Coord, bytes]:
    """The hashes of these perfect subtrees (leaves from their audit rows)."""
    wanted = set(coords)
    leaves = [index for level, index in wanted if level == 0]
    found: dict[merkle.Coord, bytes] = {}
    if leaves:
        for seq, entry in read_entries(conn, [i + 1 for i in leaves]).items():
            found[(0, seq - 1)] = entry.leaf_hash()
    inner = {node_key(level, index): (level, index) for level, index in wanted if level}
    if inner:
        for pos, digest in RowWriter(conn).select_in(
            t.ledger_nodes, ("pos", "hash"), "pos", list(inner)
        ):
            found[inner[int(pos)]] = bytes(digest)
    missing = wanted - found.keys()
    if missing:
        level, index = min(missing, key=lambda c: c[1] << c[0])
        first = index << level
        what = (
            f"entry {first + 1}" if level == 0 else f"entries {first + 1}..{(index + 1) << level}"
        )
        raise LedgerGapError(
            f"the ledger's tree lacks {what} (seq): rows were deleted or the store is damaged; "
            "run hubctl audit verify"
        )
    return found


def _run(conn: Connection, compute: Any) -> list[bytes]:
    nodes = read_nodes(conn, merkle.needed(compute))
    result: list[bytes] = compute(lambda level, index: nodes[(level, index)])
    return result


def inclusion(conn: Connection, index: int, size: int) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    return _run(conn, lambda node: merkle.inclusion_proof(index, size, node))


def inclusions(conn: Connection, indexes: Iterable[int], size: int) -> dict[int, list[bytes]]:
    """Several inclusion proofs, reading every node they need in one pass."""
    wanted = sorted(set(indexes))

    def compute(node: merkle.NodeSource) -> list[list[bytes]]:
        return [merkle.inclusion_proof(i, size, node) for i in wanted]

    nodes = read_nodes(conn, merkle.needed(compute))
    proofs = compute(lambda level, index: nodes[(level, index)])
    return dict(zip(wanted, proofs, strict=True))


def consistency(conn: Connection, old: int, new: int) -> list[bytes]:
    return _run(conn, lambda node: merkle.consistency_proof(old, new, node))


def root(conn: Connection, size: int) -> bytes:
    """The root of the first ``size`` leaves, from O(log n) stored subtrees."""
    if size == 0:
        return merkle.EMPTY_ROOT
    return _run(conn, lambda node: [merkle.subtree(0, size, node)])[0]


def load_frontier(conn: Connection, size: int) -> merkle.Frontier:
    coords = merkle.Frontier.peak_coords(size)
    nodes = read_nodes(conn, coords)
    return merkle.Frontier(size, [nodes[c] for c in coords])


def ledger_size(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(t.audit.c.seq), 0))).scalar_one())


def node_rows(made: Iterable[merkle.NewNode]) -> list[dict[str, Any]]:
    return [{"pos": node_key(n.level, n.index), "hash": n.hash} for n in made]


def stream_entries(conn: Connection, *, after: int = 0) -> Iterator[Entry]:
    """Every entry after seq ``after``, in order (for audits and the migration)."""
    # per statement: Connection.execution_options would change the caller's connection
    result = conn.execute(
        select(*(t.audit.c[name] for name in _ENTRY_COLUMNS))
        .where(t.audit.c.seq > after)
        .order_by(t.audit.c.seq),
        execution_options={"stream_results": True, "yield_per": _BUILD_BATCH},
    )
    for row in result:
        yield entry_of(row)


def build_nodes(conn: Connection) -> int:
    """Write the tree's nodes for the audit rows already there (migration 0004)."""
    frontier, rows = merkle.Frontier(), []
    for entry in stream_entries(conn):
        if entry.seq != frontier.size + 1:
            raise LedgerGapError(
                f"the audit ledger jumps from seq {frontier.size} to {entry.seq}; "
                "the tree cannot be built over a ledger with rows missing"
            )
        rows += node_rows(frontier.append(entry.leaf_hash()))
        if len(rows) >= _BUILD_BATCH:
            conn.execute(insert(t.ledger_nodes), rows)
            rows = []
    if rows:
        conn.execute(insert(t.ledger_nodes), rows)
    return frontier.size


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    at: int
    kid: str
    frame: bytes


def checkpoint_of_row(row: Any) -> StoredCheckpoint:
    """From a row of ``ledger_checkpoints``."""
    return StoredCheckpoint(int(row.size), bytes(row.root), int(row.at), row.kid, bytes(row.frame))


def latest_checkpoint(conn: Connection) -> StoredCheckpoint | None:
    row = conn.execute(
        select(t.ledger_checkpoints).order_by(t.ledger_checkpoints.c.size.desc()).limit(1)
    ).first()
    return None if row is None else checkpoint_of_row(row)


def checkpoints(conn: Connection) -> list[StoredCheckpoint]:
    rows = conn.execute(select(t.ledger_checkpoints).order_by(t.ledger_checkpoints.c.size))
    return [checkpoint_of_row(r) for r in rows]
