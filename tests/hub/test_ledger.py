"""The ledger's evidence end to end: a real hubd, a real Mosquitto and the hub's SQLite.

Checkpoints on the retained ledger topic, their consistency proofs, the answers to a
witness's questions (consistency, prove, cosign), and the hub refusing a store that lost
entries it had signed.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from schemas import merkle, topics, transport
from schemas.errors import PeerError
from schemas.ledger import (
    Entry,
    SignedCheckpoint,
    cosign,
    unpack_path,
    verify_checkpoint,
)
from schemas.receipts import ReceiptStatus
from tests.hub.conftest import HubSpawner, Observer, SpokeSpawner, wait_for_log
from tests.hubproc import HubProcess, Mosquitto
from tests.spokesim import SimSpoke
from tests.world import World

LEDGER = topics.ledger("govnet")
QUICK = '[ledger]\ncheckpoint_interval = "100ms"\n'


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "mosquitto").start()
    yield mosquitto
    mosquitto.stop()


@dataclass
class Witness(SimSpoke):
    """A SimSpoke that keeps the hub's answers to ledger questions."""

    answers: list[transport.TransportMsg] = field(default_factory=list)

    async def _on(self, channel: str, payload: bytes) -> None:
        try:
            message = transport.decode(payload)
        except PeerError:
            message = None
        if isinstance(message, transport.ConsistencyMsg | transport.ProofMsg):
            self.answers.append(message)
            await self._notify()
            return
        await super()._on(channel, payload)

    async def ask(self, question: transport.TransportMsg) -> transport.TransportMsg:
        before = len(self.answers)
        await self.publish_raw(transport.encode(question))
        await self.wait_for(lambda: len(self.answers) > before, within=20)
        return self.answers[before]


def checkpoints_seen(
    observer: Observer, hub_key_public: bytes
) -> list[tuple[SignedCheckpoint, transport.CheckpointMsg]]:
    found = []
    for topic, payload, _retained in observer.messages:
        if topic == LEDGER:
            message = transport.decode(payload)
            assert isinstance(message, transport.CheckpointMsg)
            found.append((verify_checkpoint(message.frame, hub_key_public), message))
    return found


def audit_entries(hub: HubProcess) -> list[Entry]:
    with sqlite3.connect(hub.folder / "state" / "hub.db") as db:
        rows = db.execute("SELECT seq, at, event, msg_id, org, detail FROM audit ORDER BY seq")
        return [Entry(s, a, e, None if m is None else bytes(m), o, d) for s, a, e, m, o, d in rows]


def store_rows(hub: HubProcess, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(hub.folder / "state" / "hub.db") as db:
        return list(db.execute(sql))


def witness(world: World, hub: HubProcess, org: str) -> Witness:
    keys = world.keys[org]
    return Witness(org, keys.signing, keys.encryption, hub.directory, "127.0.0.1", hub.port)


async def test_checkpoints_prove_the_ledger_and_answer_a_witness(
    world: World, broker: Mosquitto, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(broker_port=broker.port, extra_toml=QUICK)
    public = world.hub_key.public
    async with Observer(broker.port, LEDGER) as observer:
        sender, other = witness(world, hub, "jl.gov"), witness(world, hub, "jl.jl")
        recipient = spawn_spoke(hub, "jl.cc")
        for spoke in (sender, other, recipient):
            await spoke.connect()
        try:
            sealed = await sender.send(["jl.cc"])
            msg_id = sealed.header.msg_id
            await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.DELIVERED), within=20)
            accepted = next(e for e in audit_entries(hub) if e.event == "message.accepted")

            # a checkpoint that covers the acceptance, signed by the hub, over the audit rows
            await observer.wait_for(
                lambda: any(c.size >= accepted.seq for c, _ in checkpoints_seen(observer, public))
            )
            first, _ = next(
                (c, m) for c, m in checkpoints_seen(observer, public) if c.size >= accepted.seq
            )
            leaves = [e.leaf_hash() for e in audit_entries(hub)[: first.size]]
            assert first.checkpoint.hub_id == hub.directory.hub_id
            assert merkle.root_of(leaves) == first.root

            # the next one carries a consistency proof from the one before it
            await sender.send(["jl.cc"])
            await observer.wait_for(
                lambda: any(c.size > first.size for c, _ in checkpoints_seen(observer, public))
            )
            second, message = next(
                (c, m) for c, m in checkpoints_seen(observer, public) if c.size > first.size
            )
            held = {c.size: c for c, _ in checkpoints_seen(observer, public)}
            before = held[message.prev_size]
            assert merkle.verify_consistency(
                before.size, second.size, before.root, second.root, unpack_path(message.proof)
            )

            # a witness's consistency question
            answer = await sender.ask(transport.ConsistencyAsk(first.size, second.size))
            assert isinstance(answer, transport.ConsistencyMsg)
            assert answer.proof is not None
            assert answer.restore_leaf is None
            assert merkle.verify_consistency(
                first.size, second.size, first.root, second.root, unpack_path(answer.proof)
            )

            await check_proofs_and_cosignatures(world, hub, sender, other, msg_id, second)
        finally:
            for spoke in (sender, other, recipient):
                await spoke.disconnect()

    # a spoke that connects later finds the latest checkpoint waiting (retained)
    async with Observer(broker.port, LEDGER) as late:
        await late.wait_for(lambda: bool(late.messages))
        assert late.messages[0][2] is True


