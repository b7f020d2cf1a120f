"""The shared spool: large bodies kept in the store, for hubd replicas (issue 15).

Replicas share one PostgreSQL store; a transfer begun on replica A may be continued on
replica B (A died, B now owns the sender's organisation), and a finished body may be
delivered by whichever replica owns the recipient. So the partial and the finished bodies
live in the store: ``spool_transfers`` (a transfer under way, and how many body bytes the
store holds of it) and ``spool_pieces`` (the body, by offset, in pieces of at most
``transport.CHUNK_BYTES``: never a whole body in one row or in memory).

- **An append** is one transaction: ``UPDATE spool_transfers SET received = offset + n
  WHERE received = offset`` (compare-and-set), then the piece(s). It is durable before the
  hub asks for more. A replica whose view is stale (another appended first) updates no row,
  forgets the transfer and asks the sender to resume from what the store holds; the
  (msg_id, offset) key refuses a second piece at one offset all the same.
- **A miss** (:meth:`StoreSpool.find`) looks for a transfer another replica began and
  adopts it: the envelope verified again, the stored pieces re-hashed by streaming them
  page by page, so the body checker stands where the store does.
- **Finishing** checks size and hash, then removes the transfer row (compare-and-set on
  the full size: one replica finishes); the pieces stay as the finished body, which the
  message row names ``store:<msg id>`` (hubd.store.bodyref).

It uses the store's engine with connections of its own, never the group commit's writer:
bodies must not slow the ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import structlog
from sqlalchemy import ColumnElement, delete, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from hubd.store import tables as t
from hubd.store.bodyref import BodyRef, StoredBody
from hubd.store.connections import store_error_text
from hubd.store.spool import BodySpool, Partial, Spool, Transfer, TransferMovedError
from runtime.clock import now_ms
from schemas import transport
from schemas.envelope import VerifiedEnvelope
from schemas.errors import StoreError, XchgError
from schemas.ids import msg_id_text

log = structlog.get_logger("hubd.spool")

PIECE: Final = transport.CHUNK_BYTES  # the most body bytes one row holds
PAGE: Final = 16  # pieces read per statement when re-hashing (4 MiB)
CONNECTIONS: Final = 3  # the spool's statements at once (the pool is the store's too)

# (frame, org, slots) -> the envelope verified with today's directory (blocking: a large
# group's slots take a while; called in a worker thread)
Verify = Callable[[bytes, str, bytes | None], VerifiedEnvelope]


def spool_for(*, shared: bool, folder: Path, engine: AsyncEngine, verify: Verify) -> BodySpool:
    """The hub's spool: the store's, shared by replicas, or the folder (the default)."""
    if shared:
        return StoreSpool(engine, verify)
    return Spool(folder)


def _failed(zh: str, en: str, exc: SQLAlchemyError) -> StoreError:
    return StoreError(
        f"共享暂存区无法{zh} / the shared spool could not {en} ({store_error_text(exc)}); "
        "the sender resends "
        "what the hub did not answer; check the database's health and free space",
        retriable=True,
    )


_READ = ("读取", "read from the store")
_WRITE = ("写入正文片段", "store a chunk of a body")
_REMOVE = ("删除正文", "remove a body")
_BEGIN = ("开始传输", "begin a transfer")
_FINISH = ("完成正文", "finish a body")


def _insert_new(engine: AsyncEngine, row: dict[str, Any]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING, in the engine's dialect."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(t.spool_transfers).values(row).on_conflict_do_nothing()


class StoreSpool:
    """The spool in the store's tables (see the module's docstring)."""

    shared = True

    def __init__(
        self, engine: AsyncEngine, verify: Verify, clock: Callable[[], int] = now_ms
    ) -> None:
        self._engine, self._verify, self._clock = engine, verify, clock
        self._transfers: dict[bytes, Transfer] = {}
        self._locks: dict[bytes, asyncio.Lock] = {}  # one append per transfer at a time
        self._finding: dict[bytes, asyncio.Task[Transfer | None]] = {}
        self._connections = asyncio.Semaphore(CONNECTIONS)

    def get(self, msg_id: bytes) -> Transfer | None:
        return self._transfers.get(msg_id)

    async def find(self, msg_id: bytes) -> Transfer | None:
        """Ours, or one another replica began (adopted; several callers share one load)."""
        transfer = self._transfers.get(msg_id)
        if transfer is not None:
            return transfer
        task = self._finding.get(msg_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(msg_id))
            self._finding[msg_id] = task
            task.add_done_callback(lambda _t: self._finding.pop(msg_id, None))
        return await asyncio.shield(task)

    async def _load(self, msg_id: bytes) -> Transfer | None:
        heads = await self._heads(t.spool_transfers.c.msg_id == msg_id)
        if not heads:
            return None
        channel, org, frame, slots = heads[0]
        try:
            envelope = await asyncio.to_thread(self._verify, frame, org, slots)
        except XchgError as exc:  # the directory changed since: the sender sends it anew
            log.warning("spool.discarded", msg_id=msg_id_text(msg_id), error=str(exc))
            return None
        return await self.adopt(envelope, channel, org)

    async def _heads(self, *where: ColumnElement[bool]) -> list[Partial]:
        """(channel, org, frame, slots) of the transfers ``where`` says, oldest first."""
        s = t.spool_transfers
        query = select(s.c.channel, s.c.org, s.c.frame, s.c.slots).where(*where)
        try:
            async with self._connections, self._engine.connect() as conn:
                rows = (await conn.execute(query.order_by(s.c.started_at, s.c.msg_id))).all()
        except SQLAlchemyError as exc:
            raise _failed(*_READ, exc) from exc
        return [
            (r.channel, r.org, bytes(r.frame), None if r.slots is None else bytes(r.slots))
            for r in rows
        ]

    async def adopt(self, envelope: VerifiedEnvelope, channel: str, org: str) -> Transfer:
        """Re-hash the pieces the store holds (page by page, never the whole body) and
        track the transfer from there."""
        msg_id = envelope.header.msg_id
        transfer = Transfer(envelope, channel, org, None)
        s, p = t.spool_transfers, t.spool_pieces
        try:
            async with self._connections, self._engine.begin() as conn:
                # one snapshot: the pieces below ``received`` are exactly what it counts
                received = (
                    await conn.execute(select(s.c.received).where(s.c.msg_id == msg_id))
                ).scalar()
                after = -1
                while received is not None and transfer.received < received:
                    pieces = (
                        await conn.execute(
                            select(p.c.offset, p.c.data)
                            .where(p.c.msg_id == msg_id, p.c.offset > after, p.c.offset < received)
                            .order_by(p.c.offset)
                            .limit(PAGE)
                        )
                    ).all()
                    if not pieces:
                        break
                    for offset, data in pieces:
                        if offset != transfer.received:
                            break
                        transfer.checker.feed(bytes(data))
                        transfer.received += len(data)
                    after = pieces[-1].offset
        except SQLAlchemyError as exc:
            raise _failed(*_READ, exc) from exc
        if received is not None and transfer.received != received:
            raise StoreError(
                f"暂存区传输 {msg_id_text(msg_id)} 的片段不连续 / the shared spool's pieces "
                f"of {msg_id_text(msg_id)} hold {transfer.received} of the {received} bytes "
                "its row counts; delete its spool_transfers row and the sender sends it anew",
                retriable=False,
            )
        mine = self._transfers.setdefault(msg_id, transfer)  # a begin may have won meanwhile
        log.info("spool.adopted", msg_id=msg_id_text(msg_id), received=mine.received)
        return mine

    async def begin(self, envelope: VerifiedEnvelope, channel: str, org: str) -> Transfer:
        msg_id = envelope.header.msg_id
        transfer = self._transfers.get(msg_id)
        if transfer is not None:
            return transfer
        row = {
            "msg_id": msg_id,
            "channel": channel,
            "org": org,
            "frame": envelope.frame,
            "slots": None if envelope.slots is None else envelope.slots.blob(),
            "received": 0,
            "started_at": self._clock(),
        }
        p, m = t.spool_pieces, t.messages
        try:
            async with self._connections, self._engine.begin() as conn:
                inserted = (await conn.execute(_insert_new(self._engine, row))).rowcount == 1
                if inserted:  # pieces of a body finished and never stored (a crash between)
                    await conn.execute(
                        delete(p).where(p.c.msg_id == msg_id, ~exists().where(m.c.msg_id == msg_id))
                    )
        except SQLAlchemyError as exc:
            raise _failed(*_BEGIN, exc) from exc
        if not inserted:  # another replica began it first: go on from what it stored
            found = await self.find(msg_id)
            if found is None:
                raise TransferMovedError(msg_id)  # and finished it meanwhile
            return found
        return self._transfers.setdefault(msg_id, Transfer(envelope, channel, org, None))

    def append_now(self, transfer: Transfer, offset: int, data: bytes) -> None:  # noqa: ARG002 - the interface
        return None  # every append awaits the store

    async def append(self, transfer: Transfer, offset: int, data: bytes) -> bool:
        msg_id = transfer.msg_id
        lock = self._locks.setdefault(msg_id, asyncio.Lock())
        async with lock:
            if self._transfers.get(msg_id) is not transfer or offset != transfer.received:
                return False
            transfer.checker.feed(data)  # PeerError past the signed size
            try:
                await self._write(msg_id, offset, data)
            except BaseException:
                self.forget(transfer)  # the checker took bytes the store may not have
                raise
            transfer.received += len(data)
            return True

    async def _write(self, msg_id: bytes, offset: int, data: bytes) -> None:
        s, p = t.spool_transfers, t.spool_pieces
        end = offset + len(data)
        pieces = [
            {"msg_id": msg_id, "offset": at, "data": data[at - offset : at - offset + PIECE]}
            for at in range(offset, end, PIECE)
        ]
        try:
            async with self._connections, self._engine.begin() as conn:
                moved = await conn.execute(
                    update(s)
                    .where(s.c.msg_id == msg_id, s.c.received == offset)
                    .values(received=end)
                )
                if moved.rowcount != 1:
                    raise TransferMovedError(msg_id)
                await conn.execute(p.insert(), pieces)
        except IntegrityError as exc:  # a piece at this offset is there already
            raise TransferMovedError(msg_id) from exc
        except SQLAlchemyError as exc:
            raise _failed(*_WRITE, exc) from exc

    async def finish(self, transfer: Transfer) -> StoredBody:
        """Check size and hash; the pieces become the finished body. One replica finishes
        (compare-and-set on the whole size); another gets TransferMovedError."""
        transfer.checker.close()
        s = t.spool_transfers
        size = transfer.envelope.body.size
        try:
            async with self._connections, self._engine.begin() as conn:
                done = await conn.execute(
                    delete(s).where(s.c.msg_id == transfer.msg_id, s.c.received == size)
                )
        except SQLAlchemyError as exc:
            raise _failed(*_FINISH, exc) from exc
        if done.rowcount != 1:
            self.forget(transfer)
            raise TransferMovedError(transfer.msg_id)
        return StoredBody(transfer.msg_id)

    def forget(self, transfer: Transfer) -> None:
        msg_id = transfer.msg_id
        if self._transfers.get(msg_id) is transfer:
            del self._transfers[msg_id]
            lock = self._locks.get(msg_id)
            if lock is not None and not lock.locked():
                del self._locks[msg_id]

    async def discard(self, transfer: Transfer) -> None:
        self.forget(transfer)
        s, p = t.spool_transfers, t.spool_pieces
        try:
            async with self._connections, self._engine.begin() as conn:
                await conn.execute(delete(s).where(s.c.msg_id == transfer.msg_id))
                await conn.execute(delete(p).where(p.c.msg_id == transfer.msg_id))
        except SQLAlchemyError as exc:
            raise _failed(*_REMOVE, exc) from exc

    async def remove(self, body: BodyRef) -> None:
        if isinstance(body, StoredBody):
            await remove_bodies(self._engine, [body.msg_id])
        else:
            body.unlink(missing_ok=True)  # a folder body from before replica mode

    async def partial(self) -> list[Partial]:
        return await self._heads()


# ------------------------------------------------------------ finished bodies


async def read_body(engine: AsyncEngine, msg_id: bytes, offset: int, n: int) -> bytes:
    """Up to ``n`` bytes of a stored body from ``offset`` (b"" past its end, or when it
    is gone). Reads only the pieces that overlap (a piece is at most PIECE bytes)."""
    p = t.spool_pieces
    end = offset + n
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(p.c.offset, p.c.data)
                    .where(p.c.msg_id == msg_id, p.c.offset > offset - PIECE, p.c.offset < end)
                    .order_by(p.c.offset)
                )
            ).all()
    except SQLAlchemyError as exc:
        raise _failed(*_READ, exc) from exc
    return _slice(rows, offset, end)


def _slice(rows: Iterable[Any], offset: int, end: int) -> bytes:
    out = bytearray()
    at = offset
    for start, data in rows:
        stop = start + len(data)
        if stop <= at:
            continue
        if start > at:
            break  # a hole: what is contiguous from offset
        out += bytes(data)[at - start : end - start]
        at = min(stop, end)
    return bytes(out)


async def remove_bodies(engine: AsyncEngine, msg_ids: list[bytes]) -> int:
    """Remove stored bodies (retention, a refused message); how many had pieces."""
    if not msg_ids:
        return 0
    p = t.spool_pieces
    try:
        async with engine.begin() as conn:
            had = (
                await conn.execute(
                    select(func.count(func.distinct(p.c.msg_id))).where(p.c.msg_id.in_(msg_ids))
                )
            ).scalar_one()
            await conn.execute(delete(p).where(p.c.msg_id.in_(msg_ids)))
    except SQLAlchemyError as exc:
        raise _failed(*_REMOVE, exc) from exc
    return int(had)
