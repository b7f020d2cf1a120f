"""The routing brain: pure decisions about one message (ARCHITECTURE section 2).

No asyncio, no MQTT, no database, no clock. :func:`decide` takes the verified header, the
channel the message arrived on and the directory, and returns what to do:
:class:`Accept` (with the channel for each recipient), :class:`Reject` or
:class:`Quarantine`. Refusals are values that name the rule and the values compared.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.directory import Directory, OrgEntry, delivery_channel
from schemas.envelope import Header
from schemas.errors import Reason


@dataclass(frozen=True, slots=True)
class Route:
    recipient: str
    channel: str


@dataclass(frozen=True, slots=True)
class Accept:
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True)
class Reject:
    reason: Reason
    detail: str
    retriable: bool = False


@dataclass(frozen=True, slots=True)
class Quarantine:
    """The message leaked onto a channel below its label: keep it, never forward it."""

    reason: Reason
    detail: str


Decision = Accept | Reject | Quarantine


def _org(org: OrgEntry) -> str:
    return f"{org.id} ({org.name_zh})"


def decide(header: Header, arrival: str, directory: Directory) -> Decision:
    """Gate one message. ``arrival`` is the channel whose up topic carried it."""
    label = header.classification
    sender = directory.org(header.sender)
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
            f"{header.sender} is not provisioned on channel {arrival!r}; send on a channel "
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
    for name in header.recipients:
        recipient = directory.org(name)
        if recipient is None:  # verify_envelope refuses this first; keep the core total
            return Reject(Reason.ENV_UNKNOWN_RECIPIENT, f"recipient {name} is not in the directory")
        if label > recipient.clearance:
            return Reject(
                Reason.POLICY_RECIPIENT_CLEARANCE,
                f"classification {label} exceeds the clearance of {_org(recipient)} "
                f"({recipient.clearance}); send it only to organisations cleared for "
                f"{label.name}, or lower the label",
            )
        route = delivery_channel(directory, sender, recipient, label)
        if route is None:
            shared = [c for c in sender.channels if c in recipient.channels]
            return Reject(
                Reason.POLICY_NO_CHANNEL,
                f"no channel carries {label} from {sender.id} to {recipient.id}: they share "
                f"{', '.join(shared) or 'no channel'}, and none has a ceiling of "
                f"{label.name} or above; ask the hub operator to provision one",
            )
        routes.append(Route(name, route.id))
    return Accept(tuple(routes))
