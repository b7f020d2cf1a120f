"""The audit ledger's hash chain: rows written by a real Store, tampered with plain SQL.

Each tampering is what someone with write access to the database could do by hand; the
chain must say at which row the ledger stops being trustworthy. The operator's command
(`hubctl audit verify`) is run for real through typer's CliRunner.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from hubd.ops.ledgeraudit import verify_store_chain
from hubd.store.audit import (
    GENESIS,
    AuditEvent,
    AuditRow,
    ChainProblem,
    chain_hash,
    verify_chain,
)
from hubd.store.connections import engine_for
from hubd.store.db import Store
from hubd.store.writes import AppendAudit
from tests.hub.test_store import NOW, new_message

ROWS = 6


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For the variations below: the SQL they run is the same on both back ends."""
    return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"


async def populate(url: str) -> None:
    """Six ledger rows from real operations: messages (with msg_id and org) and notes."""
    async with Store(url) as store:
        await store.submit(new_message(1))
        await store.submit(
            AppendAudit(
                [
                    AuditEvent("hub.started", NOW + 10, None, None, {"version": "0.1.0"}),
                    AuditEvent("directory.published", NOW + 11, None, None, {"v": 3}),
                ]
            )
        )
        await store.submit(new_message(2))
        await store.submit(new_message(3))
        await store.submit(
            AppendAudit([AuditEvent("hub.stopping", NOW + 20, None, "jl.hub", {"说明": "停止"})])
        )


async def sql(url: str, statement: str, **params: Any) -> None:
    engine = engine_for(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement), params)
    finally:
        await engine.dispose()


async def row(url: str, seq: int) -> dict[str, Any]:
    engine = engine_for(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text("SELECT * FROM audit WHERE seq = :s"), {"s": seq})
            return dict(result.mappings().one())
    finally:
        await engine.dispose()


def seqs(problems: list[ChainProblem]) -> set[int]:
    return {p.seq for p in problems}


# ---------------------------------------------------------------------------- verify_chain


async def test_intact_chain_has_no_problems(db_url: str) -> None:
    await populate(db_url)

    assert await verify_store_chain(db_url) == (ROWS, [])


async def test_empty_ledger_is_intact(sqlite_url: str) -> None:
    async with Store(sqlite_url):
        pass

    assert await verify_store_chain(sqlite_url) == (0, [])


async def test_edited_row_is_reported_at_its_seq_as_edited(db_url: str) -> None:
    await populate(db_url)
    await sql(db_url, "UPDATE audit SET detail = :d WHERE seq = 3", d='{"v":4}')

    checked, problems = await verify_store_chain(db_url)

    assert checked == ROWS
    assert seqs(problems) == {3}
    assert all("edited" in p.problem for p in problems)


@pytest.mark.parametrize(
    ("column", "value"),
    [("at", NOW + 999), ("event", "hub.edited"), ("org", "jl.cc"), ("msg_id", bytes(16))],
)
async def test_every_recorded_field_is_covered_by_the_hash(
    sqlite_url: str, column: str, value: object
) -> None:
    await populate(sqlite_url)
    await sql(sqlite_url, f"UPDATE audit SET {column} = :v WHERE seq = 4", v=value)  # noqa: S608 - column from the list above

    _, problems = await verify_store_chain(sqlite_url)

    assert seqs(problems) == {4}


async def test_deleted_row_in_the_middle_is_reported_at_the_next_row(db_url: str) -> None:
    await populate(db_url)
    await sql(db_url, "DELETE FROM audit WHERE seq = 3")

    checked, problems = await verify_store_chain(db_url)

    assert checked == ROWS - 1
    assert seqs(problems) == {4}
    assert any("expected seq 3" in p.problem for p in problems)
    assert any("does not link" in p.problem for p in problems)


async def test_deleted_first_row_is_reported(sqlite_url: str) -> None:
    await populate(sqlite_url)
    await sql(sqlite_url, "DELETE FROM audit WHERE seq = 1")

    _, problems = await verify_store_chain(sqlite_url)

    assert seqs(problems) == {2}


