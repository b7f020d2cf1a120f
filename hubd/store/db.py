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

from hubd.store import ledger as ledgerstore
from hubd.store import shared as sharedstore
from hubd.store import tables as t
from hubd.store.audit import GENESIS
from hubd.store.batch import apply, apply_shared, fence_lost
from hubd.store.connections import (
    AsyncWriter,
    ThreadWriter,
    WriterConnection,
    engine_for,
    store_error_text,
)
from hubd.store.leases import Fence, LeaseLostError
from hubd.store.writes import (
    Operation,
)
from schemas import merkle
from schemas.errors import ClosedResourceError, StoreError, XchgError

log = structlog.get_logger("hubd.store")
T = TypeVar("T")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(slots=True)
class _Pending:
    """Operations one caller submitted together; its future gets their results, in order."""

    ops: Sequence[Operation]
    fence: Fence | None = None  # a replica's write as owner: the leases it must still hold
    future: asyncio.Future[list[Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# The fence a replica's write as owner carries (set by the daemon from its LeaseKeeper);
# raises LeaseLostError when the replica does not believe it holds them.
FenceFor = Callable[[Sequence[Operation]], Fence | None]


# ------------------------------------------------------------------ the store


def _upgrade(connection: Connection) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class Store:
    """Open with ``async with Store(url) as store``; close drains pending writes."""

    def __init__(
        self,
        url: str,
        *,
        group_max: int = 512,
        group_delay: float = 0.002,
        shared: bool = False,
    ) -> None:
        """``shared``: one of several replicas writing this (PostgreSQL) store
        (:mod:`hubd.store.shared`); ``fence_for`` then says what each write must hold."""
        self.url = url
        self.shared = shared
        self.fence_for: FenceFor | None = None
        self.backend_pid: int | None = None  # PostgreSQL: the writer's server process
        self.replica = "hub"  # shared: the replica's id, named in its announcements
        self.engine = engine_for(url, settings=sharedstore.SESSION if shared else None)
        self.group_max = group_max
        self.group_delay = group_delay
        # a list: callers' writes that go into one group commit together (submit_parts)
        self._queue: asyncio.Queue[_Pending | list[_Pending] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._conn: WriterConnection | None = None
        self._reader: AsyncConnection | None = None
        self._read_lock = asyncio.Lock()
        self._closed = False
        self._audit_seq = 0
        self._audit_hash = GENESIS
        self._tree = merkle.Frontier()  # the ledger's Merkle tree, right edge only
        self._outbox_seq: dict[tuple[str, str], int] = {}
        # shared: numbering asked for (numbered_now) and the task reading it for them all
        self._numbering_asked: dict[tuple[str, str], list[asyncio.Future[int]]] = {}
        self._numbering_reader: asyncio.Task[None] | None = None
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
                self.backend_pid = await self._conn.run(sharedstore.backend_pid)
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
        """The last receipt-batch number committed for (dest, channel); 0 if none. On a
        shared store only what this replica last saw: :meth:`numbered_now` reads it."""
        return self._outbox_seq.get((dest, channel), 0)

    async def numbered_now(self, dest: str, channel: str) -> int:
        """As :meth:`numbered`, read from the store when other replicas number too. The
        callers of one turn of the loop (a pass's hellos after a broker restart: thousands)
        share one read, and those who ask while it runs share the next."""
        if not self.shared:
            return self.numbered(dest, channel)
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._numbering_asked.setdefault((dest, channel), []).append(waiter)
        if self._numbering_reader is None:
            self._numbering_reader = asyncio.create_task(
                self._read_numbering(), name="hubd.store.numbering"
            )
        return await waiter

    async def _read_numbering(self) -> None:
        asked: dict[tuple[str, str], list[asyncio.Future[int]]] = {}
        try:
            await asyncio.sleep(0)  # the rest of this turn's callers ask first
            while self._numbering_asked:
                asked, self._numbering_asked = self._numbering_asked, {}
                try:
                    found = await self.read_sync(sharedstore.numbering, list(asked))
                except Exception as exc:  # noqa: BLE001 - each caller gets the store's error
                    for waiters in asked.values():
                        for waiter in waiters:
                            if not waiter.done():
                                waiter.set_exception(exc)
                    continue
                for key, waiters in asked.items():
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(found.get(key, 0))
                asked = {}
        finally:
            self._numbering_reader = None
            for waiters in [*asked.values(), *self._numbering_asked.values()]:
                for waiter in waiters:  # cancelled while they waited: the store is closing
                    if not waiter.done():
                        waiter.set_exception(ClosedResourceError("the store is closed"))
            self._numbering_asked = {}

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
        fence = None if self.fence_for is None else self.fence_for(ops)  # LeaseLostError
        pending = _Pending(ops, fence)
        self._queue.put_nowait(pending)
        return await pending.future

    async def submit_parts(
        self, parts: Sequence[Sequence[Operation]]
    ) -> list[list[Any] | XchgError]:
        """Each part as :meth:`submit_many` would take it (its own fence, its own result or
        error), all in one group commit however many operations they hold: a part whose
        leases were lost fails alone, and the others land together."""
        if self._closed:
            raise ClosedResourceError("the store is closed")
        outcomes: list[list[Any] | XchgError] = []
        pendings: list[_Pending] = []
        waiting: list[tuple[int, _Pending]] = []
        for ops in parts:
            try:
                fence = None if self.fence_for is None else self.fence_for(ops)
            except LeaseLostError as exc:
                outcomes.append(exc)
                continue
            pending = _Pending(ops, fence)
            pendings.append(pending)
            waiting.append((len(outcomes), pending))
            outcomes.append([])
        if pendings:
            self._queue.put_nowait(pendings)
        for i, pending in waiting:
            try:
                outcomes[i] = await pending.future
            except XchgError as exc:
                outcomes[i] = exc
        return outcomes

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
            batch = list(first) if isinstance(first, list) else [first]
            size = sum(len(p.ops) for p in batch)
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
                joining = item if isinstance(item, list) else [item]
                batch += joining
                size += sum(len(p.ops) for p in joining)
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        assert self._conn is not None  # noqa: S101 - the writer runs only while open
        seq, chain, outbox = self._audit_seq, self._audit_hash, dict(self._outbox_seq)
        tree = self._tree.copy()  # the batch grows its own copy: a failed commit leaves ours
        ops = [op for p in batch for op in p.ops]
        fences = [p.fence for p in batch]
        try:
            if self.shared:
                groups = [p.ops for p in batch]
                results, tree, lost = await self._conn.run(
                    apply_shared, groups, seq, chain, tree, fences, self.replica
                )
                batch = self._fenced_off(batch, lost)
            else:
                results = await self._conn.run(apply, ops, seq, chain, outbox, tree)
        except Exception as exc:
            # the driver's own errors too: on SQLite the rows go to it directly (store.rowwriter)
            retriable = isinstance(
                exc, DBAPIError | OperationalError | SQLAlchemyError | sqlite3.Error
            )
            text = store_error_text(exc)  # never a row's value (a document number, a frame)
            error = StoreError(f"the store refused a write: {text}", retriable=retriable)
            self._last_commit_failed = True
            if self.shared and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                log.warning(  # expected after a freeze: one line, no traceback
                    "store.session_ended",
                    operations=len(ops),
                    error=sharedstore.IDLE_ENDED_TEXT,
                )
            elif retriable:  # the database's refusal: its traceback would quote the row
                log.error("store.write_failed", operations=len(ops), error=text)
            else:
                log.exception("store.write_failed", operations=len(ops))
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        (self._audit_seq, self._audit_hash, numbers), values = results
        if self.shared:
            self._outbox_seq.update(numbers)
        else:
            self._outbox_seq = numbers
        self._tree = tree
        self.commits += 1
        self._last_commit_failed = False
        start = 0
        for p in batch:
            end = start + len(p.ops)
            if not p.future.done():
                p.future.set_result(values[start:end])
            start = end

    @staticmethod
    def _fenced_off(batch: list[_Pending], lost: frozenset[tuple[int, int]]) -> list[_Pending]:
        """Fail the callers whose leases were lost (their operations were left out of the
        commit); the rest of the batch, in order."""
        kept = []
        for p in batch:
            gone = fence_lost(p.fence, lost)
            if not gone:
                kept.append(p)
            elif p.fence is not None and not p.future.done():
                p.future.set_exception(LeaseLostError(p.fence.replica, gone))
        return kept

    # ---------------------------------------------------------------- reading

    async def read(self, statement: Any) -> list[Any]:
        """Run one read on the reader connection (never the writer's)."""
        if self._reader is None:
            raise ClosedResourceError("the store is closed")
        self.reads += 1
        async with self._read_lock:
            try:
                return list((await self._reader.execute(statement)).all())
            finally:  # end the read transaction (a failed one too): see new commits next time
                await self._reader.rollback()

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
