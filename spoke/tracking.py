"""What a sent document's recipients' receipts add up to: one table, pure.

A recipient's status moves on with every receipt about it, in the order they arrive
(``status.json`` and ``spoke status`` both read it from here). DEAD and EXPIRED are not
the end: after ``hubctl redeliver`` the recipient's DELIVERED or SIGNED_FOR follows, and
wins, because it is the recipient's own signed word that its inbox holds the document. A
failure that arrives after it (a hub's late DEAD) changes nothing. SIGNED_FOR implies
DELIVERED, so a late DELIVERED leaves SIGNED_FOR alone.

The document's overall status is the one that needs someone most: DEAD, then EXPIRED,
then PENDING, then DELIVERED, then SIGNED_FOR (every recipient signed for it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.clock import ms_to_text

PENDING, DELIVERED, SIGNED_FOR, EXPIRED, DEAD = (
    "PENDING",
    "DELIVERED",
    "SIGNED_FOR",
    "EXPIRED",
    "DEAD",
)
STATUSES = (PENDING, DELIVERED, SIGNED_FOR, EXPIRED, DEAD)
CONFIRMED = frozenset({DELIVERED, SIGNED_FOR})
FAILED = frozenset({EXPIRED, DEAD})

# (status now, receipt) -> status after it; a pair not listed leaves the status as it is
TRANSITIONS: dict[tuple[str, str], str] = {
    (PENDING, DELIVERED): DELIVERED,
    (PENDING, SIGNED_FOR): SIGNED_FOR,
    (PENDING, EXPIRED): EXPIRED,
    (PENDING, DEAD): DEAD,
    (DELIVERED, SIGNED_FOR): SIGNED_FOR,
    (DEAD, DELIVERED): DELIVERED,  # redelivered (hubctl redeliver), or a late confirmation
    (DEAD, SIGNED_FOR): SIGNED_FOR,
    (EXPIRED, DELIVERED): DELIVERED,  # confirmed after all: its inbox holds it
    (EXPIRED, SIGNED_FOR): SIGNED_FOR,
    (DEAD, EXPIRED): EXPIRED,  # redelivered, then its expiry passed
    (EXPIRED, DEAD): DEAD,
}
# how much each overall status needs someone: the most needy recipient names the document's
_NEED = {DEAD: 0, EXPIRED: 1, PENDING: 2, DELIVERED: 3, SIGNED_FOR: 4}


def next_status(status: str, receipt: str) -> str:
    """A recipient's status after ``receipt`` (a status the table does not know: unchanged)."""
    return TRANSITIONS.get((status, receipt), status)


def recipient_status(receipts: Iterable[str]) -> str:
    """A recipient's status after its receipts, in the order they arrived."""
    status = PENDING
    for receipt in receipts:
        status = next_status(status, receipt)
    return status


def overall_status(statuses: Iterable[str]) -> str:
    """The document's status: its most needy recipient's (PENDING if it has none)."""
    known = [s for s in statuses if s in _NEED]
    return min(known, key=_NEED.__getitem__) if known else PENDING


@dataclass
class Recipient:
    """One recipient in status.json: its status now, and every receipt that moved it."""

    status: str = PENDING
    times: dict[str, str] = field(default_factory=dict)  # the latest of each status
    history: list[dict[str, object]] = field(default_factory=list)
    why: tuple[str, str | None] | None = None  # reason and detail, while it has failed
    copy_number: str | None = None

    def add(self, status: str, at: int, reason: str | None, detail: str | None) -> None:
        when = ms_to_text(at, precise=True)
        self.times[f"{status.lower()}_at"] = when
        event: dict[str, object] = {"status": status, "at": when}
        if reason:
            event["reason"], event["detail"] = reason, detail
        self.history.append(event)
        self.status = next_status(self.status, status)
        if self.status in FAILED and reason:
            self.why = (reason, detail)
        elif self.status in CONFIRMED:
            self.why = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"status": self.status, **self.times}
        if self.why is not None:
            out["reason"], out["detail"] = self.why
        if self.copy_number is not None:
            out["copy_number"] = self.copy_number
        out["history"] = self.history
        return out
