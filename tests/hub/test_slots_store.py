"""A large group's envelope in the hub's store: each delivery keeps its recipient's slot and
proof (migration 0006), the jobs reloaded at start carry them, the ledger entry names the
slots' root and a count, and a 批复 to such a message finds who was primary from the slots.

In-process (tests/hub/test_ingest_passes.py's rig): a real intake and dispatcher on a real
SQLite store; the envelope is sealed by the project and arrives as the broker hands it.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from hubd.engine.jobrows import job_query, jobs_from_rows
from hubd.ops.trace import Step
from hubd.ops.traceview import describe
from hubd.store import rulefacts
from hubd.store import tables as t
from schemas import transport
from schemas.envelope import verify_envelope
from schemas.labels import Classification, DocType
from schemas.receipts import ReceiptStatus
from schemas.seal import Sealed
from schemas.slots import INLINE_MAX, read_part
from tests.hub.test_ingest_passes import UP, Rig, rig, until

__all__ = ["rig"]  # the in-process ingest (tests.hub.test_ingest_passes)


def govnet(rig: Rig, *leave_out: str) -> list[str]:
    """Everyone on govnet but jl.gov (the sender) and ``leave_out``: more than INLINE_MAX."""
    everyone = rig.world.directory.group("channel.govnet")
    assert everyone is not None
    chosen = [m for m in everyone.members if m not in {"jl.gov", *leave_out}]
    assert len(chosen) + len(leave_out) > INLINE_MAX
    return chosen


def arrive(rig: Rig, sealed: Sealed, body: bytes) -> None:
    """The envelope with every slot, as the broker hands it to the hub."""
    assert sealed.slots is not None
    rig.ingest.on_message(
        UP, transport.encode(transport.EnvelopeMsg(sealed.frame, body, sealed.slots))
    )


async def test_a_large_groups_deliveries_keep_each_recipients_slot_and_a_reply_finds_the_primary(
    rig: Rig,
) -> None:
    store = rig.store
    copies = govnet(rig, "jl.cc")
    sealed, body = rig.world.seal(to=["jl.cc"], cc=copies)
    msg_id = sealed.header.msg_id

    arrive(rig, sealed, body)
    await until(lambda: ReceiptStatus.ACCEPTED in rig.issuer.statuses(), "ACCEPTED")

    rows = await store.read(job_query(t.deliveries.c.msg_id == msg_id))
    jobs = jobs_from_rows(rows)
    referenced = await rulefacts.look_up(store.read, msg_id)
    audit = await store.read(select(t.audit.c.detail).where(t.audit.c.event == "message.accepted"))

    hub = verify_envelope(sealed.frame, rig.world.directory, slots=sealed.slots)
    assert hub.header.slots is not None
    assert {j.recipient for j in jobs} == {"jl.cc", *copies}
    for job in jobs:  # what a restarted hub sends each: its own slot, proving into the root
        assert job.part is not None
        assert read_part(job.part, hub.header.slots, job.recipient).org == job.recipient
    assert referenced is not None
    assert (referenced.doc_type, referenced.to) == (DocType.NOTICE, ("jl.cc",))
    [(text,)] = audit
    detail = json.loads(text)
    assert detail["recipients"] == len(copies) + 1  # a count and the root, not every one
    assert detail["slots_root"] == hub.header.slots.root.hex()
    assert detail["channels"] == {"govnet": len(copies) + 1}
    assert "routes" not in detail


def test_hubctl_trace_says_how_many_a_large_group_was_routed_to_on_each_channel() -> None:
    step = Step(
        seq=1,
        at=0,
        event="message.accepted",
        org="jl.gov",
        detail={"channel": "govnet", "recipients": 10_000, "channels": {"govnet": 10_000}},
    )
    assert describe(step) == (
        "accepted",
        "from jl.gov on govnet; routed on govnet to 10000 recipients",
    )


async def test_a_quarantined_large_groups_message_keeps_its_slots_as_evidence_of_whom_it_was_for(
    rig: Rig,
) -> None:
    # 机密 on govnet (ceiling 内部): it has leaked already; stored, never forwarded
    sealed, body = rig.world.seal(to=govnet(rig), classification=Classification.SECRET)
    msg_id = sealed.header.msg_id

    arrive(rig, sealed, body)
    await until(lambda: ReceiptStatus.REJECTED in rig.issuer.statuses(), "REJECTED")

    messages, deliveries = t.messages, t.deliveries
    [row] = await rig.store.read(
        select(messages.c.state, messages.c.slots).where(messages.c.msg_id == msg_id)
    )
    sent = await rig.store.read(select(deliveries.c.recipient).where(deliveries.c.msg_id == msg_id))

    assert row.state == "QUARANTINED"
    assert sent == []
    assert bytes(row.slots) == sealed.slots  # whom it was for, checked against its root
