"""A minimal spoke that speaks the wire protocol, to drive the hub in tests.

It is not the spoke agent (no folders): it seals with ``schemas``, publishes on its own up
topic, answers every envelope it receives with a signed DELIVERED after opening it, and
records what it saw so tests can count. It sends a 通知 unless told otherwise: the document
rules let a notice go any way, where a 函 goes only between organisations outside each
other's reporting line (letter_direction).

What a real spoke does to survive a hub that crashes is opt-in:

- :meth:`SimSpoke.start_reliable` keeps every envelope sent with :meth:`send_reliably` or
  :meth:`send_file` until the hub's ACCEPTED or REJECTED for it arrives, resends the
  unanswered ones periodically and after reconnecting, and reconnects by itself when the
  broker connection drops (the embedded broker dies with hubd).
- Large documents stream from a ciphertext file (:meth:`seal_file`, :meth:`send_file`):
  the head goes first, the hub answers ``resume`` with the offset it holds, and chunks
  follow from there, read from the file one at a time.
- With ``stream_dir`` set, chunked bodies arriving from the hub are written to a file
  there and opened streaming with :class:`~schemas.seal.Opener`; only digests are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import aiomqtt

from runtime.clock import now_ms
from runtime.tasks import cancel_and_wait
from schemas import topics, transport
from schemas.directory import Directory
from schemas.envelope import VerifiedEnvelope, verify_envelope
from schemas.errors import PeerError
from schemas.ids import msg_id_text
from schemas.keys import EncryptionKey, SigningKey
from schemas.labels import Classification, DocType, Precedence, SecrecyPeriod
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts, verify_receipts
from schemas.rules import assign_copy_numbers
from schemas.seal import (
    Draft,
    FileData,
    Opener,
    Sealed,
    describe_file,
    file_entry,
    open_bytes,
    seal_bytes,
    seal_streams,
)

ANSWERS = frozenset({ReceiptStatus.ACCEPTED, ReceiptStatus.REJECTED})
OPEN_BLOCK = 1 << 20  # bytes read per step when opening a staged body


SIGNATORY = "测试签发人"  # what every simulated document names unless told otherwise


def valid_marks(
    to: Sequence[str],
    cc: Sequence[str],
    classification: Classification,
    extra: dict[str, object],
) -> dict[str, object]:
    """``extra`` with the header marks the document rules ask for filled in where not
    given: a signatory (upward documents name one), and for a state secret a secrecy
    period and one copy number per recipient, as a real spoke assigns them. A test about
    a missing mark passes it explicitly (``signatory=None``, ``copy_numbers={}``)."""
    marks: dict[str, object] = {"signatory": SIGNATORY}
    if classification.is_state_secret:
        marks["secrecy_period"] = SecrecyPeriod.parse("1y")
        marks["copy_numbers"] = assign_copy_numbers((*to, *cc))
    return {**marks, **extra}


@dataclass
class Received:
    envelope: VerifiedEnvelope
    files: list[bytes]  # empty for bodies streamed to disk (``stream_dir``)
    at: int
    digests: list[bytes] = field(default_factory=list)  # SHA-256 of each file's plaintext
    sizes: list[int] = field(default_factory=list)  # plaintext size of each file


class Arrival(NamedTuple):
    """One thing seen on the down topic: ``env`` (inline body), ``head`` (chunked body
    follows), ``chunk`` (at ``offset``), or ``done`` (a body opened and verified)."""

    kind: str
    msg_id: bytes
    offset: int


@dataclass
class Outbound:
    """An envelope this spoke sent and holds until the hub answers ACCEPTED or REJECTED."""

    sealed: Sealed
    channel: str
    body: bytes | None = None  # in memory ...
    path: Path | None = None  # ... or the ciphertext on disk, streamed chunk by chunk
    sent_at: float = 0.0  # monotonic time of the last publish for it (head or chunk)
    publishes: int = 0  # how many times the envelope (or its head) went out
    next_offset: int = -1  # chunked: the next body offset to send; -1 = wait for resume
    pause_at: int | None = None  # chunked: stop sending at this offset (a sender that stalls)
    sent_offsets: list[int] = field(default_factory=list)  # chunked: every chunk sent
    last_jump: tuple[int, float] = (-1, 0.0)  # (offset, monotonic) of the last resume obeyed
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = None

    @property
    def msg_id(self) -> bytes:
        return self.sealed.header.msg_id

    @property
    def size(self) -> int:
        return self.sealed.body.size

    @property
    def chunked(self) -> bool:
        return self.path is not None or (
            self.body is not None and len(self.body) > transport.INLINE_BODY_MAX
        )

    @property
    def paused(self) -> bool:
        return self.pause_at is not None and self.next_offset >= self.pause_at

    def read(self, offset: int, limit: int) -> bytes:
        size = min(transport.CHUNK_BYTES, limit - offset)
        if self.body is not None:
            return self.body[offset : offset + size]
        assert self.path is not None
        with self.path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(size)


@dataclass
class Incoming:
    """A chunked body arriving from the hub, staged to a file."""

    envelope: VerifiedEnvelope
    channel: str
    path: Path
    handle: BinaryIO
    received: int = 0


@dataclass
class SimSpoke:
    org: str
    signing: SigningKey
    encryption: EncryptionKey
    directory: Directory
    host: str
    port: int
    channels: Sequence[str] = ("govnet",)
    auto_deliver: bool = True
    received: dict[bytes, Received] = field(default_factory=dict)
    deliveries: dict[bytes, int] = field(default_factory=lambda: defaultdict(int))
    receipts: dict[bytes | None, list[ReceiptEntry]] = field(
        default_factory=lambda: defaultdict(list)
    )
    refused: list[PeerError] = field(default_factory=list)
    last_seq: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _client: aiomqtt.Client | None = None
    _task: asyncio.Task[None] | None = None
    _chunks: dict[bytes, tuple[VerifiedEnvelope, bytearray, str]] = field(default_factory=dict)
    _changed: asyncio.Condition | None = None
    # --- additions: streaming, reliability, reconnection (all off unless asked for)
    stream_dir: Path | None = None  # stage chunked bodies from the hub here, open streaming
    outbox: dict[bytes, Outbound] = field(default_factory=dict)  # unanswered envelopes
    sent: dict[bytes, Sealed] = field(default_factory=dict)  # every reliable send, answered or not
    resumes: list[tuple[bytes, int]] = field(default_factory=list)  # (msg_id, offset) asked
    arrivals: list[Arrival] = field(default_factory=list)  # the down topic, in order
    receipt_batches: list[tuple[str, int, tuple[ReceiptEntry, ...]]] = field(
        default_factory=list
    )  # (channel, seq, entries) of every receipt batch received
    seqs_seen: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    connections: int = 0  # successful connects, including automatic reconnects
    stray: list[tuple[str, bytes]] = field(default_factory=list)  # not on our down topics
    # Stop reading the broker's socket while this many messages wait to be handled, so
    # TCP holds the broker back (paho acks QoS 1 on arrival: nothing else would). None:
    # 64 for a spoke with ``stream_dir``, otherwise off.
    backlog: int | None = None
    _paused: tuple[aiomqtt.Client, int] | None = None
    _reliable: bool = False
    _resend_every: float = 2.0
    _resender: asyncio.Task[None] | None = None
    _reconnector: asyncio.Task[None] | None = None
    _incoming: dict[bytes, Incoming] = field(default_factory=dict)

    async def __aenter__(self) -> SimSpoke:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.disconnect()
        # A body still being staged stays unfinished: close its file (the test's
        # ResourceWarning check would otherwise catch the handle when it is collected).
        for staged in self._incoming.values():
            staged.handle.close()
        self._incoming.clear()

    async def connect(self) -> None:
        if self._changed is None:  # kept across reconnects: waiters hold on to it
            self._changed = asyncio.Condition()
        channel = self.channels[0]
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"spoke-{self.org}",
            clean_session=True,
            will=aiomqtt.Will(
                topics.presence(channel, self.org), topics.OFFLINE, qos=1, retain=True
            ),
            # A publish whose connection died waits this long for its PUBACK; a reliable
            # spoke gives up sooner and resends after reconnecting.
            timeout=3.0 if self._reliable else 10.0,
        )
        client.pending_calls_threshold = 10_000
        await client.__aenter__()
        self._client = client
        try:
            for ch in self.channels:
                await client.subscribe(topics.down(ch, self.org), qos=1)
            self._task = asyncio.create_task(self._listen(client))
            for ch in self.channels:
                await client.publish(
                    topics.presence(ch, self.org), topics.ONLINE, qos=1, retain=True
                )
                await client.publish(
                    topics.up(ch, self.org),
                    transport.encode(transport.HelloMsg(self._hello_seq(ch))),
                    qos=1,
                )
        except aiomqtt.MqttError:
            if self._reliable:  # half connected: drop it, the caller tries again
                await self._drop(client)
            raise
        self.connections += 1
        if self._reliable:
            for out in self.outbox.values():
                out.sent_at = 0.0  # resend every unanswered envelope now
            self._start_resender()

    async def disconnect(self, *, clean: bool = True) -> None:
        await cancel_and_wait(
            task
            for task in (self._reconnector, self._resender)
            if task is not None and task is not asyncio.current_task()
        )
        self._reconnector = self._resender = None
        for out in self.outbox.values():
            await self._stop_pump(out)
            out.next_offset = -1  # after reconnecting, the hub says where to go on
        # Stop reading first: a message already taken would otherwise be acknowledged on a
        # client that is gone (the hub sends anything unacknowledged again).
        self._resume_reading()
        if self._task is not None:
            # The listener may be inside aiomqtt's publish, whose wait_for can swallow a
            # cancellation on Python 3.11: cancel_and_wait cancels until it ends.
            await cancel_and_wait(self._task)
        client, self._client = self._client, None
        if client is None:
            return
        if clean:
            for ch in self.channels:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(
                        topics.presence(ch, self.org), topics.OFFLINE, qos=1, retain=True
                    )
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)

    # ------------------------------------------------------------------ sending

    def seal(
        self,
        to: Sequence[str],
        *,
        cc: Sequence[str] = (),
        classification: Classification = Classification.INTERNAL,
        precedence: Precedence = Precedence.ROUTINE,
        doc_type: DocType = DocType.NOTICE,
        contents: Sequence[bytes] = (b"document",),
        created_at: int | None = None,
        expires_at: int | None = None,
        title: str = "测试文件",
        **extra: object,
    ) -> tuple[Sealed, bytes]:
        files = [file_entry(f"f{i}.txt", "text/plain", c) for i, c in enumerate(contents)]
        draft = Draft(
            sender=self.org,
            to=tuple(to),
            cc=tuple(cc),
            classification=classification,
            precedence=precedence,
            doc_type=doc_type,
            title=title,
            created_at=now_ms() if created_at is None else created_at,
            expires_at=expires_at,
            files=files,
            **valid_marks(to, cc, classification, extra),  # type: ignore[arg-type]
        )
        return seal_bytes(draft, self.signing, self.directory, list(contents))

    async def publish_envelope(
        self, sealed: Sealed, body: bytes, *, channel: str | None = None, chunk: int | None = None
    ) -> None:
        assert self._client is not None
        ch = channel or self.channels[0]
        up = topics.up(ch, self.org)
        if chunk is None and len(body) <= transport.INLINE_BODY_MAX:
            await self._client.publish(
                up, transport.encode(transport.EnvelopeMsg(sealed.frame, body, sealed.slots)), qos=1
            )
            return
        size = chunk or transport.CHUNK_BYTES
        await self._client.publish(
            up, transport.encode(transport.EnvelopeMsg(sealed.frame, None, sealed.slots)), qos=1
        )
        for offset in range(0, len(body), size):
            msg = transport.ChunkMsg(sealed.header.msg_id, offset, body[offset : offset + size])
            await self._client.publish(up, transport.encode(msg), qos=1)

    async def publish_raw(
        self, payload: bytes, *, channel: str | None = None, as_org: str | None = None
    ) -> None:
        assert self._client is not None
        await self._client.publish(
            topics.up(channel or self.channels[0], as_org or self.org), payload, qos=1
        )

    async def send(self, to: Sequence[str], **kw: object) -> Sealed:
        sealed, body = self.seal(to, **kw)  # type: ignore[arg-type]
        await self.publish_envelope(sealed, body)
        return sealed

    # ------------------------------------------------------------------ reliable sending

    def start_reliable(self, *, resend_every: float = 2.0) -> None:
        """Behave like a real spoke: hold, resend and reconnect until the hub answers.

        Call before :meth:`connect` (or between connections)."""
        self._reliable = True
        self._resend_every = resend_every
        if self._client is not None:
            self._start_resender()

    def outstanding(self) -> set[bytes]:
        """msg_ids sent reliably that hold neither ACCEPTED nor REJECTED yet."""
        return set(self.outbox)

    def answer(self, msg_id: bytes) -> ReceiptEntry | None:
        """The hub's first ACCEPTED or REJECTED for ``msg_id``, if any."""
        return next((e for e in self.receipts.get(msg_id, []) if e.status in ANSWERS), None)

    async def send_reliably(self, to: Sequence[str], **kw: object) -> Sealed:
        """Seal and send; kept (and resent) until the hub answers. Never raises for a
        connection that is down: the envelope waits for the next one."""
        sealed, body = self.seal(to, **kw)  # type: ignore[arg-type]
        out = Outbound(sealed, self.channels[0], body=body)
        self.outbox[out.msg_id] = out
        self.sent[out.msg_id] = sealed
        await self._publish_head(out)
        return sealed

    def seal_file(
        self,
        to: Sequence[str],
        source: Path,
        sink: Path,
        *,
        classification: Classification = Classification.INTERNAL,
        precedence: Precedence = Precedence.ROUTINE,
        expires_at: int | None = None,
        cc: Sequence[str] = (),
        doc_type: DocType = DocType.NOTICE,
        **extra: object,
    ) -> Sealed:
        """Seal the file ``source`` into the ciphertext file ``sink``, in bounded memory.

        Synchronous and CPU-bound: run it with ``asyncio.to_thread`` for large files.
        ``extra``: more Draft fields (signatory, in_reply_to, ...), as for :meth:`seal`."""
        with source.open("rb") as src:
            entry = describe_file(source.name, "application/octet-stream", src)
        draft = Draft(
            sender=self.org,
            to=tuple(to),
            cc=tuple(cc),
            classification=classification,
            precedence=precedence,
            doc_type=doc_type,
            title="大文件",
            created_at=now_ms(),
            expires_at=expires_at,
            files=[entry],
            **valid_marks(to, cc, classification, extra),  # type: ignore[arg-type]
        )
        with source.open("rb") as src, sink.open("wb") as out:
            return seal_streams(draft, self.signing, self.directory, [src], out)

    async def send_file(
        self, sealed: Sealed, ciphertext: Path, *, pause_at: int | None = None
    ) -> None:
        """Send a sealed body from disk: the head now, chunks as the hub's resume asks.

        ``pause_at``: stop sending at that body offset (a sender that stalls half way);
        :meth:`continue_file` goes on."""
        out = Outbound(sealed, self.channels[0], path=ciphertext, pause_at=pause_at)
        self.outbox[out.msg_id] = out
        self.sent[out.msg_id] = sealed
        await self._publish_head(out)

    async def continue_file(self, msg_id: bytes, *, pause_at: int | None = None) -> None:
        """Lift (or move) the pause and send the head again: the hub says where to go on."""
        out = self.outbox[msg_id]
        out.pause_at = pause_at
        await self._publish_head(out)

    def pump_paused(self, msg_id: bytes) -> bool:
        out = self.outbox.get(msg_id)
        return out is not None and out.paused

    async def _publish_head(self, out: Outbound) -> None:
        client = self._client
        if client is None:
            return
        body = None if out.chunked else out.body
        payload = transport.encode(transport.EnvelopeMsg(out.sealed.frame, body, out.sealed.slots))
        out.sent_at = time.monotonic()
        out.publishes += 1
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(topics.up(out.channel, self.org), payload, qos=1)

    def _start_resender(self) -> None:
        if self._resender is None or self._resender.done():
            self._resender = asyncio.create_task(self._resend_loop(), name=f"resend.{self.org}")

    async def _resend_loop(self) -> None:
        """Every unanswered envelope not sent for ``resend_every`` goes out again.

        A chunked body that is being pumped, or is paused on purpose, is left alone."""
        while True:
            await asyncio.sleep(self._resend_every / 4)
            now = time.monotonic()
            for out in list(self.outbox.values()):
                if self._client is None:
                    break
                if out.msg_id not in self.outbox or out.paused:
                    continue
                if now - out.sent_at >= self._resend_every:
                    await self._publish_head(out)

    def _on_resume(self, msg_id: bytes, offset: int) -> None:
        out = self.outbox.get(msg_id)
        if out is None or not out.chunked:
            return
        now = time.monotonic()
        jumped_to, jumped_at = out.last_jump
        if offset == jumped_to and offset < out.next_offset and now - jumped_at < 1.0:
            return  # an echo: the hub asks again for a gap this pump already went back for
        out.last_jump = (offset, now)
        out.next_offset = min(offset, out.size)
        if out.pump is None or out.pump.done():
            out.pump = asyncio.create_task(self._pump(out), name=f"pump.{msg_id_text(msg_id)}")
        out.wake.set()

    async def _stop_pump(self, out: Outbound) -> None:
        task, out.pump = out.pump, None
        if task is not None and task is not asyncio.current_task():
            await cancel_and_wait(task)

    async def _pump(self, out: Outbound) -> None:
        """Send chunks from ``next_offset`` until the end, a pause, or a failed publish."""
        up = topics.up(out.channel, self.org)
        while out.msg_id in self.outbox:
            limit = out.size if out.pause_at is None else min(out.pause_at, out.size)
            client = self._client
            if out.next_offset < 0 or out.next_offset >= limit or client is None:
                await self._notify()
                out.wake.clear()
                await out.wake.wait()
                continue
            offset = out.next_offset
            data = out.read(offset, limit)
            try:
                await client.publish(
                    up, transport.encode(transport.ChunkMsg(out.msg_id, offset, data)), qos=1
                )
            except aiomqtt.MqttError:
                out.next_offset = -1  # the hub's next resume says where to go on
                continue
            out.sent_offsets.append(offset)
            out.sent_at = time.monotonic()
            if out.next_offset == offset:  # no resume moved it meanwhile
                out.next_offset = offset + len(data)

    # ------------------------------------------------------------------ reconnecting

    async def _drop(self, client: aiomqtt.Client) -> None:
        if self._client is client:
            self._client = None
        self._resume_reading()
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)

    async def _reconnect(self, old: aiomqtt.Client) -> None:
        await self._drop(old)
        delay = 0.05
        while True:
            try:
                await self.connect()
            except aiomqtt.MqttError:
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
                delay = min(delay * 2, 0.5)
                continue
            return

    def _hello_seq(self, channel: str) -> int:
        """The seq to say in hello: a reliable spoke names the last one it holds with no
        gap before it, so a batch lost in a crash is sent again."""
        if not self._reliable:
            return self.last_seq[channel]
        seen, n = self.seqs_seen[channel], 0
        while n + 1 in seen:
            n += 1
        return n

    # ------------------------------------------------------------------ waiting

    async def wait_for(self, predicate: object, within: float = 10.0) -> None:
        assert self._changed is not None
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)  # type: ignore[arg-type]

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def statuses(self, msg_id: bytes) -> list[tuple[ReceiptStatus, str | None]]:
        return [(e.status, e.recipient) for e in self.receipts.get(msg_id, [])]

    def has(self, msg_id: bytes, status: ReceiptStatus, recipient: str | None = None) -> bool:
        return any(
            e.status is status and (recipient is None or e.recipient == recipient)
            for e in self.receipts.get(msg_id, [])
        )

    # ------------------------------------------------------------------ receiving

    async def _listen(self, client: aiomqtt.Client) -> None:
        mine = {topics.down(ch, self.org) for ch in self.channels}
        try:
            async for message in client.messages:
                channel = message.topic.value.split("/")[2]
                payload = message.payload
                assert isinstance(payload, bytes)
                if message.topic.value not in mine:
                    # amqtt 0.12.1 hands a client that (re)connects every retained message
                    # matching *any* client's subscription (others' presence, say).
                    self.stray.append((message.topic.value, payload))
                    continue
                await self._on(channel, payload)
                self._flow(client)
                assert self._changed is not None
                async with self._changed:
                    self._changed.notify_all()
        except aiomqtt.MqttError:
            if not self._reliable:
                raise
            if self._client is client:
                # The broker went away (the embedded one dies with hubd): come back by itself.
                self._reconnector = asyncio.create_task(self._reconnect(client))

    async def _on(self, channel: str, payload: bytes) -> None:
        try:
            msg = transport.decode(payload)
        except PeerError as exc:
            self.refused.append(exc)
            return
        match msg:
            case transport.ReceiptsMsg(frame, seq):
                try:
                    verified = verify_receipts(frame, self.directory)
                except PeerError as exc:
                    self.refused.append(exc)
                    return
                self.receipt_batches.append((channel, seq, verified.batch.entries))
                for entry in verified.batch.entries:
                    self.receipts[entry.msg_id].append(entry)
                    if entry.status in ANSWERS and entry.msg_id in self.outbox:
                        out = self.outbox.pop(entry.msg_id)
                        await self._stop_pump(out)
                if seq:
                    self.last_seq[channel] = max(self.last_seq[channel], seq)
                    self.seqs_seen[channel].add(seq)
            case transport.EnvelopeMsg(frame, body, slot):
                try:
                    envelope = verify_envelope(
                        frame,
                        self.directory,
                        recipient=None if slot is None else self.org,
                        slots=slot,
                    )
                except PeerError as exc:
                    self.refused.append(exc)
                    return
                msg_id = envelope.header.msg_id
                self.arrivals.append(Arrival("env" if body is not None else "head", msg_id, 0))
                if body is None:
                    if self.stream_dir is not None:
                        self._stage(envelope, channel)
                    else:
                        self._chunks[msg_id] = (envelope, bytearray(), channel)
                    return
                await self._deliver(envelope, body, channel)
            case transport.ChunkMsg(msg_id, offset, data):
                self.arrivals.append(Arrival("chunk", msg_id, offset))
                if msg_id in self._incoming:
                    await self._staged_chunk(msg_id, offset, data)
                    return
                pending = self._chunks.get(msg_id)
                if pending is None or offset != len(pending[1]):
                    return
                pending[1].extend(data)
                if len(pending[1]) == pending[0].body.size:
                    del self._chunks[msg_id]
                    await self._deliver(pending[0], bytes(pending[1]), pending[2])
            case transport.ResumeMsg(msg_id, offset):
                self.resumes.append((msg_id, offset))
                self._on_resume(msg_id, offset)
            case transport.AskHelloMsg() if self._reliable and self._client is not None:
                # the hub restarted under a broker that stayed up: say where we stand, as a
                # real spoke does, or a batch lost in its crash is never sent again
                hello = transport.HelloMsg(self._hello_seq(channel))
                await self._client.publish(
                    topics.up(channel, self.org), transport.encode(hello), qos=1
                )
            case _:
                pass

    # ------------------------------------------------------------------ flow control

    def _flow(self, client: aiomqtt.Client) -> None:
        limit = self.backlog if self.backlog is not None else (64 if self.stream_dir else 0)
        if not limit:
            return
        waiting = client._queue.qsize()
        if self._paused is None and waiting >= limit:
            sock = client._client.socket()
            if sock is not None and asyncio.get_running_loop().remove_reader(sock.fileno()):
                self._paused = (client, sock.fileno())
        elif self._paused is not None and waiting <= limit // 2:
            self._resume_reading()

    def _resume_reading(self) -> None:
        """Read the socket again (with the callback aiomqtt would have installed)."""
        if self._paused is None:
            return
        client, fd = self._paused
        self._paused = None
        paho = client._client
        sock = paho.socket()
        if sock is None or sock.fileno() != fd:
            return  # closed meanwhile

        def read() -> None:
            try:
                paho.loop_read()
            except Exception as exc:  # noqa: BLE001 - as aiomqtt's own callback does
                if not client._disconnected.done():
                    client._disconnected.set_exception(exc)

        asyncio.get_running_loop().add_reader(fd, read)

    # ------------------------------------------------------------------ staging

    def _stage(self, envelope: VerifiedEnvelope, channel: str) -> None:
        """A chunked body starts (again): stage it from its first byte."""
        assert self.stream_dir is not None
        msg_id = envelope.header.msg_id
        previous = self._incoming.pop(msg_id, None)
        if previous is not None:
            previous.handle.close()
        self.stream_dir.mkdir(parents=True, exist_ok=True)
        path = self.stream_dir / f"{msg_id_text(msg_id)}.part"
        self._incoming[msg_id] = Incoming(envelope, channel, path, path.open("wb"))

    async def _staged_chunk(self, msg_id: bytes, offset: int, data: bytes) -> None:
        staged = self._incoming[msg_id]
        if offset != staged.received:
            return  # out of order: the hub sends the whole body again on its next attempt
        staged.handle.write(data)
        staged.received += len(data)
        if staged.received < staged.envelope.body.size:
            return
        del self._incoming[msg_id]
        staged.handle.close()
        try:
            digests, sizes = await asyncio.to_thread(
                open_staged, staged.envelope, self.org, self.encryption, staged.path
            )
        except PeerError as exc:
            self.refused.append(exc)
            return
        finally:
            staged.path.unlink(missing_ok=True)
        self.arrivals.append(Arrival("done", msg_id, staged.received))
        self.deliveries[msg_id] += 1
        if msg_id not in self.received:
            self.received[msg_id] = Received(staged.envelope, [], now_ms(), digests, sizes)
        if self.auto_deliver:
            await self.acknowledge(staged.envelope, ReceiptStatus.DELIVERED, staged.channel)

    async def _deliver(self, envelope: VerifiedEnvelope, body: bytes, channel: str) -> None:
        msg_id = envelope.header.msg_id
        try:
            _, files = open_bytes(envelope, self.org, self.encryption, body)
        except PeerError as exc:
            self.refused.append(exc)
            return
        if len(body) > transport.INLINE_BODY_MAX:
            self.arrivals.append(Arrival("done", msg_id, len(body)))
        self.deliveries[msg_id] += 1
        if msg_id not in self.received:
            self.received[msg_id] = Received(
                envelope,
                files,
                now_ms(),
                [hashlib.sha256(f).digest() for f in files],
                [len(f) for f in files],
            )
        if self.auto_deliver:
            await self.acknowledge(envelope, ReceiptStatus.DELIVERED, channel)

    async def acknowledge(
        self, envelope: VerifiedEnvelope, status: ReceiptStatus, channel: str | None = None
    ) -> None:
        client = self._client
        if client is None and self._reliable:
            return  # the hub sends it again; this spoke answers then
        assert client is not None
        self._resume_reading()  # the PUBACK must be read
        entry = ReceiptEntry(
            msg_id=envelope.header.msg_id,
            recipient=self.org,
            status=status,
            at=now_ms(),
            subject=hashlib.sha256(envelope.frame).digest(),
            classification=envelope.header.classification,
            reason=None,
            detail=None,
            retriable=False,
        )
        frame = sign_receipts(self.org, self.signing, [entry], at=now_ms())
        ch = channel or self.channels[0]
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(
                topics.up(ch, self.org), transport.encode(transport.ReceiptsMsg(frame, 0)), qos=1
            )


def open_staged(
    envelope: VerifiedEnvelope, me: str, key: EncryptionKey, path: Path
) -> tuple[list[bytes], list[int]]:
    """Open a staged body file streaming; returns each file's plaintext SHA-256 and size.

    Raises PeerError (EnvelopeError) as :class:`Opener` does; nothing is kept in memory
    beyond a block."""
    opener = Opener(envelope, me, key)
    hashes: dict[int, hashlib._Hash] = {}
    sizes: dict[int, int] = defaultdict(int)
    with path.open("rb") as handle:
        while block := handle.read(OPEN_BLOCK):
            for event in opener.feed(block):
                if isinstance(event, FileData):
                    hashes.setdefault(event.index, hashlib.sha256()).update(event.data)
                    sizes[event.index] += len(event.data)
    inner = opener.close()
    count = len(inner.files)
    empty = hashlib.sha256(b"").digest()
    return (
        [hashes[i].digest() if i in hashes else empty for i in range(count)],
        [sizes[i] for i in range(count)],
    )
