"""Which hub replica owns which organisations' up topics: buckets, leases and the balance.

Several hubd processes share one PostgreSQL store (issue 15). Each organisation's up topic
must be read by exactly one live replica at a time, so organisations are hashed into
:data:`BUCKETS` buckets (:func:`bucket_of`) and every bucket has one lease row in the
store: its holder, a fencing token that grows on every change of holder, and when it
expires by the *database's* clock. A replica renews what it holds every
``renew_ms``; one that stops (killed, paused, cut off) loses its buckets when their
leases expire, and the others take them.

Every round a replica reads a :class:`Snapshot` (the lease rows, the live replicas and the
database's ``now``) and :func:`plan` answers what to renew, claim and release so that each
live replica ends with its share (:func:`target_of`: the bucket count split as evenly as
it goes, the first replicas in id order one more). The store carries the plan out with
compare-and-set statements (hubd.store.leases), and what it confirmed becomes the
replica's :class:`Holdings`. Nothing here is trusted for safety: a write as owner is
fenced in the store by holder and token (``hubd.store.leases.check_fence``). The plan only has
to converge.

Pure: no asyncio, no store, no clock reads (times come in as milliseconds), no logging.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import assert_never

from schemas.errors import UsageError

# Fixed for a deployment: every replica must hash alike. 256 rows to renew whatever the
# number of organisations, and still fine enough to share among a few dozen replicas.
BUCKETS = 256

LEASE_MS = 3_000  # a lease lasts this long after its last renewal (database clock)
RENEW_MS = 1_000  # each replica renews, claims and releases this often
# A replica that misses a channel another live replica reaches gives its share away only
# once that has lasted this long: replicas see a broker shared by all go and come back at
# different moments, and a shared outage must not move every share back and forth on the
# way. Longer than both spreads: a dead broker host (no reset) is noticed through the
# MQTT keepalive, 30 to 45 s after the cut depending on each replica's timing; a broker
# back after a long outage is reconnected to after each link's backoff, up to 30 s x 1.5.
REACH_HOLD_MS = 60_000
# A dead replica's buckets are free LEASE_MS after its last renewal at the latest, and
# claimed by the first round of another replica after that: within LEASE_MS + RENEW_MS
# (4 s; issue 15 asks for 5 s). A replica misses leases only after 2 s without a round.


def bucket_of(org: str, buckets: int = BUCKETS) -> int:
    """The bucket of organisation ``org``: stable across processes, versions and machines
    (BLAKE2b of its UTF-8 id, not Python's salted ``hash``). Changing it moves every
    organisation at once: never change it under a running deployment."""
    digest = hashlib.blake2b(org.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


def _rank(replica: str, bucket: int) -> bytes:
    """How much ``replica`` prefers ``bucket`` (lower first): each replica claims free
    buckets in its own order, so two claiming at once rarely want the same row, and gives
    back the ones it prefers least, so a replica that rejoins tends to get its old ones."""
    return hashlib.blake2b(f"{replica}/{bucket}".encode(), digest_size=8).digest()


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    lease_ms: int = LEASE_MS
    renew_ms: int = RENEW_MS
    buckets: int = BUCKETS
    reach_hold_ms: int = REACH_HOLD_MS

    def __post_init__(self) -> None:
        if self.reach_hold_ms < 0:
            raise UsageError(f"reach_hold_ms {self.reach_hold_ms}: 0 or more")
        if self.renew_ms <= 0 or self.lease_ms < 2 * self.renew_ms:
            raise UsageError(
                f"a lease of {self.lease_ms} ms renewed every {self.renew_ms} ms: the lease "
                "must last at least two renewal intervals, or one slow round loses it"
            )
        if not 1 <= self.buckets <= 4096:
            raise UsageError(f"{self.buckets} buckets: between 1 and 4096")


@dataclass(frozen=True, slots=True)
class Lease:
    """One bucket's lease row as read from the store."""

    bucket: int
    holder: str | None  # None: released, or never held
    token: int  # grows by one on every claim; a write as owner names the token it holds
    expires_at: int  # database clock, ms; a released lease expires when it is released


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one replica reads at the start of a round."""

    now: int  # the database's clock (ms), read with the rows
    me: str
    leases: tuple[Lease, ...]
    live: frozenset[str]  # replicas whose heartbeat has not expired (me or not)
    # the channels each live replica is configured for and reaches (their brokers), as it
    # last said; a replica that said nothing (an older version) is absent: compared with none
    reach: Mapping[str, ChannelReach] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChannelReach:
    """The channels a replica is configured for and those whose brokers it reaches."""

    configured: frozenset[str]
    reached: frozenset[str]

    @property
    def missing(self) -> frozenset[str]:
        return self.configured - self.reached

    def behind(self, other: ChannelReach) -> frozenset[str]:
        """The channels both are configured for that ``other`` reaches and this one does
        not, when ``other`` reaches every such channel this one reaches (else nothing:
        neither is ahead). A channel only one of them carries is not compared: while a
        channel is added or removed one replica at a time, nothing moves."""
        common = self.configured & other.configured
        mine, theirs = self.missing & common, other.missing & common
        return mine - theirs if theirs < mine else frozenset()


class Standing(StrEnum):
    """A lease as the planning replica sees it."""

    MINE = "mine"  # held by me, not expired: renew (or release if I hold too many)
    LAPSED = "lapsed"  # held by me, expired: I may not renew it, only claim it again
    HELD = "held"  # another replica's, not expired: leave it
    FREE = "free"  # released, never held, or another's that expired: claim if short
    ORPHANED = "orphaned"  # free for longer than a lease: whoever sees it claims it


def standing(lease: Lease, me: str, now: int, settings: LeaseSettings) -> Standing:
    expired = lease.expires_at <= now
    if lease.holder == me:
        return Standing.LAPSED if expired else Standing.MINE
    if not expired:
        return Standing.HELD
    if lease.expires_at + settings.lease_ms <= now:
        # The replica whose share it is did not take it within a lease (failing, or
        # believing in a replica that is gone): better owned by one over its share.
        return Standing.ORPHANED
    return Standing.FREE


def target_of(me: str, live: Iterable[str], buckets: int = BUCKETS) -> int:
    """How many buckets ``me`` aims to hold among ``live`` (me counted): ``buckets``
    split evenly, the first ``buckets % n`` replicas in id order one more, so the
    targets add up to exactly ``buckets`` and differ by at most one."""
    order = sorted(set(live) | {me})
    base, extra = divmod(buckets, len(order))
    return base + (1 if order.index(me) < extra else 0)


def outreached(me: str, live: Iterable[str], reach: Mapping[str, ChannelReach]) -> frozenset[str]:
    """The channels ``me`` misses that another live replica, configured for them too,
    reaches while missing nothing ``me`` reaches (:meth:`ChannelReach.behind`): why it
    would give its share away. Empty when no one is ahead of it, or its reach is unknown.

    A replica cut off from one channel's broker while another reaches it hands its
    organisations over: on that channel nobody would read their up topics otherwise. When
    a broker is down for every replica they miss it alike and nothing moves; two that each
    miss a different channel share as before (neither is ahead)."""
    mine = reach.get(me)
    if mine is None:
        return frozenset()
    return frozenset().union(*(mine.behind(reach[r]) for r in live if r != me and r in reach))


def sharing(live: Iterable[str], reach: Mapping[str, ChannelReach]) -> frozenset[str]:
    """The live replicas that take a share of the buckets: those no other is ahead of."""
    replicas = set(live)
    return frozenset(r for r in replicas if not outreached(r, replicas, reach))


@dataclass(frozen=True, slots=True)
class Claim:
    """A bucket and the token its row must still carry for the statement to apply."""

    bucket: int
    token: int


@dataclass(frozen=True, slots=True)
class Plan:
    renew: tuple[Claim, ...]
    claim: tuple[Claim, ...]
    release: tuple[Claim, ...]
    target: int


def plan(snapshot: Snapshot, settings: LeaseSettings, *, give_way: bool = True) -> Plan:
    """What ``snapshot.me`` does this round: renew what it holds up to its share, release
    the rest gracefully, and claim free buckets up to its share (orphaned ones beyond).
    Its share is among the replicas that take one (:func:`sharing`). One that another
    live replica is ahead of (:func:`outreached`) gives every bucket back once
    ``give_way`` (the caller's hold, :data:`REACH_HOLD_MS`, has passed); until then it
    keeps what it holds, up to an even share among all live replicas, and claims nothing
    more. Either way it still takes an orphaned bucket, which nobody took within a lease."""
    me, now = snapshot.me, snapshot.now
    live = snapshot.live | {me}
    takers = sharing(live, snapshot.reach)
    mine: list[Lease] = []
    free: list[Lease] = []
    orphaned: list[Lease] = []
    for lease in snapshot.leases:
        match standing(lease, me, now, settings):
            case Standing.MINE:
                mine.append(lease)
            case Standing.LAPSED | Standing.FREE:
                free.append(lease)
            case Standing.ORPHANED:
                orphaned.append(lease)
            case Standing.HELD:
                pass
            case other:
                assert_never(other)
    if me in takers:
        target = target_of(me, takers, settings.buckets)
    elif give_way:
        target = 0
    else:  # on hold: what it has, within an even share, and no more
        target = min(len(mine), target_of(me, live, settings.buckets))
    mine.sort(key=lambda lease: _rank(me, lease.bucket))
    keep, give = mine[:target], mine[target:]
    short = max(target - len(keep), 0)
    candidates = sorted(free + orphaned, key=lambda lease: _rank(me, lease.bucket))
    stray = {lease.bucket for lease in orphaned}
    taken = candidates[:short] + [x for x in candidates[short:] if x.bucket in stray]
    return Plan(
        renew=tuple(Claim(x.bucket, x.token) for x in sorted(keep, key=_bucket)),
        claim=tuple(Claim(x.bucket, x.token) for x in sorted(taken, key=_bucket)),
        release=tuple(Claim(x.bucket, x.token) for x in sorted(give, key=_bucket)),
        target=target,
    )


def _bucket(lease: Lease) -> int:
    return lease.bucket


@dataclass(frozen=True, slots=True)
class Holdings:
    """What a replica believes it owns: bucket -> token, and until when by its own clock.

    Only what the store confirmed this round is kept; a belief lasts one lease from the
    moment *before* the round's statements were sent, so it ends no later than the lease
    in the store (while the two clocks run at the same rate; the fence covers the rest).
    """

    tokens: Mapping[int, int] = field(default_factory=dict)
    until: int = 0  # local monotonic clock, ms

    def after_round(
        self, confirmed: Iterable[Claim], started: int, settings: LeaseSettings
    ) -> Holdings:
        """The holdings once a round that began at ``started`` (local ms) confirmed
        ``confirmed`` (renewed and claimed, with their tokens now)."""
        return Holdings({c.bucket: c.token for c in confirmed}, started + settings.lease_ms)

    def without(self, buckets: Iterable[int]) -> Holdings:
        """The holdings less ``buckets`` (dropped before they are released)."""
        gone = set(buckets)
        return Holdings({b: t for b, t in self.tokens.items() if b not in gone}, self.until)

    def current(self, now: int) -> Mapping[int, int]:
        """bucket -> token held at local time ``now``; nothing once the belief ran out."""
        return self.tokens if now < self.until else {}
