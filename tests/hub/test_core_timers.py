"""The delivery timer policy (hubd.core.timers) as tables, on a fixed clock, synchronously.

Each row is a delivery as the dispatcher holds it, a timer falling due, and what must
happen. The rows together cover every timer kind, every phase and every decision; a test
below fails when one is added to the module without a row here.
"""

from __future__ import annotations

import ast
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubd.core import timers
from hubd.core.states import DeliveryState
from hubd.core.timers import (
    PHASES,
    Expire,
    GiveUp,
    IllegalPhase,
    Phase,
    PhaseEvent,
    Retry,
    Stale,
    TimerDecision,
    TimerJob,
    TimerKind,
    TimerSettings,
    Wait,
    Wake,
    next_phase,
    on_timer,
    retry_delay_ms,
)

P, S, D, F = (
    DeliveryState.PENDING,
    DeliveryState.SENT,
    DeliveryState.DELIVERED,
    DeliveryState.SIGNED_FOR,
)
X, Z, R = DeliveryState.EXPIRED, DeliveryState.DEAD, DeliveryState.RECALLED
H, N = DeliveryState.RELAYED, DeliveryState.REFUSED
IDLE, QUEUED, SETTLING, BOTH = Phase.IDLE, Phase.QUEUED, Phase.SETTLING, Phase.QUEUED_SETTLING
RETRY, EXPIRE, WAKE = TimerKind.RETRY, TimerKind.EXPIRE, TimerKind.WAKE

NOW = 1_767_225_600_000  # the fake clock: 2026-01-01T00:00:00Z
SETTINGS = TimerSettings(
    max_attempts=3,
    retry_initial_ms=1_000,
    retry_max_ms=8_000,
    settling_recheck_ms=500,
    settling_limit_ms=60_000,
)
RECHECK = NOW + 500


@dataclass(frozen=True)
class Row:
    why: str
    state: DeliveryState
    phase: Phase
    attempts: int
    kind: TimerKind
    expected: TimerDecision
    settling_for: int = 0  # how long a receipt has been in the store's hands at NOW
    to_hub: bool = False  # handed to another hub

    def job(self) -> TimerJob:
        since = NOW - self.settling_for if self.phase.settling else 0
        return TimerJob(self.state, self.phase, self.attempts, since, self.to_hub)


