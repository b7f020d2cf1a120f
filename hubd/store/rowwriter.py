"""How a group commit's rows reach the database.

On PostgreSQL through SQLAlchemy Core. On SQLite straight to the sqlite3 driver's
``executemany`` on the same connection and in the same transaction: the statements are
fixed (built once from the table definitions of :mod:`hubd.store.tables`), and at a few hundred
commits a second SQLAlchemy's per-statement work (compiling, cache keys, parameter
processing) cost more than SQLite's own (0.94 ms of CPU for a one-message commit, of
which the driver needed 0.2). Every value is bound as a parameter; only our own column
names and the delivery states of :mod:`hubd.core.states` are ever written into SQL text.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, literal_column, select, update
from sqlalchemy.sql import bindparam, case

from hubd.core.states import TRANSITIONS, DeliveryState
from hubd.store import tables as t

KEEP_ATTEMPTS = -1  # an update that leaves the stored attempt count as it is
_IN_CHUNK = 500  # values per IN (...): far below SQLite's and PostgreSQL's limits


def _sources(state: DeliveryState) -> list[str]:
    """The states the state table allows a delivery to move to ``state`` from."""
    return sorted({s.value for (s, _event), target in TRANSITIONS.items() if target is state})


def _core_update(state: DeliveryState) -> Any:
    # Constants of our own enum, written into the SQL: an executemany takes no list parameter.
    allowed: list[Any] = [literal_column(f"'{value}'") for value in _sources(state)]
    return (
        update(t.deliveries)
        .where(
            t.deliveries.c.msg_id == bindparam("m"),
            t.deliveries.c.recipient == bindparam("r"),
            t.deliveries.c.state.in_(allowed),
        )
        .values(
            state=bindparam("s"),
            attempts=case(
                (bindparam("a") == KEEP_ATTEMPTS, t.deliveries.c.attempts), else_=bindparam("a")
            ),
            updated_at=bindparam("u"),
        )
    )


_CORE_UPDATES = {state: _core_update(state) for state in DeliveryState}


def _sqlite_update(state: DeliveryState) -> str:
    # Only our column names and the state table's own values are written into the text.
    allowed = ", ".join(f"'{value}'" for value in _sources(state))
    keep = f"CASE WHEN :a = {KEEP_ATTEMPTS} THEN attempts ELSE :a END"
    where = f"msg_id = :m AND recipient = :r AND state IN ({allowed})"
    return f"UPDATE deliveries SET state = :s, attempts = {keep}, updated_at = :u WHERE {where}"  # noqa: S608


_SQLITE_UPDATES = {state: _sqlite_update(state) for state in DeliveryState}


def _select_sql(table: Table, columns: Sequence[str], key: str, count: int) -> str:
    names = [table.c[c].name for c in (*columns, key)]  # KeyError for a name not of the table
    marks = ", ".join("?" * count)  # the values are bound
    return f"SELECT {', '.join(names[:-1])} FROM {table.name} WHERE {names[-1]} IN ({marks})"  # noqa: S608


@functools.cache
def _insert_sql(table: str, keys: tuple[str, ...]) -> str:
    columns, names = ", ".join(keys), ", ".join(":" + k for k in keys)
    return f"INSERT INTO {table} ({columns}) VALUES ({names})"  # noqa: S608 - checked column names


class RowWriter:
    """The writes of one transaction on ``conn`` (a sync SQLAlchemy connection)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        driver = conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
        self._sqlite: sqlite3.Connection | None = (
            driver if isinstance(driver, sqlite3.Connection) else None
        )

    def insert(self, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` (dicts with the same keys, each a column of ``table``)."""
        if not rows:
            return
        if self._sqlite is None:
            self.conn.execute(table.insert(), list(rows))
            return
        keys = tuple(rows[0])
        if not set(keys) <= set(table.c.keys()):
            raise ValueError(
                f"{table.name} has no column {sorted(set(keys) - set(table.c.keys()))}"
            )
        self._sqlite.executemany(_insert_sql(table.name, keys), rows)

    def update_deliveries(self, state: DeliveryState, params: Sequence[Mapping[str, Any]]) -> None:
        """Move deliveries to ``state`` where the state table allows it (params m, r, s, a, u)."""
        if not params:
            return
        if self._sqlite is None:
            self.conn.execute(_CORE_UPDATES[state], list(params))
        else:
            self._sqlite.executemany(_SQLITE_UPDATES[state], params)

    def select_in(
        self, table: Table, columns: Sequence[str], key: str, values: Iterable[Any]
    ) -> list[tuple[Any, ...]]:
        """``SELECT columns FROM table WHERE key IN values`` (in chunks), as tuples."""
        wanted = list(values)
        found: list[tuple[Any, ...]] = []
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            if self._sqlite is None:
                query = select(*(table.c[c] for c in columns)).where(table.c[key].in_(chunk))
                found.extend(tuple(r) for r in self.conn.execute(query))
            else:
                found.extend(
                    self._sqlite.execute(_select_sql(table, columns, key, len(chunk)), chunk)
                )
        return found
