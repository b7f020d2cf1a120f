"""Buckets, leases and the balance (hubd.core.leases): tables on a fixed clock, and a
stateful test of several replicas sharing one simulated lease table on a fake clock."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from hubd.core.leases import (
    BUCKETS,
    LEASE_MS,
    RENEW_MS,
    ChannelReach,
    Claim,
    Holdings,
    Lease,
    LeaseSettings,
    Plan,
    Snapshot,
    Standing,
    bucket_of,
    outreached,
    plan,
    sharing,
    standing,
    target_of,
)
from schemas.errors import UsageError

S = LeaseSettings(lease_ms=3_000, renew_ms=1_000, buckets=8)
NOW = 100_000


def test_default_settings_take_a_dead_replicas_buckets_over_within_five_seconds() -> None:
    # a lease runs out LEASE_MS after its last renewal; the next round elsewhere claims it
    assert LEASE_MS + RENEW_MS <= 5_000
    assert LeaseSettings().buckets == BUCKETS == 256


def test_bucket_of_is_pinned_so_every_replica_and_version_hashes_alike() -> None:
    # Fixed values: a change to the hash moves every organisation under running replicas.
    assert [bucket_of(org) for org in ("jl.gov", "jl.cc", "jl.gov.cc", "national", "a")] == [
        241,
        215,
        244,
        107,
        47,
    ]


def test_bucket_of_spreads_many_organisations_evenly() -> None:
    counts = Counter(bucket_of(f"org{n}.jl.gov") for n in range(25_600))
    assert len(counts) == BUCKETS
    assert max(counts.values()) < 2 * 100  # 100 each on average


@pytest.mark.parametrize(
    ("lease_ms", "renew_ms", "buckets"),
    [(1_000, 600, 8), (1_000, 0, 8), (3_000, 1_000, 0), (3_000, 1_000, 5_000)],
)
def test_settings_that_would_lose_leases_in_one_slow_round_are_refused(
    lease_ms: int, renew_ms: int, buckets: int
) -> None:
    with pytest.raises(UsageError):
        LeaseSettings(lease_ms=lease_ms, renew_ms=renew_ms, buckets=buckets)


@pytest.mark.parametrize(
    ("holder", "expires_at", "expected"),
    [
        ("a", NOW + 1, Standing.MINE),
        ("a", NOW, Standing.LAPSED),  # expires_at is the first instant it no longer holds
        ("b", NOW + 1, Standing.HELD),
        ("b", NOW, Standing.FREE),
        (None, NOW - 10, Standing.FREE),  # released a moment ago
        (None, NOW - S.lease_ms, Standing.ORPHANED),  # nobody took it for a whole lease
        ("b", NOW - S.lease_ms - 1, Standing.ORPHANED),
        ("a", NOW - S.lease_ms - 1, Standing.LAPSED),  # mine: claimed again like a free one
    ],
)
def test_standing_of_a_lease_as_replica_a_sees_it(
    holder: str | None, expires_at: int, expected: Standing
) -> None:
    assert standing(Lease(0, holder, 7, expires_at), "a", NOW, S) is expected


@pytest.mark.parametrize(
    ("me", "live", "buckets", "target"),
    [
        ("a", [], 256, 256),
        ("a", ["a"], 256, 256),
        ("a", ["b"], 256, 128),  # me counts even before my heartbeat is read back
        ("b", ["a", "b"], 256, 128),
        ("a", ["a", "b", "c"], 256, 86),  # 256 = 86 + 85 + 85
        ("b", ["a", "b", "c"], 256, 85),
        ("c", ["c", "b", "a"], 256, 85),
        ("d", ["a", "b", "c"], 8, 2),
        ("a", ["b", "c", "d", "e", "f", "g", "h", "i"], 8, 1),
        ("i", ["a", "b", "c", "d", "e", "f", "g", "h"], 8, 0),  # more replicas than buckets
    ],
)
def test_targets_split_the_buckets_evenly_and_add_up(
    me: str, live: list[str], buckets: int, target: int
) -> None:
    assert target_of(me, live, buckets) == target
    everyone = set(live) | {me}
    assert sum(target_of(r, everyone, buckets) for r in everyone) == buckets


def leases(*holders: tuple[str | None, int]) -> tuple[Lease, ...]:
    """Eight leases: (holder, expires_at) per bucket, token = 10 + bucket."""
    return tuple(Lease(b, h, 10 + b, exp) for b, (h, exp) in enumerate(holders))


LIVE = NOW + 1_000
GONE = NOW - 1  # expired a moment ago
LONG_GONE = NOW - S.lease_ms - 1


def buckets_of(claims: tuple[Claim, ...]) -> set[int]:
    return {c.bucket for c in claims}


@pytest.mark.parametrize(
    ("rows", "live", "renew", "claim", "release_count"),
    [
        pytest.param([(None, 0)] * 8, {"a"}, set(), set(range(8)), 0, id="alone-claims-all"),
        pytest.param([("a", LIVE)] * 8, {"a"}, set(range(8)), set(), 0, id="alone-renews-all"),
        # a second replica joined: a gives back half, gracefully
        pytest.param([("a", LIVE)] * 8, {"a", "b"}, None, set(), 4, id="joined-gives-back"),
        pytest.param(  # b's leases expired: a claims them
            [("a", LIVE)] * 4 + [("b", GONE)] * 4,
            {"a"},
            {0, 1, 2, 3},
            {4, 5, 6, 7},
            0,
            id="takes-over-expired",
        ),
        pytest.param(  # b's heartbeat is gone but its leases are not: a waits for them
            [("a", LIVE)] * 4 + [("b", LIVE)] * 4,
            {"a"},
            {0, 1, 2, 3},
            set(),
            0,
            id="waits-for-live-leases",
        ),
        pytest.param(  # at its share: the free ones are b's to claim
            [("a", LIVE)] * 4 + [("b", LIVE)] * 2 + [(None, GONE)] * 2,
            {"a", "b"},
            {0, 1, 2, 3},
            set(),
            0,
            id="leaves-free-ones-to-the-short-replica",
        ),
        pytest.param(  # at its share, but nobody took this one for a whole lease
            [("a", LIVE)] * 4 + [("b", LIVE)] * 3 + [(None, LONG_GONE)],
            {"a", "b"},
            {0, 1, 2, 3},
            {7},
            0,
            id="takes-an-orphan-beyond-its-share",
        ),
        pytest.param(  # my own lapsed lease: claimed again (a new token), never renewed
            [("a", GONE)] + [("a", LIVE)] * 7,
            {"a"},
            set(range(1, 8)),
            {0},
            0,
            id="lapsed-is-claimed-not-renewed",
        ),
    ],
)
def test_plan_as_replica_a(
    rows: list[tuple[str | None, int]],
    live: set[str],
    renew: set[int] | None,
    claim: set[int],
    release_count: int,
) -> None:
    snap = Snapshot(NOW, "a", leases(*rows), frozenset(live))
    result = plan(snap, S)
    if renew is not None:
        assert buckets_of(result.renew) == renew
    assert buckets_of(result.claim) == claim
    assert len(result.release) == release_count
    assert not buckets_of(result.renew) & buckets_of(result.release)
    tokens = {lease.bucket: lease.token for lease in snap.leases}
    for c in result.renew + result.claim + result.release:
        assert c.token == tokens[c.bucket]  # every statement names the token it read


def test_the_joining_replica_and_the_leaving_one_agree_on_which_buckets_move() -> None:
    # a gives back the buckets it prefers least; b, short, claims those once free
    snap = Snapshot(NOW, "a", leases(*[("a", LIVE)] * 8), frozenset({"a", "b"}))
    given_back = plan(snap, S).release
    after = tuple(
        Lease(x.bucket, None, x.token, NOW) if Claim(x.bucket, x.token) in given_back else x
        for x in snap.leases
    )
    b_plan = plan(Snapshot(NOW + 1, "b", after, frozenset({"a", "b"})), S)
    assert buckets_of(b_plan.claim) == buckets_of(given_back)
    assert len(b_plan.claim) == 4


def test_holdings_last_one_lease_from_the_rounds_start_and_drop_what_was_not_confirmed() -> None:
    held = Holdings({1: 5, 2: 6}, until=NOW + 10)
    after = held.after_round([Claim(2, 6), Claim(3, 1)], started=NOW, settings=S)
    assert after.current(NOW + S.lease_ms - 1) == {2: 6, 3: 1}
    assert after.current(NOW + S.lease_ms) == {}
    assert after.without([3]).current(NOW) == {2: 6}


# --------------------------------------------------------------- the stateful test


@dataclass
class FakeTable:
    """The store's lease rows with the compare-and-set semantics of hubd.store.leases."""

    settings: LeaseSettings
    rows: dict[int, Lease] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)  # id -> heartbeat expires_at

    def __post_init__(self) -> None:
        self.rows = {b: Lease(b, None, 0, 0) for b in range(self.settings.buckets)}

    def heartbeat(self, me: str, now: int) -> None:
        self.replicas[me] = now + self.settings.lease_ms

    def snapshot(self, me: str, now: int) -> Snapshot:
        live = frozenset(r for r, exp in self.replicas.items() if exp > now)
        return Snapshot(now, me, tuple(self.rows.values()), live)

    def carry_out(self, me: str, p: Plan, now: int) -> list[Claim]:
        lease_ms = self.settings.lease_ms
        confirmed = []
        for c in p.release:
            row = self.rows[c.bucket]
            if row.holder == me and row.token == c.token and row.expires_at > now:
                self.rows[c.bucket] = Lease(c.bucket, None, row.token, now)
        for c in p.renew:
            row = self.rows[c.bucket]
            if row.holder == me and row.token == c.token and row.expires_at > now:
                self.rows[c.bucket] = Lease(c.bucket, me, row.token, now + lease_ms)
                confirmed.append(c)
        for c in p.claim:
            row = self.rows[c.bucket]
            if row.token == c.token and (row.holder is None or row.expires_at <= now):
                self.rows[c.bucket] = Lease(c.bucket, me, row.token + 1, now + lease_ms)
                confirmed.append(Claim(c.bucket, row.token + 1))
        return confirmed

    def leave(self, me: str, now: int) -> None:
        for b, row in self.rows.items():
            if row.holder == me:
                self.rows[b] = Lease(b, None, row.token, now)
        self.replicas.pop(me, None)


