"""Flow statements in: a sender's recall (撤回), a recipient's answer to it, a return (退文).

A statement is a verified one-entry receipt batch (schemas.receipts) with a flow status.
The shell reads what the store holds of its document, asks :func:`hubd.core.flows.judge`,
and carries the judgement out:

- **Refuse**: a signed REFUSED to the issuer on the channel the statement came on,
  naming the rule (``flow.*``) and the values; nothing is recorded.
- **Forward**: the statement is recorded (receipt row, audit ledger) and forwarded
  unchanged, numbered, to the document's sender, in one commit.
- **Recall**, the first time: in one commit the statement is recorded, every delivery
  not yet confirmed (PENDING, SENT, DEAD) becomes RECALLED, and the sender's signed
  statement is numbered for every recipient on its delivery channel (a recipient that
  has the document hears of it from its sender; one that never had it keeps the recall
  so a late copy is filed as recalled). Then the sender is answered, numbered: RECALLED
  for the document (recorded) and RECALLED for each recipient whose delivery stopped.
  A repeat (the sender's spoke resends until it hears) gets that answer again, from the
  store, and changes nothing.

Notes (the reason of a recall or a return) are sealed under the document's note key
(schemas.notes): the hub stores and forwards them and cannot read them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Connection, select, update

from hubd.core.deadlines import Handling, later
from hubd.core.flows import Document, Forward, Recall, Refuse, judge
from hubd.core.states import TRANSITIONS, DeliveryState, Event
from hubd.engine.arrival import Arrival
from hubd.engine.dispatch import Dispatcher
from hubd.engine.issuer import ReceiptIssuer
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.db import Store
from hubd.store.writes import (
    Announce,
    AppendAudit,
    DirectWrite,
    QueueReceipts,
    RecordReceipts,
)
from schemas.directory import Directory
from schemas.errors import Reason
from schemas.ids import msg_id_text
from schemas.labels import Classification, DocType
from schemas.receipts import ReceiptEntry, ReceiptStatus, VerifiedReceipts

log = structlog.get_logger("hubd.flows")

# the states a recall stops: those the state table lets RECALL move, but a copy handed to
# another hub (RELAYED): that hub stops it or not, and its RECALLED comes back
STOPPABLE = tuple(
    sorted(
        s.value for (s, e) in TRANSITIONS if e is Event.RECALL and s is not DeliveryState.RELAYED
    )
)


@dataclass(frozen=True, slots=True)
class Recipient:
    org: str
    channel: str
    state: DeliveryState


@dataclass(slots=True)
class StopDeliveries(DirectWrite):
    """Every delivery of ``msg_id`` a recall stops becomes RECALLED, as the rows are when
    the commit writes (a DELIVERED stored just before stays DELIVERED), and its deadlines
    are closed; result: the recipients stopped."""

    msg_id: bytes
    at: int

    def apply(self, conn: Connection) -> tuple[list[str], list[AuditEvent]]:
        d = t.deliveries.c
        stopped = [
            r
            for (r,) in conn.execute(
                select(d.recipient).where(d.msg_id == self.msg_id, d.state.in_(STOPPABLE))
            )
        ]
        if stopped:
            conn.execute(
                update(t.deliveries)
                .where(d.msg_id == self.msg_id, d.state.in_(STOPPABLE))
                .values(state=DeliveryState.RECALLED.value, updated_at=self.at)
            )
        # its deadlines are nobody's any more: no reminder, no emergency alarm (the
        # recipients that had it withdraw it, or keep it by their own decision)
        m = t.messages.c
        conn.execute(update(t.messages).where(m.msg_id == self.msg_id).values(terms_open=False))
        audit = [AuditEvent("delivery.recalled", self.at, self.msg_id, r, {}) for r in stopped]
        return stopped, audit


@dataclass(slots=True)
class SetHandling(DirectWrite):
    """A recipient's report of its handling, kept on its delivery unless it already holds a
    later one (a late 已阅 after 办结 changes nothing); result: the handling kept."""

    msg_id: bytes
    recipient: str
    reported: Handling
    at: int

    def apply(self, conn: Connection) -> tuple[Handling, list[AuditEvent]]:
        d = t.deliveries.c
        where = (d.msg_id == self.msg_id, d.recipient == self.recipient)
        held = conn.execute(select(d.handling).where(*where)).scalar_one_or_none()
        kept = later(None if held is None else Handling(held), self.reported)
        if kept.value != held:
            conn.execute(
                update(t.deliveries).where(*where).values(handling=kept, handled_at=self.at)
            )
        return kept, []


class FlowDesk:
    def __init__(
        self,
        *,
        directory: Callable[[], Directory],
        store: Store,
        dispatcher: Dispatcher,
        issuer: ReceiptIssuer,
        clock: Callable[[], int],
    ) -> None:
        self._directory, self._store, self._dispatcher = directory, store, dispatcher
        self._issuer, self._clock = issuer, clock
        # One statement at a time, in arrival order: a recall sent twice in a row is judged
        # a repeat only once the first is stored. Flows are people's acts: a few a minute.
        self._one_at_a_time = asyncio.Lock()

    async def statement(self, arrival: Arrival, frame: bytes, verified: VerifiedReceipts) -> None:
        """Judge and carry out one flow statement (the batch's only entry)."""
        async with self._one_at_a_time:
            await self._statement(arrival, frame, verified)

    async def _statement(self, arrival: Arrival, frame: bytes, verified: VerifiedReceipts) -> None:
        batch = verified.batch
        (entry,) = batch.entries
        issuer = batch.issuer
        ceiling = self._directory().ceiling(arrival.channel)
        if entry.classification > ceiling:
            # Labelled above the channel it came on: answered on that channel, it may say
            # nothing of the document (the hub quarantines an envelope that does this).
            await self._refuse(
                arrival,
                frame,
                entry,
                None,
                Refuse(
                    Reason.POLICY_ARRIVAL_CHANNEL,
                    f"a {entry.status.value} labelled {entry.classification.name} came on "
                    f"{arrival.channel}, whose ceiling is {ceiling.name}: send it on a channel "
                    "that carries its label",
                    disclose=False,
                ),
            )
            return
        document, delivery = await self._read(entry.msg_id, issuer)
        judgement = judge(entry, issuer, document, delivery)
        log.info(
            "flow.statement",
            status=entry.status.value,
            msg_id=None if entry.msg_id is None else msg_id_text(entry.msg_id),
            org=issuer,
            channel=arrival.channel,
            judgement=type(judgement).__name__.lower(),
        )
        match judgement:
            case Refuse():
                await self._refuse(arrival, frame, entry, document, judgement)
            case Forward():
                await self._forward(frame, verified, judgement)
            case Recall():
                assert document is not None  # noqa: S101 - judge recalls only a known document
                await self._recall(arrival, frame, verified, entry, document, first=judgement.first)

    # ------------------------------------------------------------------ reading

    async def _read(
        self, msg_id: bytes | None, issuer: str
    ) -> tuple[Document | None, DeliveryState | None]:
        if msg_id is None:
            return None, None
        m, d, r = t.messages.c, t.deliveries.c, t.receipts.c
        rows = await self._store.read(
            select(m.sender, m.arrival_channel, m.classification, m.frame_sha256, m.doc_type).where(
                m.msg_id == msg_id
            )
        )
        if not rows:
            return None, None
        sender, channel, rank, digest, doc_type = rows[0]
        recalled = await self._store.read(
            select(r.id).where(r.msg_id == msg_id, r.status == ReceiptStatus.RECALL.value).limit(1)
        )
        states = await self._store.read(
            select(d.state).where(d.msg_id == msg_id, d.recipient == issuer)
        )
        ranks = {c.rank: c for c in Classification}
        document = Document(
            sender, channel, ranks[int(rank)], bytes(digest), bool(recalled), DocType[doc_type]
        )
        return document, DeliveryState(states[0][0]) if states else None

    async def _recipients(self, msg_id: bytes) -> list[Recipient]:
        d = t.deliveries.c
        rows = await self._store.read(
            select(d.recipient, d.channel, d.state).where(d.msg_id == msg_id)
        )
        return [Recipient(r, c, DeliveryState(s)) for r, c, s in rows]

    # ------------------------------------------------------------------ judgements

    async def _refuse(
        self,
        arrival: Arrival,
        frame: bytes,
        entry: ReceiptEntry,
        document: Document | None,
        refusal: Refuse,
    ) -> None:
        """REFUSED, unnumbered, to the issuer; its subject is the refused statement's
        frame (the issuer may not know the document's), its label the document's or, for
        a document the hub does not hold, the ceiling of the channel it came on."""
        if document is not None and refusal.disclose:
            label = document.classification
        else:
            label = self._directory().ceiling(arrival.channel)
        log.warning(
            "flow.refused",
            status=entry.status.value,
            msg_id=None if entry.msg_id is None else msg_id_text(entry.msg_id),
            org=arrival.org,
            channel=arrival.channel,
            reason=refusal.reason.value,
            detail=refusal.detail,
        )
        sha = hashlib.sha256(frame).digest()
        refused = {
            "status": entry.status.value,
            "reason": refusal.reason.value,
            "batch_sha256": sha.hex(),
        }
        # in the ledger like a REJECTED (wire-format 12.4): the REFUSED's subject is its batch
        await self._store.submit(
            AppendAudit(
                [AuditEvent("flow.refused", self._clock(), entry.msg_id, arrival.org, refused)]
            )
        )
        self._issuer.issue(
            arrival.org,
            arrival.channel,
            ReceiptEntry(
                msg_id=entry.msg_id,
                recipient=None if entry.status.issued_by_sender else arrival.org,
                status=ReceiptStatus.REFUSED,
                at=self._clock(),
                subject=sha,
                classification=label,
                reason=refusal.reason.value,
                detail=refusal.detail,
                retriable=False,
            ),
        )

    def _record(
        self, frame: bytes, verified: VerifiedReceipts, forward: tuple[str, str] | None
    ) -> RecordReceipts:
        batch = verified.batch
        (entry,) = batch.entries
        now = self._clock()
        sha = hashlib.sha256(frame).digest()
        row = {
            "msg_id": entry.msg_id,
            "recipient": entry.recipient,
            "status": entry.status.value,
            "issuer": batch.issuer,
            "at": entry.at,
            "subject": entry.subject,
            "batch_sha256": sha,
        }
        audit = AuditEvent(
            f"receipt.{entry.status.value.lower()}",
            now,
            entry.msg_id,
            entry.recipient or batch.issuer,
            {"issuer": batch.issuer, "batch_sha256": sha.hex(), "noted": entry.note is not None},
        )
        return RecordReceipts(sha, batch.issuer, frame, now, [row], [audit], forward)

    async def _forward(self, frame: bytes, verified: VerifiedReceipts, to: Forward) -> None:
        dest = self._directory().next_hop(to.sender)  # the sender, or the hub it is behind
        op = self._record(frame, verified, (dest, to.channel))
        ops: list[Any] = [op]
        (entry,) = verified.batch.entries
        if to.handling is not None and entry.msg_id is not None:
            ops.append(
                SetHandling(entry.msg_id, verified.batch.issuer, to.handling, op.received_at)
            )
        seq = (await self._store.submit_many(ops))[0]
        self._issuer.send_numbered(dest, to.channel, frame, seq)

    async def _recall(
        self,
        arrival: Arrival,
        frame: bytes,
        verified: VerifiedReceipts,
        entry: ReceiptEntry,
        document: Document,
        *,
        first: bool,
    ) -> None:
        assert entry.msg_id is not None  # noqa: S101 - judged: the document is known
        msg_id = entry.msg_id
        recipients = await self._recipients(msg_id)
        if first:
            # each recipient is told, through the hub it is behind (once per hub and channel)
            hop = self._directory().next_hop
            told = list(dict.fromkeys((hop(r.org), r.channel) for r in recipients))
            ops: list[Any] = [
                self._record(frame, verified, None),
                StopDeliveries(msg_id, self._clock()),
                *(QueueReceipts(dest, channel, frame, self._clock()) for dest, channel in told),
                Announce([msg_id], recalled=True),  # replicas: drop what they deliver of it
            ]
            results = await self._store.submit_many(ops)
            stopped: list[str] = results[1]
            self._dispatcher.forget(msg_id, stopped)
            for (dest, channel), seq in zip(told, results[2 : 2 + len(told)], strict=True):
                self._issuer.send_numbered(dest, channel, frame, seq)
            log.info(
                "flow.recalled",
                msg_id=msg_id_text(msg_id),
                sender=document.sender,
                recipients=len(recipients),
                stopped=len(stopped),
            )
            recipients = await self._recipients(msg_id)  # as the commit left them
        await self._answer_recall(arrival, entry, document, recipients)

    async def _answer_recall(
        self,
        arrival: Arrival,
        entry: ReceiptEntry,
        document: Document,
        recipients: Sequence[Recipient],
    ) -> None:
        """RECALLED for the document, and for each recipient it never reached: numbered,
        to the sender on the channel the recall came on."""
        now = self._clock()

        def recalled(recipient: str | None) -> ReceiptEntry:
            return ReceiptEntry(
                msg_id=entry.msg_id,
                recipient=recipient,
                status=ReceiptStatus.RECALLED,
                at=now,
                subject=document.frame_sha256,
                classification=document.classification,
                reason=None,
                detail=None,
                retriable=False,
            )

        entries = [recalled(None)] + [
            recalled(r.org) for r in recipients if r.state is DeliveryState.RECALLED
        ]
        for frame in self._issuer.sign(entries):
            op = QueueReceipts(arrival.org, arrival.channel, frame, now)
            seq = await self._store.submit(op)
            self._issuer.send_numbered(arrival.org, arrival.channel, frame, seq)