ROWS = [
    # --- the backoff passed without a DELIVERED
    Row("no DELIVERED after the first publish: publish again", S, IDLE, 1, RETRY, Retry(2)),
    Row("a retry while a publish is under way is still a retry", S, QUEUED, 2, RETRY, Retry(3)),
    Row("the attempts limit reached: give up", S, IDLE, 3, RETRY, GiveUp(3)),
    Row("past the limit (lowered since): give up", S, QUEUED, 7, RETRY, GiveUp(7)),
    Row("to another hub at the limit: publish again", S, IDLE, 3, RETRY, Retry(4), to_hub=True),
    Row("a retry set for an earlier life (redelivered)", P, IDLE, 0, RETRY, Stale()),
    Row("a stale retry is stale while settling too", P, SETTLING, 0, RETRY, Stale(), 100),
    # --- the sender's expires_at passed
    Row("never published (recipient offline) and expired", P, IDLE, 0, EXPIRE, Expire()),
    Row("expired while a publish is under way", S, QUEUED, 2, EXPIRE, Expire()),
    # --- the broker did not acknowledge a publish
    Row("a failed publish: route it again", S, IDLE, 1, WAKE, Wake()),
    Row("a failed first publish: route it again", P, QUEUED, 0, WAKE, Wake()),
    Row("a wake-up does not wait for a receipt being stored", S, SETTLING, 1, WAKE, Wake(), 100),
    Row("... nor when queued as well", P, BOTH, 0, WAKE, Wake(), 100),
    # --- a receipt closing the delivery is being stored: wait for the store's answer
    Row("expiry during the receipt's commit waits", P, SETTLING, 0, EXPIRE, Wait(RECHECK), 100),
    Row("expiry waits when queued as well", S, BOTH, 1, EXPIRE, Wait(RECHECK), 100),
    Row("a retry during the commit waits", S, SETTLING, 1, RETRY, Wait(RECHECK), 100),
    Row("giving up during the commit waits", S, BOTH, 3, RETRY, Wait(RECHECK), 100),
    Row(
        "just under the settling limit: still waits", S, SETTLING, 1, EXPIRE, Wait(RECHECK), 59_999
    ),
    # --- ... but not for ever
    Row("at the limit: expire", P, SETTLING, 0, EXPIRE, Expire(60_000), 60_000),
    Row("past the limit: give up", S, BOTH, 3, RETRY, GiveUp(3, 61_000), 61_000),
    Row("past the limit: retry", S, SETTLING, 1, RETRY, Retry(2, 90_000), 90_000),
    # --- the delivery moved on since the timer was set
    Row("delivered: no retry", D, IDLE, 1, RETRY, Stale()),
    Row("delivered: no expiry", D, IDLE, 1, EXPIRE, Stale()),
    Row("signed for: no expiry", F, IDLE, 1, EXPIRE, Stale()),
    Row("signed for: no wake-up", F, IDLE, 1, WAKE, Stale()),
    Row("expired already: not twice", X, IDLE, 1, EXPIRE, Stale()),
    Row("dead already: no retry", Z, IDLE, 3, RETRY, Stale()),
    Row("dead: no wake-up", Z, QUEUED, 3, WAKE, Stale()),
    Row("recalled: no retry", R, IDLE, 1, RETRY, Stale()),
    Row("recalled: no expiry", R, IDLE, 1, EXPIRE, Stale()),
    Row("handed to the next hub: no retry (it carries it on)", H, IDLE, 2, RETRY, Stale()),
    Row("handed to the next hub: it expires it, not this hub", H, IDLE, 2, EXPIRE, Stale()),
    Row("refused by the next hub: no retry", N, IDLE, 1, RETRY, Stale()),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.why for r in ROWS])
def test_a_due_timer_decides_as_the_table_says(row: Row) -> None:
    assert on_timer(row.job(), row.kind, NOW, SETTINGS) == row.expected


def test_the_table_covers_every_timer_kind_phase_and_decision() -> None:
    assert {r.kind for r in ROWS} == set(TimerKind)
    assert {r.phase for r in ROWS} == set(Phase)
    assert {type(r.expected) for r in ROWS} == set(get_args(TimerDecision))
    assert {r.state for r in ROWS} == set(DeliveryState)


@pytest.mark.parametrize("kind", list(TimerKind), ids=str)
@pytest.mark.parametrize("phase", list(Phase), ids=str)
def test_a_final_delivery_takes_no_timer_in_any_phase(kind: TimerKind, phase: Phase) -> None:
    for state in (D, F, X, Z):
        assert on_timer(TimerJob(state, phase, 3, NOW - 100), kind, NOW, SETTINGS) == Stale()


# ------------------------------------------------------------------ properties

JOBS = st.builds(
    TimerJob,
    st.sampled_from(list(DeliveryState)),
    st.sampled_from(list(Phase)),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=NOW - 200_000, max_value=NOW),
)


@settings(max_examples=300, deadline=None)
@given(JOBS, st.sampled_from(list(TimerKind)), st.integers(min_value=0, max_value=200_000))
def test_no_delivery_is_closed_while_its_receipt_is_stored_within_the_limit(
    job: TimerJob, kind: TimerKind, later: int
) -> None:
    now = job.settling_since + later
    decision = on_timer(job, kind, now, SETTINGS)
    within = job.phase.settling and later < SETTINGS.settling_limit_ms
    if within and isinstance(decision, Expire | GiveUp | Retry):
        pytest.fail(f"{decision} while a receipt has been stored for {later} ms only")
    if isinstance(decision, Wait):
        assert decision.until > now  # asked again later, never in a loop at the same instant
    if isinstance(decision, Expire | GiveUp | Retry):
        overdue = decision.settling_overdue_ms
        assert (overdue is not None) == job.phase.settling
    if isinstance(decision, GiveUp):
        assert job.attempts >= SETTINGS.max_attempts
    if isinstance(decision, Retry):
        assert decision.attempt == job.attempts + 1 <= SETTINGS.max_attempts


