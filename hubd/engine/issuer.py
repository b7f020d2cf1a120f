"""Receipts the hub sends: its own signed batches, and recipients' batches it forwards.

ACCEPTED and REJECTED answer an envelope the sender is still holding; if one is lost the
sender resends the envelope and gets the same answer again (the store knows the msg_id),
so they are published without being stored. DELIVERED and SIGNED_FOR (the recipient's own
signed batches, forwarded unchanged; ingest numbers them in the commit that records them)
and the hub's EXPIRED and DEAD are news the sender cannot ask for: they go through the
durable, numbered receipt outbox, and a spoke's
``hello`` says which number it last holds so that the rest is sent again. EXPIRED and DEAD
are numbered in the commit that moves their deliveries to that state (the dispatcher's
flush takes them: :meth:`ReceiptIssuer.take_outcomes`): a crash, or a replica that lost
its lease in between, cannot tell a sender EXPIRED for a delivery the store still holds
as awaiting (and another replica then delivers), nor store EXPIRED without telling.

One signature per flush and destination: entries for the same (organisation, channel)
gathered over a few milliseconds share a batch.

A hello costs a store read only when the spoke is behind: the store keeps the last number
it committed per (organisation, channel) in memory (loaded in one query at open), and a
hello naming that number has nothing to be sent again. Why that is exact while batches are
being numbered: a batch's number becomes visible (:meth:`Store.numbered`) when its commit
is durable, and the batch is handed to the connection only after that. A batch whose
commit is still under way when the hello is checked is handed over after the hello was
read, to a spoke that subscribed before it said hello; one already visible is read again
(a repeat the spoke drops). Hellos that are behind and arrive together share one read.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import structlog
from sqlalchemy import and_, or_, select

from hubd.core.states import DeliveryState
from hubd.engine.dispatch import Publish
from hubd.engine.jobs import Job, OutcomeBatch
from hubd.store import tables as t
from hubd.store.db import Store
from hubd.store.writes import AdvanceNumbering, QueueReceipts
from schemas import transport
from schemas.errors import StoreError
from schemas.keys import SigningKey
from schemas.receipts import MAX_ENTRIES, ReceiptEntry, ReceiptStatus, sign_receipts
from schemas.untrusted import untrusted_text

log = structlog.get_logger("hubd.receipts")

# hubd.engine.dispatch.Publish: hands the payload to the connection at once, in call order. The
# ordering is what lets an ACCEPTED go out before a forwarded DELIVERED without holding
# anything across an await.
Clock = Callable[[], int]
# Spokes asking for a replay served by one read. Each adds three terms to one OR: SQLite's
# expression depth (1000) and parameter limits stay far away.
REPLAY_READ_MAX: Final = 200


@dataclass(slots=True)
class _Asked:
    """A behind spoke's replay, waiting for the next shared read; the future gets a count."""

    dest: str
    channel: str
    after: int
    done: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ReceiptIssuer:
    def __init__(
        self,
        hub_id: str,
        key: SigningKey,
        store: Store,
        send: Publish,
        clock: Clock,
        *,
        delay: float = 0.003,
    ) -> None:
        # Where a sender hears back: its own spoke, or the hub it is reached through (set
        # by the hub from its directory: docs/architecture.md, "Hubs under hubs").
        self.hop: Callable[[str], str] = str
        self._hub_id, self._key, self._store, self._send, self._clock = (
            hub_id,
            key,
            store,
            send,
            clock,
        )
        self._delay = delay
        self._pending: dict[tuple[str, str], list[ReceiptEntry]] = defaultdict(list)
        # EXPIRED and DEAD, until the dispatcher's next flush takes them (take_outcomes)
        self._outcomes: dict[tuple[str, str], list[tuple[str, ReceiptEntry]]] = defaultdict(list)
        self._wakeup = asyncio.Event()
        self.sent_batches = 0
        self._asked: list[_Asked] = []  # replays waiting for the next shared read
        self._reading = False  # a replay's caller is reading for everyone asked so far

    def set_key(self, key: SigningKey) -> None:
        self._key = key

    def outcome(self, job: Job, state: DeliveryState, at: int) -> None:
        """A delivery EXPIRED or DEAD (the dispatcher's outcome): tell the sender, durably,
        on the channel it sent on; numbered in the dispatcher's commit of that state
        (:meth:`take_outcomes`), so a crash or a lost lease keeps both or neither."""
        status = ReceiptStatus.EXPIRED if state is DeliveryState.EXPIRED else ReceiptStatus.DEAD
        gave_up = status is ReceiptStatus.DEAD
        entry = ReceiptEntry(
            msg_id=job.msg_id,
            recipient=job.recipient,
            status=status,
            at=at,
            subject=hashlib.sha256(job.payload.frame).digest(),
            classification=job.classification,
            reason="delivery.gave_up" if gave_up else None,
            detail=(
                f"{job.recipient} did not confirm after {job.attempts} attempts; an operator "
                "can redeliver it with 'hubctl redeliver'"
                if gave_up
                else None
            ),
            retriable=False,
        )
        self._outcomes[(self.hop(job.sender), job.origin)].append((job.recipient, entry))

    def take_outcomes(self) -> list[OutcomeBatch]:
        """The outcomes gathered since the last call, signed (one batch per sender and
        channel, as :meth:`flush` signs), for the dispatcher to number in the commit that
        moves their deliveries to EXPIRED or DEAD (hubd.engine.dispatch.OutcomeWrites)."""
        taken, self._outcomes = self._outcomes, defaultdict(list)
        now = self._clock()
        batches = []
        for (dest, channel), items in taken.items():
            for start in range(0, len(items), MAX_ENTRIES):
                part = items[start : start + MAX_ENTRIES]
                frame = sign_receipts(self._hub_id, self._key, [e for _, e in part], at=now)
                told = tuple(sorted({r for r, _ in part}))  # fenced as their owner
                batches.append(OutcomeBatch(QueueReceipts(dest, channel, frame, now, told), part))
        return batches

    def give_back(self, batches: Sequence[OutcomeBatch], keep: Callable[[str], bool]) -> None:
        """Batches whose commit failed: their entries are signed again with the next ones,
        but for recipients this hub no longer delivers to (another replica's now, which
        tells the sender what becomes of them)."""
        for batch in batches:
            key = (batch.op.dest, batch.op.channel)
            self._outcomes[key][:0] = [(r, e) for r, e in batch.entries if keep(r)]

    def drop_outcomes(self, gone: Callable[[str], bool]) -> None:
        """Forget the outcomes for recipients another replica owns now: it finds their
        deliveries awaiting in the store and closes them itself."""
        for key, items in list(self._outcomes.items()):
            kept = [(r, e) for r, e in items if not gone(r)]
            if kept:
                self._outcomes[key] = kept
            else:
                del self._outcomes[key]

    def outcome_stored(self, batch: OutcomeBatch, seq: int) -> None:
        """Numbered and durable with its deliveries' states: to the sender."""
        self.send_numbered(batch.op.dest, batch.op.channel, batch.op.frame, seq)

    def issue(self, dest: str, channel: str, entry: ReceiptEntry) -> None:
        """Queue a hub-signed ACCEPTED or REJECTED for ``dest`` on ``channel``, published
        unnumbered (EXPIRED and DEAD go through :meth:`outcome`). Its detail may quote what
        a peer sent (a refused header's value): it goes out made safe
        (:func:`untrusted_text`), here, where every answer the hub signs passes."""
        if entry.detail is not None:
            safe = untrusted_text(entry.detail)
            if safe != entry.detail:
                entry = entry.model_copy(update={"detail": safe})
        self._pending[(dest, channel)].append(entry)
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            if not self._pending:
                if stop.is_set():
                    return
                self._wakeup.clear()
                waiter = asyncio.create_task(self._wakeup.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                continue
            await asyncio.sleep(self._delay)  # let a burst gather into one signature
            await self.flush()

    async def flush(self) -> None:
        """Sign what gathered and hand it to the connection, before anything awaits."""
        pending, self._pending = self._pending, defaultdict(list)
        now = self._clock()
        for (dest, channel), entries in pending.items():
            for frame in self._sign(entries, now):
                self._hand_over(dest, channel, frame, 0)

    def send_numbered(self, dest: str, channel: str, frame: bytes, seq: int) -> None:
        """Publish a batch the store has already numbered for ``dest``.

        An ACCEPTED still gathering for ``dest`` goes first: a sender must not hear that a
        message was DELIVERED before it hears that the hub ACCEPTED it (on a busy loop the
        gathering delay can outlast a whole delivery round trip). Both are handed to the
        connection before anything awaits, so they leave in that order.
        """
        now = self._clock()
        for key in [k for k in self._pending if k[0] == dest]:
            for earlier in self._sign(self._pending.pop(key), now):
                self._hand_over(key[0], key[1], earlier, 0)
        self._hand_over(dest, channel, frame, seq)

    def sign(self, entries: Sequence[ReceiptEntry]) -> list[bytes]:
        """Hub-signed batches of ``entries`` (all for one destination), for a caller that
        numbers them in a commit of its own (hubd.engine.flows)."""
        return self._sign(list(entries), self._clock())

    def _sign(self, entries: list[ReceiptEntry], now: int) -> list[bytes]:
        return [
            sign_receipts(self._hub_id, self._key, entries[start : start + MAX_ENTRIES], at=now)
            for start in range(0, len(entries), MAX_ENTRIES)
        ]

    def _hand_over(self, dest: str, channel: str, frame: bytes, seq: int) -> asyncio.Future[bool]:
        acked = self._send(channel, dest, transport.encode(transport.ReceiptsMsg(frame, seq)))
        acked.add_done_callback(self._count)
        return acked

    def _count(self, acked: asyncio.Future[bool]) -> None:
        if not acked.cancelled() and acked.exception() is None and acked.result():
            self.sent_batches += 1

    def owes(self, dest: str, channel: str, after: int) -> bool:
        """Whether a hello from ``dest`` naming ``after`` needs :meth:`replay`: the store
        numbered batches after it, or never wrote ``after`` (a store restored from a backup).
        In memory: a spoke that holds every batch costs nothing more."""
        if self._store.shared:  # other replicas number too: the store says
            return True
        return after != self._store.numbered(dest, channel)

    async def replay(self, dest: str, channel: str, after: int) -> int:
        """Send ``dest`` every numbered batch after ``after`` on ``channel``; returns how many.

        A spoke that holds a number the store never wrote (a store restored from a backup)
        would take the next batches, numbered again from the store's last, for repeats: the
        numbering continues after the spoke's number instead. Nothing is read when the store
        numbered nothing after ``after``; replays asked for while a read runs share the next.
        """
        held = await self._store.numbered_now(dest, channel)
        if after > held and await self._store.submit(
            AdvanceNumbering(dest, channel, after, self._clock())
        ):
            log.warning(
                "receipts.numbering_advanced",
                org=dest,
                channel=channel,
                store_had=held,
                spoke_holds=after,
            )
        if after >= held:
            return 0  # what is numbered from now on is handed over live (module docstring)
        asked = _Asked(dest, channel, after)
        self._asked.append(asked)
        if not self._reading:
            self._reading = True
            try:
                await asyncio.sleep(0)  # the other replays this pass started ask first
                while self._asked:
                    batch = self._asked[:REPLAY_READ_MAX]
                    del self._asked[:REPLAY_READ_MAX]
                    await self._read_for(batch)
            except BaseException:
                if asked.done.done():
                    asked.done.exception()  # seen: this caller is cancelled, not waiting
                raise
            finally:
                self._reading = False
                self._abandon(self._asked)  # the reader was cancelled (the hub stops)
                self._asked = []
        return await asked.done

    async def _read_for(self, batch: list[_Asked]) -> None:
        """One read for every replay in ``batch``; each is handed its batches in order."""
        outbox = t.receipt_outbox.c
        wanted = or_(
            *(
                and_(outbox.dest == a.dest, outbox.channel == a.channel, outbox.seq > a.after)
                for a in batch
            )
        )
        try:
            rows = await self._store.read(
                select(outbox.dest, outbox.channel, outbox.seq, outbox.frame)
                .where(wanted)
                .order_by(outbox.dest, outbox.channel, outbox.seq)
            )
        except Exception as exc:  # noqa: BLE001 - handed on to every caller sharing the read
            self._abandon(batch, exc)
            return
        except BaseException:
            self._abandon(batch)
            raise
        found: dict[tuple[str, str], list[tuple[int, bytes]]] = defaultdict(list)
        for dest, channel, seq, frame in rows:
            found[(dest, channel)].append((int(seq), bytes(frame)))
        for a in batch:
            mine = [
                (seq, frame) for seq, frame in found.get((a.dest, a.channel), ()) if seq > a.after
            ]
            for seq, frame in mine:  # handed over in order; not waited for
                self._hand_over(a.dest, a.channel, frame, seq)
            if mine:
                log.info(
                    "receipts.replayed",
                    org=a.dest,
                    channel=a.channel,
                    after=a.after,
                    count=len(mine),
                )
            if not a.done.done():
                a.done.set_result(len(mine))

    @staticmethod
    def _abandon(batch: list[_Asked], exc: Exception | None = None) -> None:
        """Replays that will not be read: their callers hear why (a store error, or the
        read cut short), never wait for ever."""
        for a in batch:
            if a.done.done():
                continue
            a.done.set_exception(
                exc or StoreError("the replay's read was cut short", retriable=True)
            )
