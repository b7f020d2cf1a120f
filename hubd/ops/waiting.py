"""Why a delivery in ``hubctl queue`` waits, and when it expires.

Derived from what the store holds (state, attempts, the last change, ``expires_at``), the
running hub's presence (asked over the admin socket; None when it did not answer) and the
retry policy of :mod:`hubd.core.timers` with the configuration's ``[delivery]`` values.
What only the dispatcher's memory holds is not guessed: the exact retry time (the backoff
has a random jitter, so the answer is the window it falls in) and *settling* (a
recipient's DELIVERED being stored this instant: it closes the delivery within
milliseconds, and the store shows it once committed). The disk watermark stops the hub
taking new messages, never delivering stored ones, so it is never a reason here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hubd.config import Delivery as DeliveryConfig
from hubd.core.states import DeliveryState
from hubd.core.timers import RETRY_JITTER, TimerSettings, retry_delay_ms
from hubd.ops.contact import Presence, SpokePresence
from hubd.ops.query import Delivery, Listing
from schemas.clock import duration_text, ms_to_text

OFFLINE = "recipient_offline"  # the hub holds it until the recipient's spoke is online
NEVER_SEEN = "recipient_not_seen"  # not heard of since the hub started: offline
PUBLISHING = "publishing"  # queued for the broker (recipient online)
AWAITING_DELIVERED = "awaiting_delivered"  # published; the next attempt in a window
GIVING_UP = "giving_up"  # published max_attempts times: DEAD at the next retry timer
EXPIRING = "expiring"  # its expires_at has passed: EXPIRED at once
HUB_UNKNOWN = "presence_unknown"  # the hub did not answer, or its link to the broker is down


@dataclass(frozen=True, slots=True)
class Waiting:
    """Why one delivery waits: a code, the times it rests on, and a sentence."""

    code: str
    detail: str
    offline_since: int | None = None
    next_attempt_from: int | None = None  # the retry window (the backoff's jitter)
    next_attempt_by: int | None = None

    def short(self, now: int) -> str:
        """A few words for the queue's table; the sentence follows below it."""
        if self.code in {OFFLINE, NEVER_SEEN}:
            since = self.offline_since
            return "recipient offline" + ("" if since is None else f" {duration_text(now - since)}")
        if self.code in {AWAITING_DELIVERED, GIVING_UP} and self.next_attempt_by is not None:
            verb = "gives up" if self.code == GIVING_UP else "retry"
            if self.next_attempt_by < now:
                return f"{verb} overdue"
            return f"{verb} within {duration_text(self.next_attempt_by - now)}"
        return {PUBLISHING: "publishing", EXPIRING: "expiring now", HUB_UNKNOWN: "unknown"}.get(
            self.code, self.code
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "detail": self.detail,
            "offline_since": self.offline_since,
            "next_attempt_from": self.next_attempt_from,
            "next_attempt_by": self.next_attempt_by,
        }


def timers(delivery: DeliveryConfig) -> TimerSettings:
    """The retry policy of the configuration's ``[delivery]`` section, as the hub uses it."""
    return TimerSettings(
        max_attempts=delivery.max_attempts,
        retry_initial_ms=round(delivery.retry_initial * 1000),
        retry_max_ms=round(delivery.retry_max * 1000),
    )


def _window(d: Delivery, timers: TimerSettings) -> tuple[int, int]:
    low, high = RETRY_JITTER
    return (
        d.updated_at + retry_delay_ms(d.attempts, timers, low),
        d.updated_at + retry_delay_ms(d.attempts, timers, high),
    )


def _when(at: int, now: int) -> str:
    if at >= now:
        return f"{ms_to_text(at)} (in {duration_text(at - now)})"
    return f"{ms_to_text(at)} ({duration_text(now - at)} ago)"


