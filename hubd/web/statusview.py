"""The status page's data: one JSON-able snapshot of the running hub (``/status.json``).

Pure: it takes what the hub knows (the verified directory, presence, the deliveries still
awaited, readiness, the flow history's view and the dead letters already read from the
store) and the time, and returns plain dicts and lists. No I/O, no clock, so it is tested
without a server; :mod:`hubd.web.statuspage` gathers the inputs and serves the result.

Everything in it is an id, a name from the signed directory, a label, a count or a time in
ms. The hub holds no titles or content, and nothing here decodes a frame. Values are raw:
escaping is the page's job (it only ever sets ``textContent``).
docs/operations.md, "Status page", describes every field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hubd.core.states import DeliveryState
from hubd.engine.presencebook import Seen
from hubd.ops.query import Delivery
from schemas.directory import ChannelEntry, Directory, OrgEntry
from schemas.ids import msg_id_text
from schemas.labels import Classification, Precedence

PresenceOf = Callable[[str, str], Seen]  # Dispatcher.spokes.state
EXPIRY_WARNING_MS = 3 * 24 * 3600 * 1000  # the alert rule in docs/operations.md warns then too


class PendingDelivery(Protocol):
    """What the snapshot reads of a delivery still awaited (:class:`hubd.engine.dispatch.Job`)."""

    @property
    def msg_id(self) -> bytes: ...

    @property
    def recipient(self) -> str: ...

    @property
    def channel(self) -> str: ...

    @property
    def precedence(self) -> Precedence: ...

    @property
    def state(self) -> DeliveryState: ...

    @property
    def accepted_at(self) -> int: ...


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """Dead letters as the store holds them, or why they could not be read."""

    dead: int  # gave up after max_attempts
    expired: int  # expires_at passed before DELIVERED
    recent: tuple[Delivery, ...]  # the most recent first, a few
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        known = self.problem is None  # unknown counts are null, never a reassuring 0
        return {
            "total": self.dead + self.expired if known else None,
            "dead": self.dead if known else None,
            "expired": self.expired if known else None,
            "recent": [
                {
                    "msg_id": msg_id_text(d.msg_id),
                    "recipient": d.recipient,
                    "sender": d.sender,
                    "channel": d.channel,
                    "state": d.state.value,
                    "attempts": d.attempts,
                    "at": d.updated_at,
                    "precedence": _label(d.precedence),
                    "classification": _label(d.classification),
                }
                for d in self.recent
            ],
            "problem": self.problem,
        }


def _label(label: Classification | Precedence) -> dict[str, str]:
    return {"name": label.name, "zh": label.zh}


# ------------------------------------------------------------------ the tree


@dataclass(frozen=True, slots=True)
class TreeNode:
    org: OrgEntry
    children: tuple[TreeNode, ...]
    orphan: bool = False  # its parent is not in the directory (or it sits in a cycle)

    def walk(self) -> Iterator[OrgEntry]:
        yield self.org
        for child in self.children:
            yield from child.walk()


def org_tree(directory: Directory) -> tuple[TreeNode, ...]:
    """The organisations as a forest along their ``parent`` links, in directory order.

    Roots are organisations without a parent; one whose parent is not in the directory, or
    that sits in a parent cycle, is shown as a root marked ``orphan`` rather than left out.
    """
    ids = {org.id for org in directory.orgs}
    children: dict[str | None, list[OrgEntry]] = {}
    for org in directory.orgs:
        parent = org.parent if org.parent in ids and org.parent != org.id else None
        children.setdefault(parent, []).append(org)
    placed: set[str] = set()

    def grow(org: OrgEntry, *, orphan: bool = False) -> TreeNode:
        placed.add(org.id)
        kids = tuple(grow(c) for c in children.get(org.id, []) if c.id not in placed)
        return TreeNode(org, kids, orphan)

    roots = [grow(org, orphan=org.parent is not None) for org in children.get(None, [])]
    # Whatever is still unplaced hangs in a parent cycle: show each cycle from its first org.
    roots.extend(grow(org, orphan=True) for org in directory.orgs if org.id not in placed)
    return tuple(roots)


# ------------------------------------------------------------------ the snapshot


@dataclass(frozen=True, slots=True)
class _Queue:
    pending: int
    sent: int
    oldest_at: int | None
    most_urgent: Precedence | None

    def as_json(self, at: int) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "sent": self.sent,
            "oldest_at": self.oldest_at,
            "oldest_age_ms": None if self.oldest_at is None else max(at - self.oldest_at, 0),
            "most_urgent": None if self.most_urgent is None else _label(self.most_urgent),
        }


def _queues(pending: Iterable[PendingDelivery]) -> dict[tuple[str, str], _Queue]:
    """Per (recipient, channel): how many wait, how many were sent, the oldest, the most
    urgent."""
    count: Counter[tuple[str, str]] = Counter()
    sent: Counter[tuple[str, str]] = Counter()
    oldest: dict[tuple[str, str], int] = {}
    urgent: dict[tuple[str, str], Precedence] = {}
    for job in pending:
        key = (job.recipient, job.channel)
        count[key] += 1
        sent[key] += job.state is DeliveryState.SENT
        oldest[key] = min(oldest.get(key, job.accepted_at), job.accepted_at)
        if key not in urgent or job.precedence > urgent[key]:
            urgent[key] = job.precedence
    return {k: _Queue(count[k], sent[k], oldest[k], urgent[k]) for k in count}


def _merge(queues: Sequence[_Queue]) -> _Queue:
    oldest = [q.oldest_at for q in queues if q.oldest_at is not None]
    urgent = [q.most_urgent for q in queues if q.most_urgent is not None]
    return _Queue(
        sum(q.pending for q in queues),
        sum(q.sent for q in queues),
        min(oldest) if oldest else None,
        max(urgent) if urgent else None,
    )


_EMPTY = _Queue(0, 0, None, None)


def org_state(channel_states: Sequence[str]) -> str:
    """One word for an organisation over its channels: online (all), partial (some),
    offline (none, but heard of), unknown (none known: the hub's link to the broker is
    down, or it is learning presence again), unseen (never heard of), none (no channel)."""
    if not channel_states:
        return "none"
    if all(s == "online" for s in channel_states):
        return "online"
    if any(s == "online" for s in channel_states):
        return "partial"
    if any(s == "offline" for s in channel_states):
        return "offline"
    if any(s == "unknown" for s in channel_states):
        return "unknown"
    return "unseen"


def build_snapshot(
    *,
    at: int,
    started_at: int,
    version: str,
    directory: Directory | None,
    presence: PresenceOf,
    pending: Iterable[PendingDelivery],
    readiness: dict[str, object],
    ready: bool,
    flow: dict[str, Any],
    dead: DeadLetters,
) -> dict[str, Any]:
    """Everything ``/status.json`` says, as of ``at`` (ms since the epoch)."""
    jobs = list(pending)
    queues = _queues(jobs)
    oldest = min(jobs, key=lambda j: (j.accepted_at, -j.precedence.rank), default=None)
    snapshot: dict[str, Any] = {
        "at": at,
        "hub": {
            "id": None if directory is None else directory.hub_id,
            "version": version,
            "started_at": started_at,
        },
        "ready": ready,
        "readiness": readiness,
        "directory": None,
        "channels": [],
        "tree": [],
        "unlisted": [],
        "pending": {
            "total": len(jobs),
            "sent": sum(q.sent for q in queues.values()),
            "oldest": None
            if oldest is None
            else {
                "msg_id": msg_id_text(oldest.msg_id),
                "recipient": oldest.recipient,
                "channel": oldest.channel,
                "precedence": _label(oldest.precedence),
                "accepted_at": oldest.accepted_at,
                "age_ms": max(at - oldest.accepted_at, 0),
            },
        },
        "flow": flow,
        "dead": dead.as_json(),
    }
    if directory is None:
        snapshot["spokes"] = {
            "orgs": 0,
            **dict.fromkeys(("online", "partial", "offline", "unknown", "unseen"), 0),
        }
        return snapshot

    snapshot["directory"] = {
        "version": directory.version,
        "issued_at": directory.issued_at,
        "expires_at": directory.expires_at,
        "expires_in_ms": directory.expires_at - at,
        "expired": at >= directory.expires_at,
        "expires_soon": at < directory.expires_at <= at + EXPIRY_WARNING_MS,
        "orgs": len(directory.orgs),
    }
    states: Counter[str] = Counter()
    by_recipient: dict[str, list[_Queue]] = {}
    for (recipient, _), queue in queues.items():
        by_recipient.setdefault(recipient, []).append(queue)

    def node(tree: TreeNode) -> dict[str, Any]:
        org = tree.org
        channels = []
        for channel_id in org.channels:
            state, since = presence(channel_id, org.id)
            entry = directory.channel(channel_id)
            queue = queues.get((org.id, channel_id), _EMPTY)
            channels.append(
                {
                    "id": channel_id,
                    "ceiling": None if entry is None else _label(entry.ceiling),
                    "state": state,
                    "since": since,
                    **queue.as_json(at),
                }
            )
        own = by_recipient.get(org.id, [])
        word = org_state([c["state"] for c in channels])
        states[word] += 1
        return {
            "id": org.id,
            "name_zh": org.name_zh,
            "name_en": org.name_en,
            "level": {"name": org.level.value, "zh": org.level.zh},
            "clearance": _label(org.clearance),
            "state": word,
            "orphan": tree.orphan,
            "channels": channels,
            "queue": _merge(own).as_json(at),
            "children": [node(child) for child in tree.children],
        }

    snapshot["tree"] = [node(root) for root in org_tree(directory)]
    snapshot["spokes"] = {
        "orgs": len(directory.orgs),
        **{s: states[s] for s in ("online", "partial", "offline", "unknown", "unseen", "none")},
    }
    snapshot["channels"] = [
        _channel(directory, channel, presence, queues, at) for channel in directory.channels
    ]
    # Deliveries to an organisation the directory no longer lists (a reload removed it):
    # shown apart, never silently left out of the counts.
    listed = {org.id for org in directory.orgs}
    snapshot["unlisted"] = [
        {"recipient": recipient, **_merge(found).as_json(at)}
        for recipient, found in sorted(by_recipient.items())
        if recipient not in listed
    ]
    return snapshot


def _channel(
    directory: Directory,
    channel: ChannelEntry,
    presence: PresenceOf,
    queues: dict[tuple[str, str], _Queue],
    at: int,
) -> dict[str, Any]:
    members = [org.id for org in directory.orgs if channel.id in org.channels]
    states = Counter(presence(channel.id, org)[0] for org in members)
    waiting = [q for (_, ch), q in queues.items() if ch == channel.id]
    return {
        "id": channel.id,
        "name": channel.name,
        "ceiling": _label(channel.ceiling),
        "provisioned": len(members),
        "online": states["online"],
        "unknown": states["unknown"],  # all of them while the hub's link to it is down
        **_merge(waiting).as_json(at),
    }
