"""Alembic environment: the hub applies migrations over a connection it already holds."""

from __future__ import annotations

from alembic import context

from hubd.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through hubd.store.db
    raise RuntimeError("run migrations by opening hubd.store.db.Store (it passes a connection)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
