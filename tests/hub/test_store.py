"""The hub's durable store (hubd.store.db.Store) on a real SQLite file and a real PostgreSQL.

Every test runs on both back ends. Durability is checked the only way that counts: close
the store, open a new one on the same database, and count what is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from structlog.testing import capture_logs

from hubd.core.states import DeliveryState, MessageState
from hubd.store import tables as t
from hubd.store.audit import GENESIS, AuditEvent, AuditRow, verify_chain
from hubd.store.db import MIGRATIONS, Store
from hubd.store.leases import LeaseLostError
from hubd.store.writes import (
    AdvanceNumbering,
    AppendAudit,
    DeliveryUpdate,
    Duplicate,
    NewMessage,
    Operation,
    QueueReceipts,
    Stored,
    UpdateDeliveries,
)
from schemas.errors import ClosedResourceError, StoreError, XchgError

NOW = 1_795_000_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    async with Store(db_url) as opened:
        yield opened


# ---------------------------------------------------------------------------- builders


def msg_id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def new_message(
    n: int,
    *,
    frame: bytes | None = None,
    recipients: tuple[str, ...] = ("jl.cc", "jl.jl"),
    state: str = "ACCEPTED",
) -> NewMessage:
    """A message row as ingest writes it, with one PENDING delivery per recipient."""
    frame = frame if frame is not None else b"frame-%d" % n
    mid = msg_id(n)
    row = {
        "msg_id": mid,
        "sender": "jl.gov",
        "classification": 1,
        "precedence": 0,
        "doc_type": "NOTICE",
        "created_at": NOW,
        "expires_at": None,
        "received_at": NOW + n,
        "arrival_channel": "govnet",
        "state": state,
        "reason": None,
        "frame": frame,
        "frame_sha256": hashlib.sha256(frame).digest(),
        "body_size": 4,
        "body": b"body",
        "body_path": None,
    }
    deliveries = [
        {
            "msg_id": mid,
            "recipient": r,
            "channel": "govnet",
            "precedence": 0,
            "state": DeliveryState.PENDING.value,
            "attempts": 0,
            "expires_at": None,
            "created_at": NOW + n,
            "updated_at": NOW + n,
        }
        for r in recipients
    ]
    audit = [AuditEvent("message.accepted", NOW + n, mid, "jl.gov", {"n": n, "title_free": "内部"})]
    return NewMessage(row, deliveries, audit)


async def count(store: Store, table: Any) -> int:
    rows = await store.read(select(func.count()).select_from(table))
    return int(rows[0][0])


async def audit_rows(store: Store) -> list[AuditRow]:
    rows = await store.read(select(t.audit).order_by(t.audit.c.seq))
    return [AuditRow.from_row(r) for r in rows]


# ---------------------------------------------------------------------------- opening


def head_revision() -> str:
    """The newest migration in hubd/store/migrations."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def test_opening_applies_the_migrations_once(db_url: str) -> None:
    async with Store(db_url) as store:
        version = await store.read(text("SELECT version_num FROM alembic_version"))
        assert [tuple(r) for r in version] == [(head_revision(),)]
        for table in t.metadata.sorted_tables:
            assert await count(store, table) == 0
        await store.submit(new_message(1))

    async with Store(db_url) as again:  # upgrading an up-to-date store changes nothing
        version = await again.read(text("SELECT version_num FROM alembic_version"))
        assert [tuple(r) for r in version] == [(head_revision(),)]
        assert await count(again, t.messages) == 1


