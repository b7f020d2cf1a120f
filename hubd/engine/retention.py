"""Retention: the content of finished messages leaves the hub after a configured period.

A message is *finished* when every one of its deliveries is final for its content:
DELIVERED, SIGNED_FOR or EXPIRED (the hub will never send it again), or DEAD. It is
purged ``[retention] delivered_after`` after the last of its deliveries ended, or
``dead_after`` (longer) if one is DEAD, because an operator may still redeliver a dead
letter and a purged one cannot be. Messages still awaited are never touched, nor are
quarantined ones (evidence of a security event; the security officer decides).

Purging removes the body (the inline column, and the spool file of a large body, or its
pieces in the store when the hub runs as a replica: hubd.store.sharedspool) and the
frame, and keeps the ids, labels, sizes, ``frame_sha256`` and the whole ledger; it writes
a ``message.purged`` audit entry with the frame's and the body's SHA-256, so the chain
still verifies and still says what was there. A 请示 (REQUEST) keeps its frame (routing
labels and sealed keys, no content): a 批复 may answer it long after, and the hub checks
the answer against the request's header.

Work goes in bounded batches (``[retention] batch`` messages per transaction), oldest
first, each batch a store operation that re-checks every message as it is at commit time
(:class:`PurgeMessages`): a redelivery that lands meanwhile simply wins. Spool files are
removed after the commit that forgets them, and their paths cleared after that; a crash in
between leaves paths that the next start finishes (:meth:`Retention.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import ColumnElement, Connection, and_, exists, not_, or_, select, tuple_, update

from hubd.config import Retention as RetentionSettings
from hubd.core.states import DeliveryState, MessageState
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.bodyref import StoredBody, body_ref
from hubd.store.db import Store
from hubd.store.sharedspool import remove_bodies
from hubd.store.writes import DirectWrite
from schemas import codec
from schemas.envelope import BodyDescriptor, read_frame_sender
from schemas.errors import StoreError, XchgError
from schemas.labels import DocType

log = structlog.get_logger("hubd.retention")

DONE = (
    DeliveryState.DELIVERED.value,
    DeliveryState.SIGNED_FOR.value,
    DeliveryState.EXPIRED.value,
    DeliveryState.RECALLED.value,
    DeliveryState.RELAYED.value,  # the next hub holds it: its content is that hub's to keep
    DeliveryState.REFUSED.value,
)
DEAD = DeliveryState.DEAD.value
KEEPS_FRAME = DocType.REQUEST.name  # a 批复 is checked against its 请示's header


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Deliveries that ended after these times (ms) keep their message's content."""

    delivered: int
    dead: int

    @classmethod
    def at(cls, now: int, settings: RetentionSettings) -> Cutoffs:
        return cls(
            now - int(settings.delivered_after * 1000), now - int(settings.dead_after * 1000)
        )


def finished(cutoffs: Cutoffs) -> ColumnElement[bool]:
    """SQL: the message (``messages`` row) may be purged now."""
    m, d = t.messages, t.deliveries
    mine = d.c.msg_id == m.c.msg_id
    keeps = or_(
        d.c.state.not_in((*DONE, DEAD)),  # still the hub's job
        d.c.updated_at > cutoffs.delivered,
        and_(d.c.state == DEAD, d.c.updated_at > cutoffs.dead),
    )
    return and_(
        m.c.purged_at.is_(None),
        m.c.state == MessageState.ACCEPTED.value,
        m.c.received_at <= cutoffs.delivered,  # nothing ends before it arrived
        exists().where(mine),
        not_(exists().where(mine, keeps)),
    )


def signed_body_sha256(frame: bytes) -> bytes | None:
    """The body's SHA-256 as the sender signed it in the header; None if unreadable."""
    try:
        _, _, hdr, _ = read_frame_sender(frame)
        body = codec.decode_map(hdr, codec.HDR_LIMITS)["body"]
        return BodyDescriptor.from_wire(body, what="body descriptor").sha256
    except (XchgError, KeyError, TypeError, ValueError):
        return None


# ------------------------------------------------------------------ store operations


@dataclass(slots=True)
class PurgeMessages(DirectWrite):
    """Remove frame and body (and its deliveries' slots) of each message in ``body_hashes``
    that is still finished under ``cutoffs``; the result is (msg_id, spool path or None) of
    each one purged."""

    body_hashes: dict[bytes, bytes | None]  # msg_id -> the signed body SHA-256
    cutoffs: Cutoffs
    at: int

    def apply(self, conn: Connection) -> tuple[list[tuple[bytes, str | None]], list[AuditEvent]]:
        m = t.messages
        rows = conn.execute(
            select(
                m.c.msg_id,
                m.c.sender,
                m.c.doc_type,
                m.c.frame_sha256,
                m.c.body_size,
                m.c.body_path,
            ).where(m.c.msg_id.in_(list(self.body_hashes)), finished(self.cutoffs))
        ).all()
        if not rows:
            return [], []
        keep = [bytes(r.msg_id) for r in rows if r.doc_type == KEEPS_FRAME]
        drop = [bytes(r.msg_id) for r in rows if r.doc_type != KEEPS_FRAME]
        for ids, values in (
            (drop, {"frame": None, "body": None, "slots": None, "purged_at": self.at}),
            (keep, {"body": None, "purged_at": self.at}),
        ):
            if ids:
                conn.execute(update(m).where(m.c.msg_id.in_(ids)).values(**values))
        if drop:  # a large group's slots go with the frame (a 请示 keeps both, for its 批复)
            d = t.deliveries
            conn.execute(update(d).where(d.c.msg_id.in_(drop)).values(slot=None))
        audit = []
        for r in rows:
            body_sha256 = self.body_hashes.get(bytes(r.msg_id))
            audit.append(
                AuditEvent(
                    "message.purged",
                    self.at,
                    bytes(r.msg_id),
                    r.sender,
                    {
                        "frame_sha256": bytes(r.frame_sha256).hex(),
                        "body_sha256": None if body_sha256 is None else body_sha256.hex(),
                        "body_size": int(r.body_size),
                        "spooled": r.body_path is not None,
                        "frame_kept": r.doc_type == KEEPS_FRAME,
                    },
                )
            )
        return [(bytes(r.msg_id), r.body_path) for r in rows], audit


