"""The status page's data: the summary the page polls (``/status.json``) and each
organisation's row, which the summary's attention list and the tree's pages
(:mod:`hubd.web.statustree`) share.

The summary's size does not grow with the number of healthy organisations: counts by
state per channel, and the organisations that need attention, the worst
:data:`ATTENTION_SHOWN` of them with a count of the rest. The whole tree is paged apart.

Pure: it takes what the hub knows (:class:`Facts`: the verified directory, presence, the
deliveries still awaited, the dead letters already read from the store, the keys about to
expire) and the time, and returns plain dicts and lists. No I/O, no clock, so it is tested
without a server; :mod:`hubd.web.statuspage` gathers the inputs and serves the result.

Everything in it is an id, a name from the signed directory, a label, a count or a time in
ms. The hub holds no titles or content, and nothing here decodes a frame. Values are raw:
escaping is the page's job (it only ever sets ``textContent``).
docs/operations.md, "Status page", describes every field.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hubd.core.states import DeliveryState
from hubd.engine.presencebook import Seen
from hubd.ops.query import Delivery
from schemas.directory import ChannelEntry, Directory, OrgEntry
from schemas.ids import msg_id_text
from schemas.labels import Classification, Precedence

PresenceOf = Callable[[str, str], Seen]  # Dispatcher.spokes.state
EXPIRY_WARNING_MS = 3 * 24 * 3600 * 1000  # the alert rule in docs/operations.md warns then too
ATTENTION_SHOWN = 100  # organisations the summary lists by name; the rest are counted
UNLISTED_SHOWN = 100  # recipients the directory no longer lists, likewise


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
    by_org: Mapping[str, int] = field(default_factory=dict)  # recipient -> dead + expired
    by_channel: Mapping[str, int] = field(default_factory=dict)  # channel -> dead + expired

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


# ------------------------------------------------------------------ queues


@dataclass(frozen=True, slots=True)
class Queue:
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


def _queues(pending: Iterable[PendingDelivery]) -> dict[tuple[str, str], Queue]:
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
    return {k: Queue(count[k], sent[k], oldest[k], urgent[k]) for k in count}


def merge(queues: Sequence[Queue]) -> Queue:
    oldest = [q.oldest_at for q in queues if q.oldest_at is not None]
    urgent = [q.most_urgent for q in queues if q.most_urgent is not None]
    return Queue(
        sum(q.pending for q in queues),
        sum(q.sent for q in queues),
        min(oldest) if oldest else None,
        max(urgent) if urgent else None,
    )


EMPTY = Queue(0, 0, None, None)


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


# ------------------------------------------------------------------ what the hub knows


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the summary and the tree's pages are built from, gathered once per
    refresh however many pages ask (:mod:`hubd.web.statuspage`)."""

    at: int
    directory: Directory | None
    presence: PresenceOf
    jobs: tuple[PendingDelivery, ...]
    queues: Mapping[tuple[str, str], Queue]
    dead: DeadLetters
    expiring: Mapping[str, int]  # organisation -> when its last key ends, if that warns
    awaiting: frozenset[str]  # listed before its keys came (Directory.awaiting_keys)
    by_recipient: Mapping[str, Queue]

    @classmethod
    def gather(
        cls,
        *,
        at: int,
        directory: Directory | None,
        presence: PresenceOf,
        pending: Iterable[PendingDelivery],
        dead: DeadLetters,
        expiring: Mapping[str, int] | None = None,
    ) -> Facts:
        jobs = tuple(pending)
        queues = _queues(jobs)
        if directory is not None:  # as of now: the tree's pages then agree with the summary
            presence = _as_of_now(presence, directory)

        per: dict[str, list[Queue]] = {}
        for (recipient, _), queue in queues.items():
            per.setdefault(recipient, []).append(queue)
        return cls(
            at,
            directory,
            presence,
            jobs,
            queues,
            dead,
            expiring or {},
            frozenset(() if directory is None else directory.awaiting_own_keys()),
            {recipient: merge(found) for recipient, found in per.items()},
        )


def _as_of_now(presence: PresenceOf, directory: Directory) -> PresenceOf:
    """Presence as it is now for every spoke of the directory (any other asked live)."""
    seen = {(c, o.id): presence(c, o.id) for o in directory.orgs for c in o.channels}
    return lambda channel, org: seen.get((channel, org)) or presence(channel, org)


