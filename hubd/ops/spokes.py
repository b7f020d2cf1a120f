"""Who connects to this hub, as ``hubctl status`` shows it: its own organisations (spokes)
and the hubs of the other level it is linked to (hubs under hubs), with their presence and
the deliveries waiting for them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hubd.ops.contact import Presence, SpokePresence
from schemas.directory import Directory
from schemas.labels import Precedence


@dataclass(frozen=True, slots=True)
class Spoke:
    """An organisation of the directory and what the store knows about it."""

    org: str
    name_zh: str
    level: str
    presence: tuple[tuple[str, SpokePresence | None], ...]  # per channel; None: unknown
    last_heard_at: int | None  # the last message or receipt batch it sent
    pending: int
    oldest_pending_at: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "name_zh": self.name_zh,
            "level": self.level,
            "channels": {
                channel: None if p is None else {"online": p.online, "since": p.since}
                for channel, p in self.presence
            },
            "last_heard_at": self.last_heard_at,
            "pending": self.pending,
            "oldest_pending_at": self.oldest_pending_at,
        }


@dataclass(frozen=True, slots=True)
class NeighbourHub:
    """A hub this one is linked to (hubs under hubs: its upstream, or a member of its own),
    its presence on each channel of the link, and the deliveries waiting to be handed to it
    (those to the organisations reached through it)."""

    hub: str
    name_zh: str
    role: str  # upstream or member
    prefixes: tuple[str, ...]  # what a member serves; an upstream: none, it serves the rest
    presence: tuple[tuple[str, SpokePresence | None], ...]  # per link channel; None: unknown
    pending: int
    oldest_pending_at: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "hub": self.hub,
            "name_zh": self.name_zh,
            "role": self.role,
            "prefixes": list(self.prefixes),
            "channels": {
                channel: None if p is None else {"online": p.online, "since": p.since}
                for channel, p in self.presence
            },
            "pending": self.pending,
            "oldest_pending_at": self.oldest_pending_at,
        }


@dataclass(frozen=True, slots=True)
class PendingGroup:
    """Deliveries awaited for one recipient on one channel at one precedence."""

    recipient: str
    channel: str
    precedence: Precedence
    count: int
    sent: int  # of which published at least once (SENT), the rest not yet (PENDING)
    oldest_at: int


def _waiting(pending: Sequence[PendingGroup]) -> tuple[dict[str, int], dict[str, int]]:
    """Per recipient: deliveries awaited, and the oldest one's creation."""
    waiting: dict[str, int] = defaultdict(int)
    oldest: dict[str, int] = {}
    for g in pending:
        waiting[g.recipient] += g.count
        oldest[g.recipient] = min(oldest.get(g.recipient, g.oldest_at), g.oldest_at)
    return waiting, oldest


def neighbours(
    directory: Directory, pending: Sequence[PendingGroup], presence: Presence | None
) -> tuple[NeighbourHub, ...]:
    waiting, oldest = _waiting(pending)
    rows = []
    for other in directory.hubs:
        if not directory.relaying(other.id):
            continue  # a remote hub: listed for its keys, linked to another
        behind = [o.id for o in directory.orgs if o.via == other.id]
        firsts = [oldest[o] for o in behind if o in oldest]
        rows.append(
            NeighbourHub(
                hub=other.id,
                name_zh=other.name_zh,
                role=other.role.value,
                prefixes=other.prefixes,
                presence=tuple(
                    (ch, None if presence is None else presence(ch, other.id))
                    for ch in other.channels
                ),
                pending=sum(waiting.get(o, 0) for o in behind),
                oldest_pending_at=min(firsts) if firsts else None,
            )
        )
    return tuple(rows)


def spokes_of(
    directory: Directory,
    pending: Sequence[PendingGroup],
    heard: dict[str, int],
    presence: Presence | None,
) -> tuple[Spoke, ...]:
    """This hub's own organisations: one reached through another hub is that hub's spoke
    (its deliveries here wait for the hub it is reached through: :func:`neighbours`)."""
    waiting, oldest = _waiting(pending)
    return tuple(
        Spoke(
            org=org.id,
            name_zh=org.name_zh,
            level=org.level.value,
            presence=tuple(
                (ch, None if presence is None else presence(ch, org.id)) for ch in org.channels
            ),
            last_heard_at=heard.get(org.id),
            pending=waiting.get(org.id, 0),
            oldest_pending_at=oldest.get(org.id),
        )
        for org in directory.orgs
        if org.via is None
    )
