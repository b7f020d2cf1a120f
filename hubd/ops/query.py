"""What an operator asks of the hub's store: status, the queue, the dead letters (one
message's timeline is :mod:`hubd.ops.trace`).

Read-only queries that return frozen dataclasses; each result also has ``as_json()``, the
shape ``hubctl --json`` prints. Nothing here prints, and nothing here writes: ``hubctl``
opens its own read-only connection with :func:`reading` (the hub may be running: SQLite in
WAL mode and PostgreSQL both serve readers beside the writer). Every query takes a
:data:`Read` (a statement in, rows out), which is also the signature of the running hub's
``Store.read``: an admin socket in the hub can answer the same questions with the same
functions and add what only the running hub knows (presence, through ``presence=``).

Titles and signatories are not in the store's columns, the document-number column is
only ever compared (by :mod:`hubd.ops.find`), never selected, and the stored frames are
never decoded here, so none of them can reach an answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Select, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from hubd.core.states import DeliveryState
from hubd.ops.contact import HubContact, Presence
from hubd.ops.redeliver import Candidate, Refusal, refusal
from hubd.ops.replicas import ReplicaStatus
from hubd.ops.spokes import NeighbourHub, PendingGroup, Spoke, neighbours, spokes_of
from hubd.store import tables as t
from hubd.store.connections import engine_for, read_only_url
from schemas.directory import Directory
from schemas.errors import StoreError
from schemas.expiry import ExpiryWarning
from schemas.ids import msg_id_text
from schemas.labels import Classification, Precedence

Read = Callable[[Any], Awaitable[Sequence[Any]]]  # a statement -> its rows (Store.read too)
T = TypeVar("T")

AWAITING = (DeliveryState.PENDING.value, DeliveryState.SENT.value)  # still the hub's job
GONE = (DeliveryState.DEAD.value, DeliveryState.EXPIRED.value)  # dead letters
PRESENCE_UNKNOWN = (
    "the hub keeps spokes' presence in memory and neither stores nor audits it, so the store "
    "cannot say who is online; 'last heard' is the last message or receipt the organisation "
    "sent, and the hub's log has every spoke.online and spoke.offline"
)
LABEL_OF_RANK = {c.rank: c for c in Classification}
PRECEDENCE_OF_RANK = {p.rank: p for p in Precedence}


# ------------------------------------------------------------------ the connection


class Reader:
    """A :data:`Read` on one connection that also runs a function of a synchronous
    connection on it, in the same snapshot (``sync``, as ``Store.read_sync``)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def __call__(self, statement: Any) -> Sequence[Any]:
        return (await self._conn.execute(statement)).all()

    async def sync(self, fn: Callable[[Connection], T]) -> T:
        return await self._conn.run_sync(fn)


@contextlib.asynccontextmanager
async def reading(url: str) -> AsyncIterator[Reader]:
    """A :class:`Reader` over a read-only connection to the store at ``url``.

    Raises StoreError (with a sentence) if the store is missing or cannot be read. Every
    query of one ``reading`` sees the same snapshot: one read transaction (SQLite), or a
    read-only REPEATABLE READ transaction (PostgreSQL).
    """
    engine = engine_for(read_only_url(url))  # never creates or changes a store
    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            else:  # the driver begins only before writes; a read transaction is one snapshot
                await conn.exec_driver_sql("BEGIN")
            yield Reader(conn)
    except (SQLAlchemyError, OSError) as exc:
        cause = getattr(exc, "orig", None) or exc
        raise StoreError(
            f"cannot read the hub's store at {safe_url(url)}: {cause}; check --store or "
            "--config, and that this user may read it",
            retriable=True,
        ) from exc
    finally:
        await engine.dispose()


