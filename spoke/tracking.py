"""What a sent document's recipients' receipts add up to: one table, pure.

A recipient's status moves on with every receipt about it, in the order they arrive
(``status.json`` and ``spoke status`` both read it from here). DEAD and EXPIRED are not
the end: after ``hubctl redeliver`` the recipient's DELIVERED or SIGNED_FOR follows, and
wins, because it is the recipient's own signed word that its inbox holds the document. A
failure that arrives after it (a hub's late DEAD) changes nothing. SIGNED_FOR implies
DELIVERED, so a late DELIVERED leaves SIGNED_FOR alone.

The document's overall status is the one that needs someone most: REFUSED (a hub beyond
this spoke's own refused it for the recipients behind it: hubs under hubs), then DEAD, then
EXPIRED, then PENDING, then DELIVERED, then SIGNED_FOR (every recipient signed for it).

A recall (撤回) and a return (退文) are not delivery statuses and leave the above alone.
Beside it each recipient has a recall state (:data:`RECALL_TRANSITIONS`): ``pending`` once
the sender asked, then what the recipient said (``withdrawn``, ``accepted``, ``refused``,
which may still become ``accepted``), or ``recalled``: the hub stopped its delivery. A
delivery the hub had sent may nevertheless have reached the recipient: its own later
answer (withdrawn, accepted, refused) then follows and replaces ``recalled``. A recipient
whose delivery was stopped is left out of the document's overall status (the hub will not
deliver it, so no confirmation is coming), whatever it answers, unless all were. The
recall itself, as the hub answered it, moves by :data:`HUB_RECALL_TRANSITIONS`.

A recipient's reports of its handling (办理) are a third thing beside them: its
``handling`` is the latest report that does not go back (:func:`later_handling`, the hub's
order: 已阅 READ, then 办理中 HANDLING or 受理 CASE_ACCEPTED, then 办结 DONE or 不予受理
CASE_DECLINED), and ``reports`` every one in arrival order. The hub's reminders (催办) of
its deadlines are listed beside them, and a deadline passed and not met is ``overdue``
(:func:`overdue`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from schemas.clock import ms_to_text
from schemas.receipts import REPORTS, ReceiptStatus

PENDING, DELIVERED, SIGNED_FOR, EXPIRED, DEAD, REFUSED = (
    "PENDING",
    "DELIVERED",
    "SIGNED_FOR",
    "EXPIRED",
    "DEAD",
    "REFUSED",  # a hub beyond this spoke's own refused it (hubs under hubs): final
)
STATUSES = (PENDING, DELIVERED, SIGNED_FOR, EXPIRED, DEAD, REFUSED)
CONFIRMED = frozenset({DELIVERED, SIGNED_FOR})
FAILED = frozenset({EXPIRED, DEAD, REFUSED})

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
    (PENDING, REFUSED): REFUSED,  # another hub's signed REJECTED: nothing follows it
}
# how much each overall status needs someone: the most needy recipient names the document's
_NEED = {REFUSED: 0, DEAD: 1, EXPIRED: 2, PENDING: 3, DELIVERED: 4, SIGNED_FOR: 5}


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


# ---------------------------------------------------------------- recall and return

RECALL_PENDING, RECALL_RECALLED, RECALL_WITHDRAWN, RECALL_ACCEPTED, RECALL_REFUSED = (
    "pending",
    "recalled",
    "withdrawn",
    "accepted",
    "refused",
)
# (a recipient's recall state now (None: no recall heard of), flow status) -> state after
RECALL_TRANSITIONS: dict[tuple[str | None, str], str] = {
    **{(s, "RECALLED"): RECALL_RECALLED for s in (None, RECALL_PENDING, RECALL_WITHDRAWN)},
    (None, "WITHDRAWN"): RECALL_WITHDRAWN,
    (RECALL_PENDING, "WITHDRAWN"): RECALL_WITHDRAWN,
    (None, "RECALL_ACCEPTED"): RECALL_ACCEPTED,
    (RECALL_PENDING, "RECALL_ACCEPTED"): RECALL_ACCEPTED,
    (RECALL_REFUSED, "RECALL_ACCEPTED"): RECALL_ACCEPTED,  # it changed its mind
    (None, "RECALL_REFUSED"): RECALL_REFUSED,
    (RECALL_PENDING, "RECALL_REFUSED"): RECALL_REFUSED,
    # the hub stopped a delivery it had sent, which had reached the recipient after all:
    # the recipient's own word on the copy it holds wins
    (RECALL_RECALLED, "WITHDRAWN"): RECALL_WITHDRAWN,
    (RECALL_RECALLED, "RECALL_ACCEPTED"): RECALL_ACCEPTED,
    (RECALL_RECALLED, "RECALL_REFUSED"): RECALL_REFUSED,
}
# the recall as the hub answered it: (now, the hub's status about the whole document) -> after
HUB_SENT, HUB_RECORDED, HUB_REFUSED = "SENT", "RECORDED", "REFUSED"
HUB_RECALL_TRANSITIONS: dict[tuple[str, str], str] = {
    (HUB_SENT, "RECALLED"): HUB_RECORDED,
    (HUB_SENT, "REFUSED"): HUB_REFUSED,
}


def recall_state(statuses: Iterable[str], *, requested: bool) -> str | None:
    """A recipient's recall state after these flow statuses, in arrival order (``requested``:
    this spoke asked for the recall); None: nothing to say."""
    state = RECALL_PENDING if requested else None
    for status in statuses:
        state = RECALL_TRANSITIONS.get((state, status), state)
    return state


def hub_recall(hub: str, status: str) -> str:
    """The recall's state after the hub's ``status`` about it (unknown: unchanged)."""
    return HUB_RECALL_TRANSITIONS.get((hub, status), hub)


def overall_with_recall(recipients: Iterable[tuple[str, bool]]) -> str:
    """The overall status of (delivery status, whether a recall stopped its delivery) pairs:
    recipients whose delivery the hub stopped are left out, unless every one was."""
    pairs = list(recipients)
    waiting = [s for s, stopped in pairs if not stopped]
    return overall_status(waiting or [s for s, _ in pairs])


# ---------------------------------------------------------------- handling and deadlines

# how far a report goes: a report never takes a recipient's handling back (as the hub keeps it)
HANDLING_RANK = {"READ": 0, "HANDLING": 1, "CASE_ACCEPTED": 1, "CASE_DECLINED": 2, "DONE": 2}
_MEETS = {  # the deadline each handling meets (a SIGNED_FOR meets sign_by)
    "accept_by": frozenset({"CASE_ACCEPTED", "CASE_DECLINED", "DONE"}),
    "done_by": frozenset({"DONE", "CASE_DECLINED"}),
}


def later_handling(held: str | None, reported: str) -> str:
    """A recipient's handling after it reported ``reported``: that report, unless it would
    go back (a late 已阅 READ after 办结 DONE leaves DONE); one of equal rank replaces it."""
    if held is None or HANDLING_RANK[reported] >= HANDLING_RANK[held]:
        return reported
    return held


def met(deadline: str, status: str, handling: str | None, *, stopped: bool = False) -> bool:
    """Whether a recipient whose delivery ``status`` and ``handling`` are these has met
    ``deadline`` (sign_by, accept_by, done_by). One that no longer owes anything (its
    delivery stopped by a recall, or expired) has nothing to meet."""
    if stopped or status == EXPIRED:
        return True
    if deadline == "sign_by":
        return status == SIGNED_FOR
    return handling in _MEETS.get(deadline, frozenset())


def overdue(
    deadlines: Mapping[str, int], status: str, handling: str | None, *, now: int, stopped: bool
) -> dict[str, bool]:
    """For each deadline set (name -> ms): whether it has passed at ``now`` unmet."""
    return {
        name: due <= now and not met(name, status, handling, stopped=stopped)
        for name, due in deadlines.items()
    }


@dataclass
class Recipient:
    """One recipient in status.json: its status now, and every receipt that moved it."""

    status: str = PENDING
    times: dict[str, str] = field(default_factory=dict)  # the latest of each status
    history: list[dict[str, object]] = field(default_factory=list)
    why: tuple[str, str | None] | None = None  # reason and detail, while it has failed
    copy_number: str | None = None
    recall: str | None = None  # its recall state (RECALL_TRANSITIONS)
    recall_note: str | None = None  # its words about the recall, opened
    stopped: bool = False  # the hub stopped its delivery (RECALLED), whatever it said since
    returned: dict[str, object] | None = None  # 退文: {"at", "reason"}
    handling: dict[str, object] | None = None  # its latest report that does not go back
    reports: list[dict[str, object]] = field(default_factory=list)  # every report, in order
    reminders: list[dict[str, object]] = field(default_factory=list)  # 催办: {deadline, at}
    overdue: dict[str, bool] | None = None  # per deadline set (the document's terms)
    replied: dict[str, object] | None = None  # its 批复 to our 请示: handled (done_by)

    def flow(self, status: str, at: int, note: str | None) -> None:
        """A flow statement about this recipient (its own, or the hub's RECALLED)."""
        if status in REPORTS:
            self.report(status, at, note)
            return
        if status == "RETURNED":
            self.returned = {"at": ms_to_text(at, precise=True), "reason": note}
            return
        after = RECALL_TRANSITIONS.get((self.recall, status), self.recall)
        if status == "RECALLED":
            self.stopped = True
        elif after != self.recall:
            self.recall_note = note
        self.recall = after

    def report(self, status: str, at: int, comment: str | None) -> None:
        """A report of its handling (办理): in its history, and its handling unless it
        would go back."""
        shown: dict[str, object] = {
            "status": status,
            "status_zh": ReceiptStatus(status).zh,
            "at": ms_to_text(at, precise=True),
            "comment": comment,
        }
        self.reports.append(shown)
        held = None if self.handling is None else str(self.handling["status"])
        if later_handling(held, status) == status:
            self.handling = shown

    def remind(self, deadline: str, at: int) -> None:
        """The hub reminded it (催办) of ``deadline``."""
        self.reminders.append({"deadline": deadline, "at": ms_to_text(at, precise=True)})

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
        if self.recall is not None:
            out["recall"], out["recall_note"] = self.recall, self.recall_note
            out["delivery_stopped"] = self.stopped
        if self.returned is not None:
            out["returned"] = self.returned
        if self.reports:
            out["handling"], out["reports"] = self.handling, self.reports
        if self.reminders:
            out["reminders"] = self.reminders
        if self.replied is not None:
            out["replied"] = self.replied
        if self.overdue is not None:
            out["overdue"] = self.overdue
        out["history"] = self.history
        return out