async def check_proofs_and_cosignatures(  # noqa: PLR0917 - the scene of the test above
    world: World,
    hub: HubProcess,
    sender: Witness,
    other: Witness,
    msg_id: bytes,
    second: SignedCheckpoint,
) -> None:
    public = world.hub_key.public
    # the sender's proof of its message: every entry included in a signed checkpoint
    proof = await sender.ask(transport.ProveAsk(msg_id, 0))
    assert isinstance(proof, transport.ProofMsg)
    assert proof.refusal is None
    assert proof.checkpoint is not None
    assert proof.entries is not None
    signed = verify_checkpoint(proof.checkpoint, public)
    pairs = transport.decode_proof_entries(proof.entries)
    entries = [Entry.from_leaf(leaf) for leaf, _ in pairs]
    assert {e.event for e in entries} >= {"message.accepted", "receipt.delivered"}
    assert all(e.msg_id == msg_id for e in entries)
    for entry, (_leaf, path) in zip(entries, pairs, strict=True):
        assert merkle.verify_inclusion(
            entry.index, signed.size, entry.leaf_hash(), unpack_path(path), signed.root
        )
    delivered = next(e for e in entries if e.event == "receipt.delivered")
    assert len(delivered.details()["batch_sha256"]) == 64

    # someone who neither sent nor received it learns nothing of it
    refused = await other.ask(transport.ProveAsk(msg_id, 0))
    assert isinstance(refused, transport.ProofMsg)
    assert refused.refusal == "ledger.not_a_party"
    assert refused.entries is None

    # a countersignature is kept; a forged one is not, and is a security event
    good = cosign(second, world.keys["jl.gov"].signing)
    bad = cosign(second, world.keys["jl.gov"].signing)  # jl.jl's name, jl.gov's key
    await other.publish_raw(
        transport.encode(transport.CosignMsg(second.size, world.keys["jl.jl"].signing.kid, bad))
    )
    await sender.publish_raw(
        transport.encode(transport.CosignMsg(second.size, world.keys["jl.gov"].signing.kid, good))
    )
    await wait_for_log(hub, lambda e: e.get("event") == "ledger.cosign_invalid")
    async with asyncio.timeout(20):  # the good one was published after the forged one
        while True:  # polling another process's store, bounded above
            rows = store_rows(hub, "SELECT size, org FROM ledger_cosignatures")
            if rows:
                break
            await asyncio.sleep(0.05)
    assert rows == [(second.size, "jl.gov")]


async def probe_retained(port: int, topic: str) -> list[bytes]:
    """What is retained on ``topic`` now: subscribe, then a probe of our own as a barrier
    (the broker sends retained messages for a subscription before anything published after)."""
    probe = f"test/probe/{secrets.token_hex(4)}"
    found: list[bytes] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"probe-{secrets.token_hex(4)}") as c:
        await c.subscribe(topic, qos=1)
        await c.subscribe(probe, qos=1)
        await c.publish(probe, b"probe", qos=1)
        async with asyncio.timeout(20):
            async for message in c.messages:
                if message.topic.value == probe:
                    return found
                assert isinstance(message.payload, bytes)
                found.append(message.payload)
    return found


async def test_with_checkpoints_off_nothing_is_signed_or_published(
    broker: Mosquitto, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(
        broker_port=broker.port,
        extra_toml='[ledger]\ncheckpoints = false\ncheckpoint_interval = "100ms"\n',
    )
    sender = spawn_spoke(hub, "jl.gov")
    await sender.connect()
    sealed = await sender.send(["jl.cc"])
    await sender.wait_for(lambda: sender.has(sealed.header.msg_id, ReceiptStatus.ACCEPTED))
    assert hub.terminate() == 0
    assert await probe_retained(broker.port, LEDGER) == []
    assert store_rows(hub, "SELECT count(*) FROM ledger_checkpoints") == [(0,)]


async def test_hub_refuses_to_start_on_a_store_that_lost_signed_entries(
    broker: Mosquitto, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(broker_port=broker.port, extra_toml=QUICK)
    public = hub.hub_key.public
    async with Observer(broker.port, LEDGER) as observer:
        sender = spawn_spoke(hub, "jl.gov")
        await sender.connect()
        sealed = await sender.send(["jl.cc"])
        await sender.wait_for(lambda: sender.has(sealed.header.msg_id, ReceiptStatus.ACCEPTED))
        accepted = next(e for e in audit_entries(hub) if e.event == "message.accepted")
        await observer.wait_for(
            lambda: any(c.size >= accepted.seq for c, _ in checkpoints_seen(observer, public))
        )
        await sender.disconnect()
    assert hub.terminate() == 0
    [(signed,)] = store_rows(hub, "SELECT max(size) FROM ledger_checkpoints")
    assert isinstance(signed, int)
    with sqlite3.connect(hub.folder / "state" / "hub.db") as db:  # the tail, not the head
        db.execute("DELETE FROM audit WHERE seq >= ?", (accepted.seq,))

    hub.start(ready=False)
    assert hub.process is not None
    assert hub.process.wait(30) != 0
    text = (hub.folder / "hubd.log").read_text()
    refusal = [line for line in text.splitlines() if line.startswith("hubd run:")]
    assert len(refusal) == 1
    assert f"ends at entry {accepted.seq - 1} but checkpoint {signed}" in refusal[0]
    assert "hubctl audit restored" in refusal[0]
    assert "Traceback" not in text
