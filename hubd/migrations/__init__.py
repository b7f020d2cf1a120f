"""Alembic migrations of the hub's store, applied by ``hubd.store.Store.open``."""
