"""Spokes' hellos in the log: one line each, until they come in a storm.

When a broker restarts, every spoke on it reconnects within seconds, and a ``spoke.hello``
line costs the hub about as much as handling the hello it reports (bench/hellos.py). So at
most ``per_second`` hello lines are written one by one in a second; the rest are counted
and reported in one ``spoke.storm`` line a second later (how many, the channels, the first
and last time counted). ``spoke.online`` and ``spoke.offline`` stay one line per spoke:
they are each spoke's presence history, which the log alone keeps.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from runtime.clock import now_ms

LINES_PER_SECOND: Final = 100  # hello lines written one by one in a second
SUMMARY_AFTER: Final = 1.0  # seconds from the first line counted to the summary


class StormLog:
    """Writes ``spoke.*`` info lines one by one while they are few; counts them in a storm.

    ``monotonic`` (seconds) measures the second's budget; ``clock`` (the hub's, in ms since
    the Unix epoch: :mod:`runtime.clock`) stamps the first and last time counted. A test
    passes its own of either."""

    def __init__(
        self,
        logger: Any,
        *,
        per_second: int = LINES_PER_SECOND,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._log, self._per_second = logger, per_second
        self._monotonic, self._clock = monotonic, clock
        self._window = float("-inf")  # when the current second began
        self._written = 0  # lines written one by one in it
        self._counted: Counter[str] = Counter()
        self._channels: set[str] = set()
        self._first_at = self._last_at = 0
        self._summary: asyncio.TimerHandle | None = None

    def info(self, event: str, **fields: Any) -> None:
        """``event`` (a ``spoke.*`` name) with ``fields``, or counted if this second is full."""
        now = self._monotonic()
        if now - self._window >= 1.0:
            self._window, self._written = now, 0
        if self._written < self._per_second:
            self._written += 1
            self._log.info(event, **fields)
            return
        at = self._clock()
        if not self._counted:
            self._first_at = at
            loop = asyncio.get_running_loop()
            self._summary = loop.call_later(SUMMARY_AFTER, self.summarise)
        self._counted[event.removeprefix("spoke.")] += 1
        self._channels.add(str(fields.get("channel")))
        self._last_at = at

    def summarise(self) -> None:
        """Write what was counted since the last summary (now, or a second after it began)."""
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        if not self._counted:
            return
        self._log.info(
            "spoke.storm",
            **dict(sorted(self._counted.items())),
            channels=sorted(self._channels),
            first_at=self._first_at,
            last_at=self._last_at,
        )
        self._counted.clear()
        self._channels.clear()
