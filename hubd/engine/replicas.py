"""A replica's part among several hubd processes on one PostgreSQL store
(docs/architecture.md, "Replicas and leases").

Every replica reads every up topic and can publish to every down topic; what it acts on is
decided by the leases its :class:`~hubd.store.leasekeeper.LeaseKeeper` holds, one bucket of
organisations each:

- it takes in what an organisation it owns sends (the ingest's ``owns``), and every write
  it makes as that owner carries the lease's fence into the commit (:meth:`fence_for`),
  so a replica that was paused past its lease writes nothing as owner when it resumes;
- it delivers to the recipients it owns (the dispatcher's ``owns``): a message accepted by
  another replica reaches it as a ``NOTIFY`` when that commit lands
  (:mod:`hubd.store.shared`), and the deliveries of a bucket it gains are loaded from the
  store; those of a bucket it loses are forgotten (the new owner loads them);
- the holder of bucket 0 signs the ledger's checkpoints and runs the retention purge.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from typing import Any, Final, Protocol

import structlog
from sqlalchemy import Connection, select, tuple_
from sqlalchemy.exc import SQLAlchemyError

from hubd.config import Replicas as ReplicaSettings
from hubd.core.leases import ChannelReach, LeaseSettings, bucket_of
from hubd.core.states import DeliveryState
from hubd.engine.dispatch import Dispatcher
from hubd.engine.handover import HandOver
from hubd.engine.jobrows import load_jobs
from hubd.engine.jobs import Job
from hubd.store import tables as t
from hubd.store.connections import store_error_text
from hubd.store.db import Store
from hubd.store.leasekeeper import LeaseKeeper
from hubd.store.leases import Fence, new_replica_id, read_ownership
from hubd.store.shared import JOBS_CHANNEL, RECALLED_MARK
from hubd.store.writes import Operation, owners
from schemas.errors import ConfigError, StoreError
from schemas.ids import parse_msg_id

log = structlog.get_logger("hubd.replicas")

LEADER_BUCKET: Final = 0  # its holder signs checkpoints and purges
AWAITED: Final = (DeliveryState.PENDING.value, DeliveryState.SENT.value)
LOAD_MAX: Final = 500  # deliveries read per statement
RELISTEN_S: Final = 1.0  # after the listening connection failed
SWEEP_S: Final = 60.0  # every owned bucket's awaited deliveries looked over again
ON_EMBEDDED: Final = (
    "副本须连接外部代理，每个频道都应在 [channels] 中列出 / every channel of a replica must "
    "be on an external broker shared by all replicas: list each one under [channels]"
)


class BrokerConnection(Protocol):
    """What :class:`Reach` reads of a broker link (runtime.link.Link)."""

    @property
    def connected(self) -> asyncio.Event: ...

    @property
    def channels(self) -> list[str]: ...


class Reach:
    """Whether a replica can serve what it would own: it reaches a broker. Not before its
    first connection (a starting replica takes nothing it cannot read yet); after that,
    not once every connection has been down for longer than ``grace_s`` (a failover to
    another node of a cluster takes a moment and moves nothing)."""

    def __init__(
        self,
        links: Callable[[], Sequence[BrokerConnection]],
        grace_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._links, self._grace, self._clock = links, grace_s, clock
        self._reached = False
        self._down_since: float | None = None
        self._link_seen: set[int] = set()  # links (by id) connected at least once
        self._link_down: dict[int, float] = {}  # link -> when it was first seen down

    def __call__(self) -> bool:
        now = self._clock()
        if any(link.connected.is_set() for link in self._links()):
            self._reached, self._down_since = True, None
            return True
        if not self._reached:
            return False
        if self._down_since is None:
            self._down_since = now
        return now - self._down_since < self._grace

    def channels(self) -> frozenset[str]:
        """The channels it reaches: those of the links connected now, or down for less
        than ``grace_s`` after having been connected (a failover between a cluster's
        nodes moves nothing). Said with every heartbeat: a replica that misses a channel
        another reaches gives its organisations to the others after ``reach_hold``
        (hubd.core.leases.outreached)."""
        now = self._clock()
        reached: set[str] = set()
        for link in self._links():
            key = id(link)
            if link.connected.is_set():
                self._link_down.pop(key, None)
                self._link_seen.add(key)
                reached.update(link.channels)
            elif key in self._link_seen:
                since = self._link_down.setdefault(key, now)
                if now - since < self._grace:
                    reached.update(link.channels)
        return frozenset(reached)

    def channel_reach(self) -> ChannelReach:
        """The channels it is configured for (every link's) and those it reaches."""
        configured = frozenset(c for link in self._links() for c in link.channels)
        return ChannelReach(configured, self.channels())


async def join(
    stack: AsyncExitStack,
    settings: ReplicaSettings,
    store: Store,
    links: Callable[[], Sequence[BrokerConnection]],
) -> Replicas:
    """Join the replicas of ``store`` (leases released when ``stack`` closes, before the
    store does) and fence this replica's writes as owner. It holds leases only while it
    reaches a broker (``links``: its connections; :class:`Reach`)."""
    replicas: Replicas | None = None

    def changed(gained: frozenset[int], lost: frozenset[int]) -> None:
        if replicas is not None:
            replicas.changed(gained, lost)

    me = new_replica_id(settings.name)
    await _no_twin(store, me, settings)
    reach = Reach(links, settings.lease)
    keeper = LeaseKeeper(
        store.engine,
        replica=me,
        settings=LeaseSettings(
            int(settings.lease * 1000),
            int(settings.renew * 1000),
            reach_hold_ms=int(settings.reach_hold * 1000),
        ),
        on_change=changed,
        ready=reach,
        reach=reach.channel_reach,
    )
    await stack.enter_async_context(keeper)
    replicas = Replicas(keeper, store)
    store.fence_for = replicas.fence_for
    store.replica = keeper.replica
    return replicas


def name_of(replica: str) -> str:
    """The configured name in a replica id (``<name>-<pid>-<random>``)."""
    return replica.rsplit("-", 2)[0]


async def _no_twin(store: Store, me: str, settings: ReplicaSettings) -> None:
    """Refuse to start beside a live replica of the same name: they would connect to the
    brokers under one client id and take each other's connection over, for ever. A
    predecessor killed a moment ago is waited for (its heartbeat runs out within a lease)."""
    deadline = time.monotonic() + settings.lease + 2 * settings.renew
    while True:
        seen = await store.read_sync(read_ownership)
        twins = [r for r in seen.replicas if r.live and name_of(r.id) == name_of(me)]
        if not twins:
            return
        if time.monotonic() >= deadline:
            where = ", ".join(f"{r.id} on {r.host} (pid {r.pid})" for r in twins)
            why = (
                f"另一个同名副本正在运行 / another live replica has the name {name_of(me)!r}: "
                f"{where}; give each replica its own [replicas] name"
            )
            raise ConfigError("hub configuration", [("replicas.name", why)])
        await asyncio.sleep(settings.renew)


class Replicas:
    """Wires a :class:`LeaseKeeper` into the store, the ingest and the dispatcher."""

    def __init__(self, keeper: LeaseKeeper, store: Store) -> None:
        self.keeper, self.store = keeper, store
        self.dispatcher: Dispatcher | None = None
        self.on_gain: Callable[[], None] | None = None  # the ingest takes what it held
        self.handed_over = 0  # deliveries loaded because another replica accepted them
        self._wanted: set[bytes] = set()  # msg_ids announced and not yet loaded
        self._recalled: set[bytes] = set()  # msg_ids recalled on another replica
        self._wake = asyncio.Event()
        self._gained: set[int] = set()

    def owns(self, org: str) -> bool:
        return self.keeper.owns(org)

    def leading(self) -> bool:
        return LEADER_BUCKET in self.keeper.held

    def handover(self) -> HandOver:
        """What the ingest holds of senders this replica does not own: a lease, two
        renewals and a claim round, the longest a bucket can go unowned in a hand-over."""
        settings = self.keeper.settings
        return HandOver(settings.lease_ms + 3 * settings.renew_ms)

    def fence_for(self, ops: Sequence[Operation]) -> Fence | None:
        """The fence of a write as owner (LeaseLostError at once if not believed held)."""
        orgs = owners(ops)
        return self.keeper.fence(orgs) if orgs else None

    def changed(self, gained: frozenset[int], lost: frozenset[int]) -> None:
        """The keeper's holdings moved: forget what went, load what came."""
        buckets = self.keeper.settings.buckets
        if lost and self.dispatcher is not None:
            dropped = self.dispatcher.drop(lambda org: bucket_of(org, buckets) in lost)
            if dropped:
                log.info("replica.deliveries_handed_off", deliveries=dropped, buckets=len(lost))
        if gained:
            self._gained |= gained
            self._wake.set()
            if self.on_gain is not None:
                self.on_gain()

    # ------------------------------------------------------------------ the task

    async def run(self, stop: asyncio.Event) -> None:
        """Listen for announced messages and load the deliveries this replica owns."""
        loader = asyncio.create_task(self._loader(stop), name="hubd.replicas.load")
        try:
            while not stop.is_set():
                try:
                    await self._listen(stop)
                except (SQLAlchemyError, OSError, StoreError) as exc:
                    log.warning("replica.listen_failed", error=store_error_text(exc))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RELISTEN_S):
                        await stop.wait()
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader

    async def _listen(self, stop: asyncio.Event) -> None:
        async with self.store.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.add_listener(JOBS_CHANNEL, self._notified)
            # whatever was announced while nobody listened: every owned bucket again
            self._gained |= set(self.keeper.held)
            self._wake.set()
            try:
                while not stop.is_set() and not driver.is_closed():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await stop.wait()
            finally:
                with contextlib.suppress(Exception):
                    await driver.remove_listener(JOBS_CHANNEL, self._notified)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        sender, _, ids = payload.partition(" ")
        if sender == self.keeper.replica:
            return  # our own commit: the ingest handed its deliveries over already
        into = self._wanted
        if ids.startswith(RECALLED_MARK):
            ids, into = ids.removeprefix(RECALLED_MARK), self._recalled
        for text_id in ids.split(","):
            with contextlib.suppress(ValueError):
                into.add(parse_msg_id(text_id))
        self._wake.set()

    async def _loader(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_S):
                    await self._wake.wait()
            if not self._wake.is_set():  # a sweep: anything missed (a redelivery's
                self._gained |= set(self.keeper.held)  # announcement, a crash between)
            self._wake.clear()
            wanted, self._wanted = self._wanted, set()
            gained, self._gained = self._gained, set()
            recalled, self._recalled = self._recalled, set()
            try:
                if gained:
                    await self._load_buckets(gained)
                if wanted:
                    await self._load_messages(wanted)
                if recalled:
                    await self._forget_recalled(recalled)
            except Exception as exc:  # noqa: BLE001 - the loader must outlive any one failure
                log.warning("replica.load_failed", error=store_error_text(exc))
                self._wanted |= wanted
                self._gained |= gained
                self._recalled |= recalled
                await asyncio.sleep(RELISTEN_S)
                self._wake.set()

    async def _load_messages(self, msg_ids: Iterable[bytes]) -> None:
        ids = sorted(msg_ids)
        for start in range(0, len(ids), LOAD_MAX):
            chunk = ids[start : start + LOAD_MAX]
            d = t.deliveries.c
            self._add(await load_jobs(self.store.read, d.msg_id.in_(chunk), d.state.in_(AWAITED)))

    async def _forget_recalled(self, msg_ids: Iterable[bytes]) -> None:
        """Messages another replica recalled: drop what this one still delivers of them."""
        dispatcher = self.dispatcher
        if dispatcher is None:
            return
        d = t.deliveries.c
        ids = sorted(msg_ids)
        for start in range(0, len(ids), LOAD_MAX):
            rows = await self.store.read(
                select(d.msg_id, d.recipient).where(
                    d.msg_id.in_(ids[start : start + LOAD_MAX]),
                    d.state == DeliveryState.RECALLED.value,
                )
            )
            for msg_id, recipient in rows:
                dispatcher.forget(bytes(msg_id), [recipient])

    async def _load_buckets(self, buckets: set[int]) -> None:
        """Every awaited delivery to a recipient in ``buckets`` this replica lacks: the
        recipients with any first (one index-only read), then the keys of theirs only, then
        the rows of those it lacks. A deep backlog for other replicas' recipients is not
        read at each gain and each sweep."""
        count = self.keeper.settings.buckets
        recipients = [
            r
            for r in await self.store.read_sync(_awaited_recipients)
            if bucket_of(r, count) in buckets
        ]
        keys = await self.store.read_sync(_awaited_keys, recipients) if recipients else []
        dispatcher = self.dispatcher
        missing = [(m, r) for m, r in keys if dispatcher is None or not dispatcher.job(m, r)]
        d = t.deliveries.c
        for start in range(0, len(missing), LOAD_MAX):
            chunk = missing[start : start + LOAD_MAX]
            where = tuple_(d.msg_id, d.recipient).in_(chunk)
            self._add(await load_jobs(self.store.read, where, d.state.in_(AWAITED)))

    def _add(self, jobs: Sequence[Job]) -> None:
        dispatcher = self.dispatcher
        if dispatcher is None:
            return
        for job in jobs:
            if self.owns(job.recipient) and dispatcher.job(job.msg_id, job.recipient) is None:
                dispatcher.add(job)
                self.handed_over += 1


def _awaited_recipients(conn: Connection) -> list[str]:
    d = t.deliveries.c
    return [r for (r,) in conn.execute(select(d.recipient).where(d.state.in_(AWAITED)).distinct())]


def _awaited_keys(conn: Connection, recipients: Sequence[str]) -> list[tuple[bytes, str]]:
    d = t.deliveries.c
    keys: list[tuple[bytes, str]] = []
    for start in range(0, len(recipients), LOAD_MAX):
        chunk = recipients[start : start + LOAD_MAX]
        query = select(d.msg_id, d.recipient).where(d.state.in_(AWAITED), d.recipient.in_(chunk))
        keys += [(bytes(m), r) for m, r in conn.execute(query)]
    return keys
