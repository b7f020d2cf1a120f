"""The numbered receipt batches a neighbour hub sends this one (docs/architecture.md, "Hubs
under hubs").

A hub numbers the receipt batches it owes an organisation on a channel, and the spoke's
hello says the last it holds, so nothing is lost between them. Between two hubs the same
numbering runs both ways: the upstream numbers what it sends a member (the member's uplink
says hello like a spoke), and a member numbers what it sends its upstream. This keeps, per
neighbour and channel, the number up to which every batch is recorded (``hop_cursors``,
written after the batches it covers), the numbers recorded above it, and the batches being
recorded now: a batch sent again (after a hello, or a restart) is recorded once, by its
number or, when the cursor was not written yet, by its bytes. A gap is asked for at once,
with a hello naming the cursor.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

import structlog

from hubd.store.db import Store
from hubd.store.hopcursors import SetHopCursor, read_cursors, received_already
from schemas import transport
from schemas.errors import XchgError

log = structlog.get_logger("hubd.ingest")

Key = tuple[str, str]  # (peer hub, channel)
ASK_EVERY_MS = 1000  # a gap is asked for at most this often per neighbour and channel


class HopStreams:
    def __init__(
        self,
        store: Store,
        send: Callable[[str, str, bytes], asyncio.Future[bool]],
        clock: Callable[[], int],
    ) -> None:
        self._store, self._send, self._clock = store, send, clock
        self._held: dict[Key, int] = {}
        self._above: dict[Key, set[int]] = defaultdict(set)
        self._recording: set[bytes] = set()  # batches (by SHA-256) being recorded now
        self._asked: dict[Key, int] = {}
        self._writes: set[asyncio.Task[None]] = set()

    async def load(self) -> None:
        self._held = await self._store.read_sync(read_cursors)

    def held(self, peer: str, channel: str) -> int:
        """The number up to which every batch from ``peer`` on ``channel`` is recorded."""
        return self._held.get((peer, channel), 0)

    def known(self, peer: str, channel: str, seq: int) -> bool:
        """Whether batch ``seq`` is recorded already (a batch sent again)."""
        return seq <= self.held(peer, channel) or seq in self._above[(peer, channel)]

    def begin(self, sha256: bytes) -> bool:
        """Start recording a batch; False if the same bytes are being recorded now."""
        if sha256 in self._recording:
            return False
        self._recording.add(sha256)
        return True

    def end(self, sha256: bytes) -> None:
        self._recording.discard(sha256)

    async def recorded_before(self, sha256: bytes) -> bool:
        return await self._store.read_sync(received_already, sha256)

    def done(self, peer: str, channel: str, seq: int) -> None:
        """Batch ``seq`` is durable: move the cursor over every contiguous number, write
        it, and ask for what is missing below the numbers held above it."""
        key = (peer, channel)
        above = self._above[key]
        above.add(seq)
        held = start = self._held.get(key, 0)
        while held + 1 in above:
            held += 1
            above.discard(held)
        if held != start:
            self._held[key] = held
            self._write(SetHopCursor(peer, channel, held, self._clock()))
        if above:
            self.ask(peer, channel)

    def ask(self, peer: str, channel: str) -> None:
        """Say hello to ``peer`` naming the cursor: it sends again what follows."""
        key, now = (peer, channel), self._clock()
        if now - self._asked.get(key, -ASK_EVERY_MS) < ASK_EVERY_MS:
            return
        self._asked[key] = now
        log.info("hop.gap_asked", peer=peer, channel=channel, held=self.held(peer, channel))
        self._send(channel, peer, transport.encode(transport.HelloMsg(self.held(peer, channel))))

    def _write(self, op: SetHopCursor) -> None:
        async def write() -> None:
            try:
                await self._store.submit(op)
            except XchgError as exc:  # the batches are recorded: a replay finds them by bytes
                log.warning("hop.cursor_not_written", peer=op.peer, error=str(exc)[:200])

        task = asyncio.get_running_loop().create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
