"""A document to a large group through a real hubd (issue 14): its recipients travel as
slots under the signed root (schemas.slots), and each recipient receives the frame, the body
and only its own slot with its proof, never the others' sealed keys.

Twenty recipients (more than the 16 an envelope names in its header) are simulated spokes
on one broker; the bytes each received are measured at the recipient. A sender whose slots
were altered is refused with a signed REJECTED naming ``envelope.bad_slots``; a chunked
body to a group survives a kill -9 of the hub half way (the spool keeps the slots).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from schemas import codec, transport
from schemas.directory import Directory
from schemas.ledger import Entry
from schemas.receipts import ReceiptEntry, ReceiptStatus
from schemas.slots import INLINE_MAX, SLOT_MAX_BYTES
from tests.hub.conftest import HubSpawner, SpokeFactory, SpokeSpawner
from tests.hub.test_large import (
    CHUNK,
    delivered,
    eventually,
    file_size,
    spool,
)
from tests.hub.test_ledger import Witness
from tests.hubproc import HubProcess
from tests.world import World

WITHIN = 30.0
GROUP = 20  # more than INLINE_MAX: the envelope carries slots


def members(world: World, n: int = GROUP) -> list[str]:
    """``n`` organisations on govnet other than jl.gov, the sender."""
    group = world.directory.group("channel.govnet")
    assert group is not None
    chosen = [m for m in group.members if m != "jl.gov"][:n]
    assert len(chosen) == n
    return chosen


@dataclass
class Measuring(Witness):
    """A SimSpoke that keeps the size of every envelope message it received (and, as a
    Witness, the hub's answers to ledger questions)."""

    sizes: list[int] = field(default_factory=list)

    async def _on(self, channel: str, payload: bytes) -> None:
        if isinstance(transport.decode(payload), transport.EnvelopeMsg):
            self.sizes.append(len(payload))
        await super()._on(channel, payload)


async def test_a_notice_to_a_large_group_reaches_each_recipient_with_only_its_own_slot(
    hub: HubProcess, spokes: SpokeFactory, world: World, live_dir: Directory
) -> None:
    assert GROUP > INLINE_MAX
    recipients = [
        Measuring(org, world.keys[org].signing, world.keys[org].encryption, live_dir,
                  "127.0.0.1", hub.port)
        for org in ["jl.gov", *members(world)]
    ]  # fmt: skip
    gov, *recipients = recipients
    async with contextlib.AsyncExitStack() as stack:
        for spoke in (gov, *recipients):
            stack.push_async_callback(spoke.disconnect)
        await asyncio.gather(*(r.connect() for r in recipients))
        await gov.connect()
        await group_notice(gov, recipients, hub)


async def group_notice(gov: Measuring, recipients: list[Measuring], hub: HubProcess) -> None:
    sealed, body = gov.seal([r.org for r in recipients], contents=[b"notice to the group"])
    await gov.publish_envelope(sealed, body)
    msg_id = sealed.header.msg_id
    assert sealed.slots is not None
    await gov.wait_for(
        lambda: all(gov.has(msg_id, ReceiptStatus.DELIVERED, r.org) for r in recipients), WITHIN
    )

    for recipient in recipients:
        got = recipient.received[msg_id]
        assert got.files == [b"notice to the group"]
        assert got.envelope.header.recipients == (recipient.org,)  # the others are not told
        assert got.envelope.header.recipient_count == GROUP
    # what each received: the frame and the body, one slot and a proof of at most 5 hashes
    each = [size for r in recipients for size in r.sizes]
    assert len(each) >= GROUP
    base = len(transport.encode(transport.EnvelopeMsg(sealed.frame, body)))
    assert all(size - base <= SLOT_MAX_BYTES + 5 * 32 + 8 for size in each), (base, each)
    [accepted] = [e for e in hub.log_events() if e.get("event") == "message.accepted"]
    assert accepted["recipients"] == GROUP

    # the ledger's evidence (spoke prove): a recipient sees the acceptance and its own
    # entries, never another recipient's; the sender sees every recipient's
    orgs = {}
    for asker in (recipients[3], gov):
        proof = await asker.ask(transport.ProveAsk(msg_id, 0))
        assert isinstance(proof, transport.ProofMsg)
        assert proof.entries is not None
        pairs = transport.decode_proof_entries(proof.entries)
        orgs[asker.org] = {Entry.from_leaf(leaf).org for leaf, _ in pairs}
    assert orgs[recipients[3].org] == {"jl.gov", recipients[3].org}
    assert orgs["jl.gov"] >= {"jl.gov", *(r.org for r in recipients)}


async def test_altered_slots_are_refused_with_a_signed_rejected_naming_bad_slots(
    hub: HubProcess, spokes: SpokeFactory, world: World
) -> None:
    gov = spokes("jl.gov")
    await gov.connect()
    sealed, body = gov.seal(members(world))
    assert sealed.slots is not None
    slots = list(codec.decode(sealed.slots, codec.Limits("t", 10**6, 1, 512, 100, 1, 1)))
    slots[0], slots[1] = slots[1], slots[0]

    await gov.publish_raw(
        transport.encode(transport.EnvelopeMsg(sealed.frame, body, codec.encode(slots)))
    )

    # refused before the header was trusted as a whole: the receipt speaks of the frame's
    # hash, which is how a spoke finds the drop it answers (spoke.sendstatus)
    subject = hashlib.sha256(sealed.frame).digest()

    def refusals() -> list[ReceiptEntry]:
        return [e for e in gov.receipts[None] if e.subject == subject]

    await gov.wait_for(lambda: bool(refusals()), WITHIN)
    [rejected] = refusals()
    assert rejected.status is ReceiptStatus.REJECTED
    assert rejected.reason == "envelope.bad_slots"
    assert rejected.detail is not None
    assert "not after slot 0" in rejected.detail


async def test_a_chunked_body_to_a_group_resumes_from_the_spool_with_its_slots_after_kill9(
    spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner, world: World, tmp_path: Path
) -> None:
    hub = spawn_hub()
    orgs = members(world, INLINE_MAX + 1)
    sender = spawn_spoke(hub, "jl.gov")
    recipient = spawn_spoke(hub, orgs[0])
    for spoke in (sender, recipient):
        spoke.start_reliable(resend_every=5.0)  # the embedded broker dies with hubd
    size = 3 * CHUNK
    source = tmp_path / "doc.bin"
    source.write_bytes(bytes(size))
    sink = tmp_path / "doc.sealed"
    sealed = await asyncio.to_thread(sender.seal_file, orgs, source, sink)
    assert sealed.slots is not None
    msg_id = sealed.header.msg_id
    await recipient.connect()
    await sender.connect()

    await sender.send_file(sealed, sink, pause_at=CHUNK)
    await sender.wait_for(lambda: sender.pump_paused(msg_id), WITHIN)
    assert await eventually(lambda: file_size(spool(hub, msg_id, "part")) == CHUNK)
    assert spool(hub, msg_id, "slots").read_bytes() == sealed.slots

    hub.kill9()
    connections = sender.connections
    await asyncio.to_thread(hub.start)
    assert await eventually(lambda: sender.connections > connections)
    await sender.continue_file(msg_id)

    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.ACCEPTED), WITHIN)
    await delivered(sender, recipient, msg_id, WITHIN)
    resumed = [e for e in hub.log_events() if e.get("event") == "spool.resumed"]
    assert [e["received"] for e in resumed] == [CHUNK]
    assert not spool(hub, msg_id, "slots").exists()
    assert recipient.received[msg_id].envelope.header.recipients == (orgs[0],)
    assert recipient.received[msg_id].files == [bytes(size)]