@dataclass
class Replica:
    name: str
    holdings: Holdings = field(default_factory=Holdings)
    paused: bool = False
    pending: tuple[Plan, int] | None = None  # a plan read and not yet carried out


SIM = LeaseSettings(lease_ms=3_000, renew_ms=1_000, buckets=16)


class Replicas(RuleBasedStateMachine):
    """Replicas read and act in any interleaving, pause (with a plan in hand), resume,
    leave gracefully and join, while a fake clock moves on."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000_000
        self.table = FakeTable(SIM)
        self.replicas: dict[str, Replica] = {}
        self.joined = 0
        self.join()
        self.join()

    def running(self) -> list[Replica]:
        return [r for r in self.replicas.values() if not r.paused]

    @precondition(lambda self: len(self.replicas) < 4)
    @rule()
    def join(self) -> None:
        self.joined += 1
        name = f"r{self.joined}"
        self.replicas[name] = Replica(name)

    @rule(pick=st.integers(0, 3))
    def read(self, pick: int) -> None:
        """Heartbeat, read the table and plan; the statements go out later (act)."""
        running = self.running()
        if running:
            r = running[pick % len(running)]
            self.table.heartbeat(r.name, self.now)
            r.pending = (plan(self.table.snapshot(r.name, self.now), SIM), self.now)

    @rule(pick=st.integers(0, 3))
    def act(self, pick: int) -> None:
        waiting = [r for r in self.running() if r.pending is not None]
        if waiting:
            self.carry_out(waiting[pick % len(waiting)])

    def carry_out(self, r: Replica) -> None:
        assert r.pending is not None
        p, started = r.pending
        r.pending = None
        r.holdings = r.holdings.without(c.bucket for c in p.release)
        confirmed = self.table.carry_out(r.name, p, self.now)
        r.holdings = r.holdings.after_round(confirmed, started, SIM)

    @rule(ms=st.integers(0, 2 * SIM.lease_ms))
    def wait(self, ms: int) -> None:
        self.now += ms

    @rule(pick=st.integers(0, 3))
    def pause(self, pick: int) -> None:
        """SIGSTOP: a paused replica keeps its beliefs and any plan it was carrying out."""
        names = sorted(self.replicas)
        self.replicas[names[pick % len(names)]].paused = True

    @rule(pick=st.integers(0, 3))
    def resume(self, pick: int) -> None:
        names = sorted(self.replicas)
        self.replicas[names[pick % len(names)]].paused = False

    @precondition(lambda self: len(self.replicas) > 1)
    @rule(pick=st.integers(0, 3))
    def leave(self, pick: int) -> None:
        running = self.running()
        if running:
            r = running[pick % len(running)]
            r.holdings = Holdings()  # it stops writing before it releases
            self.table.leave(r.name, self.now)
            del self.replicas[r.name]

    @invariant()
    def a_belief_is_backed_by_the_table(self) -> None:
        """Whoever believes it owns a bucket holds its current token, unexpired: so never
        two replicas at once, paused ones included."""
        believers: Counter[int] = Counter()
        for r in self.replicas.values():
            for bucket, token in r.holdings.current(self.now).items():
                row = self.table.rows[bucket]
                assert (row.holder, row.token) == (r.name, token)
                assert row.expires_at > self.now
                believers[bucket] += 1
        assert all(n == 1 for n in believers.values())

    def teardown(self) -> None:
        """Resume everyone; rounds every renew_ms: within a lease and an interval every
        bucket is owned, and soon after the split is even."""
        for r in self.replicas.values():
            r.paused = False
            if r.pending is not None:
                self.carry_out(r)  # the statements in flight when it stopped
        start = self.now
        settled_by = start + SIM.lease_ms + SIM.renew_ms
        while self.now <= settled_by + 4 * SIM.renew_ms:
            for r in self.replicas.values():
                self.table.heartbeat(r.name, self.now)
                r.pending = (plan(self.table.snapshot(r.name, self.now), SIM), self.now)
                self.carry_out(r)
            self.a_belief_is_backed_by_the_table()
            if self.now >= settled_by:
                owners = [row.holder for row in self.table.rows.values()]
                assert None not in owners, f"unowned at +{self.now - start} ms"
                assert all(row.expires_at > self.now for row in self.table.rows.values())
            self.now += SIM.renew_ms
        counts = Counter(row.holder for row in self.table.rows.values())
        shares = [counts.get(name, 0) for name in self.replicas]
        assert max(shares) - min(shares) <= 1, counts


TestReplicas = Replicas.TestCase
TestReplicas.settings = hsettings(max_examples=150, stateful_step_count=40, deadline=None)


BOTH = frozenset({"govnet", "secure"})


def misses(*channels: str, configured: frozenset[str] = BOTH) -> ChannelReach:
    """A replica configured for ``configured`` that reaches all of them but ``channels``."""
    return ChannelReach(configured, configured - frozenset(channels))


@pytest.mark.parametrize(
    ("reach", "takers"),
    [
        pytest.param({"a": misses(), "b": misses()}, {"a", "b"}, id="alike-both-share"),
        pytest.param({"a": misses(), "b": misses("secure")}, {"a"}, id="cut-off-gives-way"),
        pytest.param({"a": misses("secure"), "b": misses("secure")}, {"a", "b"}, id="down-for-all"),
        pytest.param(
            {"a": misses("secure"), "b": misses("govnet")}, {"a", "b"}, id="each-misses-another"
        ),
        pytest.param({"a": misses()}, {"a", "b"}, id="unknown-reach-is-compared-with-none"),
        pytest.param(
            {"a": misses(), "b": misses("secure"), "c": misses("secure", "govnet")},
            {"a"},
            id="only-the-one-ahead-of-all",
        ),
    ],
)
def test_the_replicas_that_share_are_those_no_other_is_ahead_of(
    reach: dict[str, ChannelReach], takers: set[str]
) -> None:
    live = {"a", "b"} | set(reach)
    assert sharing(live, reach) == takers


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(misses(), misses(configured=BOTH | {"new"}), id="added-all-up"),
        # b restarted with a new channel whose broker it does not reach yet: a does not
        # carry it, so a is not ahead of b
        pytest.param(misses(), misses("new", configured=BOTH | {"new"}), id="added-not-up-yet"),
        # a still carries secure, whose broker is down; b was restarted without it
        pytest.param(misses("secure"), misses(configured=frozenset({"govnet"})), id="removed"),
    ],
)
def test_a_channel_added_or_removed_one_replica_at_a_time_moves_nothing(
    a: ChannelReach, b: ChannelReach
) -> None:
    reach = {"a": a, "b": b}
    assert sharing({"a", "b"}, reach) == {"a", "b"}
    assert outreached("a", {"a", "b"}, reach) == outreached("b", {"a", "b"}, reach) == set()


def test_a_replica_that_gives_way_gives_everything_back_and_the_other_takes_it_all() -> None:
    reach = {"a": misses("secure"), "b": misses()}
    rows = [("a", LIVE)] * 4 + [("b", LIVE)] * 4
    snap = Snapshot(NOW, "a", leases(*rows), frozenset({"a", "b"}), reach)
    assert outreached("a", {"a", "b"}, reach) == {"secure"}
    held = plan(snap, S, give_way=False)  # its hold has not passed: it keeps its share
    assert (held.target, buckets_of(held.renew), held.release) == (4, {0, 1, 2, 3}, ())
    mine = plan(snap, S)
    assert (mine.target, buckets_of(mine.renew), len(mine.release)) == (0, set(), 4)
    # once a's leases are released, b claims them: its share is every bucket
    freed = [(None, NOW)] * 4 + [("b", LIVE)] * 4
    theirs = plan(Snapshot(NOW, "b", leases(*freed), frozenset({"a", "b"}), reach), S)
    assert theirs.target == 8
    assert buckets_of(theirs.claim) == {0, 1, 2, 3}
    assert outreached("b", {"a", "b"}, reach) == frozenset()


def test_a_replica_on_hold_keeps_what_it_has_and_claims_no_free_bucket() -> None:
    # three replicas lost secure, a is back first; c stopped and its buckets are free:
    # b, on hold, must not take them (it would give them away again when the hold ends)
    reach = {"a": misses(), "b": misses("secure")}
    rows = [("a", LIVE)] * 3 + [("b", LIVE)] * 3 + [(None, GONE)] * 2
    result = plan(
        Snapshot(NOW, "b", leases(*rows), frozenset({"a", "b"}), reach), S, give_way=False
    )
    assert (result.target, buckets_of(result.renew), result.claim) == (3, {3, 4, 5}, ())


def test_a_replica_giving_way_still_takes_a_bucket_nobody_took_for_a_lease() -> None:
    rows = [(None, LONG_GONE)] + [("b", LIVE)] * 7
    reach = {"a": misses("secure"), "b": misses()}
    result = plan(Snapshot(NOW, "a", leases(*rows), frozenset({"a", "b"}), reach), S)
    assert (result.target, buckets_of(result.claim)) == (0, {0})


def test_a_negative_reach_hold_is_refused() -> None:
    with pytest.raises(UsageError, match="reach_hold_ms"):
        LeaseSettings(reach_hold_ms=-1)
