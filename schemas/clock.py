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


def parse_moment(text: str, *, now: int, what: str = "time") -> int:
    """Milliseconds since the epoch for a moment as the operator tools print or take it.

    ``2026-11-25T17:52:20Z`` (or ``.892Z``, or an offset such as ``+08:00``), a date
    ``2026-11-25`` (its start, UTC), milliseconds since the epoch (what ``--json`` prints),
    or a duration before ``now`` (``36h``, ``7d``, as :func:`parse_duration`). A date and
    time without a zone is refused: the tools print UTC, offices read Beijing time.
    ValueError names ``what``, the value and how to write one.
    """
    value = text.strip()
    if value.isdigit() and len(value) > 8:  # shorter digit runs are not epochs
        return int(value)
    try:
        return now - parse_duration(value, what=what)
    except ValueError:
        pass
    hint = (
        f"{what} {text!r} 不是时间：请写 2026-11-25T17:52:20Z（UTC）、2026-11-26T01:52:20+08:00、"
        "日期 2026-11-25、往前的时长 36h 或 7d，或毫秒数 / "
        f"{what} {text!r} is not a time; write 2026-11-25T17:52:20Z (UTC, as hubctl prints "
        "it), 2026-11-26T01:52:20+08:00, a date 2026-11-25 (from 00:00 UTC), a duration "
        "back from now such as 36h or 7d, or milliseconds since 1970 (as --json prints)"
    )
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(hint) from None
    if moment.tzinfo is None:
        if len(value) != len("2026-11-25"):
            raise ValueError(f"{hint}; a time needs its zone (Z or +08:00) 时间须带时区")
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
