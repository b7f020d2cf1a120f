"""The keeper of a replica's leases: a task that runs :func:`hubd.core.leases.plan` every
``renew_ms`` with the statements of :mod:`hubd.store.leases`, and knows what this replica
may act as owner of (docs/architecture.md, "Replicas and leases")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hubd.core.leases import (
    ChannelReach,
    Claim,
    Holdings,
    LeaseSettings,
    bucket_of,
    outreached,
    plan,
)
from hubd.store.connections import store_error_text
from hubd.store.leases import (
    FOREVER,
    Fence,
    LeaseLostError,
    check_replica_id,
    claim,
    forget_old_replicas,
    heartbeat,
    leave_all,
    new_replica_id,
    read_snapshot,
    release,
    renew,
    seed_buckets,
    take_all,
)
from runtime.tasks import cancel_and_wait
from schemas.errors import StoreError

log = structlog.get_logger("hubd.leases")

Sleep = Callable[[float], Awaitable[None]]
OnChange = Callable[[frozenset[int], frozenset[int]], None]


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class LeaseKeeper:
    """This replica's leases: ``async with LeaseKeeper(engine) as keeper`` joins, runs a
    round every ``renew_ms`` (task ``hubd.leases``) and, on leaving, releases what it holds.

    ``held`` is what it may act as owner of now; a write as owner carries
    ``keeper.fence(orgs)`` into its transaction (:func:`check_fence`). ``on_change(gained,
    lost)`` is called after each round whose holdings differ from the last. ``clock`` is a
    local monotonic clock in ms: it only ends beliefs (a replica that was paused stops
    believing as soon as it runs again); every lease time is the database's.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        replica: str | None = None,
        settings: LeaseSettings | None = None,
        clock: Callable[[], int] = _monotonic_ms,
        sleep: Sleep = asyncio.sleep,
        on_change: OnChange | None = None,
        host: str | None = None,
        pid: int | None = None,
        ready: Callable[[], bool] | None = None,
        reach: Callable[[], ChannelReach] | None = None,
    ) -> None:
        self.engine = engine
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.replica = check_replica_id(replica or new_replica_id(self.host, self.pid))
        self.settings = settings or LeaseSettings()
        self.sole_owner = engine.dialect.name != "postgresql"
        self._clock = clock
        self._sleep = sleep
        self._on_change = on_change
        # Whether this replica can serve what it would own (the hub: reaches its brokers);
        # while not, it holds nothing and sends no heartbeat, so the others take its share.
        self._ready = ready
        # The channels it reaches, said with every heartbeat: a replica that misses one
        # another reaches gives its share away once that lasted settings.reach_hold_ms
        # (hubd.core.leases.sharing). None: not said.
        self._reach = reach
        self._outreached_since: int | None = None  # local ms: since when others reach more
        self.missing: frozenset[str] = frozenset()  # what it gave its share away for
        self.aside = False
        self._poked = asyncio.Event()
        self._holdings = Holdings()
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()  # one round (or the leaving) at a time
        self.rounds = 0
        self.target = 0
        self._joined = False

    # -------------------------------------------------------------- what it holds

    @property
    def held(self) -> Mapping[int, int]:
        """bucket -> token this replica may act as owner of, now."""
        return self._holdings.current(self._clock())

    def owns(self, org: str) -> bool:
        return bucket_of(org, self.settings.buckets) in self.held

    def fence(self, orgs: Iterable[str]) -> Fence:
        """The fence for a write as owner of ``orgs``; LeaseLostError at once if this replica
        does not believe it holds them (the store checks again, in the transaction)."""
        held = self.held
        buckets = {bucket_of(org, self.settings.buckets) for org in orgs}
        missing = buckets - set(held)
        if missing:
            raise LeaseLostError(self.replica, missing)
        return Fence(self.replica, {b: held[b] for b in buckets})

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> LeaseKeeper:
        await self.join()
        if not self.sole_owner:
            self._task = asyncio.create_task(self._run(), name="hubd.leases")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.leave()

    async def join(self) -> None:
        """Enter the replica list and run a first round (SQLite: take every bucket)."""
        count = await self._call(seed_buckets, self.settings.buckets)
        if count != self.settings.buckets:
            raise StoreError(
                f"存储中有 {count} 个租约桶，而本副本按 {self.settings.buckets} 个计算；"
                f"所有副本须运行同一版本 / the store has {count} lease buckets and this "
                f"replica counts {self.settings.buckets}: run one hubd version on every replica",
                retriable=False,
            )
        await self._call(forget_old_replicas)
        self._joined = True
        if self.sole_owner:
            started = self._clock()
            await self._call(heartbeat, self.replica, self.host, self.pid, FOREVER // 2)
            taken = await self._call(take_all, self.replica)
            self.target = len(taken)
            self._settle(Holdings({c.bucket: c.token for c in taken}, started + FOREVER), "round")
        else:
            await self.run_round()
        log.info(
            "leases.joined", replica=self.replica, buckets=len(self.held), sole=self.sole_owner
        )

    async def leave(self) -> None:
        """Stop renewing, stop acting as owner, release every bucket at once. Idempotent."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if not self._joined:
            await self._drop_connection()
            return
        self._joined = False
        self._outreached_since, self.missing = None, frozenset()
        self._settle(Holdings(), "leave")  # it stops acting as owner before it releases
        await self._drop_connection()  # a round cut short may have left it mid-statement
        try:
            async with self._lock, asyncio.timeout(self.settings.lease_ms / 1000):
                released = await self._call(leave_all, self.replica)
        except (StoreError, TimeoutError) as exc:
            error = str(exc) or "the store did not answer within a lease"
            log.warning("leases.leave_failed", replica=self.replica, error=error)
            released = 0  # they run out on their own within a lease
        finally:
            await self._drop_connection()
        log.info("leases.left", replica=self.replica, released=released)

    # -------------------------------------------------------------- rounds

    async def run_round(self) -> None:
        """Heartbeat, read, plan, release, renew, claim: one round (the task runs one every
        ``renew_ms``; tests call it directly). StoreError when the database fails or the
        round outlasts a lease: the holdings then stand until they run out by the local
        clock."""
        async with self._lock:
            try:
                async with asyncio.timeout(self.settings.lease_ms / 1000):
                    await self._round()
            except TimeoutError as exc:
                await self._drop_connection()  # mid-statement: never to be reused
                raise StoreError(
                    f"a lease round took longer than a lease ({self.settings.lease_ms} ms)",
                    retriable=True,
                ) from exc

    async def _round(self) -> None:
        if self._ready is not None and not self._ready():
            await self._stand_aside()
            return
        if self.aside:
            self.aside = False
            log.info("leases.back", replica=self.replica)
        started = self._clock()
        lease_ms = self.settings.lease_ms
        reach = self._reach() if self._reach is not None else None
        now = await self._call(heartbeat, self.replica, self.host, self.pid, lease_ms, reach)
        snap = await self._call(read_snapshot, self.replica, now)
        behind = outreached(self.replica, snap.live, snap.reach)
        give_way = self._give_way(behind, started)
        todo = plan(snap, self.settings, give_way=give_way)
        self.target = todo.target
        self._tell_reach(behind if give_way else frozenset())
        # stop acting as owner of what goes back before it goes
        self._settle(self._holdings.without(c.bucket for c in todo.release), "release")
        await self._call(release, self.replica, todo.release)
        renewed = await self._call(renew, self.replica, todo.renew, lease_ms)
        claimed = await self._call(claim, self.replica, todo.claim, lease_ms)
        self.rounds += 1
        self._settle(self._holdings.after_round(renewed + claimed, started, self.settings), "round")

    def _give_way(self, behind: frozenset[str], now: int) -> bool:
        """Whether to give the share away for ``behind`` (channels others reach): only
        once others have reached more for reach_hold_ms without a break. Replicas see a
        shared broker go and come back moments apart; that must move nothing."""
        if not behind:
            self._outreached_since = None
            return False
        if self._outreached_since is None:
            self._outreached_since = now
        return now - self._outreached_since >= self.settings.reach_hold_ms

    def _tell_reach(self, missing: frozenset[str]) -> None:
        """Say when this replica gives its share away because others reach channels it
        does not, and when it takes a share again."""
        if missing == self.missing:
            return
        if missing:
            log.warning(
                "leases.reach_short",
                replica=self.replica,
                missing=sorted(missing),
                buckets=len(self.held),
            )
        else:
            log.info("leases.reach_back", replica=self.replica)
        self.missing = missing

    async def _stand_aside(self) -> None:
        """Not ready: let go of everything (first stop acting as owner) and skip the
        heartbeat; the replica row runs out within a lease and the shares are counted
        without it."""
        self._outreached_since, self.missing = None, frozenset()  # compared afresh when back
        if not self.aside:
            self.aside = True
            if self.rounds:  # it served before: the operator wants to know
                log.warning("leases.stood_aside", replica=self.replica, buckets=len(self.held))
            else:  # starting: nothing to take before a broker answers
                log.info("leases.waiting_for_broker", replica=self.replica)
        held = self._holdings.tokens
        if held:
            self._settle(Holdings(), "release")
            await self._call(release, self.replica, [Claim(b, t) for b, t in held.items()])

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await conn.invalidate()
            with contextlib.suppress(SQLAlchemyError, OSError):
                await conn.close()

    def poke(self) -> None:
        """Run the next round now (a broker connection came: a replica standing aside,
        or one just started, takes its share without waiting for the interval)."""
        self._poked.set()

    async def _run(self) -> None:
        interval = self.settings.renew_ms / 1000
        while True:
            if not self._poked.is_set():
                waits = {
                    asyncio.ensure_future(self._sleep(interval)),
                    asyncio.ensure_future(self._poked.wait()),
                }
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                await cancel_and_wait(waits)
            self._poked.clear()
            try:
                await self.run_round()
            except StoreError as exc:
                log.warning("leases.round_failed", replica=self.replica, error=str(exc))

    def _settle(self, after: Holdings, why: Literal["round", "release", "leave"]) -> None:
        """Take ``after`` as the holdings; tell on_change what moved. A bucket held again
        under a new token was someone else's in between (or this replica's belief ran out):
        it is reported lost and gained, so what was kept for it is dropped."""
        before = set(self._holdings.tokens.items())
        self._holdings = after
        now = set(after.tokens.items())
        gained = frozenset(b for b, _ in now - before)
        lost = frozenset(b for b, _ in before - now)
        if lost and why == "round":  # expired or taken while this replica was not looking
            log.warning("leases.lost", replica=self.replica, buckets=len(lost))
        elif lost and why == "release":
            log.info("leases.released", replica=self.replica, buckets=len(lost))
        if gained:
            log.info("leases.gained", replica=self.replica, buckets=len(gained))
        if (gained or lost) and self._on_change is not None:
            self._on_change(gained, lost)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(connection, *args)`` on the keeper's own autocommit connection."""
        try:
            if self._conn is None:
                conn = await self.engine.connect()
                self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await self._conn.run_sync(fn, *args)
        except (SQLAlchemyError, OSError) as exc:
            await self._drop_connection()  # a fresh connection next time
            raise StoreError(
                f"the lease statements failed: {store_error_text(exc)}", retriable=True
            ) from exc
