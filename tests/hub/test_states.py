"""The delivery state table (hubd.core.states), checked as a table and by random walks.

EXPECTED is written out here from the diagram in the module's docstring, so a change to
TRANSITIONS that the diagram does not describe fails a test.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubd.core.states import (
    TRANSITIONS,
    DeliveryState,
    Event,
    IllegalTransition,
    can,
    next_state,
)

P, S, D, F = (
    DeliveryState.PENDING,
    DeliveryState.SENT,
    DeliveryState.DELIVERED,
    DeliveryState.SIGNED_FOR,
)
X, Z, R = DeliveryState.EXPIRED, DeliveryState.DEAD, DeliveryState.RECALLED
H, N = DeliveryState.RELAYED, DeliveryState.REFUSED

# (state, event) -> next state; every pair not listed is illegal.
EXPECTED: dict[tuple[DeliveryState, Event], DeliveryState] = {
    (P, Event.PUBLISH): S,
    (S, Event.PUBLISH): S,  # a republish after reconnecting
    (S, Event.RETRY): S,
    (P, Event.DELIVERED): D,
    (S, Event.DELIVERED): D,
    (D, Event.DELIVERED): D,
    (P, Event.SIGNED_FOR): F,
    (S, Event.SIGNED_FOR): F,
    (D, Event.SIGNED_FOR): F,
    (F, Event.SIGNED_FOR): F,
    (F, Event.DELIVERED): F,
    (P, Event.EXPIRE): X,
    (S, Event.EXPIRE): X,
    (P, Event.GIVE_UP): Z,
    (S, Event.GIVE_UP): Z,
    (Z, Event.REDELIVER): P,
    (P, Event.RECALL): R,  # the sender withdrew it (撤回) before the recipient confirmed it
    (S, Event.RECALL): R,
    (Z, Event.RECALL): R,
    (R, Event.RECALL): R,
    # a recipient reached through another hub: handed over, then what comes back
    (P, Event.RELAY): H,
    (S, Event.RELAY): H,
    (H, Event.RELAY): H,
    (P, Event.REFUSE): N,
    (S, Event.REFUSE): N,
    (H, Event.DELIVERED): D,
    (H, Event.SIGNED_FOR): F,
    (H, Event.EXPIRE): X,
    (H, Event.GIVE_UP): Z,
    (H, Event.RECALL): R,
    (H, Event.REFUSE): N,
}
RECEIPTS = {Event.DELIVERED, Event.SIGNED_FOR}
PAIRS = list(itertools.product(DeliveryState, Event))


@pytest.mark.parametrize(("state", "event"), PAIRS, ids=[f"{s}-{e}" for s, e in PAIRS])
def test_every_state_event_pair_is_either_a_listed_transition_or_illegal(
    state: DeliveryState, event: Event
) -> None:
    if (state, event) in EXPECTED:
        assert next_state(state, event) is EXPECTED[(state, event)]
        assert can(state, event)
    else:
        with pytest.raises(IllegalTransition) as caught:
            next_state(state, event)
        assert not can(state, event)
        assert caught.value.state is state
        assert caught.value.event is event
        assert str(state) in str(caught.value)
        assert str(event) in str(caught.value)


def test_the_table_holds_exactly_the_documented_transitions() -> None:
    assert TRANSITIONS == EXPECTED


def test_final_states_are_signed_for_expired_dead_recalled_and_refused() -> None:
    assert {s for s in DeliveryState if s.final} == {F, X, Z, R, N}


def test_a_delivery_handed_to_the_next_hub_is_neither_awaited_nor_final() -> None:
    """RELAYED: this hub no longer publishes it, and what comes back still moves it on."""
    assert not H.awaiting
    assert not H.final
    assert {e for e in Event if can(H, e)} == {
        Event.RELAY,
        Event.DELIVERED,
        Event.SIGNED_FOR,
        Event.EXPIRE,
        Event.GIVE_UP,
        Event.RECALL,
        Event.REFUSE,
    }


def test_a_recall_stops_only_what_the_recipient_has_not_confirmed_and_nothing_restarts_it() -> None:
    assert {s for s in DeliveryState if can(s, Event.RECALL)} == {P, S, Z, R, H}
    assert {e for e in Event if can(R, e)} == {Event.RECALL}, "no receipt, no redeliver"


@pytest.mark.parametrize("state", [F, X, Z, R, N], ids=str)
def test_final_states_take_only_idempotent_receipts_redeliver_and_recall(
    state: DeliveryState,
) -> None:
    accepted = {e for e in Event if can(state, e)}

    assert accepted <= RECEIPTS | {Event.REDELIVER, Event.RECALL}
    if Event.RECALL in accepted:
        assert next_state(state, Event.RECALL) is R
    for event in accepted & RECEIPTS:
        assert next_state(state, event) is state  # a repeated or late receipt changes nothing
    if Event.REDELIVER in accepted:
        assert next_state(state, Event.REDELIVER) is P  # an operator's decision, from scratch


def test_only_dead_deliveries_can_be_redelivered_never_expired_ones() -> None:
    """An EXPIRED delivery's signed expires_at has passed: delivering it would break it."""
    assert {s for s in DeliveryState if can(s, Event.REDELIVER)} == {Z}


def test_awaiting_is_exactly_pending_and_sent() -> None:
    assert {s for s in DeliveryState if s.awaiting} == {P, S}


def test_no_state_is_both_awaiting_and_final() -> None:
    assert not any(s.awaiting and s.final for s in DeliveryState)


def test_illegal_transition_is_not_a_lookup_error() -> None:
    """Callers catch IllegalTransition; a bare KeyError from the table would slip past."""
    with pytest.raises(IllegalTransition) as caught:
        next_state(F, Event.PUBLISH)
    assert not isinstance(caught.value, KeyError)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


# ---------------------------------------------------------------------------- random walks

EVENTS = st.lists(st.sampled_from(list(Event)), max_size=60)


def walk(events: list[Event]) -> list[DeliveryState]:
    """The states a delivery passes through, skipping the events the table refuses."""
    state, states = P, [P]
    for event in events:
        try:
            state = next_state(state, event)
        except IllegalTransition:
            continue
        states.append(state)
    return states


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_random_walks_never_leave_the_enum(events: list[Event]) -> None:
    for state in walk(events):
        assert isinstance(state, DeliveryState)
        assert state in set(DeliveryState)


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_refused_events_leave_the_state_unchanged(events: list[Event]) -> None:
    state = P
    for event in events:
        before = state
        if can(state, event):
            state = next_state(state, event)
        else:
            with pytest.raises(IllegalTransition):
                next_state(state, event)
            assert state is before


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_signed_for_is_never_left(events: list[Event]) -> None:
    state = P
    for event in events:
        if not can(state, event):
            continue
        after = next_state(state, event)
        if state is F:
            assert event in RECEIPTS
            assert after is F
        state = after


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_a_delivered_message_never_goes_back_to_awaiting(events: list[Event]) -> None:
    states = walk(events)
    confirmed = [i for i, s in enumerate(states) if s in {D, F}]
    if confirmed:
        assert all(s in {D, F} for s in states[confirmed[0] :])


@pytest.mark.parametrize("target", list(DeliveryState), ids=str)
def test_every_state_is_reachable_from_pending(target: DeliveryState) -> None:
    reachable, frontier = {P}, [P]
    while frontier:
        state = frontier.pop()
        for event in Event:
            if can(state, event) and (after := next_state(state, event)) not in reachable:
                reachable.add(after)
                frontier.append(after)
    assert target in reachable