def safe_url(url: str) -> str:
    """``url`` without its password, for messages and output."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unreadable store URL)"


def plain(record: Any) -> dict[str, Any]:
    """A flat dataclass as JSON values: a msg_id in hex, a label or state by its name."""
    out: dict[str, Any] = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if isinstance(value, Enum):
            value = value.name
        elif isinstance(value, bytes):
            value = msg_id_text(value)
        out[f.name] = value
    return out


# ------------------------------------------------------------------ deliveries


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message on its way to one recipient, as the store holds it."""

    msg_id: bytes
    recipient: str
    channel: str
    state: DeliveryState
    attempts: int
    precedence: Precedence
    classification: Classification
    sender: str
    created_at: int  # when the hub accepted the message
    updated_at: int  # the last change: the last attempt, the receipt, the end
    expires_at: int | None
    purged_at: int | None = None  # when retention removed the message's content

    @property
    def last_attempt_at(self) -> int | None:
        """When it was last published (the retry timer itself lives in the hub's memory)."""
        return self.updated_at if self.attempts and self.state.awaiting else None

    @property
    def reason(self) -> str | None:
        """Why a dead letter is dead, as the code in the sender's receipt."""
        if self.state is DeliveryState.DEAD:
            return "delivery.gave_up"
        if self.state is DeliveryState.EXPIRED:
            return "delivery.expired"
        return None

    def not_redeliverable(self, now: int) -> Refusal | None:
        """Why ``hubctl redeliver`` would leave this dead letter (None: it would move it)."""
        c = Candidate(self.msg_id, self.recipient, self.state, self.expires_at, self.purged_at)
        return refusal(c, now=now)

    def as_json(self, now: int) -> dict[str, Any]:
        out = {
            **plain(self),
            "age_s": max(now - self.created_at, 0) / 1000,
            "last_attempt_at": self.last_attempt_at,
            "reason": self.reason,
        }
        if self.state.value in GONE:
            refused = self.not_redeliverable(now)
            out["redeliverable"] = refused is None
            out["not_redeliverable"] = None if refused is None else refused.as_json()
        return out


def deliveries_query() -> Select[Any]:
    d, m = t.deliveries, t.messages
    return select(
        d.c.msg_id,
        d.c.recipient,
        d.c.channel,
        d.c.state,
        d.c.attempts,
        d.c.precedence,
        m.c.classification,
        m.c.sender,
        d.c.created_at,
        d.c.updated_at,
        d.c.expires_at,
        m.c.purged_at,
    ).join(m, m.c.msg_id == d.c.msg_id)


def delivery_of(r: Any) -> Delivery:
    return Delivery(
        msg_id=bytes(r.msg_id),
        recipient=r.recipient,
        channel=r.channel,
        state=DeliveryState(r.state),
        attempts=int(r.attempts),
        precedence=PRECEDENCE_OF_RANK[int(r.precedence)],
        classification=LABEL_OF_RANK[int(r.classification)],
        sender=r.sender,
        created_at=int(r.created_at),
        updated_at=int(r.updated_at),
        expires_at=None if r.expires_at is None else int(r.expires_at),
        purged_at=None if r.purged_at is None else int(r.purged_at),
    )


@dataclass(frozen=True, slots=True)
class Listing:
    """Deliveries in a chosen order, at most ``limit`` of ``total``."""

    at: int
    recipient: str | None  # the organisation asked about; None: everyone
    total: int
    items: tuple[Delivery, ...]
    by_state: dict[str, int] | None = None  # dead letters: how many of ``total`` per state

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "at": self.at,
            "recipient": self.recipient,
            "total": self.total,
            "shown": len(self.items),
            "deliveries": [d.as_json(self.at) for d in self.items],
        }
        if self.by_state is not None:
            out["gave_up"] = self.by_state.get(DeliveryState.DEAD.value, 0)
            out["expired"] = self.by_state.get(DeliveryState.EXPIRED.value, 0)
        return out


async def queue(read: Read, *, now: int, recipient: str | None = None, limit: int) -> Listing:
    """Deliveries still awaited (PENDING or SENT), in the order the dispatcher sends them:
    precedence first (FLASH before ROUTINE), then the oldest first."""
    d = t.deliveries
    where: list[ColumnElement[bool]] = [d.c.state.in_(AWAITING)]
    if recipient is not None:
        where.append(d.c.recipient == recipient)
    total = await read(select(func.count()).select_from(d).where(*where))
    rows = await read(
        deliveries_query()
        .where(*where)
        .order_by(d.c.precedence.desc(), d.c.created_at, d.c.msg_id, d.c.recipient)
        .limit(limit)
    )
    return Listing(now, recipient, int(total[0][0]), tuple(delivery_of(r) for r in rows))


