"""The hub's ledger decisions, in-process: when to sign, what to prove to whom, the start
check against a store that lost entries, and REJECTED receipts recorded in the ledger."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing
from sqlalchemy import Connection, delete, select

from hubd.engine.checkpoints import Checkpointer, Policy, check_ledger, due
from hubd.engine.ledgerdesk import (
    CHANNEL_BELOW_LABEL,
    NOT_A_PARTY,
    UNKNOWN_MESSAGE,
    plan_consistency,
    prove_refusal,
    restore_target,
    take_entries,
)
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.db import Store
from hubd.store.ledger import StoredCheckpoint
from hubd.store.writes import AppendAudit
from schemas import topics, transport
from schemas.labels import Classification
from schemas.ledger import Entry, verify_checkpoint
from schemas.receipts import ReceiptStatus
from tests.hub.test_ingest_passes import Rig, rig, until
from tests.world import World, make_world

__all__ = ["rig"]  # the in-process ingest (tests.hub.test_ingest_passes)

POLICY = Policy(enabled=True, interval_ms=10_000, entries=1000)


def stored(size: int, at: int) -> StoredCheckpoint:
    return StoredCheckpoint(size, bytes(32), at, "kid", b"")


@pytest.mark.parametrize(
    ("last", "size", "now", "sign"),
    [
        (None, 0, 0, True),  # nothing signed yet
        (stored(5, 0), 5, 99_999, False),  # nothing added: never
        (stored(5, 0), 6, 9_999, False),  # one added, too soon
        (stored(5, 0), 6, 10_000, True),  # one added, the interval passed
        (stored(5, 0), 1005, 1, True),  # a thousand added: at once
    ],
)
def test_a_checkpoint_is_due_when_the_tree_grew_and_time_or_entries_say_so(
    last: StoredCheckpoint | None, size: int, now: int, sign: bool
) -> None:
    assert due(POLICY, last, size, now) is sign


def test_consistency_is_proven_only_within_the_latest_checkpoint() -> None:
    plan = plan_consistency(9, 4, signed=10, ledger=12)
    assert (plan.low, plan.high, plan.provable, plan.ahead) == (4, 9, True, False)
    assert not plan_consistency(4, 11, signed=10, ledger=12).provable
    ahead = plan_consistency(4, 50, signed=10, ledger=12)
    assert (ahead.provable, ahead.ahead) == (False, True)


def test_the_restore_entry_is_proven_in_the_received_checkpoints_tree() -> None:
    # the restored ledger grew past what the witness held: the larger size is the new one
    assert restore_target(8, 12, 10, ledger=13) == 12
    # the witness holds more than the restored ledger: the smaller size is the new one
    assert restore_target(11, 40, 10, ledger=13) == 11
    assert restore_target(11, 40, None, ledger=13) is None
    assert restore_target(6, 9, 10, ledger=13) is None  # the entry is in neither tree


@pytest.mark.parametrize(
    ("asker", "sender", "label", "ceiling", "refusal"),
    [
        ("jl.gov", "jl.gov", Classification.INTERNAL, Classification.CONFIDENTIAL, None),
        ("jl.cc", "jl.gov", Classification.INTERNAL, Classification.INTERNAL, None),
        ("jl.jl", "jl.gov", Classification.INTERNAL, Classification.CONFIDENTIAL, NOT_A_PARTY),
        ("jl.cc", "jl.gov", Classification.SECRET, Classification.INTERNAL, CHANNEL_BELOW_LABEL),
        ("jl.cc", None, None, Classification.INTERNAL, UNKNOWN_MESSAGE),
    ],
)
def test_only_a_party_on_a_channel_fit_for_the_label_may_see_a_messages_entries(
    asker: str,
    sender: str | None,
    label: Classification | None,
    ceiling: Classification,
    refusal: str | None,
) -> None:
    assert prove_refusal(asker, sender, ["jl.cc"], label, ceiling) == refusal


def test_a_proof_answer_holds_what_fits_its_budget_and_at_least_one_entry() -> None:
    entries = [Entry(s, 0, "message.accepted", None, "jl.gov", "x" * 1000) for s in range(1, 50)]
    assert take_entries(entries, 1 << 20) == 49
    assert 1 < take_entries(entries, 1 << 20, budget=10_000) < 49
    assert take_entries(entries, 1 << 20, budget=10) == 1


# ---------------------------------------------------------------- the start check


async def ledger_with_checkpoint(path: Path, world: World, entries: int) -> StoredCheckpoint:
    """A store of ``entries`` entries and a signed checkpoint of them all."""
    async with Store(f"sqlite+aiosqlite:///{path}") as store:
        events = [AuditEvent("test.entry", n, None, "jl.gov", {"n": n}) for n in range(entries)]
        await store.submit(AppendAudit(events))
        sent: list[bytes] = []
        checkpoints = Checkpointer(store, world.hub_key, "jl.hub", POLICY, lambda: 1, sent.append)
        await checkpoints.check()
        await checkpoints.start()
        assert checkpoints.latest is not None
        [message] = [transport.decode(p) for p in sent]
        assert isinstance(message, transport.CheckpointMsg)
        assert verify_checkpoint(message.frame, world.hub_key.public).size == entries
        return checkpoints.latest


async def problem_after(path: Path, change: Callable[[Connection], None]) -> str | None:
    async with Store(f"sqlite+aiosqlite:///{path}") as store:
        await store.run_on_writer(change)
        return await store.read_sync(check_ledger, (await store.read_sync(_size)))


def _size(conn: Connection) -> int:
    return int(conn.execute(select(t.audit.c.seq).order_by(t.audit.c.seq.desc())).scalar() or 0)


async def test_an_intact_store_and_its_checkpoint_pass_the_start_check(tmp_path: Path) -> None:
    await ledger_with_checkpoint(tmp_path / "hub.db", make_world(), 37)
    assert await problem_after(tmp_path / "hub.db", lambda _conn: None) is None


async def test_a_store_whose_tail_was_deleted_fails_the_start_check(tmp_path: Path) -> None:
    await ledger_with_checkpoint(tmp_path / "hub.db", make_world(), 37)

    def cut(conn: Connection) -> None:
        conn.execute(delete(t.audit).where(t.audit.c.seq > 30))
        conn.commit()

    problem = await problem_after(tmp_path / "hub.db", cut)
    assert problem is not None
    assert problem.startswith("the ledger ends at entry 30 but checkpoint 37")
    assert "hubctl audit restored" in problem


async def test_deleted_entries_beyond_every_checkpoint_show_in_the_tree(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    await ledger_with_checkpoint(path, make_world(), 10)
    async with Store(f"sqlite+aiosqlite:///{path}") as store:  # more, never checkpointed
        await store.submit(AppendAudit([AuditEvent("test.more", 1, None, None, {})] * 22))

    def cut(conn: Connection) -> None:
        conn.execute(delete(t.audit).where(t.audit.c.seq > 12))
        conn.commit()

    problem = await problem_after(path, cut)
    assert problem is not None
    assert "the ledger ends at entry 12 but its tree holds entries up to 32" in problem


# ---------------------------------------------------------------- refusals in the ledger


async def rejected_entries(rig: Rig) -> list[Entry]:
    rows = await rig.store.read(
        select(
            t.audit.c.seq,
            t.audit.c.at,
            t.audit.c.event,
            t.audit.c.msg_id,
            t.audit.c.org,
            t.audit.c.detail,
        ).where(t.audit.c.event == "message.rejected")
    )
    return [
        Entry(r[0], r[1], r[2], None if r[3] is None else bytes(r[3]), r[4], r[5]) for r in rows
    ]


async def test_every_rejected_receipt_has_its_ledger_entry(rig: Rig) -> None:
    up = topics.up("govnet", "jl.gov")
    garbage = b"\x93not a message"
    rig.ingest.on_message(up, garbage)  # unreadable: a REJECTED about its hash
    sealed, body = rig.world.seal()
    rig.ingest.on_message(up, transport.encode(transport.EnvelopeMsg(sealed.frame, body)))
    await until(lambda: ReceiptStatus.ACCEPTED in rig.issuer.statuses(), "ACCEPTED")
    # the same msg_id with another frame: refused after the store found it (outside a pass)
    again, again_body = rig.world.seal(msg_id=sealed.header.msg_id, title="another")
    rig.ingest.on_message(up, transport.encode(transport.EnvelopeMsg(again.frame, again_body)))
    await until(lambda: rig.issuer.statuses().count(ReceiptStatus.REJECTED) == 2, "2 REJECTED")
    await until(lambda: rig.ingest.idle, "the ingest to be idle")

    rejected = [e for e in rig.issuer.entries if e.status is ReceiptStatus.REJECTED]
    entries = await rejected_entries(rig)
    assert len(entries) == len(rejected) == 2
    for receipt, entry in zip(rejected, entries, strict=True):
        detail = entry.details()
        assert entry.org == "jl.gov"
        assert entry.msg_id == receipt.msg_id
        assert detail == {
            "channel": "govnet",
            "reason": receipt.reason,
            "frame_sha256": receipt.subject.hex(),
            "retriable": False,
        }
    assert rejected[0].subject == hashlib.sha256(garbage).digest()
    assert rejected[1].msg_id == sealed.header.msg_id
    assert "another" not in str([e.detail for e in entries])  # the sender's fields stay out


async def test_a_refusal_is_answered_even_when_its_ledger_entry_cannot_be_written(
    rig: Rig,
) -> None:
    await rig.store.close()  # every commit now fails
    with structlog.testing.capture_logs() as logs:
        rig.ingest.on_message(topics.up("govnet", "jl.gov"), b"\x93not a message")
        await until(lambda: ReceiptStatus.REJECTED in rig.issuer.statuses(), "the REJECTED")
    assert "audit.write_failed" in [e["event"] for e in logs]