@dataclass(slots=True)
class ForgetSpoolPaths(DirectWrite):
    """The spool files of these purged messages are gone: clear their paths."""

    msg_ids: list[bytes]

    def apply(self, conn: Connection) -> tuple[int, list[AuditEvent]]:
        m = t.messages
        result = conn.execute(
            update(m)
            .where(m.c.msg_id.in_(self.msg_ids), m.c.purged_at.is_not(None))
            .values(body_path=None)
        )
        return int(result.rowcount), []


# ------------------------------------------------------------------ the task


@dataclass(slots=True)
class Round:
    """What one purge round did, for the log."""

    messages: int = 0
    spool_files: int = 0
    content_bytes: int = 0
    batches: int = 0


class Retention:
    """The purge task: ``await Retention(store, settings, clock).run(stop)``."""

    def __init__(self, store: Store, settings: RetentionSettings, clock: Callable[[], int]) -> None:
        self._store, self._settings, self._clock = store, settings, clock
        self.leading: Callable[[], bool] | None = None  # replicas: whether this one purges

    async def run(self, stop: asyncio.Event) -> None:
        """Recover, then purge every ``interval`` until ``stop``; a failed round is logged
        and the next one tries again."""
        with contextlib.suppress(StoreError, OSError):
            await self.recover()
        while not stop.is_set():
            try:
                if self.leading is None or self.leading():  # replicas: one purges at a time
                    await self.purge(stop)
            except (StoreError, OSError):
                log.exception("retention.failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.interval):
                    await stop.wait()

    async def purge(self, stop: asyncio.Event | None = None) -> Round:
        """One round: every finished message, oldest first, in batches."""
        started = time.monotonic()
        done = Round()
        cutoffs = Cutoffs.at(self._clock(), self._settings)
        after: tuple[int, bytes] = (-1, b"")
        m = t.messages
        while stop is None or not stop.is_set():
            rows = await self._store.read(
                select(m.c.msg_id, m.c.received_at, m.c.frame, m.c.body_size)
                .where(
                    finished(cutoffs),
                    tuple_(m.c.received_at, m.c.msg_id) > tuple_(after[0], after[1]),
                )
                .order_by(m.c.received_at, m.c.msg_id)
                .limit(self._settings.batch)
            )
            if not rows:
                break
            after = (int(rows[-1].received_at), bytes(rows[-1].msg_id))
            hashes = {
                bytes(r.msg_id): None if r.frame is None else signed_body_sha256(bytes(r.frame))
                for r in rows
            }
            sizes = {bytes(r.msg_id): int(r.body_size) for r in rows}
            purged = await self._store.submit(PurgeMessages(hashes, cutoffs, self._clock()))
            done.batches += 1
            done.messages += len(purged)
            done.content_bytes += sum(sizes[msg_id] for msg_id, _ in purged)
            done.spool_files += await self._remove_spooled(purged)
            if len(rows) < self._settings.batch:
                break
            await asyncio.sleep(0)  # let the hub's own work in between batches
        if done.messages:
            log.info(
                "retention.purged",
                messages=done.messages,
                spool_files=done.spool_files,
                content_bytes=done.content_bytes,
                batches=done.batches,
                took_ms=int((time.monotonic() - started) * 1000),
            )
        return done

    async def recover(self) -> int:
        """Finish purges a crash interrupted between the commit and the spool files."""
        m = t.messages
        rows = await self._store.read(
            select(m.c.msg_id, m.c.body_path).where(
                m.c.purged_at.is_not(None), m.c.body_path.is_not(None)
            )
        )
        return await self._remove_spooled([(bytes(r.msg_id), r.body_path) for r in rows])

    async def _remove_spooled(self, purged: list[tuple[bytes, str | None]]) -> int:
        """Remove the spooled bodies (files, or pieces in the store), then their paths."""
        spooled = [(msg_id, body_ref(path)) for msg_id, path in purged if path is not None]
        if not spooled:
            return 0
        files = [ref for _, ref in spooled if isinstance(ref, Path)]
        stored = [ref.msg_id for _, ref in spooled if isinstance(ref, StoredBody)]
        removed = await asyncio.to_thread(_unlink_all, files) if files else 0
        removed += await remove_bodies(self._store.engine, stored)
        await self._store.submit(ForgetSpoolPaths([msg_id for msg_id, _ in spooled]))
        return removed


def _unlink_all(paths: list[Path]) -> int:
    """Remove each file (a missing one is already gone); how many were there."""
    removed = 0
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed
