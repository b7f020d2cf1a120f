"""When the hub reminds (催办) a recipient of a deadline (hubd.core.deadlines), as tables on a
given time: no store, no clock."""

from __future__ import annotations

import pytest

from hubd.core.deadlines import (
    DAY_MS,
    MINUTE_MS,
    Handling,
    Kind,
    Open,
    Quiet,
    Remind,
    Settings,
    Stage,
    Wait,
    decide,
    met,
)
from hubd.core.states import DeliveryState

D = DeliveryState
H = Handling
T0 = 1_795_000_000_000
SETTINGS = Settings()


def item(
    kind: Kind = Kind.SIGN,
    *,
    due_in: int = 5 * DAY_MS,
    state: DeliveryState = D.DELIVERED,
    handling: Handling | None = None,
    emergency: bool = False,
    reminded: int = 0,
    last: int | None = None,
) -> Open:
    return Open(kind, T0 + due_in, T0, state, handling, emergency, reminded, last)


@pytest.mark.parametrize(
    ("kind", "state", "handling", "expected"),
    [
        (Kind.SIGN, D.SIGNED_FOR, None, True),
        (Kind.SIGN, D.DELIVERED, H.DONE, False),  # handled, but never signed for
        (Kind.SIGN, D.PENDING, None, False),
        (Kind.SIGN, D.DEAD, None, False),  # the hub gave up: still not met, still late
        (Kind.SIGN, D.RECALLED, None, True),  # no longer anyone's to meet
        (Kind.SIGN, D.EXPIRED, None, True),
        (Kind.ACCEPT, D.SIGNED_FOR, H.READ, False),
        (Kind.ACCEPT, D.SIGNED_FOR, H.CASE_ACCEPTED, True),
        (Kind.ACCEPT, D.SIGNED_FOR, H.CASE_DECLINED, True),
        (Kind.DONE, D.SIGNED_FOR, H.HANDLING, False),
        (Kind.DONE, D.SIGNED_FOR, H.CASE_ACCEPTED, False),
        (Kind.DONE, D.SIGNED_FOR, H.DONE, True),
        (Kind.DONE, D.SIGNED_FOR, H.CASE_DECLINED, True),  # declined: nothing to handle
    ],
)
def test_what_meets_each_deadline(
    kind: Kind, state: DeliveryState, handling: Handling | None, expected: bool
) -> None:
    assert met(kind, state, handling) is expected


def test_a_deadline_days_away_is_reminded_a_day_before_when_due_and_daily_after() -> None:
    assert decide(item(), T0, SETTINGS) == Wait(T0 + 4 * DAY_MS)
    assert decide(item(), T0 + 4 * DAY_MS, SETTINGS) == Remind(Stage.BEFORE)
    before = item(reminded=1, last=T0 + 4 * DAY_MS)
    assert decide(before, T0 + 4 * DAY_MS + 1, SETTINGS) == Wait(T0 + 5 * DAY_MS)
    assert decide(before, T0 + 5 * DAY_MS, SETTINGS) == Remind(Stage.DUE)
    due = item(reminded=2, last=T0 + 5 * DAY_MS)
    assert decide(due, T0 + 5 * DAY_MS + 1, SETTINGS) == Wait(T0 + 6 * DAY_MS)
    assert decide(due, T0 + 6 * DAY_MS, SETTINGS) == Remind(Stage.OVERDUE)


def test_an_emergencys_minutes_are_reminded_at_half_time_and_every_five_minutes_after() -> None:
    ten = 10 * MINUTE_MS
    fresh = item(due_in=ten, emergency=True)
    assert decide(fresh, T0, SETTINGS) == Wait(T0 + 5 * MINUTE_MS)
    due = item(due_in=ten, emergency=True, reminded=2, last=T0 + ten)
    assert decide(due, T0 + ten + 5 * MINUTE_MS, SETTINGS) == Remind(Stage.OVERDUE)


def test_a_hub_that_was_away_at_the_first_reminder_says_due_not_before() -> None:
    assert decide(item(), T0 + 6 * DAY_MS, SETTINGS) == Remind(Stage.DUE)
    said_due = item(reminded=1, last=T0 + 6 * DAY_MS)  # its one reminder came after the due
    assert decide(said_due, T0 + 6 * DAY_MS + 1, SETTINGS) == Wait(T0 + 7 * DAY_MS)


def test_a_met_or_gone_deadline_and_one_reminded_the_most_are_quiet() -> None:
    assert decide(item(state=D.SIGNED_FOR), T0 + 9 * DAY_MS, SETTINGS) == Quiet()
    assert decide(item(state=D.RECALLED), T0 + 9 * DAY_MS, SETTINGS) == Quiet()
    most = item(reminded=SETTINGS.max_overdue + 2, last=T0 + 20 * DAY_MS)
    assert decide(most, T0 + 40 * DAY_MS, SETTINGS) == Quiet()
    almost = item(reminded=SETTINGS.max_overdue + 1, last=T0 + 20 * DAY_MS)
    assert decide(almost, T0 + 40 * DAY_MS, SETTINGS) == Remind(Stage.OVERDUE)
