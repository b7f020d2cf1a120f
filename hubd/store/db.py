"""The hub's durable store: SQLAlchemy 2 async, SQLite (WAL, synchronous=FULL) or PostgreSQL.

Nothing is acknowledged to anyone before it is durable. Writers hand :class:`Store` small
operations and await them; one writer task gathers the operations of many callers into
one transaction (group commit: flushed when ``group_max`` operations wait or
``group_delay`` has passed), so a thousand messages a second cost a few hundred commits,
not a thousand. The audit ledger is chained inside the same transaction as the change it
records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    Connection,
    func,
    select,
)
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from hubd.core.states import DeliveryState, MessageState
from hubd.store import ledger as ledgerstore
from hubd.store import tables as t
from hubd.store.audit import GENESIS, AuditEvent, chain_hash_of
from hubd.store.connections import (
    AsyncWriter,
    ThreadWriter,
    WriterConnection,
    engine_for,
)
from hubd.store.rowwriter import RowWriter
from hubd.store.writes import (
    AdvanceNumbering,
    DeliveryUpdate,
    DirectWrite,
    Duplicate,
    NewMessage,
    Operation,
    QueueReceipts,
    RecordReceipts,
    Stored,
    UpdateDeliveries,
)
from schemas import merkle
from schemas.errors import ClosedResourceError, StoreError
from schemas.ledger import Entry

log = structlog.get_logger("hubd.store")
T = TypeVar("T")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(slots=True)
class _Pending:
    """Operations one caller submitted together; its future gets their results, in order."""

    ops: Sequence[Operation]
    future: asyncio.Future[list[Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# ------------------------------------------------------------------ the store


def _upgrade(connection: Connection) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class Store:
    """Open with ``async with Store(url) as store``; close drains pending writes."""

    def __init__(self, url: str, *, group_max: int = 512, group_delay: float = 0.002) -> None:
        self.url = url
        self.engine = engine_for(url)
        self.group_max = group_max
        self.group_delay = group_delay
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._conn: WriterConnection | None = None
        self._reader: AsyncConnection | None = None
        self._read_lock = asyncio.Lock()
        self._closed = False
        self._audit_seq = 0
        self._audit_hash = GENESIS
        self._tree = merkle.Frontier()  # the ledger's Merkle tree, right edge only
        self._outbox_seq: dict[tuple[str, str], int] = {}
        self.commits = 0  # transactions written (for metrics and the benchmark)
        self.reads = 0  # reads on the reader connection (tests count what a path costs)
        self._last_commit_failed = False

    async def __aenter__(self) -> Store:
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(_upgrade)
            if self.url.startswith("sqlite"):
                self._conn = await ThreadWriter.open(self.url)
            else:
                self._conn = AsyncWriter(await self.engine.connect())
            self._reader = await self.engine.connect()
            counters = await self._conn.run(_counters)
            self._audit_seq, self._audit_hash, self._outbox_seq, self._tree = counters
        except (SQLAlchemyError, OSError, ledgerstore.LedgerGapError) as exc:
            if self._reader is not None:
                with contextlib.suppress(SQLAlchemyError):
                    await self._reader.close()
                self._reader = None
            if self._conn is not None:
                await self._conn.close()
            await self.engine.dispose()
            if isinstance(exc, ledgerstore.LedgerGapError):
                raise  # its own sentence: the tree lacks rows (hubd.engine.checkpoints explains)
            raise StoreError(
                f"cannot open the store at {self._safe_url}: {exc}", retriable=True
            ) from exc
        self._writer = asyncio.create_task(self._write_loop(), name="hubd.store.writer")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def _safe_url(self) -> str:
        """The URL without a password, for messages and logs."""
        head, sep, tail = self.url.partition("@")
        if not sep or "://" not in head:
            return self.url
        scheme, _, creds = head.partition("://")
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{tail}"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def writable(self) -> bool:
        """Open, its writer running, and its last group commit (if any) went through."""
        writer = self._writer
        return (
            not self._closed
            and writer is not None
            and not writer.done()
            and not self._last_commit_failed
        )

    async def close(self) -> None:
        """Write what is queued, then close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._writer is not None:
                self._queue.put_nowait(None)  # the writer commits what precedes it, then stops
                await self._writer
        finally:
            if self._reader is not None:
                with contextlib.suppress(SQLAlchemyError):
                    await self._reader.close()
            if self._conn is not None:
                await self._conn.close()
            self._reader = None
            await self.engine.dispose()

    @property
    def ledger(self) -> tuple[int, bytes]:
        """The committed ledger's (size, Merkle root): what a checkpoint signs."""
        return self._tree.size, self._tree.root()

    def numbered(self, dest: str, channel: str) -> int:
        """The last receipt-batch number committed for (dest, channel); 0 if none."""
        return self._outbox_seq.get((dest, channel), 0)

    async def run_on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the writer's own connection (tests and tools)."""
        if self._conn is None:
            raise ClosedResourceError("the store is closed")
        return await self._conn.run(fn, *args)

    # ---------------------------------------------------------------- writing

    async def submit(self, op: Operation) -> Any:
        """Queue ``op`` for the next group commit and wait until it is durable."""
        return (await self.submit_many([op]))[0]

    async def submit_many(self, ops: Sequence[Operation]) -> list[Any]:
        """Queue ``ops`` for the next group commit (all in one); their results, in order.

        One future for a whole burst: the ingest hands over everything it verified in one
        pass, so a commit of hundreds of messages wakes one waiter, not hundreds.
        """
        if self._closed:
            raise ClosedResourceError("the store is closed")
        pending = _Pending(ops)
        self._queue.put_nowait(pending)
        return await pending.future

    async def _write_loop(self) -> None:
        """Gather operations into batches and commit each batch in one transaction.

        Never cancelled: close() queues a sentinel, so a commit is never cut in half.
        """
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            size = len(first.ops)
            deadline = loop.time() + self.group_delay
            while size < self.group_max:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    # Not wait_for: on 3.11 it runs get() in a task of its own, and when the
                    # timeout and an item arrive together the item is lost (gh-86296): a
                    # write never committed, or the closing None never seen (a hang).
                    try:
                        async with asyncio.timeout(remaining):
                            item = await self._queue.get()
                    except TimeoutError:
                        break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                size += len(item.ops)
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        assert self._conn is not None  # noqa: S101 - the writer runs only while open
        seq, chain, outbox = self._audit_seq, self._audit_hash, dict(self._outbox_seq)
        tree = self._tree.copy()  # the batch grows its own copy: a failed commit leaves ours
        ops = [op for p in batch for op in p.ops]
        try:
            results = await self._conn.run(_apply, ops, seq, chain, outbox, tree)
        except Exception as exc:
            # the driver's own errors too: on SQLite the rows go to it directly (store.rowwriter)
            retriable = isinstance(
                exc, DBAPIError | OperationalError | SQLAlchemyError | sqlite3.Error
            )
            error = StoreError(f"the store refused a write: {exc!r}", retriable=retriable)
            self._last_commit_failed = True
            log.exception("store.write_failed", operations=len(ops))
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        (self._audit_seq, self._audit_hash, self._outbox_seq), values = results
        self._tree = tree
        self.commits += 1
        self._last_commit_failed = False
        start = 0
        for p in batch:
            end = start + len(p.ops)
            if not p.future.done():
                p.future.set_result(values[start:end])
            start = end

    # ---------------------------------------------------------------- reading

    async def read(self, statement: Any) -> list[Any]:
        """Run one read on the reader connection (never the writer's)."""
        if self._reader is None:
            raise ClosedResourceError("the store is closed")
        self.reads += 1
        async with self._read_lock:
            result = list((await self._reader.execute(statement)).all())
            await self._reader.rollback()  # end the read transaction: see new commits next time
        return result

    async def read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the reader connection (hubd.store.ledger's functions),
        under the read lock, its read transaction ended after it, as :meth:`read`."""
        if self._reader is None:
            raise ClosedResourceError("the store is closed")
        self.reads += 1
        async with self._read_lock:
            try:
                return await self._reader.run_sync(fn, *args)
            finally:
                await self._reader.rollback()


def _counters(
    conn: Connection,
) -> tuple[int, bytes, dict[tuple[str, str], int], merkle.Frontier]:
    """Where the audit chain, its tree and the receipt numbering stand (read once, at open)."""
    row = conn.execute(
        select(t.audit.c.seq, t.audit.c.hash).order_by(t.audit.c.seq.desc()).limit(1)
    ).first()
    seq, chain = (0, GENESIS) if row is None else (int(row.seq), bytes(row.hash))
    rows = conn.execute(
        select(
            t.receipt_outbox.c.dest,
            t.receipt_outbox.c.channel,
            func.max(t.receipt_outbox.c.seq),
        ).group_by(t.receipt_outbox.c.dest, t.receipt_outbox.c.channel)
    )
    outbox = {(r[0], r[1]): int(r[2]) for r in rows}
    floors = conn.execute(
        select(
            t.receipt_numbering.c.dest, t.receipt_numbering.c.channel, t.receipt_numbering.c.floor
        )
    )
    for dest, channel, floor in floors:
        outbox[(dest, channel)] = max(outbox.get((dest, channel), 0), int(floor))
    tree = ledgerstore.load_frontier(conn, seq)
    conn.commit()
    return seq, chain, outbox, tree


def _apply(  # noqa: PLR0917 - run on the writer's thread with positional arguments
    conn: Connection,
    ops: Sequence[Operation],
    seq: int,
    chain: bytes,
    outbox: dict[tuple[str, str], int],
    tree: merkle.Frontier,
) -> tuple[tuple[int, bytes, dict[tuple[str, str], int]], list[Any]]:
    """One transaction for a whole batch, in order. Runs on the writer's connection."""
    batch = _Batch(seq, chain, outbox, tree)
    if not conn.in_transaction():
        # Begun explicitly: on SQLite the rows go to the driver directly (hubd.store.rowwriter),
        # and a connection that executed nothing itself would take commit() for a no-op.
        conn.begin()
    try:
        results = batch.plan(conn, ops)  # it reads too: a failed plan must end its transaction
        batch.write(conn)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return (batch.seq, batch.chain, batch.outbox), results


class _Batch:
    """The rows one group commit writes, gathered in operation order."""

    def __init__(
        self, seq: int, chain: bytes, outbox: dict[tuple[str, str], int], tree: merkle.Frontier
    ) -> None:
        self.seq, self.chain, self.outbox, self.tree = seq, chain, outbox, tree
        self.audit: list[dict[str, Any]] = []
        self.nodes: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.updates: dict[DeliveryState, list[dict[str, Any]]] = {}
        self.receipts: list[dict[str, Any]] = []
        self.batches: dict[bytes, dict[str, Any]] = {}
        self.queued: list[dict[str, Any]] = []
        self.floors: dict[tuple[str, str], tuple[int, int]] = {}

    def chain_audit(self, events: Sequence[AuditEvent]) -> None:
        for ev in events:
            self.seq += 1
            detail = json.dumps(
                ev.detail, ensure_ascii=False, sort_keys=True, separators=(",", ":")
            )
            leaf = Entry(self.seq, ev.at, ev.event, ev.msg_id, ev.org, detail).leaf()
            digest = chain_hash_of(self.chain, leaf)
            self.nodes += ledgerstore.node_rows(self.tree.append(merkle.leaf_hash(leaf)))
            self.audit.append(
                {
                    "seq": self.seq,
                    "at": ev.at,
                    "event": ev.event,
                    "msg_id": ev.msg_id,
                    "org": ev.org,
                    "detail": detail,
                    "prev_hash": self.chain,
                    "hash": digest,
                }
            )
            self.chain = digest

    def plan(self, conn: Connection, ops: Sequence[Operation]) -> list[Any]:
        existing = self._existing(
            conn, [op.row["msg_id"] for op in ops if isinstance(op, NewMessage)]
        )
        results: list[Any] = []
        for op in ops:
            if isinstance(op, NewMessage):
                known = existing.get(op.row["msg_id"])
                if known is not None:
                    results.append(
                        Duplicate(
                            same=known[0] == op.row["frame_sha256"], state=MessageState(known[1])
                        )
                    )
                    continue
                existing[op.row["msg_id"]] = (op.row["frame_sha256"], op.row["state"])
                self.messages.append(op.row)
                self.deliveries.extend(op.deliveries)
                results.append(Stored())
            elif isinstance(op, UpdateDeliveries):
                self.update(op.updates)
                results.append(None)
            elif isinstance(op, RecordReceipts):
                self.batches[op.sha256] = {
                    "sha256": op.sha256,
                    "issuer": op.issuer,
                    "received_at": op.received_at,
                    "frame": op.frame,
                }
                self.receipts.extend(op.rows)
                self.update(op.updates)
                forward = op.forward
                results.append(
                    None
                    if forward is None
                    else self._number(forward[0], forward[1], op.frame, op.received_at)
                )
            elif isinstance(op, QueueReceipts):
                results.append(self._number(op.dest, op.channel, op.frame, op.created_at))
                continue
            elif isinstance(op, AdvanceNumbering):
                key = (op.dest, op.channel)
                moved = op.floor > self.outbox.get(key, 0)
                if moved:
                    self.outbox[key] = op.floor
                    self.floors[key] = (op.floor, op.at)
                results.append(moved)
                continue
            elif isinstance(op, DirectWrite):
                result, events = op.apply(conn)
                results.append(result)
                self.chain_audit(events)
                continue
            else:
                results.append(None)
            self.chain_audit(op.audit)
        return results

    def update(self, updates: Sequence[DeliveryUpdate]) -> None:
        for u in updates:
            self.updates.setdefault(u.state, []).append(
                {"m": u.msg_id, "r": u.recipient, "s": u.state.value, "a": u.attempts, "u": u.at}
            )

    def _number(self, dest: str, channel: str, frame: bytes, at: int) -> int:
        """The next outbox number for (dest, channel), written in this same commit."""
        key = (dest, channel)
        self.outbox[key] = number = self.outbox.get(key, 0) + 1
        self.queued.append(
            {"dest": dest, "channel": channel, "seq": number, "created_at": at, "frame": frame}
        )
        return number

    @staticmethod
    def _existing(conn: Connection, ids: list[bytes]) -> dict[bytes, tuple[bytes, str]]:
        if not ids:
            return {}
        rows = RowWriter(conn).select_in(
            t.messages, ("msg_id", "frame_sha256", "state"), "msg_id", ids
        )
        return {bytes(r[0]): (bytes(r[1]), r[2]) for r in rows}

    def write(self, conn: Connection) -> None:
        rows = RowWriter(conn)
        rows.insert(t.messages, self.messages)
        rows.insert(t.deliveries, self.deliveries)
        for state, params in self.updates.items():
            rows.update_deliveries(state, params)
        if self.batches:
            known = {
                bytes(r[0])
                for r in rows.select_in(t.receipt_batches, ("sha256",), "sha256", self.batches)
            }
            rows.insert(
                t.receipt_batches, [b for sha, b in self.batches.items() if sha not in known]
            )
        rows.insert(t.receipts, self.receipts)
        rows.insert(t.receipt_outbox, self.queued)
        for (dest, channel), (floor, at) in self.floors.items():
            key = {"dest": dest, "channel": channel}
            conn.execute(t.receipt_numbering.delete().filter_by(**key))
            rows.insert(t.receipt_numbering, [{**key, "floor": floor, "set_at": at}])
        rows.insert(t.audit, self.audit)
        rows.insert(t.ledger_nodes, self.nodes)
