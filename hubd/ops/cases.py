"""Petition cases (信访件), as the province sees them: ``hubctl cases`` lists every case
with where it stands (who holds it now, their last report, its deadlines), ``hubctl cases
CASE`` one case's history, transfer by transfer (转送、交办). The hub sees case numbers,
states and dates only: a petition's words and the petitioner stay inside the encryption."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from hubd.core.deadlines import Handling, Kind, met
from hubd.core.states import DeliveryState, MessageState
from hubd.ops.query import Reader
from hubd.store import tables as t
from schemas.clock import duration_text, ms_to_text
from schemas.display import table
from schemas.errors import UsageError
from schemas.ids import msg_id_text
from schemas.terms import CASE_PATTERN

CLOSED = frozenset({Handling.DONE, Handling.CASE_DECLINED})


@dataclass(frozen=True, slots=True)
class Holder:
    """One recipient of one petition of the case."""

    org: str
    state: DeliveryState
    handling: Handling | None
    handled_at: int | None


@dataclass(frozen=True, slots=True)
class Step:
    """One petition of the case: the first, or a transfer down (转送、交办)."""

    msg_id: bytes
    sender: str
    received_at: int
    accept_by: int | None
    done_by: int | None
    holders: tuple[Holder, ...]

    def late(self, now: int) -> list[str]:
        """'org accept_by' / 'org done_by' for each deadline passed and not met."""
        found = []
        for holder in self.holders:
            for kind, due in ((Kind.ACCEPT, self.accept_by), (Kind.DONE, self.done_by)):
                if due is not None and due <= now and not met(kind, holder.state, holder.handling):
                    found.append(f"{holder.org} {kind.value}")
        return found


@dataclass(frozen=True, slots=True)
class Case:
    number: str
    steps: tuple[Step, ...]  # in the order the hub received them

    @property
    def current(self) -> Step:
        return self.steps[-1]

    @property
    def open(self) -> bool:
        return any(h.handling not in CLOSED for h in self.current.holders)

    def as_json(self, now: int) -> dict[str, Any]:
        return {
            "case": self.number,
            "open": self.open,
            "late": self.current.late(now),
            "steps": [
                {
                    "msg_id": msg_id_text(s.msg_id),
                    "sender": s.sender,
                    "received_at": s.received_at,
                    "accept_by": s.accept_by,
                    "done_by": s.done_by,
                    "holders": [
                        {
                            "org": h.org,
                            "delivery": h.state.value,
                            "handling": None if h.handling is None else h.handling.value,
                            "handled_at": h.handled_at,
                        }
                        for h in s.holders
                    ],
                }
                for s in self.steps
            ],
        }


def _cases(conn: Connection, number: str | None) -> list[Case]:
    m, d = t.messages.c, t.deliveries.c
    where = [m.case_no.is_not(None), m.state == MessageState.ACCEPTED.value]
    if number is not None:
        where.append(m.case_no == number)
    rows = conn.execute(
        select(m.msg_id, m.case_no, m.sender, m.received_at, m.accept_by, m.done_by)
        .where(*where)
        .order_by(m.case_no, m.received_at)
    ).all()
    ids = [bytes(r.msg_id) for r in rows]
    holders: dict[bytes, list[Holder]] = {}
    for start in range(0, len(ids), 500):
        for msg_id, recipient, state, handling, handled_at in conn.execute(
            select(d.msg_id, d.recipient, d.state, d.handling, d.handled_at)
            .where(d.msg_id.in_(ids[start : start + 500]))
            .order_by(d.recipient)
        ):
            holders.setdefault(bytes(msg_id), []).append(
                Holder(
                    recipient,
                    DeliveryState(state),
                    None if handling is None else Handling(handling),
                    None if handled_at is None else int(handled_at),
                )
            )
    cases: dict[str, list[Step]] = {}
    for r in rows:
        cases.setdefault(r.case_no, []).append(
            Step(
                bytes(r.msg_id),
                r.sender,
                int(r.received_at),
                None if r.accept_by is None else int(r.accept_by),
                None if r.done_by is None else int(r.done_by),
                tuple(holders.get(bytes(r.msg_id), [])),
            )
        )
    return [Case(number, tuple(steps)) for number, steps in cases.items()]


def checked(number: str | None) -> str | None:
    """A case number as the terms carry it; UsageError naming it otherwise."""
    if number is not None and not re.fullmatch(CASE_PATTERN, number):
        raise UsageError(f"{number!r} is not a case number (信访件编号)")
    return number


async def cases(read: Reader, *, number: str | None = None) -> list[Case]:
    return await read.sync(lambda conn: _cases(conn, number))


def render_cases(found: Sequence[Case], now: int, *, only_open: bool) -> str:
    shown = [c for c in found if c.open or not only_open]
    if not shown:
        return f"no {'open ' if only_open else ''}petition cases as of {ms_to_text(now)}\n"
    rows = []
    for case in shown:
        current = case.current
        held = ", ".join(
            f"{h.org}: {h.handling.value if h.handling else h.state.value}" for h in current.holders
        )
        rows.append(
            (
                case.number,
                ms_to_text(case.steps[0].received_at),
                str(len(case.steps) - 1),
                held or "-",
                "open" if case.open else "closed",
                ", ".join(current.late(now)) or "-",
            )
        )
    header = ("case", "since", "transfers", "held by (last report)", "", "overdue")
    return f"{len(rows)} petition cases as of {ms_to_text(now)}\n{table(header, rows)}\n"


def render_case(case: Case, now: int) -> str:
    lines = [f"case {case.number}: {'open' if case.open else 'closed'}"]
    for n, step in enumerate(case.steps):
        what = "received" if n == 0 else "transferred (转送/交办)"
        lines.append(
            f"  {ms_to_text(step.received_at)}  {msg_id_text(step.msg_id)}  {what} by {step.sender}"
        )
        for due, name in ((step.accept_by, "受理 accept_by"), (step.done_by, "办结 done_by")):
            if due is not None:
                when = "passed " + duration_text(now - due) + " ago" if due <= now else "due"
                lines.append(f"      {name} {ms_to_text(due)} ({when})")
        for h in step.holders:
            report = "no report" if h.handling is None else h.handling.value
            at = "" if h.handled_at is None else f" at {ms_to_text(h.handled_at)}"
            lines.append(f"      -> {h.org}: {h.state.value}, {report}{at}")
    late = case.current.late(now)
    if late:
        lines.append(f"  overdue: {', '.join(late)} ('hubctl overdue' lists the reminders)")
    return "\n".join(lines) + "\n"
