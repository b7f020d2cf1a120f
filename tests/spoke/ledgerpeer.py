"""The hub's side of the ledger, as small as a spoke's tests need it.

:class:`Tree` is an in-memory ledger built from the real ``schemas.ledger`` and
``schemas.merkle`` code: entries, signed checkpoints, consistency and inclusion proofs.
:class:`LedgerPeer` plays the hub on a real broker for one organisation: it publishes the
directory's root and checkpoints (retained), answers directory requests and
``consistency`` and ``prove`` questions, ACCEPTs envelopes with a hub-signed receipt (and
records ``message.accepted``), and keeps the countersignatures it receives.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field

import aiomqtt

from runtime.tasks import cancel_and_wait
from schemas import dirtree, merkle, topics, transport
from schemas.directory import Directory
from schemas.envelope import verify_envelope
from schemas.keys import SigningKey
from schemas.ledger import Checkpoint, Entry, pack_path, sign_checkpoint
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts
from tests.world import published_root


@dataclass
class Tree:
    """A ledger: entries in order, their Merkle tree, checkpoints signed by ``key``."""

    hub_id: str
    key: SigningKey
    entries: list[Entry] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.entries)

    def append(
        self,
        event: str,
        *,
        at: int,
        msg_id: bytes | None = None,
        org: str | None = None,
        detail: dict[str, object] | None = None,
    ) -> Entry:
        text = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"))
        entry = Entry(self.size + 1, at, event, msg_id, org, text)
        self.entries.append(entry)
        return entry

    def grow(self, n: int, *, at: int, tag: str = "a") -> None:
        for i in range(n):
            self.append("delivery.started", at=at, detail={"tag": tag, "i": i})

    def node(self, level: int, index: int) -> bytes:
        leaves = self.entries[index << level : (index + 1) << level]
        return merkle.root_of([e.leaf_hash() for e in leaves])

    def root(self, size: int) -> bytes:
        return merkle.root_of([e.leaf_hash() for e in self.entries[:size]])

    def checkpoint(self, at: int, size: int | None = None) -> bytes:
        n = self.size if size is None else size
        return sign_checkpoint(Checkpoint(self.hub_id, n, self.root(n), at), self.key)

    def consistency(self, old: int, new: int) -> bytes:
        return pack_path(merkle.consistency_proof(old, new, self.node))

    def inclusion(self, entry: Entry, size: int | None = None) -> list[bytes]:
        return merkle.inclusion_proof(entry.index, self.size if size is None else size, self.node)


@dataclass
class LedgerPeer:
    """The hub's role on the broker, for the spoke of ``org``."""

    port: int
    org: str
    channels: tuple[str, ...]
    directory: Directory
    tree: Tree
    clock_ms: int
    asked: list[transport.ConsistencyAsk] = field(default_factory=list)
    cosigned: list[transport.CosignMsg] = field(default_factory=list)
    accepted: list[bytes] = field(default_factory=list)  # msg_ids
    answer_with: Tree | None = None  # the history it proves from (a forked one, say)
    _client: aiomqtt.Client | None = None
    _root: bytes = b""  # the directory's signed root, as spokes take it
    _dirtree: dirtree.DirectoryTree | None = None

    def tick(self) -> int:
        self.clock_ms += 1000
        return self.clock_ms

    async def __aenter__(self) -> LedgerPeer:
        self._client = aiomqtt.Client("127.0.0.1", self.port, identifier="ledger-peer")
        await self._client.__aenter__()
        self._root, _, self._dirtree = published_root(self.directory, self.tree.key)
        for channel in self.channels:
            await self._client.subscribe(topics.up(channel, self.org), qos=1)
            retained = dirtree.publication(self._root, None)
            await self._client.publish(topics.dirroot(channel), retained, qos=1, retain=True)
        self._task = asyncio.get_running_loop().create_task(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)
        assert self._client is not None
        await self._client.__aexit__(None, None, None)

    async def publish_checkpoint(self, frame: bytes, prev_size: int, proof: bytes) -> None:
        assert self._client is not None
        payload = transport.encode(transport.CheckpointMsg(frame, prev_size, proof))
        for channel in self.channels:
            await self._client.publish(topics.ledger(channel), payload, qos=1, retain=True)

    async def _down(self, channel: str, message: transport.TransportMsg) -> None:
        assert self._client is not None
        topic = topics.down(channel, self.org)
        await self._client.publish(topic, transport.encode(message), qos=1)

    async def _serve(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            where = topics.parse(str(message.topic))
            assert where is not None
            payload = message.payload
            assert isinstance(payload, bytes)
            await self._on(where.channel, transport.decode(payload))

    async def _on(self, channel: str, message: transport.TransportMsg) -> None:
        tree = self.answer_with or self.tree
        match message:
            case transport.ConsistencyAsk(old, new):
                self.asked.append(message)
                await self._down(
                    channel, transport.ConsistencyMsg(old, new, tree.consistency(old, new))
                )
            case transport.CosignMsg():
                self.cosigned.append(message)
            case transport.DirGetMsg(ask, version, keys):  # as hubd.engine.dirdesk answers
                assert self._dirtree is not None
                found, absent = self._dirtree.answer(dirtree.read_ask(keys))
                root = None if version == self.directory.version else self._root
                answer = dirtree.encode_answer(self.directory.version, root, found, absent)
                await self._down(channel, transport.DirEntriesMsg(ask, answer))
            case transport.ProveAsk(msg_id, after):
                mine = [e for e in tree.entries if e.msg_id == msg_id and e.seq > after]
                pairs = [(e.leaf(), pack_path(tree.inclusion(e))) for e in mine]
                await self._down(
                    channel,
                    transport.ProofMsg(
                        msg_id,
                        tree.checkpoint(self.tick()),
                        transport.encode_proof_entries(pairs),
                        more=False,
                    ),
                )
            case transport.EnvelopeMsg(frame, _):
                envelope = verify_envelope(frame, self.directory)
                subject = envelope.digest
                at = self.tick()
                receipt = ReceiptEntry(
                    msg_id=envelope.header.msg_id,
                    recipient=None,
                    status=ReceiptStatus.ACCEPTED,
                    at=at,
                    subject=subject,
                    classification=envelope.header.classification,
                    reason=None,
                    detail=None,
                    retriable=False,
                )
                self.tree.append(
                    "message.accepted",
                    at=at,
                    msg_id=envelope.header.msg_id,
                    org=self.org,
                    detail={"frame_sha256": subject.hex()},
                )
                self.accepted.append(envelope.header.msg_id)
                batch = sign_receipts(self.directory.hub_id, self.tree.key, [receipt], at=at)
                await self._down(channel, transport.ReceiptsMsg(batch, 0))
            case _:
                pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
