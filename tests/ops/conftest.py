"""The operations tests start hubs and simulated spokes exactly as the hub's tests do."""

from tests.hub.conftest import live_dir, pg_url, spawn_hub, spawn_spoke

__all__ = ["live_dir", "pg_url", "spawn_hub", "spawn_spoke"]