# Why an organisation needs attention, the most pressing first: the attention list is
# sorted by an organisation's first reason, then by how much waits for it.
REASONS = (
    "offline_waiting",  # offline on a channel with deliveries waiting for it
    "unseen_waiting",  # never seen since the hub started, with deliveries waiting
    "keys_expired",  # its last signing or encryption key has ended
    "dead_letters",  # deliveries to it went DEAD or EXPIRED ('hubctl dead')
    "unknown_waiting",  # presence unknown (broker link down) with deliveries waiting
    "keys_expiring",  # its last key of a kind ends within [expiry] warn_days
    "offline",  # offline, nothing waiting
    "awaiting_keys",  # listed before its keys came: nobody can send to it
    "unknown",  # presence unknown (the hub's link to the channel's broker is down)
)
_RANK = {reason: rank for rank, reason in enumerate(REASONS)}


def reasons_of(facts: Facts, org: OrgEntry, states: Sequence[str]) -> list[str]:
    """Why ``org`` needs attention (in :data:`REASONS` order); [] for a healthy one."""
    queue = facts.by_recipient.get(org.id, EMPTY)
    waiting = queue.pending > 0
    found = []
    if waiting and "offline" in states:
        found.append("offline_waiting")
    if waiting and states and all(s == "unseen" for s in states):
        found.append("unseen_waiting")
    until = facts.expiring.get(org.id)
    if until is not None and until <= facts.at:
        found.append("keys_expired")
    if facts.dead.by_org.get(org.id, 0):
        found.append("dead_letters")
    if waiting and "unknown" in states and "offline" not in states:
        found.append("unknown_waiting")
    if until is not None and until > facts.at:
        found.append("keys_expiring")
    if not waiting and "offline" in states:
        found.append("offline")
    if org.id in facts.awaiting:
        found.append("awaiting_keys")
    if not waiting and "unknown" in states:
        found.append("unknown")
    return found


def channel_states(facts: Facts, org: OrgEntry) -> list[str]:
    return [facts.presence(channel, org.id)[0] for channel in org.channels]


def org_row(facts: Facts, org: OrgEntry) -> dict[str, Any]:
    """One organisation as the page shows it: names, level, clearance, its state on each
    channel and since when, what waits for it, its dead letters, its keys, and why it
    needs attention."""
    at, directory = facts.at, facts.directory
    channels = []
    for channel_id in org.channels:
        state, since = facts.presence(channel_id, org.id)
        entry = None if directory is None else directory.channel(channel_id)
        queue = facts.queues.get((org.id, channel_id), EMPTY)
        channels.append(
            {
                "id": channel_id,
                "ceiling": None if entry is None else _label(entry.ceiling),
                "state": state,
                "since": since,
                **queue.as_json(at),
            }
        )
    states = [c["state"] for c in channels]
    return {
        "id": org.id,
        "name_zh": org.name_zh,
        "name_en": org.name_en,
        "level": {"name": org.level.value, "zh": org.level.zh},
        "clearance": _label(org.clearance),
        "state": org_state(states),
        "channels": channels,
        "queue": facts.by_recipient.get(org.id, EMPTY).as_json(at),
        "dead": None if facts.dead.problem else facts.dead.by_org.get(org.id, 0),
        "keys_until": facts.expiring.get(org.id),
        "awaiting_keys": org.id in facts.awaiting,
        "attention": reasons_of(facts, org, states),
    }


# ------------------------------------------------------------------ the summary


