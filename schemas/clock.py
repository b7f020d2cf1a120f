"""Time on the wire is integer milliseconds since the Unix epoch, UTC.

Nothing here reads the clock (that is :func:`runtime.clock.now_ms`): every function that
judges time takes ``now``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

DAY_MS = 24 * 60 * 60 * 1000


def ms_to_text(ms: int, *, precise: bool = False) -> str:
    """ISO 8601 in UTC, to the second (or the millisecond): what people read.

    A time no calendar date can show (a peer's absurd value in an error message) is
    written as its milliseconds instead of failing."""
    try:
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return f"{ms} ms since 1970"
    if precise:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


HOUR_MS = 60 * 60 * 1000
_UNITS_MS = {"w": 7 * DAY_MS, "d": DAY_MS, "h": HOUR_MS, "m": 60_000, "s": 1000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")


def parse_duration(text: str, *, what: str = "duration") -> int:
    """Milliseconds in ``7d``, ``36h``, ``1d12h``, ``90m``, ``45s``, ``2w`` or ``0``.

    ValueError names ``what``, the value and how to write one.
    """
    value = text.strip().lower()
    if value == "0":
        return 0
    total, position = 0.0, 0
    for match in _DURATION.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS_MS[match.group(2)]
        position = match.end()
    if not value or position != len(value):
        raise ValueError(
            f"{what} {text!r} is not a duration; write a number and a unit (w, d, h, m, s), "
            "e.g. 7d, 36h, 1d12h, 90m, or 0"
        )
    return int(total)


def duration_text(ms: int) -> str:
    """A short span for people: 45s, 4m12s, 3h05m, 2d04h (negative spans as their size)."""
    seconds = abs(ms) // 1000
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