async def dead(read: Read, *, now: int, recipient: str | None = None, limit: int) -> Listing:
    """Dead letters: deliveries the hub gave up (DEAD, after ``max_attempts``) or that
    expired before the recipient confirmed (EXPIRED); the most recent first."""
    d = t.deliveries
    where: list[ColumnElement[bool]] = [d.c.state.in_(GONE)]
    if recipient is not None:
        where.append(d.c.recipient == recipient)
    counted = await read(select(d.c.state, func.count()).where(*where).group_by(d.c.state))
    by_state = {str(state): int(n) for state, n in counted}
    rows = await read(
        deliveries_query()
        .where(*where)
        .order_by(d.c.updated_at.desc(), d.c.msg_id, d.c.recipient)
        .limit(limit)
    )
    items = tuple(delivery_of(r) for r in rows)
    return Listing(now, recipient, sum(by_state.values()), items, by_state)


# ------------------------------------------------------------------ status


@dataclass(frozen=True, slots=True)
class StoreSize:
    kind: str  # "sqlite" | "postgresql"
    where: str  # the file, or the URL without its password
    bytes: int
    wal_bytes: int | None  # SQLite's write-ahead log beside the file
    spool_bytes: int | None  # large bodies in the spool folder (None: not known here)


async def store_size(read: Read, url: str, spool: Path | None = None) -> StoreSize:
    """The store's size on disk: the SQLite file and its WAL, or pg_database_size."""
    spool_bytes = folder_size(spool) if spool is not None else None
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        wal = path.with_name(path.name + "-wal")
        return StoreSize(
            "sqlite",
            str(path),
            _file_size(path),
            _file_size(wal),
            spool_bytes,
        )
    rows = await read(text("SELECT pg_database_size(current_database())"))
    return StoreSize("postgresql", safe_url(url), int(rows[0][0]), None, spool_bytes)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def folder_size(folder: Path) -> int | None:
    """Bytes in the files under ``folder``; None if it cannot be read."""
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class DirectoryInfo:
    """The directory the hub serves, or why it could not be read."""

    path: str
    directory: Directory | None
    problem: str | None = None

    def as_json(self, now: int) -> dict[str, Any]:
        d = self.directory
        if d is None:
            return {"path": self.path, "problem": self.problem}
        return {
            "path": self.path,
            "hub_id": d.hub_id,
            "version": d.version,
            "issued_at": d.issued_at,
            "expires_at": d.expires_at,
            "expired": now >= d.expires_at,
            "awaiting_keys": list(d.awaiting_own_keys()),
            "problem": self.problem,
        }


@dataclass(frozen=True, slots=True)
class Warnings:
    """What expires soon (schemas.expiry) and certificate files that could not be checked."""

    expiring: tuple[ExpiryWarning, ...]
    unchecked: tuple[str, ...]

    def as_json(self) -> list[dict[str, Any]]:
        out = [
            {"event": w.event, "expired": w.expired, **w.fields(), "detail": w.sentence()}
            for w in self.expiring
        ]
        out += [{"event": "certificate.unreadable", "detail": text} for text in self.unchecked]
        return out


@dataclass(frozen=True, slots=True)
class Status:
    at: int
    store: StoreSize
    directory: DirectoryInfo
    states: dict[str, int]  # deliveries per state, every state listed
    pending: tuple[PendingGroup, ...]  # most urgent first, then by recipient
    oldest: Delivery | None  # the delivery awaited longest
    spokes: tuple[Spoke, ...]  # in directory order: this hub's own organisations
    presence_note: str | None  # why presence is unknown; None when it is known
    hub: HubContact | None = None  # None: the hub was not asked
    warnings: Warnings = field(default_factory=lambda: Warnings((), ()))
    replicas: ReplicaStatus | None = None  # None: a lone hub (hubd.ops.replicas)
    hubs: tuple[NeighbourHub, ...] = ()  # the upstream and the members, in directory order

    @property
    def pending_total(self) -> int:
        return sum(g.count for g in self.pending)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "store": plain(self.store),
            "directory": self.directory.as_json(self.at),
            "deliveries": self.states,
            "pending": {
                "total": self.pending_total,
                "groups": [plain(g) for g in self.pending],
                "oldest": None if self.oldest is None else self.oldest.as_json(self.at),
            },
            "dead": self.states[DeliveryState.DEAD.value],
            "expired": self.states[DeliveryState.EXPIRED.value],
            "presence_known": self.presence_note is None,
            "presence_note": self.presence_note,
            "source": "hub and store" if self.presence_note is None else "store",
            "hub": None if self.hub is None else self.hub.as_json(),
            "spokes": [s.as_json() for s in self.spokes],
            "hubs": [h.as_json() for h in self.hubs],
            "warnings": self.warnings.as_json(),
            "replicas": None if self.replicas is None else self.replicas.as_json(),
        }