def build_snapshot(
    facts: Facts,
    *,
    started_at: int,
    version: str,
    readiness: dict[str, object],
    ready: bool,
    flow: dict[str, Any],
) -> dict[str, Any]:
    """Everything ``/status.json`` says, as of ``facts.at`` (ms since the epoch)."""
    at, directory, jobs = facts.at, facts.directory, facts.jobs
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
        "spokes": {"orgs": 0, **dict.fromkeys(ORG_STATES, 0), "awaiting_keys": 0},
        "channels": [],
        "attention": {"orgs": [], "more": 0, "total": 0, "by_reason": dict.fromkeys(REASONS, 0)},
        "unlisted": _unlisted(facts),
        "pending": {
            "total": len(jobs),
            "sent": sum(q.sent for q in facts.queues.values()),
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
        "dead": facts.dead.as_json(),
    }
    if directory is None:
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
    words: Counter[str] = Counter()
    per_channel: dict[str, Counter[str]] = {c.id: Counter() for c in directory.channels}
    needy: list[tuple[tuple[int, int, int, str], OrgEntry]] = []
    by_reason: Counter[str] = Counter()
    for org in directory.orgs:  # one pass; a healthy organisation adds only to counts
        if org.via is not None:
            continue  # reached through another hub, whose link is its presence here
        states = channel_states(facts, org)
        words[org_state(states)] += 1
        awaiting = org.id in facts.awaiting
        for channel, state in zip(org.channels, states, strict=True):
            counts = per_channel.get(channel)
            if counts is None:  # a channel the directory does not describe
                counts = per_channel[channel] = Counter()
            counts[state] += 1
            counts["provisioned"] += 1
            counts["awaiting_keys"] += awaiting
        reasons = reasons_of(facts, org, states)
        if reasons:
            by_reason.update(reasons)
            queue = facts.by_recipient.get(org.id, EMPTY)
            oldest_at = queue.oldest_at if queue.oldest_at is not None else at
            needy.append(((_RANK[reasons[0]], -queue.pending, oldest_at, org.id), org))
    needy.sort(key=lambda pair: pair[0])
    shown = [org_row(facts, org) for _, org in needy[:ATTENTION_SHOWN]]
    snapshot["spokes"] = {
        "orgs": sum(1 for o in directory.orgs if o.via is None),  # its own: its spokes
        **{s: words[s] for s in ORG_STATES},
        "awaiting_keys": len(facts.awaiting),
    }
    snapshot["attention"] = {
        "orgs": shown,
        "more": len(needy) - len(shown),
        "total": len(needy),
        "by_reason": {r: by_reason[r] for r in REASONS},
    }
    snapshot["channels"] = [
        _channel(facts, channel, per_channel[channel.id]) for channel in directory.channels
    ]
    return snapshot


ORG_STATES = ("online", "partial", "offline", "unknown", "unseen", "none")


def _unlisted(facts: Facts) -> dict[str, Any]:
    """Deliveries to organisations the directory no longer lists (a reload removed them):
    shown apart, never silently left out of the counts."""
    if facts.directory is None:  # nothing to hold the recipients against yet
        return {"recipients": [], "more": 0}
    listed = {org.id for org in facts.directory.orgs}
    stray = sorted(r for r in facts.by_recipient if r not in listed)
    return {
        "recipients": [
            {"recipient": r, **facts.by_recipient[r].as_json(facts.at)}
            for r in stray[:UNLISTED_SHOWN]
        ],
        "more": max(len(stray) - UNLISTED_SHOWN, 0),
    }


def _channel(facts: Facts, channel: ChannelEntry, counts: Counter[str]) -> dict[str, Any]:
    waiting = [q for (_, ch), q in facts.queues.items() if ch == channel.id]
    dead_known = facts.dead.problem is None
    return {
        "id": channel.id,
        "name": channel.name,
        "ceiling": _label(channel.ceiling),
        "provisioned": counts["provisioned"],
        "online": counts["online"],
        "offline": counts["offline"],
        "unseen": counts["unseen"],
        "unknown": counts["unknown"],  # all of them while the hub's link to it is down
        "awaiting_keys": counts["awaiting_keys"],
        **merge(waiting).as_json(facts.at),
        "dead": facts.dead.by_channel.get(channel.id, 0) if dead_known else None,
    }


# ------------------------------------------------------------------ validators

# Fields that change with the clock alone: two answers that differ only in these say the
# same thing, so they share a (weak) ETag and a page that has one gets 304.
VOLATILE = frozenset({"at", "age_ms", "oldest_age_ms", "expires_in_ms", "end"})


def _steady(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _steady(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_steady(v) for v in value]
    return value


def etag(answer: dict[str, Any]) -> str:
    """A weak ETag for an answer: equal for answers that differ only as time passes."""
    text = json.dumps(_steady(answer), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return f'W/"{hashlib.blake2b(text.encode(), digest_size=12).hexdigest()}"'
