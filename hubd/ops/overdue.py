"""``hubctl overdue [ORG]``: the recipients past a deadline of a document's terms and not
meeting it (签收 sign_by, 受理 accept_by, 办结 done_by), the longest overdue first; with ORG,
those owed by that organisation or owed to it (it sent the document)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hubd.core.deadlines import met
from hubd.ops.query import Reader
from hubd.store.terms import Item, all_items
from schemas.clock import duration_text, ms_to_text
from schemas.display import table
from schemas.ids import msg_id_text


@dataclass(frozen=True, slots=True)
class Overdue:
    at: int
    org: str | None
    items: tuple[Item, ...]  # the longest overdue first

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "org": self.org,
            "overdue": [
                {
                    "msg_id": msg_id_text(i.msg_id),
                    "recipient": i.recipient,
                    "sender": i.sender,
                    "deadline": i.open.kind.value,
                    "due_at": i.open.due_at,
                    "late_s": (self.at - i.open.due_at) // 1000,
                    "reminders": i.open.reminded,
                    "state": i.open.state.value,
                    "handling": None if i.open.handling is None else i.open.handling.value,
                    "emergency": i.open.emergency,
                    "drill": i.drill,
                }
                for i in self.items
            ],
        }


async def overdue(read: Reader, *, now: int, org: str | None = None) -> Overdue:
    items = await read.sync(all_items)
    late = [
        i
        for i in items
        if i.open.due_at <= now
        and not met(i.open.kind, i.open.state, i.open.handling)
        and (org is None or org in (i.recipient, i.sender))
    ]
    late.sort(key=lambda i: (i.open.due_at, i.recipient))
    return Overdue(now, org, tuple(late))


def render_overdue(answer: Overdue) -> str:
    whom = "" if answer.org is None else f" (owed by or to {answer.org})"
    if not answer.items:
        return f"nothing overdue{whom} as of {ms_to_text(answer.at)}\n"
    rows = [
        (
            msg_id_text(i.msg_id),
            i.recipient,
            i.sender,
            f"{i.open.kind.value} {i.open.kind.zh}",
            ms_to_text(i.open.due_at),
            duration_text(answer.at - i.open.due_at),
            str(i.open.reminded),
            i.open.state.value,
            (i.open.handling.value if i.open.handling else "-")
            + (" 应急" if i.open.emergency else "")
            + (" 演练" if i.drill else ""),
        )
        for i in answer.items
    ]
    header = (
        "msg_id",
        "recipient",
        "sender",
        "deadline",
        "due",
        "late",
        "reminders",
        "delivery",
        "handling",
    )
    head = f"overdue{whom}: {len(rows)}, the longest first; as of {ms_to_text(answer.at)}"
    return f"{head}\n{table(header, rows)}\n"