async def test_row_inserted_in_the_middle_is_reported(sqlite_url: str) -> None:
    """A careful forger: renumbers what follows and gives the new row a correct hash."""
    await populate(sqlite_url)
    before = await row(sqlite_url, 2)
    await sql(sqlite_url, "UPDATE audit SET seq = seq + 1000 WHERE seq >= 3")
    await sql(sqlite_url, "UPDATE audit SET seq = seq - 999 WHERE seq >= 1000")
    prev, detail = bytes(before["hash"]), '{"forged":true}'
    digest = chain_hash(
        prev, seq=3, at=NOW + 12, event="hub.note", msg_id=None, org=None, detail=detail
    )
    await sql(
        sqlite_url,
        "INSERT INTO audit (seq, at, event, msg_id, org, detail, prev_hash, hash) "
        "VALUES (3, :at, 'hub.note', NULL, NULL, :detail, :prev, :hash)",
        at=NOW + 12,
        detail=detail,
        prev=prev,
        hash=digest,
    )

    checked, problems = await verify_store_chain(sqlite_url)

    assert checked == ROWS + 1
    assert min(seqs(problems)) == 4  # the first genuine row after the forgery
    assert any("does not link" in p.problem for p in problems if p.seq == 4)


async def test_row_appended_without_a_valid_hash_is_reported(sqlite_url: str) -> None:
    await populate(sqlite_url)
    last = await row(sqlite_url, ROWS)
    await sql(
        sqlite_url,
        "INSERT INTO audit (seq, at, event, msg_id, org, detail, prev_hash, hash) "
        "VALUES (:seq, :at, 'hub.note', NULL, NULL, '{}', :prev, :hash)",
        seq=ROWS + 1,
        at=NOW + 30,
        prev=bytes(last["hash"]),
        hash=bytes(32),
    )

    _, problems = await verify_store_chain(sqlite_url)

    assert seqs(problems) == {ROWS + 1}


async def test_swapped_rows_are_reported(sqlite_url: str) -> None:
    await populate(sqlite_url)
    await sql(sqlite_url, "UPDATE audit SET seq = -3 WHERE seq = 3")
    await sql(sqlite_url, "UPDATE audit SET seq = 3 WHERE seq = 4")
    await sql(sqlite_url, "UPDATE audit SET seq = 4 WHERE seq = -3")

    checked, problems = await verify_store_chain(sqlite_url)

    assert checked == ROWS
    assert seqs(problems) >= {3, 4}
    assert seqs(problems) <= {3, 4, 5}


def chain(details: list[str]) -> list[AuditRow]:
    rows, prev = [], GENESIS
    for seq, detail in enumerate(details, start=1):
        digest = chain_hash(
            prev, seq=seq, at=NOW, event="hub.note", msg_id=None, org=None, detail=detail
        )
        rows.append(AuditRow(seq, NOW, "hub.note", None, None, detail, prev, digest))
        prev = digest
    return rows


def test_a_replayed_row_is_reported_as_repeating_a_number() -> None:
    rows = chain(["{}", '{"a":1}', '{"b":2}'])

    checked, problems = verify_chain([*rows, rows[1]])

    assert checked == 4
    assert seqs(problems) == {2}
    assert any("repeats a number" in p.problem for p in problems)


# ---------------------------------------------------------------------------- hubctl audit verify


def sqlite_store(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "hub.db"
    url = f"sqlite+aiosqlite:///{path}"
    asyncio.run(populate(url))
    return url, path


def test_cli_reports_an_intact_ledger_and_exits_0(tmp_path: Path) -> None:
    url, _ = sqlite_store(tmp_path)

    result = CliRunner().invoke(hubctl_app, ["audit", "verify", "--store", url])

    assert result.exit_code == 0, result.output
    assert "intact" in result.stdout
    assert f"{ROWS} rows checked" in result.stdout


def test_cli_lists_the_tampered_row_and_exits_1(tmp_path: Path) -> None:
    url, path = sqlite_store(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE audit SET detail = '{\"v\":4}' WHERE seq = 3")

    result = CliRunner().invoke(hubctl_app, ["audit", "verify", "--store", url])

    assert result.exit_code == 1, result.output
    assert "row 3:" in result.stdout
    assert "edited" in result.stdout
    assert "row 2:" not in result.stdout
    assert "intact" not in result.output
    assert "1 problems" in result.stderr


def test_cli_finds_the_store_through_the_configuration_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    sqlite_store(state)
    config = tmp_path / "etc" / "hub.toml"
    config.parent.mkdir()
    config.write_text('[hub]\nstate_dir = "../state"\n', encoding="utf-8")

    result = CliRunner().invoke(hubctl_app, ["audit", "verify", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert f"{ROWS} rows checked" in result.stdout


def test_cli_on_a_store_that_is_not_there_says_so_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "hbu.db"
    missing.parent.mkdir()
    url = f"sqlite+aiosqlite:///{missing}"

    result = CliRunner().invoke(hubctl_app, ["audit", "verify", "--store", url])

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # a sentence, not a traceback
    assert "hubctl audit verify" in result.stderr
    assert not missing.exists()
