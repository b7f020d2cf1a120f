"""Time on the wire is integer milliseconds since the Unix epoch, UTC."""

from __future__ import annotations

from datetime import UTC, datetime

DAY_MS = 24 * 60 * 60 * 1000


def ms_to_text(ms: int) -> str:
    """ISO 8601 in UTC, to the second: what operators read in tables and logs."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