# ------------------------------------------------------------------ the retry backoff


@pytest.mark.parametrize(
    ("attempts", "jitter", "delay"),
    [
        (0, 1.0, 1_000),  # a delivery never acknowledged counts as the first
        (1, 1.0, 1_000),
        (2, 1.0, 2_000),
        (3, 1.0, 4_000),
        (4, 1.0, 8_000),
        (5, 1.0, 8_000),  # capped at retry_max
        (60, 1.0, 8_000),  # no overflow for a long outage
        (1, 0.8, 800),
        (3, 1.2, 4_800),
        (5, 1.2, 9_600),  # the jitter applies to the cap too
    ],
)
def test_the_backoff_doubles_up_to_its_cap_times_the_jitter(
    attempts: int, jitter: float, delay: int
) -> None:
    assert retry_delay_ms(attempts, SETTINGS, jitter) == delay


# ------------------------------------------------------------------ the phase table

EXPECTED_PHASES = {
    (IDLE, PhaseEvent.QUEUE): QUEUED,
    (QUEUED, PhaseEvent.RELEASE): IDLE,
    (IDLE, PhaseEvent.SETTLE): SETTLING,
    (QUEUED, PhaseEvent.SETTLE): BOTH,
    (SETTLING, PhaseEvent.QUEUE): BOTH,
    (BOTH, PhaseEvent.RELEASE): SETTLING,
    (SETTLING, PhaseEvent.SETTLED): IDLE,
    (BOTH, PhaseEvent.SETTLED): QUEUED,
}
PHASE_PAIRS = list(itertools.product(Phase, PhaseEvent))


def test_the_phase_table_holds_exactly_the_documented_moves() -> None:
    assert PHASES == EXPECTED_PHASES


@pytest.mark.parametrize(("phase", "event"), PHASE_PAIRS, ids=[f"{p}-{e}" for p, e in PHASE_PAIRS])
def test_every_phase_event_pair_is_a_listed_move_or_refused(
    phase: Phase, event: PhaseEvent
) -> None:
    if (phase, event) in EXPECTED_PHASES:
        assert next_phase(phase, event) is EXPECTED_PHASES[(phase, event)]
        return
    with pytest.raises(IllegalPhase) as caught:
        next_phase(phase, event)
    assert caught.value.phase is phase
    assert caught.value.event is event
    assert str(phase) in str(caught.value)


def test_a_queued_delivery_cannot_be_queued_again() -> None:
    """One publish per delivery at a time: the dispatcher checks, the table refuses."""
    for phase in Phase:
        if phase.queued:
            with pytest.raises(IllegalPhase):
                next_phase(phase, PhaseEvent.QUEUE)


def test_queueing_and_settling_are_independent() -> None:
    """Every move changes one of the two facts and keeps the other."""
    for (phase, event), after in PHASES.items():
        if event in {PhaseEvent.QUEUE, PhaseEvent.RELEASE}:
            assert after.settling == phase.settling
            assert after.queued == (event is PhaseEvent.QUEUE)
        else:
            assert after.queued == phase.queued
            assert after.settling == (event is PhaseEvent.SETTLE)


# ------------------------------------------------------------------ purity


def test_the_timer_policy_imports_only_the_standard_library_schemas_and_the_state_table() -> None:
    tree = ast.parse(Path(timers.__file__).read_text(encoding="utf-8"))
    imported = {
        name.split(".")[0] if not name.startswith(("schemas", "hubd")) else name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    foreign = {
        name
        for name in imported
        if name not in sys.stdlib_module_names
        and not name.startswith("schemas")
        and name != "hubd.core.states"  # pure; it moves into hubd.core with the reorganisation
    }
    assert foreign == set()
    assert not imported & {"asyncio", "time", "datetime", "random", "logging"}