async def status(
    read: Read,
    *,
    now: int,
    store: StoreSize,
    directory: DirectoryInfo,
    presence: Presence | None = None,
    hub: HubContact | None = None,
    warnings: Warnings | None = None,
    replicas: ReplicaStatus | None = None,
) -> Status:
    """The hub at a glance. ``presence`` is the running hub's answer; without it, presence
    is unknown and ``hub`` says why the hub did not give one. ``warnings``: what expires
    soon, judged by the caller (it reads certificate files). ``replicas``: who owns what
    (:func:`hubd.ops.replicas.replica_status`), None for a lone hub."""
    d = t.deliveries
    states = {s.value: 0 for s in DeliveryState}
    for state, count in await read(select(d.c.state, func.count()).group_by(d.c.state)):
        states[str(state)] = int(count)
    grouped = await read(
        select(
            d.c.recipient,
            d.c.channel,
            d.c.precedence,
            d.c.state,
            func.count(),
            func.min(d.c.created_at),
        )
        .where(d.c.state.in_(AWAITING))
        .group_by(d.c.recipient, d.c.channel, d.c.precedence, d.c.state)
    )
    pending = _fold(grouped)
    oldest_rows = await read(
        deliveries_query()
        .where(d.c.state.in_(AWAITING))
        .order_by(d.c.created_at, d.c.precedence.desc(), d.c.msg_id)
        .limit(1)
    )
    oldest = delivery_of(oldest_rows[0]) if oldest_rows else None
    spokes: tuple[Spoke, ...] = ()
    hubs: tuple[NeighbourHub, ...] = ()
    if directory.directory is not None:
        heard = await _last_heard(read)
        spokes = spokes_of(directory.directory, pending, heard, presence)
        hubs = neighbours(directory.directory, pending, presence)
    return Status(
        at=now,
        store=store,
        directory=directory,
        states=states,
        pending=pending,
        oldest=oldest,
        spokes=spokes,
        presence_note=None if presence is not None else _unknown_because(hub),
        hub=hub,
        warnings=warnings or Warnings((), ()),
        replicas=replicas,
        hubs=hubs,
    )


def _unknown_because(hub: HubContact | None) -> str:
    if hub is None:
        return PRESENCE_UNKNOWN
    if hub.socket is None:
        return f"the admin socket is turned off ([admin] enabled = false), so {PRESENCE_UNKNOWN}"
    return (
        f"the hub did not answer ({hub.problem}), so this comes from the store alone and "
        f"{PRESENCE_UNKNOWN}"
    )


def _fold(rows: Sequence[Any]) -> tuple[PendingGroup, ...]:
    """(recipient, channel, precedence, state, count, oldest) rows -> one group per
    (recipient, channel, precedence), PENDING and SENT together."""
    acc: dict[tuple[str, str, int], list[int]] = {}
    for recipient, channel, rank, state, count, oldest in rows:
        key = (recipient, channel, int(rank))
        total, sent, first = acc.get(key, [0, 0, int(oldest)])
        sent += int(count) if state == DeliveryState.SENT.value else 0
        acc[key] = [total + int(count), sent, min(first, int(oldest))]
    groups = [
        PendingGroup(r, c, PRECEDENCE_OF_RANK[rank], total, sent, first)
        for (r, c, rank), (total, sent, first) in acc.items()
    ]
    groups.sort(key=lambda g: (-g.precedence.rank, g.oldest_at, g.recipient, g.channel))
    return tuple(groups)


async def _last_heard(read: Read) -> dict[str, int]:
    """When each organisation last sent the hub a message or a receipt batch."""
    heard: dict[str, int] = {}
    m, b = t.messages, t.receipt_batches
    for query in (
        select(m.c.sender, func.max(m.c.received_at)).group_by(m.c.sender),
        select(b.c.issuer, func.max(b.c.received_at)).group_by(b.c.issuer),
    ):
        for org, at in await read(query):
            heard[org] = max(heard.get(org, 0), int(at))
    return heard