def why_waiting(
    d: Delivery,
    *,
    now: int,
    presence: SpokePresence | None,
    presence_known: bool,
    timers: TimerSettings,
) -> Waiting:
    """The reason an awaited (PENDING or SENT) delivery has not reached its recipient."""
    r = d.recipient
    if presence is not None and presence.via is not None:  # handed on through another hub
        r = f"{r} (reached through hub {presence.via})"
    if d.expires_at is not None and d.expires_at <= now:
        return Waiting(
            EXPIRING,
            f"its expires_at passed at {ms_to_text(d.expires_at)}: a running hub marks it "
            "EXPIRED and tells the sender",
        )
    sent = d.state is DeliveryState.SENT
    tries = f"published {d.attempts} time{'' if d.attempts == 1 else 's'}, no DELIVERED yet"
    offline: Waiting | None = None
    link_down = presence is not None and presence.online is None  # the hub knows it cannot know
    unknown = (
        None
        if presence_known and not link_down
        else (
            f"the hub's link to the broker of {d.channel} is down, or it has not yet re-learned "
            "presence since the link came back"
            if presence_known
            else "the hub did not answer"
        )
    )
    if presence_known and not link_down and (presence is None or not presence.online):
        since = None if presence is None else presence.since
        where = (
            f"{r} has not been online on {d.channel} since the hub started"
            if since is None
            else f"{r} offline on {d.channel} since {ms_to_text(since)} "
            f"({duration_text(now - since)})"
        )
        offline = Waiting(
            OFFLINE if since is not None else NEVER_SEEN,
            f"{where}; published as soon as it is online" + (f" ({tries})" if sent else ""),
            offline_since=since,
        )
    if not sent:
        if offline is not None:
            return offline
        if unknown is not None:
            return Waiting(
                HUB_UNKNOWN,
                f"not yet published; {unknown}, so whether {r} is online is unknown (a "
                "running hub publishes it once the recipient is online)",
            )
        return Waiting(
            PUBLISHING,
            f"{r} is online: queued for the broker, most urgent first (one that stays here "
            "means the broker does not take publishes: see broker.* in the hub's log)",
        )
    first, last = _window(d, timers)
    if d.attempts >= timers.max_attempts:
        return Waiting(
            GIVING_UP,
            f"{tries}: [delivery] max_attempts ({timers.max_attempts}) reached; DEAD between "
            f"{_when(first, now)} and {_when(last, now)} unless {r}'s DELIVERED comes",
            offline_since=None if offline is None else offline.offline_since,
            next_attempt_from=first,
            next_attempt_by=last,
        )
    if offline is not None:
        return Waiting(
            offline.code,
            offline.detail,
            offline.offline_since,
            next_attempt_from=first,
            next_attempt_by=last,
        )
    if last < now:  # the retry is overdue: the hub was down, or it is publishing it now
        then = (
            f"{unknown}: a {'running' if presence_known else 'started'} hub publishes it "
            f"again as soon as {r} is online"
            if unknown is not None
            else "it is being published again (a slow broker: see broker.* in the hub's log)"
        )
        return Waiting(
            AWAITING_DELIVERED,
            f"{tries}; attempt {d.attempts + 1} was due by {_when(last, now)}: {then}",
            next_attempt_from=first,
            next_attempt_by=last,
        )
    return Waiting(
        AWAITING_DELIVERED,
        f"{tries}; attempt {d.attempts + 1} between {_when(first, now)} and {_when(last, now)} "
        f"(the backoff, with its jitter) unless {r}'s DELIVERED comes first",
        next_attempt_from=first,
        next_attempt_by=last,
    )


@dataclass(frozen=True, slots=True)
class Queue:
    """``hubctl queue``'s answer: the listing, and per delivery why it waits."""

    listing: Listing
    why: tuple[Waiting, ...]  # one per listing.items, in the same order
    presence_known: bool
    hub_problem: str | None  # why presence is unknown

    def as_json(self) -> dict[str, Any]:
        out = self.listing.as_json()
        for item, why in zip(out["deliveries"], self.why, strict=True):
            item["waiting"] = why.as_json()
        out["presence_known"] = self.presence_known
        out["hub_problem"] = self.hub_problem
        return out


def explain(
    listing: Listing,
    *,
    presence: Presence | None,
    hub_problem: str | None,
    timers: TimerSettings,
) -> Queue:
    """``listing`` with a reason per delivery; ``presence`` is a ``(channel, org) ->
    SpokePresence | None`` from the running hub, or None if it did not answer."""
    why = tuple(
        why_waiting(
            d,
            now=listing.at,
            presence=None if presence is None else presence(d.channel, d.recipient),
            presence_known=presence is not None,
            timers=timers,
        )
        for d in listing.items
    )
    known = presence is not None
    return Queue(listing, why, known, None if known else hub_problem)
