"""Deadlines and reminders (催办): when the hub urges a recipient that has not reached what a
document's terms ask by when (schemas.terms), pure.

A document's sender may set, in its signed header, when every recipient must have signed
for it (``sign_by``, 签收时限), decided whether to accept a petition (``accept_by``,
受理时限) and handled it (``done_by``, 办理时限; a 请示: its 批复). For each recipient and
each deadline the hub reminds it (and tells the sender) three ways:

- **before**: once, ahead of the deadline by ``remind_before`` (a day) or, for a short
  deadline, by half of the time the recipient had (an emergency's minutes);
- **due**: once, when the deadline passes;
- **overdue**: again every ``repeat_every`` (a day; an emergency: ``emergency_repeat``)
  while it is still not met, at most ``max_overdue`` times.

What counts as met: a recipient that signed for it meets ``sign_by``; one that reported
受理 or 不予受理 (or 办结) meets ``accept_by``; one that reported 办结, or answered a 请示 with
its 批复, meets ``done_by``. A delivery recalled or expired is no longer anyone's to meet.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hubd.core.states import DeliveryState

MINUTE_MS = 60_000
DAY_MS = 86_400_000


class Kind(StrEnum):
    """Which deadline: the names of the header's terms."""

    SIGN = "sign_by"  # 签收时限
    ACCEPT = "accept_by"  # 受理时限 (a petition)
    DONE = "done_by"  # 办理时限

    @property
    def zh(self) -> str:
        return {"sign_by": "签收", "accept_by": "受理", "done_by": "办结"}[self.value]


class Stage(StrEnum):
    BEFORE = "before"  # ahead of the deadline
    DUE = "due"  # the deadline passed
    OVERDUE = "overdue"  # again, while it is still not met


class Handling(StrEnum):
    """What a recipient reported of its handling (办理), as the hub keeps it per delivery
    (the latest report, never one further back: :func:`later`)."""

    READ = "READ"  # 已阅
    HANDLING = "HANDLING"  # 办理中
    CASE_ACCEPTED = "CASE_ACCEPTED"  # 受理 (a petition)
    CASE_DECLINED = "CASE_DECLINED"  # 不予受理 (a petition): decided, and so handled
    DONE = "DONE"  # 办结 (or a 请示's 批复 arrived)

    @property
    def rank(self) -> int:
        return _HANDLING_RANK[self]


_HANDLING_RANK = {
    Handling.READ: 0,
    Handling.HANDLING: 1,
    Handling.CASE_ACCEPTED: 1,
    Handling.CASE_DECLINED: 2,
    Handling.DONE: 2,
}


def later(held: Handling | None, reported: Handling) -> Handling:
    """The handling a delivery keeps after ``reported``: a report never takes it back (a
    late 已阅 after 办结 leaves 办结)."""
    if held is None or reported.rank >= held.rank:
        return reported
    return held


@dataclass(frozen=True, slots=True)
class Settings:
    remind_before_ms: int = DAY_MS
    repeat_every_ms: int = DAY_MS
    emergency_repeat_ms: int = 5 * MINUTE_MS
    max_overdue: int = 10


@dataclass(frozen=True, slots=True)
class Open:
    """One recipient's part of one deadline, as the store holds it."""

    kind: Kind
    due_at: int
    created_at: int  # when the document was sealed: how long the recipient had
    state: DeliveryState
    handling: Handling | None
    emergency: bool  # a 应急 document at 特提: reminders every few minutes
    reminded: int  # reminders already sent for this deadline
    last_reminded_at: int | None


@dataclass(frozen=True, slots=True)
class Remind:
    stage: Stage


@dataclass(frozen=True, slots=True)
class Wait:
    until: int


@dataclass(frozen=True, slots=True)
class Quiet:
    """Nothing more to send for this deadline and recipient: met, gone, or reminded the
    most it will be (it stays on the overdue list until met)."""


Decision = Remind | Wait | Quiet

_GONE = frozenset({DeliveryState.RECALLED, DeliveryState.EXPIRED})
_ACCEPT_MET = frozenset({Handling.CASE_ACCEPTED, Handling.CASE_DECLINED, Handling.DONE})


def met(kind: Kind, state: DeliveryState, handling: Handling | None) -> bool:
    """Whether a recipient in ``state`` that reported ``handling`` meets ``kind``."""
    if state in _GONE:
        return True  # recalled or expired: no longer anyone's to meet
    match kind:
        case Kind.SIGN:
            return state is DeliveryState.SIGNED_FOR
        case Kind.ACCEPT:
            return handling in _ACCEPT_MET
        case Kind.DONE:
            return handling in {Handling.DONE, Handling.CASE_DECLINED}


def before_ms(item: Open, settings: Settings) -> int:
    """How long ahead of the deadline the first reminder goes."""
    window = max(item.due_at - item.created_at, 0)
    return min(settings.remind_before_ms, window // 2)


def decide(item: Open, now: int, settings: Settings) -> Decision:
    """What to do now about one recipient's deadline."""
    if met(item.kind, item.state, item.handling):
        return Quiet()
    first = item.due_at - before_ms(item, settings)
    if item.reminded == 0:
        if now >= item.due_at:
            return Remind(Stage.DUE)  # the hub was away when it was due: say it is due
        return Remind(Stage.BEFORE) if now >= first else Wait(first)
    if item.reminded == 1 and (item.last_reminded_at or 0) < item.due_at:
        return Remind(Stage.DUE) if now >= item.due_at else Wait(item.due_at)
    if item.reminded >= settings.max_overdue + 2:  # before and due, then the repeats
        return Quiet()
    repeat = settings.emergency_repeat_ms if item.emergency else settings.repeat_every_ms
    due_again = max(item.last_reminded_at or item.due_at, item.due_at) + repeat
    return Remind(Stage.OVERDUE) if now >= due_again else Wait(due_again)
