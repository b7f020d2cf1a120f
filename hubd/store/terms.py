"""What the store holds of documents' deadlines (migration 0010): every recipient of every
document with an open deadline, read for the deadline desk (hubd.engine.deadlines) and for
``hubctl overdue`` (hubd.ops.overdue) alike."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, TextClause, and_, or_, select, text

from hubd.core.deadlines import Handling, Kind, Open
from hubd.core.states import DeliveryState, MessageState
from hubd.store import tables as t
from schemas.labels import Classification, DocType, Precedence
from schemas.receipts import ReceiptStatus

_RANKS = {c.rank: c for c in Classification}
IN_MAX = 500  # values per IN (...)


@dataclass(frozen=True, slots=True)
class Item:
    """One recipient's part of one deadline of one document, with what it takes to tell."""

    msg_id: bytes
    recipient: str
    channel: str  # the recipient's delivery channel
    sender: str
    origin: str  # the channel the document came on
    classification: Classification
    subject: bytes
    drill: bool
    open: Open


def open_items(conn: Connection) -> list[Item]:
    """Every recipient of every document the deadline desk still watches (``terms_open``:
    its partial index), with its reminders."""
    return _items(conn, text("messages.terms_open"))


def all_items(conn: Connection) -> list[Item]:
    """Every recipient of every accepted, unrecalled document with a deadline, watched or
    not (``hubctl overdue``: a deadline reminded the most it will be still counts)."""
    m = t.messages.c
    recalled = select(t.receipts.c.msg_id).where(t.receipts.c.status == ReceiptStatus.RECALL.value)
    some = or_(m.sign_by.is_not(None), m.accept_by.is_not(None), m.done_by.is_not(None))
    return _items(
        conn, and_(some, m.state == MessageState.ACCEPTED.value, m.msg_id.not_in(recalled))
    )


def _items(conn: Connection, where: ColumnElement[bool] | TextClause) -> list[Item]:
    m, d, r = t.messages.c, t.deliveries.c, t.reminders.c
    rows = conn.execute(
        select(
            m.msg_id,
            m.sender,
            m.arrival_channel,
            m.classification,
            m.frame_sha256,
            m.created_at,
            m.doc_type,
            m.precedence,
            m.sign_by,
            m.accept_by,
            m.done_by,
            m.drill,
            d.recipient,
            d.channel,
            d.state,
            d.handling,
        )
        .join(t.deliveries, d.msg_id == m.msg_id)
        .where(where)
    ).all()
    if not rows:
        return []
    ids = sorted({bytes(row.msg_id) for row in rows})
    counts: dict[tuple[bytes, str, str], tuple[int, int]] = {}
    for start in range(0, len(ids), 500):
        for msg_id, recipient, kind, count, last_at in conn.execute(
            select(r.msg_id, r.recipient, r.kind, r.count, r.last_at).where(
                r.msg_id.in_(ids[start : start + 500])
            )
        ):
            counts[(bytes(msg_id), recipient, kind)] = (int(count), int(last_at))
    items: list[Item] = []
    for row in rows:
        msg_id = bytes(row.msg_id)
        emergency = (
            row.doc_type == DocType.EMERGENCY.name and int(row.precedence) == Precedence.FLASH.rank
        )
        handling = None if row.handling is None else Handling(row.handling)
        for kind, due_at in (
            (Kind.SIGN, row.sign_by),
            (Kind.ACCEPT, row.accept_by),
            (Kind.DONE, row.done_by),
        ):
            if due_at is None:
                continue
            count, last = counts.get((msg_id, row.recipient, kind.value), (0, None))
            items.append(
                Item(
                    msg_id,
                    row.recipient,
                    row.channel,
                    row.sender,
                    row.arrival_channel,
                    _RANKS[int(row.classification)],
                    bytes(row.frame_sha256),
                    bool(row.drill),
                    Open(
                        kind,
                        int(due_at),
                        int(row.created_at),
                        DeliveryState(row.state),
                        handling,
                        emergency,
                        count,
                        last,
                    ),
                )
            )
    return items
