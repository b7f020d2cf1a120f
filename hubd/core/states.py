"""Delivery states and their legal transitions: one table, the only place they are decided;
and the state of a stored message (:class:`MessageState`).

A delivery is one message on its way to one recipient.

    PENDING --publish--> SENT --delivered--> DELIVERED --signed_for--> SIGNED_FOR
       |                  |  \\--retry--> SENT (attempts + 1)
       +----expire--------+--> EXPIRED
       +----give_up-------+--> DEAD
    DEAD --redeliver--> PENDING          (an operator's decision: hubctl redeliver)
    PENDING, SENT, DEAD --recall--> RECALLED   (the sender withdrew it: 撤回)

A recipient reached through another hub (hubs under hubs) is handed over, not delivered:

    PENDING, SENT --relay--> RELAYED     (the next hub's signed ACCEPTED: it carries it on)
    PENDING, SENT, RELAYED --refuse--> REFUSED  (the next hub's, or a hub further on's,
                                         signed REJECTED, forwarded)
    RELAYED --delivered / signed_for / expire / give_up / recall--> as above
                                         (the recipient's receipts, or the far hub's
                                          outcome, coming back through the hubs)

EXPIRED is never redelivered: the sender signed ``expires_at`` and it has passed, so the
hub must not deliver the message any more; the sender sends it again if it still matters.
Receipts may arrive twice or out of order (SIGNED_FOR before DELIVERED); those are
idempotent transitions, listed explicitly so that nothing else is. Which event a receipt's
status is: :func:`hubd.core.receipts.receipt_event`.
"""

from __future__ import annotations

from enum import StrEnum

from schemas.errors import XchgError


class MessageState(StrEnum):
    """What the hub made of a message it stored; it never changes once stored. The values
    are what the store's ``messages.state`` column holds."""

    ACCEPTED = "ACCEPTED"  # admitted: delivered to its recipients (its deliveries' states)
    QUARANTINED = "QUARANTINED"  # arrived on a channel below its label: kept, never forwarded


class DeliveryState(StrEnum):
    PENDING = "PENDING"  # stored; not yet published (or the recipient is offline)
    SENT = "SENT"  # published at least once; waiting for the recipient's DELIVERED
    DELIVERED = "DELIVERED"  # the recipient's signed DELIVERED arrived
    SIGNED_FOR = "SIGNED_FOR"  # the recipient's signed SIGNED_FOR arrived
    EXPIRED = "EXPIRED"  # expires_at passed before DELIVERED
    DEAD = "DEAD"  # gave up after the retry limit
    RECALLED = "RECALLED"  # the sender recalled it (撤回) before the recipient confirmed it
    RELAYED = "RELAYED"  # handed to the next hub, whose signed ACCEPTED took it over
    REFUSED = "REFUSED"  # the next hub refused it (its signed REJECTED says why)

    @property
    def final(self) -> bool:
        return self in _FINAL

    @property
    def awaiting(self) -> bool:
        """Still the hub's job: to be (re)published until the recipient confirms."""
        return self in _AWAITING


class Event(StrEnum):
    PUBLISH = "publish"
    RETRY = "retry"
    DELIVERED = "delivered"
    SIGNED_FOR = "signed_for"
    EXPIRE = "expire"
    GIVE_UP = "give_up"
    REDELIVER = "redeliver"
    RECALL = "recall"
    RELAY = "relay"  # the next hub's ACCEPTED
    REFUSE = "refuse"  # the next hub's REJECTED


P, S, D, F = (
    DeliveryState.PENDING,
    DeliveryState.SENT,
    DeliveryState.DELIVERED,
    DeliveryState.SIGNED_FOR,
)
X, Z, R = DeliveryState.EXPIRED, DeliveryState.DEAD, DeliveryState.RECALLED
H, N = DeliveryState.RELAYED, DeliveryState.REFUSED
_AWAITING = frozenset({DeliveryState.PENDING, DeliveryState.SENT})
_FINAL = frozenset({F, X, Z, R, N})

TRANSITIONS: dict[tuple[DeliveryState, Event], DeliveryState] = {
    (P, Event.PUBLISH): S,
    (S, Event.RETRY): S,
    (S, Event.PUBLISH): S,
    (P, Event.DELIVERED): D,  # DELIVERED can overtake our own bookkeeping after a restart
    (S, Event.DELIVERED): D,
    (D, Event.DELIVERED): D,  # a repeated receipt
    (P, Event.SIGNED_FOR): F,
    (S, Event.SIGNED_FOR): F,  # SIGNED_FOR implies DELIVERED
    (D, Event.SIGNED_FOR): F,
    (F, Event.SIGNED_FOR): F,  # a repeated receipt
    (F, Event.DELIVERED): F,  # a late DELIVERED after SIGNED_FOR
    (P, Event.EXPIRE): X,
    (S, Event.EXPIRE): X,
    (P, Event.GIVE_UP): Z,
    (S, Event.GIVE_UP): Z,
    (Z, Event.REDELIVER): P,  # attempts start again from 0 (hubd.ops.redeliver)
    (P, Event.RECALL): R,
    (S, Event.RECALL): R,  # published, not confirmed: the recipient is told as well
    (Z, Event.RECALL): R,  # never redelivered after its sender withdrew it
    (R, Event.RECALL): R,  # a repeated recall
    # through another hub: handed over, then what comes back through the hubs
    (P, Event.RELAY): H,  # its ACCEPTED overtook our own bookkeeping
    (S, Event.RELAY): H,
    (H, Event.RELAY): H,  # a repeated answer (a resend crossed it)
    (P, Event.REFUSE): N,
    (S, Event.REFUSE): N,
    (H, Event.DELIVERED): D,
    (H, Event.SIGNED_FOR): F,
    (H, Event.EXPIRE): X,  # the far hub gave up in time; it signs the EXPIRED
    (H, Event.GIVE_UP): Z,
    (H, Event.RECALL): R,
    (H, Event.REFUSE): N,  # a hub further on refused it (its REJECTED, forwarded)
}


class IllegalTransition(XchgError):  # noqa: N818 - it names the situation, like h11's
    def __init__(self, state: DeliveryState, event: Event) -> None:
        super().__init__(f"a delivery in state {state} cannot take event {event}")
        self.state = state
        self.event = event


def next_state(state: DeliveryState, event: Event) -> DeliveryState:
    """The state after ``event``; IllegalTransition if the table does not allow it."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


def can(state: DeliveryState, event: Event) -> bool:
    return (state, event) in TRANSITIONS
