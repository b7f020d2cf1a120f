"""The delivery timer policy: what a due retry, expiry or wake-up does to one delivery.

The dispatcher (:mod:`hubd.engine.dispatch`) keeps the timers, the queues and the store writes;
when a timer falls due it asks :func:`on_timer` and carries out the answer:

    Retry    publish again (the backoff passed without the recipient's DELIVERED)
    GiveUp   the attempts limit is reached: DEAD, and the sender hears so
    Expire   the sender's ``expires_at`` passed: EXPIRED, and the sender hears so
    Wait     a receipt closing the delivery is being stored: ask again at ``until``
    Wake     a publish the broker did not acknowledge: route the delivery again
    Stale    the timer no longer applies (the delivery moved on since it was set)

Besides its :class:`~hubd.core.states.DeliveryState`, an awaited delivery has a
:class:`Phase` in the dispatcher: whether it is queued (in the ready heap or handed to the
connection: never twice at once), and whether a recipient's receipt closing it is on its
way to the store (*settling*: an expiry or a give-up then waits for the store's answer, so
the sender never hears both EXPIRED and DELIVERED). The phases move along one table,
:data:`PHASES`, like the states along :data:`hubd.core.states.TRANSITIONS`.

Pure: no asyncio, no store, no clock reads (the time comes in as ``now_ms``), no logging.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

from hubd.core.states import DeliveryState
from schemas.errors import XchgError

SETTLING_RECHECK_MS = 500  # an expiry or give-up that met a receipt still being stored: ask again
# ... for this long at most: a receipt path that failed without saying so must not keep a
# delivery from ever expiring or being given up (a commit takes milliseconds).
SETTLING_LIMIT_MS = 60_000
RETRY_JITTER = (0.8, 1.2)  # the backoff is multiplied by a factor drawn from this range


class TimerKind(StrEnum):
    RETRY = "retry"  # the backoff after a publish: no DELIVERED yet
    EXPIRE = "expire"  # the sender's expires_at
    WAKE = "wake"  # a publish the broker did not acknowledge: try again shortly


class Phase(StrEnum):
    """What the dispatcher is doing with an awaited delivery, beside its DeliveryState."""

    IDLE = "idle"  # parked for an offline recipient, or waiting for a timer
    QUEUED = "queued"  # in the ready heap or handed to the connection
    SETTLING = "settling"  # idle, and a receipt closing it is being stored
    QUEUED_SETTLING = "queued_settling"  # both: a publish was under way when it came

    @property
    def queued(self) -> bool:
        return self in _QUEUED

    @property
    def settling(self) -> bool:
        return self in _SETTLING


_QUEUED = frozenset({Phase.QUEUED, Phase.QUEUED_SETTLING})
_SETTLING = frozenset({Phase.SETTLING, Phase.QUEUED_SETTLING})


class PhaseEvent(StrEnum):
    QUEUE = "queue"  # into the ready heap
    RELEASE = "release"  # out of the heap and off the connection: published, failed or parked
    SETTLE = "settle"  # the first receipt closing it is handed to the store
    SETTLED = "settled"  # the last such receipt's commit answered (or was waited for too long)


PHASES: dict[tuple[Phase, PhaseEvent], Phase] = {
    (Phase.IDLE, PhaseEvent.QUEUE): Phase.QUEUED,
    (Phase.QUEUED, PhaseEvent.RELEASE): Phase.IDLE,
    (Phase.IDLE, PhaseEvent.SETTLE): Phase.SETTLING,
    (Phase.QUEUED, PhaseEvent.SETTLE): Phase.QUEUED_SETTLING,
    (Phase.SETTLING, PhaseEvent.QUEUE): Phase.QUEUED_SETTLING,  # a wake-up while settling
    (Phase.QUEUED_SETTLING, PhaseEvent.RELEASE): Phase.SETTLING,
    (Phase.SETTLING, PhaseEvent.SETTLED): Phase.IDLE,
    (Phase.QUEUED_SETTLING, PhaseEvent.SETTLED): Phase.QUEUED,
}


class IllegalPhase(XchgError):  # noqa: N818 - it names the situation, like IllegalTransition
    def __init__(self, phase: Phase, event: PhaseEvent) -> None:
        super().__init__(f"a delivery in phase {phase} cannot take phase event {event}")
        self.phase = phase
        self.event = event


def next_phase(phase: Phase, event: PhaseEvent) -> Phase:
    """The phase after ``event``; IllegalPhase if the table does not allow it."""
    try:
        return PHASES[(phase, event)]
    except KeyError:
        raise IllegalPhase(phase, event) from None


@dataclass(frozen=True, slots=True)
class TimerJob:
    """What the timer policy reads of one delivery."""

    state: DeliveryState
    phase: Phase
    attempts: int  # publishes the broker acknowledged so far
    settling_since: int = 0  # when the first receipt being stored was handed over (ms)
    # handed to another hub (hubs under hubs): never given up on for want of an answer,
    # like a spoke's own sends (a hub above that is down behind a live broker, for one)
    to_hub: bool = False


@dataclass(frozen=True, slots=True)
class TimerSettings:
    max_attempts: int = 30
    retry_initial_ms: int = 10_000
    retry_max_ms: int = 300_000
    settling_recheck_ms: int = SETTLING_RECHECK_MS
    settling_limit_ms: int = SETTLING_LIMIT_MS


@dataclass(frozen=True, slots=True)
class Retry:
    attempt: int  # the number the next publish will have
    settling_overdue_ms: int | None = None  # a receipt being stored was waited for this long


@dataclass(frozen=True, slots=True)
class GiveUp:
    attempts: int
    settling_overdue_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Expire:
    settling_overdue_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    until: int  # set the same timer again for then


@dataclass(frozen=True, slots=True)
class Wake:
    pass


@dataclass(frozen=True, slots=True)
class Stale:
    pass


TimerDecision = Retry | GiveUp | Expire | Wait | Wake | Stale


def on_timer(job: TimerJob, kind: TimerKind, now_ms: int, settings: TimerSettings) -> TimerDecision:
    """What a timer of ``kind`` falling due at ``now_ms`` does to ``job``."""
    if not job.state.awaiting:
        return Stale()  # confirmed, expired or given up since the timer was set
    if kind is TimerKind.RETRY and job.state is not DeliveryState.SENT:
        return Stale()  # set for an earlier life of the delivery (redelivered since)
    overdue = None
    if job.phase.settling and kind is not TimerKind.WAKE:
        waited = now_ms - job.settling_since
        if waited < settings.settling_limit_ms:
            # Its DELIVERED is being stored: decide once the store has answered.
            return Wait(now_ms + settings.settling_recheck_ms)
        overdue = waited
    match kind:
        case TimerKind.EXPIRE:
            return Expire(overdue)
        case TimerKind.WAKE:
            return Wake()
        case TimerKind.RETRY:
            if job.attempts >= settings.max_attempts and not job.to_hub:
                return GiveUp(job.attempts, overdue)
            return Retry(job.attempts + 1, overdue)
        case _:
            assert_never(kind)


def retry_delay_ms(attempts: int, settings: TimerSettings, jitter: float) -> int:
    """How long after publish number ``attempts`` to publish again without a DELIVERED:
    doubling from ``retry_initial_ms`` up to ``retry_max_ms``, times ``jitter`` (drawn by
    the caller from :data:`RETRY_JITTER`, so that recipients back from an outage are not
    all sent to at once)."""
    base = min(settings.retry_initial_ms * 2 ** max(attempts - 1, 0), settings.retry_max_ms)
    return int(base * jitter)
