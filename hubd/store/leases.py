"""Leases in the store: which hub replica owns which buckets of organisations, fenced.

The decisions are :mod:`hubd.core.leases`; here are the rows (``hub_leases``,
``hub_replicas``; migration 0007), the statements that carry a plan out, the fence the
store's writers check and what ``hubctl status`` reads; the task that runs the rounds is
:class:`hubd.store.leasekeeper.LeaseKeeper`.

Every statement stands alone and is atomic under concurrency (autocommit, one statement
per transaction) and every time in it is the database's clock, never a replica's:

- *claim* ``UPDATE ... SET holder = me, token = token + 1`` on the rows that still carry
  the token the plan read and are free or expired, locked ``FOR UPDATE SKIP LOCKED``: a
  row that a writer is fencing right now is skipped and claimed next round, after that
  write committed; a claim never waits, so a paused replica's open transaction cannot
  stall the keepers of the others.
- *renew* and *release* touch only rows whose holder is me with the token I hold, renew
  only unexpired ones (a lapsed lease is claimed again, under a new token). They lock
  ``FOR NO KEY UPDATE``, which does not conflict with the fence's ``FOR KEY SHARE``: a
  renewal never waits for this replica's own writes, however long they take.
- *the fence* (:func:`check_fence`), inside the writer's own transaction: ``SELECT ...
  WHERE holder = me AND token = t AND expires_at > now FOR KEY SHARE``. It holds the
  rows until the write commits (a claim, ``FOR UPDATE``, skips them meanwhile) and raises
  :class:`LeaseLostError` when another replica took a bucket: the write rolls back. It
  waits only for a claim under way, which itself never waits: no lock cycle is possible.

SQLite serves one hub per state folder (``hubd.store.lock``), so there the keeper claims
every bucket once when it joins, under new tokens and without expiry, and never renews:
the fence still holds holder and token, and the tables read the same for ``hubctl``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    delete,
    func,
    inspect,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from hubd.core.leases import (
    ChannelReach,
    Claim,
    Lease,
    Snapshot,
)
from hubd.store import tables as t
from schemas.errors import StoreError, UsageError

FOREVER = 2**62  # a lease on SQLite: the one hub of the folder holds it until it stops
FORGET_MS = 24 * 3_600_000  # a replica whose heartbeat ended this long ago leaves the list
REACH_TEXT_MAX = 64 * 1024  # a replica row's reach longer than this is not read
_REPLICA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

L = t.hub_leases
R = t.hub_replicas


class LeaseLostError(StoreError):
    """A write as owner of buckets this replica no longer holds: refused, rolled back."""

    def __init__(self, replica: str, buckets: Iterable[int]) -> None:
        self.replica = replica
        self.buckets = tuple(sorted(buckets))
        shown = ", ".join(map(str, self.buckets[:8])) + (" ..." if len(self.buckets) > 8 else "")
        super().__init__(
            f"副本 {replica} 已失去桶 {shown} 的租约（暂停或与数据库失联超过租期，"
            f"由其他副本接管），本次写入已回滚 / replica {replica} no longer holds the lease "
            f"on bucket(s) {shown} "
            "(it was paused or cut off from the database for longer than a lease, and another "
            "replica takes its organisations over); the write was rolled back",
            retriable=False,
        )


def new_replica_id(host: str | None = None, pid: int | None = None) -> str:
    """A replica id for this process run: host, pid and a random tail (a restarted hub is a
    new replica: its predecessor's leases must run out or be released, never inherited)."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", host or socket.gethostname())[:40].strip(".-_")
    return f"{host or 'hub'}-{pid if pid is not None else os.getpid()}-{secrets.token_hex(3)}"


def check_replica_id(replica: str) -> str:
    if not _REPLICA_ID.fullmatch(replica):
        raise UsageError(
            f"replica id {replica!r}: 1-64 characters of letters, digits, '.', '_' and '-'"
        )
    return replica


def db_now(dialect: Dialect) -> ColumnElement[int]:
    """The database's clock in integer ms since the Unix epoch, as every time in the store."""
    if dialect.name == "postgresql":
        # statement_timestamp(): when this statement began, even inside a longer transaction
        return literal_column(
            "(extract(epoch from statement_timestamp()) * 1000)::bigint", BigInteger
        )
    return literal_column("CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)", BigInteger)


# ------------------------------------------------------------------ the fence


@dataclass(frozen=True, slots=True)
class Fence:
    """What a write as owner must still hold when it commits: bucket -> token."""

    replica: str
    tokens: Mapping[int, int]


def check_fence(conn: Connection, fence: Fence) -> None:
    """Inside the writer's transaction, before its writes: hold ``fence``'s lease rows
    (``FOR KEY SHARE``) until the transaction ends, or raise
    :class:`LeaseLostError` naming the buckets another replica holds now (or that
    expired). A claim skips rows held so, so a takeover lands after the write."""
    lost = lost_buckets(conn, fence)
    if lost:
        raise LeaseLostError(fence.replica, lost)


def lost_pairs(
    conn: Connection, replica: str, pairs: Iterable[tuple[int, int]]
) -> frozenset[tuple[int, int]]:
    """The (bucket, token) pairs of ``pairs`` ``replica`` no longer holds (several callers'
    fences checked at once: an older token of a bucket held again is lost, though the
    newer one is held); the held rows stay locked (``FOR KEY SHARE``) until the
    transaction ends."""
    wanted = sorted(set(pairs))
    if not wanted:
        return frozenset()
    held = {
        (int(b), int(tok))
        for b, tok in conn.execute(
            select(L.c.bucket, L.c.token)
            .where(
                L.c.holder == replica,
                tuple_(L.c.bucket, L.c.token).in_(wanted),
                L.c.expires_at > db_now(conn.dialect),
            )
            .order_by(L.c.bucket)
            .with_for_update(read=True, key_share=True)  # FOR KEY SHARE
        )
    }
    return frozenset(wanted) - held


def lost_buckets(conn: Connection, fence: Fence) -> frozenset[int]:
    """As :func:`check_fence`, for a writer that drops what it lost and writes the rest:
    the buckets of ``fence`` no longer held; the others stay held until the transaction
    ends."""
    if not fence.tokens:
        return frozenset()
    pairs = sorted(fence.tokens.items())
    held = set(
        conn.execute(
            select(L.c.bucket)
            .where(
                L.c.holder == fence.replica,
                tuple_(L.c.bucket, L.c.token).in_(pairs),
                L.c.expires_at > db_now(conn.dialect),
            )
            .order_by(L.c.bucket)
            .with_for_update(read=True, key_share=True)  # FOR KEY SHARE
        ).scalars()
    )
    return frozenset(fence.tokens) - held


# ------------------------------------------------------------------ statements


def _rows(claims: Iterable[Claim]) -> list[tuple[int, int]]:
    return sorted((c.bucket, c.token) for c in claims)


def heartbeat(  # noqa: PLR0917 - called through run_sync, which passes them in order
    conn: Connection,
    me: str,
    host: str,
    pid: int,
    lease_ms: int,
    reach: ChannelReach | None = None,
) -> int:
    """Say I am alive (insert or refresh my row), and which of my channels' brokers I
    reach (None: not said); the database's now."""
    now = db_now(conn.dialect)
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    said = (
        None
        if reach is None
        else json.dumps({"configured": sorted(reach.configured), "reached": sorted(reach.reached)})
    )
    stmt = insert(R).values(
        id=me,
        host=host,
        pid=pid,
        started_at=now,
        seen_at=now,
        expires_at=now + lease_ms,
        reach=said,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[R.c.id],
        set_={
            "seen_at": stmt.excluded.seen_at,
            "expires_at": stmt.excluded.expires_at,
            "reach": stmt.excluded.reach,
        },
    ).returning(R.c.seen_at)
    return int(conn.execute(upsert).scalar_one())


def reach_of(said: str | None) -> ChannelReach | None:
    """A replica row's ``reach``; None when it said nothing, or anything but an object of
    two arrays of strings, ``configured`` and ``reached`` (then it is compared with no one)."""
    if said is None or len(said) > REACH_TEXT_MAX:
        return None
    try:
        value = json.loads(said)
    except (ValueError, RecursionError):  # deep nesting: not ours either
        return None
    if not isinstance(value, dict):
        return None
    lists = [value.get("configured"), value.get("reached")]
    if not all(isinstance(x, list) and all(isinstance(c, str) for c in x) for x in lists):
        return None
    return ChannelReach(frozenset(value["configured"]), frozenset(value["reached"]))


def read_snapshot(conn: Connection, me: str, now: int) -> Snapshot:
    leases = tuple(
        Lease(int(r.bucket), r.holder, int(r.token), int(r.expires_at))
        for r in conn.execute(
            select(L.c.bucket, L.c.holder, L.c.token, L.c.expires_at).order_by(L.c.bucket)
        )
    )
    rows = conn.execute(select(R.c.id, R.c.reach).where(R.c.expires_at > now)).all()
    live = frozenset(str(r.id) for r in rows)
    reach = {str(r.id): said for r in rows if (said := reach_of(r.reach)) is not None}
    return Snapshot(now, me, leases, live, reach)


def _mine(me: str, pairs: list[tuple[int, int]], now: ColumnElement[int]) -> Any:
    """My rows among ``pairs`` (bucket, token), locked in bucket order."""
    return (
        select(L.c.bucket)
        .where(L.c.holder == me, tuple_(L.c.bucket, L.c.token).in_(pairs), L.c.expires_at > now)
        .order_by(L.c.bucket)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE: never waits on a fence
        .scalar_subquery()
    )


def release(conn: Connection, me: str, claims: Iterable[Claim]) -> None:
    pairs = _rows(claims)
    if pairs:
        now = db_now(conn.dialect)
        conn.execute(
            update(L)
            .where(L.c.bucket.in_(_mine(me, pairs, now)), L.c.holder == me)
            .values(holder=None, expires_at=now)
        )


def renew(conn: Connection, me: str, claims: Iterable[Claim], lease_ms: int) -> list[Claim]:
    pairs = _rows(claims)
    if not pairs:
        return []
    now = db_now(conn.dialect)
    rows = conn.execute(
        update(L)
        .where(L.c.bucket.in_(_mine(me, pairs, now)), L.c.holder == me, L.c.expires_at > now)
        .values(renewed_at=now, expires_at=now + lease_ms)
        .returning(L.c.bucket, L.c.token)
    )
    return [Claim(int(r.bucket), int(r.token)) for r in rows]


def claim(conn: Connection, me: str, claims: Iterable[Claim], lease_ms: int) -> list[Claim]:
    pairs = _rows(claims)
    if not pairs:
        return []
    now = db_now(conn.dialect)
    claimable = (L.c.holder.is_(None)) | (L.c.expires_at <= now)
    free = (
        select(L.c.bucket)
        .where(tuple_(L.c.bucket, L.c.token).in_(pairs), claimable)
        .order_by(L.c.bucket)
        .with_for_update(skip_locked=True)  # FOR UPDATE: skips fenced rows
        .scalar_subquery()
    )
    rows = conn.execute(
        update(L)
        .where(L.c.bucket.in_(free), claimable)
        .values(
            holder=me,
            token=L.c.token + 1,
            acquired_at=now,
            renewed_at=now,
            expires_at=now + lease_ms,
        )
        .returning(L.c.bucket, L.c.token)
    )
    return [Claim(int(r.bucket), int(r.token)) for r in rows]


def take_all(conn: Connection, me: str) -> list[Claim]:
    """SQLite: the folder's one hub takes every bucket, under new tokens."""
    now = db_now(conn.dialect)
    rows = conn.execute(
        update(L)
        .values(holder=me, token=L.c.token + 1, acquired_at=now, renewed_at=now, expires_at=FOREVER)
        .returning(L.c.bucket, L.c.token)
    )
    return [Claim(int(r.bucket), int(r.token)) for r in rows]


def leave_all(conn: Connection, me: str) -> int:
    """Release everything I hold and leave the replica list; how many were released."""
    now = db_now(conn.dialect)
    mine = (
        select(L.c.bucket)
        .where(L.c.holder == me)
        .order_by(L.c.bucket)
        .with_for_update(key_share=True)
        .scalar_subquery()
    )
    released = conn.execute(
        update(L)
        .where(L.c.bucket.in_(mine), L.c.holder == me)
        .values(holder=None, expires_at=now)
        .returning(L.c.bucket)
    )
    count = len(released.all())
    conn.execute(delete(R).where(R.c.id == me))
    return count


def forget_old_replicas(conn: Connection) -> None:
    conn.execute(delete(R).where(R.c.expires_at < db_now(conn.dialect) - FORGET_MS))


def seed_buckets(conn: Connection, buckets: int) -> int:
    """Write the free lease rows 0 .. buckets - 1 that are missing (the first replica to
    join does; replicas joining at once agree); how many rows the table holds then."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    free = {"holder": None, "token": 0, "acquired_at": 0, "renewed_at": 0, "expires_at": 0}
    rows = [{"bucket": b, **free} for b in range(buckets)]
    conn.execute(insert(L).values(rows).on_conflict_do_nothing())
    return int(conn.execute(select(func.count()).select_from(L)).scalar_one())


# ------------------------------------------------------------------ hubctl status


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    id: str
    host: str
    pid: int
    started_at: int
    seen_at: int
    expires_at: int
    live: bool
    buckets: int  # how many unexpired leases it holds
    reach: ChannelReach | None = None  # what it said it reaches (None: not said)


@dataclass(frozen=True, slots=True)
class LeaseRow:
    bucket: int
    holder: str | None  # None when released or expired
    token: int
    held_for_ms: int | None  # since its holder claimed it
    renewed_ago_ms: int | None
    expires_in_ms: int | None


@dataclass(frozen=True, slots=True)
class Ownership:
    """Who owns what, by the database's clock: what ``hubctl status`` shows."""

    now: int
    replicas: tuple[ReplicaRow, ...]
    leases: tuple[LeaseRow, ...]

    @property
    def unowned(self) -> tuple[int, ...]:
        return tuple(x.bucket for x in self.leases if x.holder is None)


def read_ownership(conn: Connection) -> Ownership:
    """The replicas (live first, then by id) and every bucket's lease with its ages; a
    lease that expired reads as unowned. Runs on any connection (``Store.read_sync``)."""
    now = int(conn.execute(select(db_now(conn.dialect))).scalar_one())
    leases = []
    counts: dict[str, int] = {}
    for r in conn.execute(select(L).order_by(L.c.bucket)):
        if r.holder is not None and r.expires_at > now:
            counts[r.holder] = counts.get(r.holder, 0) + 1
            leases.append(
                LeaseRow(
                    int(r.bucket),
                    r.holder,
                    int(r.token),
                    now - int(r.acquired_at),
                    now - int(r.renewed_at),
                    None if r.expires_at >= FOREVER else int(r.expires_at) - now,
                )
            )
        else:
            leases.append(LeaseRow(int(r.bucket), None, int(r.token), None, None, None))
    # hubctl reads stores no hubd has migrated yet: ``reach`` came with 0009
    names = {c["name"] for c in inspect(conn).get_columns(R.name)}
    columns = [c for c in R.c if c.name in names]
    replicas = sorted(
        (
            ReplicaRow(
                r.id,
                r.host,
                int(r.pid),
                int(r.started_at),
                int(r.seen_at),
                int(r.expires_at),
                r.expires_at > now,
                counts.get(r.id, 0),
                reach_of(r.reach) if "reach" in names else None,
            )
            for r in conn.execute(select(*columns))
        ),
        key=lambda x: (not x.live, x.id),
    )
    return Ownership(now, tuple(replicas), tuple(leases))
