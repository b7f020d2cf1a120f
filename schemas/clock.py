"""Time on the wire is integer milliseconds since the Unix epoch, UTC."""

from __future__ import annotations

from datetime import UTC, datetime

DAY_MS = 24 * 60 * 60 * 1000


def ms_to_text(ms: int, *, precise: bool = False) -> str:
    """ISO 8601 in UTC, to the second (or the millisecond): what people read."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if precise:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
