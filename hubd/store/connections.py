"""The store's connections: engines for readers, and the group commit's one writer.

SQLite gets WAL and ``synchronous=FULL`` on every connection and a writer thread of its
own; PostgreSQL (asyncpg) keeps SQLAlchemy's async connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from schemas.errors import StoreError


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


# A failed statement's error names the statement, never its values: the hub logs store
# errors (store.write_failed, message.not_stored, replica.load_failed), and a row's values
# are a document's number, its frame, its body (docs/operations.md, "Reading the logs").
HIDE_PARAMETERS = True


def store_error_text(exc: BaseException) -> str:
    """A store's error on one line, naming what failed but no value of any row.

    ``hide_parameters`` keeps the bound values out of SQLAlchemy's text, but PostgreSQL's
    own DETAIL says them ("Key (msg_id)=(...) already exists", "Failing row contains
    (...)"), and so does the error's repr. This gives the SQLSTATE and the table, column and
    constraint it names, and the server's primary message (never its detail; none at all
    for a data exception, class 22, whose message may quote the value); SQLite's messages
    name tables and columns only, and are given as they are."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.Error):
        return f"{type(orig).__name__}: {_first_line(str(orig))}"
    cause = orig.__cause__ if orig is not None else None
    code = getattr(orig, "sqlstate", None) or getattr(cause, "sqlstate", None)
    if code is not None:
        parts = [f"SQLSTATE {code}"]
        for label, attr in (("table", "table_name"), ("column", "column_name")):
            if value := getattr(cause, attr, None):
                parts.append(f"{label} {value}")
        if value := getattr(cause, "constraint_name", None):
            parts.append(f"constraint {value}")
        message = getattr(cause, "message", None)
        if message and not str(code).startswith("22"):
            parts.append(_first_line(str(message)))
        return f"{type(orig).__name__} ({'; '.join(parts)})"
    if isinstance(exc, DBAPIError):  # a connection's failure: no row in it
        return f"{type(orig).__name__}: {_first_line(str(orig))}"
    return f"{type(exc).__name__}: {_first_line(str(exc))}"  # no statement was refused


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def engine_for(url: str, *, settings: dict[str, str] | None = None) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL and synchronous=FULL on every connection.
    PostgreSQL: ``settings`` are more server settings for every session."""
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url, connect_args={"check_same_thread": False}, hide_parameters=HIDE_PARAMETERS
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # synchronous_commit=on: a commit returns only once the WAL is on disk (the default,
    # but a server may have been configured otherwise; the hub does not depend on that).
    return create_async_engine(
        url,
        pool_size=5,
        max_overflow=5,
        pool_pre_ping=True,
        hide_parameters=HIDE_PARAMETERS,
        connect_args={"server_settings": {"synchronous_commit": "on", **(settings or {})}},
    )


T = TypeVar("T")


class WriterConnection(Protocol):
    """The writer's one connection; ``run`` calls ``fn(connection, *args)`` where it lives."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def close(self) -> None: ...


class ThreadWriter:
    """SQLite: a plain sqlite3 connection owned by one thread of its own.

    aiosqlite (what the async engine speaks) sends every statement to its thread and back:
    two context switches per statement, a dozen statements per group commit. Here a whole
    group commit (its statements, the commit and its fsync) is one hop into the thread and
    one back, and the event loop runs meanwhile.
    """

    def __init__(self, engine: Engine, executor: ThreadPoolExecutor, conn: Connection) -> None:
        self._engine, self._executor, self._conn = engine, executor, conn
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> ThreadWriter:
        engine = create_engine(
            url.replace("+aiosqlite", "+pysqlite", 1),
            connect_args={"check_same_thread": False},  # made here, used only in the thread
            hide_parameters=HIDE_PARAMETERS,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubd-store")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, engine.connect)
        except BaseException:
            executor.shutdown(wait=False)
            engine.dispose()
            raise
        return cls(engine, executor, conn)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._conn, *args)

    async def close(self) -> None:
        """Idempotent."""
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            try:
                self._conn.close()
            finally:
                self._engine.dispose()

        with contextlib.suppress(SQLAlchemyError):
            await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)


class AsyncWriter:
    """PostgreSQL: asyncpg is asynchronous itself; the batch runs in SQLAlchemy's greenlet."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._conn.run_sync(fn, *args)

    async def close(self) -> None:
        with contextlib.suppress(SQLAlchemyError):
            await self._conn.close()


def read_only_url(url: str) -> str:
    """``url`` opened so that nothing is created or changed (SQLite: a read-only URI).

    Raises StoreError for a SQLite store that does not exist (it would otherwise be made).
    """
    if not url.startswith("sqlite"):
        return url
    path = url.split(":///", 1)[-1]
    if not path or path == ":memory:" or not Path(path).is_file():
        raise StoreError(
            f"there is no hub store at {path!r}; check --store or --config", retriable=False
        )
    return f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true"
