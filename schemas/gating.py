"""Gating: pure decisions about one message (ARCHITECTURE section 2), shared by hub and spoke.

No asyncio, no MQTT, no database, no clock. :func:`gate` takes the sender, the label, the
recipients, the channel the message arrives on and the directory, and returns what to do:
:class:`Accept` (with the channel for each recipient), :class:`Reject` or
:class:`Quarantine`. Refusals are values that name the rule and the values compared.
The hub gates every verified envelope with :func:`decide` (its header); the spoke gates a
drop with :func:`gate` on the channel :func:`uplink` picks, before it seals anything, so
that it never sends what the hub would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.directory import (
    ChannelEntry,
    Directory,
    OrgEntry,
    awaiting_keys_sentence,
    delivery_channel,
)
from schemas.envelope import Header
from schemas.errors import Reason
from schemas.labels import Classification


@dataclass(frozen=True, slots=True)
class Route:
    recipient: str
    channel: str
    via: str | None = None  # the neighbour hub it is handed to (None: its own spoke)


@dataclass(frozen=True, slots=True)
class Accept:
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class Reject:
    reason: Reason
    detail: str
    retriable: bool = False
    recipient: str | None = None  # the recipient it is about, where it is about one


@dataclass(frozen=True, slots=True)
class Quarantine:
    """The message leaked onto a channel below its label: keep it, never forward it."""

    reason: Reason
    detail: str


Decision = Accept | Reject | Quarantine


def _org(org: OrgEntry) -> str:
    return f"{org.id} ({org.name_zh})"


def uplink(directory: Directory, sender: OrgEntry, label: Classification) -> ChannelEntry | None:
    """The channel ``sender`` sends ``label`` on: the lowest-ceiling channel it is
    provisioned on that admits the label (an arrival :func:`gate` accepts), or None."""
    admitting = [
        c
        for name in sender.channels
        if (c := directory.channel(name)) is not None and c.ceiling >= label
    ]
    return min(admitting, key=lambda c: c.ceiling.rank, default=None)


def shared_channels(sender: OrgEntry, recipient: OrgEntry) -> tuple[str, ...]:
    """The channels both ends are provisioned on, in the sender's order."""
    return tuple(c for c in sender.channels if c in recipient.channels)


def decide(header: Header, arrival: str, directory: Directory) -> Decision:
    """Gate one verified envelope. ``arrival`` is the channel whose up topic carried it."""
    return gate(header.sender, header.classification, header.recipients, arrival, directory)


def gate(
    sender_id: str,
    label: Classification,
    recipients: Sequence[str],
    arrival: str,
    directory: Directory,
) -> Decision:
    """Gate a message of ``label`` from ``sender_id`` to ``recipients`` arriving on ``arrival``."""
    sender = directory.org(sender_id)
    channel = directory.channel(arrival)
    # A leak is a leak whoever sent it: the ceiling is checked before anything else.
    if channel is not None and label > channel.ceiling:
        return Quarantine(
            Reason.POLICY_ARRIVAL_CHANNEL,
            f"a {label} message arrived on channel {arrival}, whose ceiling is "
            f"{channel.ceiling}: it has already crossed a network it must not cross. It is "
            "quarantined and will not be forwarded; report it to your security officer",
        )
    if sender is None or channel is None or arrival not in sender.channels:
        return Reject(
            Reason.POLICY_SENDER_NOT_ON_CHANNEL,
            f"{sender_id} is not provisioned on channel {arrival!r}; send on a channel "
            "your organisation is provisioned on (see the directory)",
        )
    if label > sender.clearance:
        return Reject(
            Reason.POLICY_SENDER_CLEARANCE,
            f"classification {label} exceeds the clearance of the sender {_org(sender)}, "
            f"which is {sender.clearance}; lower the label or send from an organisation "
            "cleared for it",
        )
    routes = []
    for name in recipients:
        recipient = directory.org(name)
        if recipient is None:  # verify_envelope refuses this first; keep the core total
            return Reject(
                Reason.ENV_UNKNOWN_RECIPIENT,
                f"recipient {name} is not in the directory",
                recipient=name,
            )
        if not recipient.sign_keys and not recipient.enc_keys:
            return Reject(
                Reason.ENV_RECIPIENT_AWAITING_KEYS,
                awaiting_keys_sentence(recipient, directory.version),
                recipient=name,
            )
        if label > recipient.clearance:
            return Reject(
                Reason.POLICY_RECIPIENT_CLEARANCE,
                f"classification {label} exceeds the clearance of {_org(recipient)} "
                f"({recipient.clearance}); send it only to organisations cleared for "
                f"{label.name}, or lower the label",
                recipient=name,
            )
        route = delivery_channel(directory, sender, recipient, label)
        if route is None:
            shared = shared_channels(sender, recipient)
            return Reject(
                Reason.POLICY_NO_CHANNEL,
                f"no channel carries {label} from {sender.id} to {recipient.id}: they share "
                f"{', '.join(shared) or 'no channel'}, and none has a ceiling of "
                f"{label.name} or above; ask the hub operator to provision one",
                recipient=name,
            )
        routes.append(Route(name, route.id, recipient.via))
    return Accept(tuple(routes))
