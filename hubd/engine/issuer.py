"""Receipts the hub sends: its own signed batches, and recipients' batches it forwards.

ACCEPTED and REJECTED answer an envelope the sender is still holding; if one is lost the
sender resends the envelope and gets the same answer again (the store knows the msg_id),
so they are published without being stored. DELIVERED and SIGNED_FOR (the recipient's own
signed batches, forwarded unchanged; ingest numbers them in the commit that records them)
and the hub's EXPIRED and DEAD are news the sender cannot ask for: they go through the
durable, numbered receipt outbox, and a spoke's
``hello`` says which number it last holds so that the rest is sent again.

One signature per flush and destination: entries for the same (organisation, channel)
gathered over a few milliseconds share a batch.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

import structlog
from sqlalchemy import select

from hubd.engine.dispatch import Publish
from hubd.store import tables as t
from hubd.store.db import Store
from hubd.store.writes import AdvanceNumbering, QueueReceipts
from schemas import transport
from schemas.errors import StoreError
from schemas.keys import SigningKey
from schemas.receipts import MAX_ENTRIES, ReceiptEntry, sign_receipts
from schemas.untrusted import untrusted_text

log = structlog.get_logger("hubd.receipts")

# hubd.engine.dispatch.Publish: hands the payload to the connection at once, in call order. The
# ordering is what lets an ACCEPTED go out before a forwarded DELIVERED without holding
# anything across an await.
Clock = Callable[[], int]


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
        self._hub_id, self._key, self._store, self._send, self._clock = (
            hub_id,
            key,
            store,
            send,
            clock,
        )
        self._delay = delay
        self._retry_after = 1.0  # seconds before a flush the store refused is tried again
        self._pending: dict[tuple[str, str, bool], list[ReceiptEntry]] = defaultdict(list)
        self._wakeup = asyncio.Event()
        self.sent_batches = 0

    def set_key(self, key: SigningKey) -> None:
        self._key = key

    def issue(self, dest: str, channel: str, entry: ReceiptEntry, *, durable: bool) -> None:
        """Queue a hub-signed entry for ``dest`` on ``channel``. Its detail may quote what a
        peer sent (a refused header's value): it goes out made safe (:func:`untrusted_text`),
        here, where every receipt the hub signs passes."""
        if entry.detail is not None:
            safe = untrusted_text(entry.detail)
            if safe != entry.detail:
                entry = entry.model_copy(update={"detail": safe})
        self._pending[(dest, channel, durable)].append(entry)
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
        pending, self._pending = self._pending, defaultdict(list)
        now = self._clock()
        durable: list[tuple[str, str, bytes]] = []
        for (dest, channel, keep), entries in pending.items():
            for frame in self._sign(entries, now):
                if keep:
                    durable.append((dest, channel, frame))
                else:  # handed to the connection now, before anything awaits
                    self._hand_over(dest, channel, frame, 0)
        if not durable:
            return
        try:
            numbers = await self._store.submit_many(
                [QueueReceipts(d, c, f, now) for d, c, f in durable]
            )
            for (dest, channel, frame), seq in zip(durable, numbers, strict=True):
                self._hand_over(dest, channel, frame, seq)
        except StoreError as exc:
            # EXPIRED and DEAD exist nowhere else: keep them for the next flush, ahead of
            # anything queued since, rather than lose them or stop the hub.
            for (dest, channel, keep), entries in pending.items():
                if keep:
                    self._pending[(dest, channel, keep)][:0] = entries
            log.error("receipts.not_stored", error=str(exc), retriable=exc.retriable)
            self._wakeup.set()
            await asyncio.sleep(self._retry_after)

    def send_numbered(self, dest: str, channel: str, frame: bytes, seq: int) -> None:
        """Publish a batch the store has already numbered for ``dest``.

        An ACCEPTED still gathering for ``dest`` goes first: a sender must not hear that a
        message was DELIVERED before it hears that the hub ACCEPTED it (on a busy loop the
        gathering delay can outlast a whole delivery round trip). Both are handed to the
        connection before anything awaits, so they leave in that order.
        """
        now = self._clock()
        for key in [k for k in self._pending if k[0] == dest and not k[2]]:
            for earlier in self._sign(self._pending.pop(key), now):
                self._hand_over(key[0], key[1], earlier, 0)
        self._hand_over(dest, channel, frame, seq)

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

    async def replay(self, dest: str, channel: str, after: int) -> int:
        """Send ``dest`` every numbered batch after ``after`` on ``channel``; returns how many.

        A spoke that holds a number the store never wrote (a store restored from a backup)
        would take the next batches, numbered again from the store's last, for repeats: the
        numbering continues after the spoke's number instead.
        """
        held = self._store.numbered(dest, channel)
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
        rows = await self._store.read(
            select(t.receipt_outbox.c.seq, t.receipt_outbox.c.frame)
            .where(
                t.receipt_outbox.c.dest == dest,
                t.receipt_outbox.c.channel == channel,
                t.receipt_outbox.c.seq > after,
            )
            .order_by(t.receipt_outbox.c.seq)
        )
        for seq, frame in rows:  # handed over in order; not waited for (see Ingest._send_resume)
            self._hand_over(dest, channel, bytes(frame), int(seq))
        if rows:
            log.info("receipts.replayed", org=dest, channel=channel, after=after, count=len(rows))
        return len(rows)
