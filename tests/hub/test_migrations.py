"""Migration 0002 (retention) upgrading a store made at 0001 that already holds data:
on a real SQLite file and a real PostgreSQL database, every row survives, the frame may
now be purged, the foreign key still holds, the audit chain still verifies."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from hubd.core.states import DeliveryState
from hubd.store import ledger as ledgerstore
from hubd.store import tables as t
from hubd.store.audit import AuditEvent, verify_chain
from hubd.store.connections import engine_for
from hubd.store.db import MIGRATIONS, Store
from hubd.store.writes import NewMessage
from schemas import merkle
from tests.hub.test_store import audit_rows, msg_id, new_message


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("pg_url"))


async def migrate(url: str, revision: str, *, down: bool = False) -> None:
    def run(conn: Connection) -> None:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)

    engine = engine_for(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


async def store_at_0001_with_data(url: str) -> list[NewMessage]:
    """Rows written the way the 0001 hub wrote them, audit chain included."""
    await migrate(url, "0001")
    ops = [new_message(n) for n in (1, 2, 3)]
    engine = engine_for(url)
    try:
        async with engine.begin() as conn:
            seq, prev = 0, bytes(32)
            for op in ops:
                await conn.execute(insert(t.messages).values(op.row))  # 0001's columns only
                await conn.execute(insert(t.deliveries), op.deliveries)
                for ev in op.audit:
                    seq, prev = await _chain(conn, seq, prev, ev)
    finally:
        await engine.dispose()
    return ops


async def _chain(conn: object, seq: int, prev: bytes, ev: AuditEvent) -> tuple[int, bytes]:
    import json  # noqa: PLC0415

    from hubd.store.audit import chain_hash  # noqa: PLC0415

    seq += 1
    detail = json.dumps(ev.detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    digest = chain_hash(
        prev, seq=seq, at=ev.at, event=ev.event, msg_id=ev.msg_id, org=ev.org, detail=detail
    )
    row = {
        "seq": seq,
        "at": ev.at,
        "event": ev.event,
        "msg_id": ev.msg_id,
        "org": ev.org,
        "detail": detail,
        "prev_hash": prev,
        "hash": digest,
    }
    await conn.execute(insert(t.audit).values(row))  # type: ignore[attr-defined]
    return seq, digest


async def test_upgrading_a_store_with_data_keeps_every_row_and_lets_frames_be_purged(
    db_url: str,
) -> None:
    ops = await store_at_0001_with_data(db_url)

    async with Store(db_url) as store:  # opening upgrades to the head
        version = await store.read(text("SELECT version_num FROM alembic_version"))
        messages = await store.read(select(t.messages).order_by(t.messages.c.msg_id))
        deliveries = await store.read(select(t.deliveries))
        checked, problems = verify_chain(await audit_rows(store))
        engine = store.engine
        async with engine.begin() as conn:
            await conn.execute(  # the frame may be NULL now, and purged_at exists
                update(t.messages)
                .where(t.messages.c.msg_id == msg_id(1))
                .values(frame=None, purged_at=1)
            )
        purged = await store.read(
            select(t.messages.c.frame, t.messages.c.purged_at).where(
                t.messages.c.msg_id == msg_id(1)
            )
        )
        # the foreign key survived the rebuild: a delivery of no message is refused
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(
                    insert(t.deliveries).values({**ops[0].deliveries[0], "msg_id": msg_id(99)})
                )

    assert [tuple(r) for r in version] == [("0011",)]  # the head: 0002 to 0011 in turn
    assert [bytes(r.msg_id) for r in messages] == [msg_id(n) for n in (1, 2, 3)]
    for row, op in zip(messages, ops, strict=True):
        assert bytes(row.frame) == op.row["frame"]
        assert bytes(row.frame_sha256) == op.row["frame_sha256"]
        assert bytes(row.body) == op.row["body"]
        assert row.purged_at is None
        assert row.doc_number is None  # 0005: older messages are not given a number
    assert len(deliveries) == 6
    assert {r.slot for r in deliveries} == {None}  # 0006: a v1 envelope's deliveries have none
    assert {r.state for r in deliveries} == {DeliveryState.PENDING.value}
    assert (checked, problems) == (3, [])
    assert [(r.frame, r.purged_at) for r in purged] == [(None, 1)]


async def test_on_sqlite_the_rebuilt_tables_keep_their_reference_index_and_foreign_keys_on(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await store_at_0001_with_data(url)

    async with Store(url) as store:
        foreign_keys = await store.read(text("PRAGMA foreign_keys"))

    with sqlite3.connect(tmp_path / "hub.db") as raw:
        schema = dict(raw.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))
        check = raw.execute("PRAGMA foreign_key_check").fetchall()
    assert [tuple(r) for r in foreign_keys] == [(1,)]  # the hub's connections: still on
    assert 'REFERENCES "messages"' in schema["deliveries"]
    assert "_messages_new" not in "".join(schema.values())
    assert "frame BLOB," in schema["messages"]  # no NOT NULL any more
    assert "purged_at" in schema["messages"]
    assert "deliveries_by_state" in schema
    assert "WHERE purged_at IS NULL" in schema["messages_unpurged"]
    assert check == []


async def test_downgrading_refuses_while_purged_messages_exist_and_works_without(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    await store_at_0001_with_data(url)
    await migrate(url, "0002")

    await migrate(url, "0001", down=True)  # nothing purged: back to NOT NULL frames
    with sqlite3.connect(tmp_path / "hub.db") as raw:
        assert (
            "frame BLOB NOT NULL"
            in raw.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
        )
        assert raw.execute("SELECT count(*) FROM deliveries").fetchone() == (6,)

    await migrate(url, "0002")
    with sqlite3.connect(tmp_path / "hub.db") as raw:
        raw.execute("UPDATE messages SET frame = NULL, purged_at = 1 WHERE rowid = 1")
    with pytest.raises(RuntimeError, match="1 messages have been purged"):
        await migrate(url, "0001", down=True)


async def test_an_old_ledger_upgraded_to_0004_gets_the_tree_its_rows_give(db_url: str) -> None:
    await store_at_0001_with_data(db_url)
    await migrate(db_url, "0003")  # a ledger with entries, and no tree yet
    await migrate(db_url, "0004")

    def roots(conn: Connection) -> list[tuple[bytes, bytes]]:
        leaves = [e.leaf_hash() for e in ledgerstore.stream_entries(conn)]
        return [
            (ledgerstore.root(conn, size), merkle.root_of(leaves[:size]))
            for size in range(1, len(leaves) + 1)
        ]

    engine = engine_for(db_url)
    try:
        async with engine.connect() as conn:
            pairs = await conn.run_sync(roots)
    finally:
        await engine.dispose()

    assert len(pairs) >= 3
    for stored, recomputed in pairs:
        assert stored == recomputed


async def test_0005_adds_the_doc_number_and_the_find_indexes_and_goes_back(db_url: str) -> None:
    await store_at_0001_with_data(db_url)
    await migrate(db_url, "0005")

    def indexes(conn: Connection) -> dict[str, set[str]]:
        inspector = inspect(conn)
        return {
            table: {str(i["name"]) for i in inspector.get_indexes(table)}
            for table in ("messages", "deliveries")
        }

    engine = engine_for(db_url)
    try:
        async with engine.connect() as conn:
            after = await conn.run_sync(indexes)
        await migrate(db_url, "0004", down=True)
        async with engine.connect() as conn:
            before = await conn.run_sync(indexes)
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("messages")}
            )
    finally:
        await engine.dispose()

    assert {"messages_by_doc_number", "messages_by_sender", "messages_by_received"} <= after[
        "messages"
    ]
    assert "deliveries_by_recipient" in after["deliveries"]
    assert "messages_by_sender" not in before["messages"]
    assert "doc_number" not in columns


async def test_0006_adds_each_deliverys_slot_and_goes_back(db_url: str) -> None:
    await store_at_0001_with_data(db_url)
    await migrate(db_url, "0006")

    def columns(conn: Connection) -> set[str]:
        inspector = inspect(conn)
        return {
            f"{table}.{col['name']}"
            for table in ("deliveries", "messages")
            for col in inspector.get_columns(table)
        }

    engine = engine_for(db_url)
    try:
        async with engine.connect() as conn:
            after = await conn.run_sync(columns)
        await migrate(db_url, "0005", down=True)
        async with engine.connect() as conn:
            before = await conn.run_sync(columns)
    finally:
        await engine.dispose()

    assert after - before == {"deliveries.slot", "messages.slots"}


async def test_0007_adds_the_empty_lease_tables_and_goes_back(
    db_url: str,
) -> None:
    await store_at_0001_with_data(db_url)
    await migrate(db_url, "0007")

    def tables(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names())

    engine = engine_for(db_url)
    try:
        async with engine.connect() as conn:
            after = await conn.run_sync(tables)
            leases = (
                await conn.execute(select(t.hub_leases).order_by(t.hub_leases.c.bucket))
            ).all()
        await migrate(db_url, "0006", down=True)
        async with engine.connect() as conn:
            before = await conn.run_sync(tables)
    finally:
        await engine.dispose()

    assert after - before == {"hub_leases", "hub_replicas"}
    assert leases == []  # the first replica to join writes its rows


async def test_0008_adds_the_empty_shared_spool_tables_and_goes_back(
    db_url: str,
) -> None:
    await store_at_0001_with_data(db_url)
    await migrate(db_url, "0008")

    def tables(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names())

    engine = engine_for(db_url)
    try:
        async with engine.connect() as conn:
            after = await conn.run_sync(tables)
            held = (await conn.execute(select(t.spool_pieces))).all()
        await migrate(db_url, "0007", down=True)
        async with engine.connect() as conn:
            before = await conn.run_sync(tables)
    finally:
        await engine.dispose()

    assert after - before == {"spool_pieces", "spool_transfers"}
    assert held == []  # a hub keeps its folder until it runs as a replica


async def test_0009_adds_each_replicas_reach_and_goes_back(db_url: str) -> None:
    await store_at_0001_with_data(db_url)
    await migrate(db_url, "0009")

    def columns(conn: Connection) -> set[str]:
        return {c["name"] for c in inspect(conn).get_columns("hub_replicas")}

    engine = engine_for(db_url)
    try:
        async with engine.connect() as conn:
            after = await conn.run_sync(columns)
        await migrate(db_url, "0008", down=True)
        async with engine.connect() as conn:
            before = await conn.run_sync(columns)
    finally:
        await engine.dispose()

    assert after - before == {"reach"}


async def test_0010_adds_the_terms_handling_and_reminders_and_goes_back(db_url: str) -> None:
    await store_at_0001_with_data(db_url)
    await migrate(db_url, "0010")

    def shape(conn: Connection) -> tuple[set[str], set[str], set[str], list[tuple[object, ...]]]:
        found = inspect(conn)
        messages = {c["name"] for c in found.get_columns("messages")}
        deliveries = {c["name"] for c in found.get_columns("deliveries")}
        rows = [tuple(r) for r in conn.execute(text("SELECT drill, terms_open FROM messages"))]
        return messages, deliveries, set(found.get_table_names()), rows

    engine = engine_for(db_url)
    try:
        async with engine.connect() as conn:
            messages, deliveries, names, rows = await conn.run_sync(shape)
        await migrate(db_url, "0009", down=True)
        async with engine.connect() as conn:
            before = await conn.run_sync(
                lambda c: (
                    {x["name"] for x in inspect(c).get_columns("messages")},
                    {x["name"] for x in inspect(c).get_columns("deliveries")},
                    set(inspect(c).get_table_names()),
                )
            )
    finally:
        await engine.dispose()

    assert messages - before[0] == {
        "sign_by",
        "accept_by",
        "done_by",
        "case_no",
        "drill",
        "terms_open",
    }
    assert deliveries - before[1] == {"handling", "handled_at"}
    assert names - before[2] == {"reminders"}
    assert rows, "the stored messages are kept"
    assert all(not drill and not open_ for drill, open_ in rows), "no terms before 0010"


async def test_0011_adds_the_hop_cursors_and_goes_back(db_url: str) -> None:
    await store_at_0001_with_data(db_url)
    await migrate(db_url, "0011")
    engine = engine_for(db_url)
    try:
        async with engine.connect() as conn:
            after = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            columns = await conn.run_sync(
                lambda c: {x["name"] for x in inspect(c).get_columns("hop_cursors")}
            )
        await migrate(db_url, "0010", down=True)
        async with engine.connect() as conn:
            before = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()

    assert after - before == {"hop_cursors"}
    assert columns == {"peer", "channel", "seq", "set_at"}
