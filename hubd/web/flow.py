"""Recent flow for the status page: per-interval counts kept in a small ring buffer.

The hub's counters (:attr:`Ingest.counts`, the DELIVERED confirmations) only ever rise.
Every :data:`STEP_MS` the status page's sampler hands their totals to
:meth:`FlowHistory.sample`, which keeps what each grew by since the previous sample: one
bucket per interval, the last :data:`KEEP` of them (ten minutes). Pure: the caller says
what time it is, so tests are exact.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STEP_MS = 10_000  # one bucket per 10 s
KEEP = 60  # buckets kept: the last ten minutes
# What the page draws, in this order; each a counter of the running hub (docs/operations.md).
SERIES = ("accepted", "delivered", "rejected", "quarantined")


@dataclass(frozen=True, slots=True)
class FlowBucket:
    """How much each series grew between ``start`` and ``end`` (ms since the epoch)."""

    start: int
    end: int
    counts: Mapping[str, int]

    def as_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, **self.counts}


class FlowHistory:
    """The last ``keep`` intervals of each series, from samples of its running totals."""

    def __init__(
        self, *, keep: int = KEEP, step_ms: int = STEP_MS, series: tuple[str, ...] = SERIES
    ) -> None:
        if keep < 1 or step_ms < 1:
            raise ValueError(f"keep and step_ms must be positive, not {keep} and {step_ms}")
        self.step_ms, self.series = step_ms, series
        self._buckets: deque[FlowBucket] = deque(maxlen=keep)
        self._last: tuple[int, dict[str, int]] | None = None  # the previous sample

    @property
    def started(self) -> bool:
        return self._last is not None

    def start(self, at: int, totals: Mapping[str, int]) -> None:
        """The baseline: counting starts from these totals at ``at``."""
        self._buckets.clear()
        self._last = (at, self._pick(totals))

    def sample(self, at: int, totals: Mapping[str, int]) -> None:
        """Close the interval that ends at ``at`` with what each total grew by since the
        previous sample. The first sample only sets the baseline."""
        if self._last is None:
            self.start(at, totals)
            return
        start, _ = self._last
        if at <= start:
            return  # the clock stepped back: keep the interval open until it passes again
        self._buckets.append(FlowBucket(start, at, self._growth(totals)))
        self._last = (at, self._pick(totals))

    def buckets(self) -> tuple[FlowBucket, ...]:
        return tuple(self._buckets)

    def current(self, at: int, totals: Mapping[str, int]) -> FlowBucket | None:
        """The interval still open: from the last sample to ``at``; None before the start."""
        if self._last is None:
            return None
        return FlowBucket(self._last[0], max(at, self._last[0]), self._growth(totals))

    def as_json(self, at: int, totals: Mapping[str, int]) -> dict[str, Any]:
        """What ``/status.json`` carries under ``flow``."""
        closed = self.buckets()
        current = self.current(at, totals)
        window = [*closed, *([] if current is None else [current])]
        return {
            "step_s": self.step_ms / 1000,
            "series": list(self.series),
            "buckets": [b.as_json() for b in closed],
            "current": None if current is None else current.as_json(),
            "totals": {name: sum(b.counts[name] for b in window) for name in self.series},
            "since": window[0].start if window else None,
        }

    def _pick(self, totals: Mapping[str, int]) -> dict[str, int]:
        return {name: int(totals.get(name, 0)) for name in self.series}

    def _growth(self, totals: Mapping[str, int]) -> dict[str, int]:
        assert self._last is not None  # noqa: S101 - callers check
        before = self._last[1]
        now = self._pick(totals)
        # Counters only rise within one hub process; a smaller total means they restarted
        # from zero, and then everything counted is new.
        return {
            name: now[name] - before[name] if now[name] >= before[name] else now[name]
            for name in self.series
        }
