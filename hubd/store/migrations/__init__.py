"""Alembic migrations of the hub's store, applied by ``hubd.store.db.Store`` when it opens."""