async def test_sqlite_connections_run_with_wal_and_synchronous_full(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    async with Store(url) as store:
        async with store.engine.connect() as conn:  # a reader's pooled connection
            journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            sync = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
        writer_sync = await store.run_on_writer(
            lambda c: c.exec_driver_sql("PRAGMA synchronous").scalar()
        )

    assert journal == "wal"
    assert sync == 2  # FULL
    assert writer_sync == 2  # the writer's own connection, which makes every commit
    with sqlite3.connect(tmp_path / "hub.db") as raw:  # WAL is a property of the file
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_postgresql_commits_are_synchronous(pg_url: str) -> None:
    async with Store(pg_url) as store:
        setting = await store.run_on_writer(
            lambda c: c.exec_driver_sql("SHOW synchronous_commit").scalar()
        )

    assert setting == "on"


async def test_a_failed_statement_names_no_value_it_was_given(db_url: str) -> None:
    """Store errors are logged (store.write_failed, message.not_stored): their text holds
    the statement, never a row's values (a document number, a frame), on the writer's
    connection and the reader's alike."""
    number = "吉政发〔2026〕77号-do-not-log"
    row = {**new_message(1).row, "doc_number": number}
    async with Store(db_url) as store:
        await store.run_on_writer(lambda c: (c.execute(t.messages.insert(), [row]), c.commit()))
        with pytest.raises(DBAPIError) as written:  # the same msg_id again
            await store.run_on_writer(lambda c: c.execute(t.messages.insert(), [row]))
        await store.run_on_writer(lambda c: c.rollback())
        with pytest.raises(DBAPIError) as read:
            await store.read(
                text("SELECT doc_number FROM no_such_table WHERE x = :v").bindparams(v=number)
            )

    assert "INSERT INTO messages" in str(written.value)  # the statement is still named
    for failure in (written.value, read.value):
        assert number not in str(failure)
        assert "hide_parameters=True" in str(failure)  # says that values were left out


async def test_a_refused_group_commit_says_which_table_refused_but_no_value_of_the_row(
    db_url: str,
) -> None:
    """PostgreSQL's DETAIL quotes the failing row ("Failing row contains (...)"), and a
    traceback would carry it: the writers' error and the one log line say the SQLSTATE,
    table and column (SQLite: its message), never a value."""
    number = "吉政发〔2026〕78号-do-not-log"
    bad = new_message(1)
    bad.row.update(doc_number=number, sender=None)  # NOT NULL: the database refuses it
    async with Store(db_url) as store:
        with capture_logs() as logs, pytest.raises(StoreError) as refused:
            await store.submit(bad)
        assert await count(store, t.messages) == 0

    lines = [e for e in logs if e["event"] == "store.write_failed"]
    assert len(lines) == 1
    assert "exc_info" not in lines[0]  # no traceback: it would quote the row
    for said in (str(refused.value), repr(lines[0])):
        assert number not in said
        assert "sender" in said  # what was refused, to look for
    assert refused.value.retriable


# ---------------------------------------------------------------------------- group commit


async def test_concurrent_submits_are_all_durable_and_share_few_commits(db_url: str) -> None:
    operations = 2000
    async with Store(db_url) as store:
        results = await asyncio.gather(*(store.submit(new_message(n)) for n in range(operations)))
        commits = store.commits

    assert results == [Stored()] * operations
    assert 1 <= commits < operations / 10
    async with Store(db_url) as reopened:
        assert await count(reopened, t.messages) == operations
        assert await count(reopened, t.deliveries) == 2 * operations
        checked, problems = verify_chain(await audit_rows(reopened))
    assert (checked, problems) == (operations, [])


async def test_parts_handed_over_together_share_one_commit_and_a_lost_lease_fails_alone(
    db_url: str,
) -> None:
    """An ingest pass on a store shared by replicas: one part per sender, each with its own
    fence; one group commit for all of them, past ``group_max``, and the part whose lease
    was lost refused alone."""

    def fence_for(ops: Sequence[Operation]) -> None:
        if any(isinstance(op, NewMessage) and op.row["sender"] == "jl.cc" for op in ops):
            raise LeaseLostError("a", [7])  # as the keeper does for a bucket it lost

    async with Store(db_url, group_max=4) as store:
        store.fence_for = fence_for
        messages = [new_message(n) for n in range(1, 11)]
        messages[4].row["sender"] = "jl.cc"
        parts: list[list[Operation]] = [[m] for m in messages]
        commits = store.commits

        outcomes = await store.submit_parts(parts)

        assert store.commits - commits == 1
        assert isinstance(outcomes[4], LeaseLostError)
        assert [o for i, o in enumerate(outcomes) if i != 4] == [[Stored()]] * 9
        assert await count(store, t.messages) == 9


async def test_submit_returns_only_after_the_row_is_committed(db_url: str) -> None:
    async with Store(db_url) as store:
        await store.submit(new_message(7))
        # A different connection (the read pool) sees it: the transaction is committed.
        rows = await store.read(select(t.messages.c.msg_id))
    assert [bytes(r[0]) for r in rows] == [msg_id(7)]


# ---------------------------------------------------------------------------- duplicates


async def test_known_msg_id_with_the_same_frame_is_a_same_duplicate(store: Store) -> None:
    assert await store.submit(new_message(1, frame=b"original")) == Stored()

    again = await store.submit(new_message(1, frame=b"original"))

    assert again == Duplicate(same=True, state=MessageState.ACCEPTED)
    assert await count(store, t.messages) == 1
    assert await count(store, t.deliveries) == 2


async def test_known_msg_id_with_another_frame_is_a_different_duplicate(store: Store) -> None:
    await store.submit(new_message(1, frame=b"original", state="QUARANTINED", recipients=()))

    again = await store.submit(new_message(1, frame=b"replayed with other bytes"))

    assert again == Duplicate(same=False, state=MessageState.QUARANTINED)
    rows = await store.read(select(t.messages.c.frame, t.messages.c.state))
    assert [(bytes(r[0]), r[1]) for r in rows] == [(b"original", "QUARANTINED")]
    assert await count(store, t.deliveries) == 0


async def test_duplicates_within_one_batch_are_recognised(store: Store) -> None:
    before = store.commits

    results = await asyncio.gather(
        store.submit(new_message(1, frame=b"first")),
        store.submit(new_message(1, frame=b"first")),
        store.submit(new_message(1, frame=b"second")),
        store.submit(new_message(2)),
    )

    assert store.commits == before + 1  # the four shared one transaction
    assert list(results) == [
        Stored(),
        Duplicate(same=True, state=MessageState.ACCEPTED),
        Duplicate(same=False, state=MessageState.ACCEPTED),
        Stored(),
    ]
    assert await count(store, t.messages) == 2
    assert await count(store, t.deliveries) == 4
    assert len(await audit_rows(store)) == 2  # duplicates add nothing to the ledger


# ---------------------------------------------------------------------------- receipt outbox


def queue(dest: str, channel: str) -> QueueReceipts:
    return QueueReceipts(dest, channel, f"batch for {dest} on {channel}".encode(), NOW)


async def test_receipt_batches_are_numbered_from_one_per_destination_and_channel(
    store: Store,
) -> None:
    keys = [
        ("jl.gov", "govnet"),
        ("jl.cc", "govnet"),
        ("jl.gov", "govnet"),
        ("jl.gov", "classified"),
        ("jl.gov", "govnet"),
        ("jl.cc", "govnet"),
    ]
    one_batch = await asyncio.gather(*(store.submit(queue(d, c)) for d, c in keys))
    one_by_one = [await store.submit(queue(d, c)) for d, c in keys]

    assert one_batch == [1, 1, 2, 1, 3, 2]
    assert one_by_one == [4, 3, 5, 2, 6, 4]
    rows = await store.read(
        select(t.receipt_outbox.c.dest, t.receipt_outbox.c.channel, t.receipt_outbox.c.seq)
    )
    assert sorted((r[0], r[1], int(r[2])) for r in rows) == sorted(
        [("jl.gov", "govnet", n) for n in range(1, 7)]
        + [("jl.cc", "govnet", n) for n in range(1, 5)]
        + [("jl.gov", "classified", n) for n in range(1, 3)]
    )


async def test_receipt_numbering_continues_after_reopening(db_url: str) -> None:
    async with Store(db_url) as store:
        assert [await store.submit(queue("jl.gov", "govnet")) for _ in range(3)] == [1, 2, 3]
        assert await store.submit(queue("jl.cc", "govnet")) == 1

    async with Store(db_url) as store:
        assert await store.submit(queue("jl.gov", "govnet")) == 4
        assert await store.submit(queue("jl.cc", "govnet")) == 2
        assert await store.submit(queue("jl.cc", "classified")) == 1


# ---------------------------------------------------------------------------- audit chain


async def test_audit_chain_continues_after_reopening(db_url: str) -> None:
    def events(first: int) -> AppendAudit:
        return AppendAudit(
            [AuditEvent("hub.note", NOW + i, None, None, {"i": i}) for i in range(first, first + 3)]
        )

    async with Store(db_url) as store:
        await store.submit(events(0))
        await store.submit(new_message(1))
        before = await audit_rows(store)
    async with Store(db_url) as store:
        await store.submit(events(10))
        rows = await audit_rows(store)

    assert [r.seq for r in rows] == list(range(1, 8))
    assert rows[: len(before)] == before
    assert rows[0].prev_hash == GENESIS
    assert rows[len(before)].prev_hash == before[-1].hash  # linked across the restart
    assert verify_chain(rows) == (7, [])


async def test_a_refused_batch_fails_its_callers_and_leaves_no_gap_in_the_chain(
    store: Store,
) -> None:
    await store.submit(new_message(1))
    broken = new_message(2)
    broken.deliveries[0]["msg_id"] = msg_id(99)  # a delivery of a message that is not there

    with capture_logs() as logs:
        failed = await asyncio.gather(
            store.submit(broken), store.submit(queue("jl.gov", "govnet")), return_exceptions=True
        )
    assert [type(e) for e in failed] == [StoreError, StoreError]  # the whole batch
    assert all(isinstance(e, StoreError) and e.retriable for e in failed)
    assert [e["event"] for e in logs] == ["store.write_failed"]
    await store.submit(new_message(3))  # the store still works afterwards

    assert await store.submit(queue("jl.gov", "govnet")) == 1  # no number was used up

    rows = await audit_rows(store)
    assert [r.msg_id for r in rows] == [msg_id(1), msg_id(3)]
    assert verify_chain(rows) == (2, [])
    assert await count(store, t.messages) == 2


async def submit_malformed_then_valid(url: str) -> list[object]:
    """What becomes of a malformed operation and of the next, valid one; never raises."""
    malformed = new_message(1)
    del malformed.row["frame_sha256"]  # our own bug, say: a row without its frame hash
    outcome: list[object] = []
    store = Store(url)
    await store.__aenter__()
    try:
        async with asyncio.timeout(10):  # turns the hang this guards against into a result
            try:
                outcome.append(await store.submit(malformed))
            except XchgError as exc:
                outcome.append(type(exc))
            outcome.append(await store.submit(new_message(2)))
    except TimeoutError:
        outcome.append("no answer")
    finally:
        # close() stops at a dead writer; release its connections so no other test pays.
        with contextlib.suppress(Exception):
            await store.close()
        if store._conn is not None:
            await store._conn.close()
        await store.engine.dispose()
    return outcome


async def test_an_operation_the_writer_cannot_plan_fails_its_caller_not_the_store(
    tmp_path: Path,
) -> None:
    """One writer task serves every caller: an operation it cannot plan must fail alone,
    not kill the writer and leave every later caller waiting forever."""
    outcome = await submit_malformed_then_valid(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    gc.collect()  # what a dead writer still held is reported here, not in a later test

    assert len(outcome) == 2, outcome
    assert isinstance(outcome[0], type)
    assert issubclass(outcome[0], XchgError)
    assert outcome[1] == Stored()


# ---------------------------------------------------------------------------- closing


async def test_close_writes_everything_queued_before_it(db_url: str) -> None:
    operations = 300
    store = Store(db_url, group_max=16)  # many batches still queued when close comes
    await store.__aenter__()

    # gather starts the submits in order, so all of them are queued before close() is.
    # (The timeout only turns a lost write, which would hang its caller, into a failure.)
    async with asyncio.timeout(10):
        *results, _ = await asyncio.gather(
            *(store.submit(new_message(n)) for n in range(operations)), store.close()
        )

    assert results == [Stored()] * operations
    assert store.commits >= operations // 16
    async with Store(db_url) as reopened:
        assert await count(reopened, t.messages) == operations
        assert await count(reopened, t.deliveries) == 2 * operations


async def test_submit_after_close_raises_closed_resource_error(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await store.__aenter__()
    await store.close()
    await store.close()  # idempotent

    async with asyncio.timeout(10):  # a submit the closed writer never answers would hang
        with pytest.raises(ClosedResourceError):
            await store.submit(new_message(1))


# ---------------------------------------------------------------------------- updates


async def test_update_deliveries_changes_state_attempts_and_time(store: Store) -> None:
    await store.submit(new_message(1))
    await store.submit(new_message(2))

    await store.submit(
        UpdateDeliveries(
            [DeliveryUpdate(msg_id(1), "jl.cc", DeliveryState.SENT, 1, NOW + 100)],
            [AuditEvent("delivery.sent", NOW + 100, msg_id(1), "jl.cc", {"attempts": 1})],
        )
    )
    await store.submit(
        UpdateDeliveries(
            [DeliveryUpdate(msg_id(1), "jl.cc", DeliveryState.DELIVERED, 1, NOW + 200)], []
        )
    )

    rows = await store.read(
        select(
            t.deliveries.c.msg_id,
            t.deliveries.c.recipient,
            t.deliveries.c.state,
            t.deliveries.c.attempts,
            t.deliveries.c.updated_at,
        )
    )
    got = {(bytes(r[0]), r[1]): (r[2], r[3], r[4]) for r in rows}
    assert got == {
        (msg_id(1), "jl.cc"): ("DELIVERED", 1, NOW + 200),
        (msg_id(1), "jl.jl"): ("PENDING", 0, NOW + 1),  # the other recipient is untouched
        (msg_id(2), "jl.cc"): ("PENDING", 0, NOW + 2),
        (msg_id(2), "jl.jl"): ("PENDING", 0, NOW + 2),
    }
    events = [r.event for r in await audit_rows(store)]
    assert events == ["message.accepted", "message.accepted", "delivery.sent"]


async def test_numbering_continues_after_a_floor_a_spoke_names_and_keeps_it_across_restarts(
    db_url: str,
) -> None:
    async with Store(db_url) as store:
        assert [await store.submit(queue("jl.gov", "govnet")) for _ in range(3)] == [1, 2, 3]
        # a spoke holds 10: the store was restored from a backup taken at 3
        assert await store.submit(AdvanceNumbering("jl.gov", "govnet", 10, NOW)) is True
        assert store.numbered("jl.gov", "govnet") == 10
        assert await store.submit(queue("jl.gov", "govnet")) == 11
        assert await store.submit(AdvanceNumbering("jl.gov", "govnet", 5, NOW)) is False
        assert await store.submit(queue("jl.cc", "govnet")) == 1  # others untouched

    async with Store(db_url) as store:
        assert await store.submit(queue("jl.gov", "govnet")) == 12

    async with Store(db_url) as store:  # a floor above every batch still written counts
        assert await store.submit(AdvanceNumbering("jl.cc", "govnet", 40, NOW)) is True
    async with Store(db_url) as store:
        assert await store.submit(queue("jl.cc", "govnet")) == 41
