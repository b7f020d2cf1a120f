"""A minimal spoke that speaks the wire protocol, to drive the hub in tests.

It is not the spoke agent (no folders, no durable queue): it seals with ``schemas``,
publishes on its own up topic, answers every envelope it receives with a signed DELIVERED
after opening it, and records what it saw so tests can count.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiomqtt

from schemas import topics, transport
from schemas.directory import Directory
from schemas.envelope import VerifiedEnvelope, verify_envelope
from schemas.errors import PeerError
from schemas.keys import EncryptionKey, SigningKey
from schemas.labels import Classification, DocType, Precedence
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts, verify_receipts
from schemas.seal import Draft, Sealed, file_entry, open_bytes, seal_bytes


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Received:
    envelope: VerifiedEnvelope
    files: list[bytes]
    at: int


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

    async def __aenter__(self) -> SimSpoke:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.disconnect()

    async def connect(self) -> None:
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
        )
        client.pending_calls_threshold = 10_000
        await client.__aenter__()
        self._client = client
        for ch in self.channels:
            await client.subscribe(topics.down(ch, self.org), qos=1)
        self._task = asyncio.create_task(self._listen(client))
        for ch in self.channels:
            await client.publish(topics.presence(ch, self.org), topics.ONLINE, qos=1, retain=True)
            await client.publish(
                topics.up(ch, self.org),
                transport.encode(transport.HelloMsg(self.last_seq[ch])),
                qos=1,
            )

    async def disconnect(self, *, clean: bool = True) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if clean:
            for ch in self.channels:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(
                        topics.presence(ch, self.org), topics.OFFLINE, qos=1, retain=True
                    )
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
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
        doc_type: DocType = DocType.LETTER,
        contents: Sequence[bytes] = (b"document",),
        created_at: int | None = None,
        expires_at: int | None = None,
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
            title="测试文件",
            created_at=now_ms() if created_at is None else created_at,
            expires_at=expires_at,
            files=files,
            **extra,  # type: ignore[arg-type]
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
                up, transport.encode(transport.EnvelopeMsg(sealed.frame, body)), qos=1
            )
            return
        size = chunk or transport.CHUNK_BYTES
        await self._client.publish(
            up, transport.encode(transport.EnvelopeMsg(sealed.frame, None)), qos=1
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

    # ------------------------------------------------------------------ waiting

    async def wait_for(self, predicate: object, within: float = 10.0) -> None:
        assert self._changed is not None
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)  # type: ignore[arg-type]

    def statuses(self, msg_id: bytes) -> list[tuple[ReceiptStatus, str | None]]:
        return [(e.status, e.recipient) for e in self.receipts.get(msg_id, [])]

    def has(self, msg_id: bytes, status: ReceiptStatus, recipient: str | None = None) -> bool:
        return any(
            e.status is status and (recipient is None or e.recipient == recipient)
            for e in self.receipts.get(msg_id, [])
        )

    # ------------------------------------------------------------------ receiving

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            channel = message.topic.value.split("/")[2]
            payload = message.payload
            assert isinstance(payload, bytes)
            await self._on(channel, payload)
            assert self._changed is not None
            async with self._changed:
                self._changed.notify_all()

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
                for entry in verified.batch.entries:
                    self.receipts[entry.msg_id].append(entry)
                if seq:
                    self.last_seq[channel] = max(self.last_seq[channel], seq)
            case transport.EnvelopeMsg(frame, body):
                try:
                    envelope = verify_envelope(frame, self.directory)
                except PeerError as exc:
                    self.refused.append(exc)
                    return
                if body is None:
                    self._chunks[envelope.header.msg_id] = (envelope, bytearray(), channel)
                    return
                await self._deliver(envelope, body, channel)
            case transport.ChunkMsg(msg_id, offset, data):
                pending = self._chunks.get(msg_id)
                if pending is None or offset != len(pending[1]):
                    return
                pending[1].extend(data)
                if len(pending[1]) == pending[0].body.size:
                    del self._chunks[msg_id]
                    await self._deliver(pending[0], bytes(pending[1]), pending[2])
            case _:
                pass

    async def _deliver(self, envelope: VerifiedEnvelope, body: bytes, channel: str) -> None:
        msg_id = envelope.header.msg_id
        try:
            _, files = open_bytes(envelope, self.org, self.encryption, body)
        except PeerError as exc:
            self.refused.append(exc)
            return
        self.deliveries[msg_id] += 1
        if msg_id not in self.received:
            self.received[msg_id] = Received(envelope, files, now_ms())
        if self.auto_deliver:
            await self.acknowledge(envelope, ReceiptStatus.DELIVERED, channel)

    async def acknowledge(
        self, envelope: VerifiedEnvelope, status: ReceiptStatus, channel: str | None = None
    ) -> None:
        assert self._client is not None
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
            await self._client.publish(
                topics.up(ch, self.org), transport.encode(transport.ReceiptsMsg(frame, 0)), qos=1
            )
