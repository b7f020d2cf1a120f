"""Receipt batches in: verified, planned by :func:`hubd.core.receipts.plan_receipts`, stored
with the delivery states they move on in one commit, then forwarded to the sender. A flow
statement (a recall, a return: one entry alone in its batch) goes to
:class:`hubd.engine.flows.FlowDesk` instead.

Most batches speak of deliveries the dispatcher holds and are handled in the pass that
read them; one that speaks of messages only the store knows (a 签收 days later, or after
a restart) looks them up in a task of its own.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy import select

from hubd.core.hops import FORWARDED, HopMove, HopPlan, plan_hop_answers
from hubd.core.receipts import Confirm, NeedOrigins, Origin, ReceiptPlan, plan_receipts
from hubd.core.states import DeliveryState, Event
from hubd.engine.answers import flag_revoked
from hubd.engine.arrival import Arrival, Slow, Step
from hubd.engine.dispatch import Dispatcher
from hubd.engine.flows import FlowDesk
from hubd.engine.hopstream import HopStreams
from hubd.engine.issuer import ReceiptIssuer
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.db import Store
from hubd.store.writes import DeliveryUpdate, RecordReceipts
from schemas import transport
from schemas.directory import Directory
from schemas.errors import PeerError, Reason, SignatureError, XchgError
from schemas.ids import msg_id_text
from schemas.labels import Classification
from schemas.receipts import VerifiedReceipts, verify_receipts

log = structlog.get_logger("hubd.ingest")
NEVER_READABLE = ("schema.", "decode.")  # a neighbour's numbered batch no directory can read
security = structlog.get_logger("hubd.security")


class ReceiptIntake:
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
        self.streams: HopStreams | None = None  # neighbour hubs' numbered batches (the hub sets it)
        self._flows = FlowDesk(
            directory=directory, store=store, dispatcher=dispatcher, issuer=issuer, clock=clock
        )

    def _verified(
        self, arrival: Arrival, message: transport.ReceiptsMsg
    ) -> VerifiedReceipts | PeerError | None:
        """The batch verified; or why not (None: it came where it may not)."""
        directory = self._directory()
        relayed = directory.relaying(arrival.org)
        if not relayed and not directory.has_topic(arrival.org):
            # an organisation reached through another hub has no topic here (the ACL
            # should have stopped it): its receipts come through that hub
            log.warning("receipt.refused", org=arrival.org, reason=Reason.FED_WRONG_HOP.value)
            return None
        try:
            verified = verify_receipts(
                message.frame, directory, expected_issuer=None if relayed else arrival.org
            )
            if relayed:
                check_relayed(verified.batch.issuer, arrival.org, directory)
        except PeerError as exc:
            log.warning(
                "receipt.refused",
                org=arrival.org,
                channel=arrival.channel,
                reason=exc.reason.value,
                detail=exc.message,
            )
            flag_revoked(arrival, exc, "receipt batch")
            return exc
        return verified

    def now(self, arrival: Arrival, message: transport.ReceiptsMsg) -> Step:
        """A receipt batch about deliveries the dispatcher holds; slow work if it speaks of
        messages only the store knows."""
        streams = self.streams
        numbered = (
            streams is not None and message.seq > 0 and self._directory().relaying(arrival.org)
        )
        if numbered and streams and streams.known(arrival.org, arrival.channel, message.seq):
            return None  # sent again: recorded already (nothing verified twice)
        verified = self._verified(arrival, message)
        if not isinstance(verified, VerifiedReceipts):
            unreadable = isinstance(verified, PeerError) and verified.reason.value.startswith(
                NEVER_READABLE
            )
            if numbered and streams and unreadable:
                # no directory makes it readable: counted, or it would be asked for again
                # and again (one a newer directory may verify waits, as at a spoke)
                streams.done(arrival.org, arrival.channel, message.seq)
            return None
        if numbered:
            return Slow(functools.partial(self._numbered, arrival, message, verified))
        return self._step(arrival, message, verified)

    async def _numbered(
        self, arrival: Arrival, message: transport.ReceiptsMsg, verified: VerifiedReceipts
    ) -> None:
        """A batch a neighbour hub numbered for this one: recorded once (by its number, or
        by its bytes when sent again before the cursor was written), then counted."""
        streams = self.streams
        assert streams is not None  # noqa: S101 - only called with one
        sha = hashlib.sha256(message.frame).digest()
        if not streams.begin(sha):
            return  # the same batch is being recorded now
        try:
            if not await streams.recorded_before(sha):
                step = self._step(arrival, message, verified)
                if isinstance(step, Slow):
                    await step.work()
                elif step is not None:
                    op, then = step
                    try:
                        result = await self._store.submit(op)
                    except XchgError:
                        if isinstance(op, RecordReceipts):
                            self.unsettle(op)
                        raise
                    then(result)
        finally:
            streams.end(sha)
        streams.done(arrival.org, arrival.channel, message.seq)

    def _step(
        self, arrival: Arrival, message: transport.ReceiptsMsg, verified: VerifiedReceipts
    ) -> Step:
        if self._directory().is_hub(verified.batch.issuer):
            return self._from_hub(arrival, message, verified)
        entries = verified.batch.entries
        if entries[0].status.flow:  # a flow statement travels alone (verify_receipts)
            return Slow(functools.partial(self._flows.statement, arrival, message.frame, verified))
        hop = self._directory().next_hop
        origins = {  # from the deliveries in memory ...
            e.msg_id: Origin(hop(job.sender), job.origin, job.classification)
            for e in entries
            if e.msg_id is not None
            and e.recipient is not None
            and (job := self._dispatcher.job(e.msg_id, e.recipient)) is not None
        }
        plan = plan_receipts(entries, origins, looked_up=False)
        if isinstance(plan, NeedOrigins):  # ... and the store for the others
            missing = plan.msg_ids
            return Slow(
                functools.partial(self._looked_up, arrival, message, verified, origins, missing)
            )
        op = self._record(arrival, message, verified, plan)
        if op is None:
            return None
        return op, functools.partial(self._recorded, arrival, message, plan, op)

    async def _looked_up(
        self,
        arrival: Arrival,
        message: transport.ReceiptsMsg,
        verified: VerifiedReceipts,
        origins: dict[bytes, Origin],
        missing: Sequence[bytes],
    ) -> None:
        origins.update(await self._origins(missing))
        plan = plan_receipts(verified.batch.entries, origins, looked_up=True)
        assert isinstance(plan, ReceiptPlan)  # noqa: S101 - looked up: nothing more to ask
        op = self._record(arrival, message, verified, plan)
        if op is None:
            return
        try:
            seq = await self._store.submit(op)
        except XchgError:
            self.unsettle(op)
            raise
        self._recorded(arrival, message, plan, op, seq)

    def unsettle(self, op: RecordReceipts) -> None:
        """A receipt batch was not stored: its deliveries go on as before (retried, and
        free to expire or be given up)."""
        for update in op.updates:
            self._dispatcher.unsettled(update.msg_id, update.recipient)

    def _record(
        self,
        arrival: Arrival,
        message: transport.ReceiptsMsg,
        verified: VerifiedReceipts,
        plan: ReceiptPlan,
    ) -> RecordReceipts | None:
        """The rows, audit entries and delivery states the plan yields (None: nothing)."""
        for msg_id in plan.unknown:
            log.warning("receipt.unknown_message", org=arrival.org, msg_id=msg_id_text(msg_id))
        for refused in plan.downgraded:
            security.error(
                "receipt.downgraded",
                org=arrival.org,
                msg_id=msg_id_text(refused.msg_id),
                label=refused.origin.classification.name,
                claimed=refused.entry.classification.name,
            )
        if not plan.records:
            return None
        return self._op(message, verified, plan.confirm, plan.forward)

    def _op(
        self,
        message: transport.ReceiptsMsg,
        verified: VerifiedReceipts,
        moves: Sequence[Confirm | HopMove],
        forward: tuple[str, str] | None,
    ) -> RecordReceipts:
        """The receipt rows, audit entries and delivery states of ``moves``, and the
        numbered copy for ``forward`` (the sender's next hop), as one operation."""
        batch = verified.batch
        now = self._clock()
        batch_sha256 = hashlib.sha256(message.frame).digest()
        rows: list[dict[str, object]] = []
        audit: list[AuditEvent] = []
        updates: list[DeliveryUpdate] = []
        for move in moves:
            entry = move.entry
            updates.append(self._dispatcher.settle(move.msg_id, move.recipient, move.event, now))
            rows.append(
                {
                    "msg_id": move.msg_id,
                    "recipient": move.recipient,
                    "status": entry.status.value,
                    "issuer": batch.issuer,
                    "at": entry.at,
                    "subject": entry.subject,
                    "batch_sha256": batch_sha256,
                }
            )
            audit.append(
                AuditEvent(
                    f"receipt.{entry.status.value.lower()}",
                    now,
                    move.msg_id,
                    move.recipient,
                    {"issuer": batch.issuer, "batch_sha256": batch_sha256.hex()},
                )
            )
        # The rows, the delivery states and the numbered copy for the sender are one commit:
        # a crash cannot keep one without the others, so a sender's hello can always have it
        # sent again.
        return RecordReceipts(
            batch_sha256, batch.issuer, message.frame, now, rows, audit, forward, updates
        )

    # ------------------------------------------------------------ another hub's answers

    def _from_hub(
        self, arrival: Arrival, message: transport.ReceiptsMsg, verified: VerifiedReceipts
    ) -> Step:
        """A batch another hub signed, relayed by a neighbour (docs/architecture.md, "Hubs
        under hubs"): its ACCEPTED hands this hub's deliveries behind it over (RELAYED), its
        REJECTED refuses them; a far hub's EXPIRED or DEAD closes one handed over long ago.
        A refusal or an outcome goes on, unchanged, to the document's sender."""
        dispatcher, peer, directory = self._dispatcher, arrival.org, self._directory()
        issuer = verified.batch.issuer

        def mine(recipient: str) -> bool:  # behind the neighbour, and the far signer
            if directory.next_hop(recipient) != peer:
                return False
            return issuer == peer or directory.behind(issuer, recipient)

        plan = plan_hop_answers(
            verified.batch.entries,
            issuer=issuer,
            peer=peer,
            mine=mine,
            behind=lambda m: dispatcher.behind(m, peer),
            framed=lambda subject: dispatcher.framed(subject, peer),
        )
        moves = plan.moves
        if plan.far:  # handed over long ago: the store knows whom
            return Slow(functools.partial(self._far_refused, message, verified, plan, mine))
        if not moves:
            return None  # nothing of it is awaited here any more (a repeated answer)
        if any(m.entry.status in FORWARDED for m in moves):
            return Slow(functools.partial(self._hop_forwarded, message, verified, moves))
        op = self._op(message, verified, moves, None)
        return op, functools.partial(self._hop_recorded, moves, op)

    async def _far_refused(
        self,
        message: transport.ReceiptsMsg,
        verified: VerifiedReceipts,
        plan: HopPlan,
        mine: Callable[[str], bool],
    ) -> None:
        """A hub further on refused what this hub handed over: its deliveries behind that
        hub (RELAYED, or still awaited) are REFUSED, and the sender hears."""
        d = t.deliveries.c
        open_states = [
            s.value for s in (DeliveryState.PENDING, DeliveryState.SENT, DeliveryState.RELAYED)
        ]
        moves = list(plan.moves)
        for entry, msg_id in plan.far:
            rows = await self._store.read(
                select(d.recipient).where(d.msg_id == msg_id, d.state.in_(open_states))
            )
            moves += [HopMove(entry, msg_id, r, Event.REFUSE) for (r,) in rows if mine(r)]
        if moves:
            await self._hop_forwarded(message, verified, tuple(moves))

    async def _hop_forwarded(
        self, message: transport.ReceiptsMsg, verified: VerifiedReceipts, moves: tuple[HopMove, ...]
    ) -> None:
        origins = await self._origins(sorted({m.msg_id for m in moves}))
        kept = []
        for move in moves:
            origin = origins.get(move.msg_id)
            if origin is None or move.entry.classification < origin.classification:
                security.error(  # a hub may not speak of a document below its label
                    "receipt.downgraded",
                    org=verified.batch.issuer,
                    msg_id=msg_id_text(move.msg_id),
                    label=None if origin is None else origin.classification.name,
                    claimed=move.entry.classification.name,
                )
                continue
            kept.append(move)
        senders = {(o.sender, o.channel) for m in kept if (o := origins.get(m.msg_id))}
        if not kept:
            return
        forward = next(iter(senders)) if len(senders) == 1 else None
        op = self._op(message, verified, kept, forward)
        try:
            seq = await self._store.submit(op)
        except XchgError:
            self.unsettle(op)
            raise
        self._hop_recorded(kept, op, seq)

    def _hop_recorded(
        self, moves: Sequence[HopMove], op: RecordReceipts, seq: object = None
    ) -> None:
        for move in moves:
            self._dispatcher.confirmed(move.msg_id, move.recipient, move.event, op.received_at)
        if op.forward is not None and isinstance(seq, int):
            self._issuer.send_numbered(op.forward[0], op.forward[1], op.frame, seq)

    def _recorded(
        self,
        arrival: Arrival,
        message: transport.ReceiptsMsg,
        plan: ReceiptPlan,
        op: RecordReceipts,
        seq: object,
    ) -> None:
        """The batch is durable: close the deliveries and pass it on to the sender."""
        now = op.received_at
        for confirm in plan.confirm:
            self._dispatcher.confirmed(confirm.msg_id, confirm.recipient, confirm.event, now)
        if plan.forward is not None:
            assert isinstance(seq, int)  # noqa: S101 - the store numbers a forwarded batch
            self._issuer.send_numbered(plan.forward[0], plan.forward[1], message.frame, seq)
        else:
            log.warning("receipt.mixed_batch", org=arrival.org, senders=plan.senders)

    async def _origins(self, msg_ids: Sequence[bytes]) -> dict[bytes, Origin]:
        """Sender, arrival channel and label of each message, from the store."""
        if not msg_ids:
            return {}
        rows = await self._store.read(
            select(
                t.messages.c.msg_id,
                t.messages.c.sender,
                t.messages.c.arrival_channel,
                t.messages.c.classification,
            ).where(t.messages.c.msg_id.in_(msg_ids))
        )
        ranks = {c.rank: c for c in Classification}
        hop = self._directory().next_hop  # a sender elsewhere hears back through its hub
        return {bytes(r[0]): Origin(hop(r[1]), r[2], ranks[int(r[3])]) for r in rows}


def check_relayed(issuer: str, peer: str, directory: Directory) -> None:
    """A neighbour hub relays the receipts of the organisations and hubs behind it, and
    its own: nobody else's (a province cannot speak for an organisation outside it)."""
    behind = directory.next_hop(issuer) == peer
    hub = directory.hub(issuer)
    if issuer == peer or (behind and directory.org(issuer) is not None):
        return
    if hub is not None and hub.via == peer:
        return
    raise SignatureError(
        Reason.FED_OUTSIDE_PREFIX,
        f"hub {peer} relayed a receipt batch signed by {issuer}, which it does not serve",
    )
