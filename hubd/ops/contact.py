"""What the running hub answers on its admin socket about its spokes and its brokers
(``presence``), as ``hubctl status``, ``hubctl queue`` and the status page show it: the
running hub's knowledge, which the store does not keep (:mod:`hubd.ops.query` reads the
store)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SpokePresence:
    """Online or offline on one channel, and since when (known only to the running hub);
    ``online`` None: unknown, the hub's link to that channel's broker is down (or it has
    not yet re-learned presence since the link came back)."""

    online: bool | None
    since: int | None
    via: str | None = None  # the hub it is reached through, whose presence this is


Presence = Callable[[str, str], SpokePresence | None]  # (channel, org or hub) -> what is known


def presence_answered(answer: dict[str, Any]) -> Presence:
    """The running hub's answer to the admin socket's ``presence`` as a :data:`Presence`:
    each spoke online, offline (``since`` None: not seen since the hub started) or unknown
    (``online`` null: the hub's link to that broker is down); each neighbour hub on its
    link's channels the same way, by its hub id (none from a hub too old to give them).
    Raises KeyError, TypeError or ValueError for a malformed answer."""
    known = {
        (str(s["channel"]), str(s["org"] if "org" in s else s["hub"])): SpokePresence(
            None if s["online"] is None else bool(s["online"]),
            None if s["since"] is None else int(s["since"]),
        )
        for s in [*answer["spokes"], *answer.get("hubs", [])]
    }
    # a recipient awaited here that is reached through another hub: that hub's presence
    via = {str(org): str(hub) for org, hub in answer.get("via", {}).items()}

    def presence(channel: str, org: str) -> SpokePresence | None:
        hub = via.get(org)
        if hub is None:
            return known.get((channel, org))
        seen = known.get((channel, hub))
        return None if seen is None else SpokePresence(seen.online, seen.since, hub)

    return presence


@dataclass(frozen=True, slots=True)
class BrokerState:
    """One of the running hub's broker connections: its name (the node list of its
    [channels.X] urls, ``embedded``), its channels, and the node it is on (None: none)."""

    broker: str
    channels: tuple[str, ...]
    node: str | None
    upstream: str | None = None  # the hub above, for a member hub's uplink to it


def brokers_answered(answer: dict[str, Any]) -> tuple[BrokerState, ...]:
    """The brokers of the running hub's ``presence`` answer (none from a hub too old to give
    them). Raises KeyError, TypeError or ValueError for a malformed answer."""
    return tuple(
        BrokerState(
            str(b["broker"]),
            tuple(str(c) for c in b["channels"]),
            None if b["node"] is None or not b["connected"] else str(b["node"]),
            None if b.get("upstream") is None else str(b["upstream"]),
        )
        for b in answer.get("brokers", [])
    )


@dataclass(frozen=True, slots=True)
class HubContact:
    """Whether the running hub answered on its admin socket (and why not)."""

    socket: str | None  # None: the admin socket is turned off in the configuration
    answered: bool
    problem: str | None = None
    brokers: tuple[BrokerState, ...] = ()  # as the running hub answered

    def as_json(self) -> dict[str, Any]:
        return {
            "socket": self.socket,
            "answered": self.answered,
            "problem": self.problem,
            "brokers": [
                {"broker": b.broker, "channels": list(b.channels), "node": b.node}
                | ({} if b.upstream is None else {"upstream": b.upstream})  # a member's uplink
                for b in self.brokers
            ],
        }
