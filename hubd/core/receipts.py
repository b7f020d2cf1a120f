"""The plan for a verified receipt batch: what each entry does, and where the batch goes.

A batch arrives signed by its issuer (a recipient speaking for itself; only the hub signs
ACCEPTED, REJECTED, EXPIRED and DEAD, and ``verify_receipts`` refuses those from anyone
else). For every entry the plan says whether it moves a delivery on (:class:`Confirm`, with
the event :func:`receipt_event` gives its status), speaks of a message the hub does not
know, or claims a label below its message's (refused: a downgrade would let a receipt cross
a channel its message may not). The shell looks up what it does not hold in memory
(:class:`NeedOrigins`), applies the events in the commit that records the batch, and
forwards the batch unchanged to the message's sender when the batch speaks to one sender.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import assert_never

from hubd.core.states import Event
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus


def receipt_event(status: ReceiptStatus) -> Event | None:
    """What a recipient's receipt does to its delivery; None for the statuses only the hub
    issues. Exhaustive: a new status fails the type check here until it is given its event."""
    match status:
        case ReceiptStatus.DELIVERED:
            return Event.DELIVERED
        case ReceiptStatus.SIGNED_FOR:
            return Event.SIGNED_FOR
        case (
            ReceiptStatus.ACCEPTED
            | ReceiptStatus.REJECTED
            | ReceiptStatus.EXPIRED
            | ReceiptStatus.DEAD
            | ReceiptStatus.RECALLED
            | ReceiptStatus.REFUSED
            | ReceiptStatus.REMINDED
        ):
            return None
        case (
            ReceiptStatus.RECALL
            | ReceiptStatus.WITHDRAWN
            | ReceiptStatus.RECALL_ACCEPTED
            | ReceiptStatus.RECALL_REFUSED
            | ReceiptStatus.RETURNED
            | ReceiptStatus.READ
            | ReceiptStatus.HANDLING
            | ReceiptStatus.DONE
            | ReceiptStatus.CASE_ACCEPTED
            | ReceiptStatus.CASE_DECLINED
        ):
            return None  # flow statements: judged by hubd.core.flows, never planned here
        case _:
            assert_never(status)


@dataclass(frozen=True, slots=True)
class Origin:
    """What the hub holds of the message a receipt speaks of."""

    sender: str
    channel: str  # the channel the message arrived on: the sender hears back on it
    classification: Classification


@dataclass(frozen=True, slots=True)
class Confirm:
    """Record ``entry`` and move its delivery on by ``event``."""

    entry: ReceiptEntry
    msg_id: bytes
    recipient: str
    event: Event
    origin: Origin


@dataclass(frozen=True, slots=True)
class Downgraded:
    """Refused: the entry's label is below its message's."""

    entry: ReceiptEntry
    msg_id: bytes
    origin: Origin


@dataclass(frozen=True, slots=True)
class NeedOrigins:
    """Look these messages up in the store, then plan again with what it holds."""

    msg_ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ReceiptPlan:
    confirm: tuple[Confirm, ...]  # to record and apply, in one commit
    unknown: tuple[bytes, ...]  # msg_ids neither memory nor the store knows: dropped
    downgraded: tuple[Downgraded, ...]  # refused, a security event each
    ignored: tuple[ReceiptEntry, ...]  # the hub's own statuses, or no msg_id or recipient
    forward: tuple[str, str] | None  # (sender, channel) to forward the batch to
    senders: int  # the original senders the batch speaks to (one, unless a spoke mixed them)

    @property
    def records(self) -> bool:
        """Anything to store (and so to forward)?"""
        return bool(self.confirm)


def plan_receipts(
    entries: Sequence[ReceiptEntry],
    origins: Mapping[bytes, Origin],
    *,
    looked_up: bool,
) -> ReceiptPlan | NeedOrigins:
    """The plan for a batch's ``entries``, given the ``origins`` of their messages.

    ``looked_up`` says whether the store has been asked for what ``origins`` lacks; until it
    has, a batch that speaks of a message not in ``origins`` gets :class:`NeedOrigins`.
    """
    confirm: list[Confirm] = []
    unknown: list[bytes] = []
    downgraded: list[Downgraded] = []
    ignored: list[ReceiptEntry] = []
    senders: dict[tuple[str, str], None] = {}
    for entry in entries:
        event = receipt_event(entry.status)
        if entry.msg_id is None or entry.recipient is None or event is None:
            ignored.append(entry)
            continue
        origin = origins.get(entry.msg_id)
        if origin is None:
            unknown.append(entry.msg_id)
            continue
        if entry.classification < origin.classification:
            downgraded.append(Downgraded(entry, entry.msg_id, origin))
            continue
        confirm.append(Confirm(entry, entry.msg_id, entry.recipient, event, origin))
        senders[(origin.sender, origin.channel)] = None
    if unknown and not looked_up:
        return NeedOrigins(tuple(dict.fromkeys(unknown)))
    return ReceiptPlan(
        tuple(confirm),
        tuple(unknown),
        tuple(downgraded),
        tuple(ignored),
        next(iter(senders)) if len(senders) == 1 else None,
        len(senders),
    )
