"""The disk watermark: below a configured free space the hub stops taking new messages.

A hub that runs out of disk halfway through a group commit or a 1 GiB spool file fails in
the worst place. So it looks ahead: every ``[disk] check_every`` it reads the free space of
the file systems holding its store and its spool, and while either is below ``[disk]
min_free`` (bytes) or ``min_free_percent``, new envelopes are REJECTED as retriable with a
sentence naming the free space and the minimum (``hub.disk_low``). Receipts, redeliveries
and everything already accepted go on: they need next to no space and free some when they
finish. A chunked body is refused at its head if it would take the free space below the
minimum, before a byte of it is spooled.

:func:`judge` is the pure rule (a table test states it); :class:`DiskWatch` owns the clock
and ``os.statvfs``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from schemas.display import size_text

log = structlog.get_logger("hubd.disk")


@dataclass(frozen=True, slots=True)
class Space:
    """Free and total bytes of the file system holding ``path`` (for an unprivileged user)."""

    path: Path
    free: int
    total: int


def judge(space: Space, *, min_free: int, min_free_percent: float, need: int = 0) -> str | None:
    """Why ``space`` is too low to take ``need`` more bytes; None if it is not.

    The minimum is the larger of ``min_free`` and ``min_free_percent`` of the total, so one
    setting serves a small and a large volume alike.
    """
    floor = max(min_free, int(space.total * min_free_percent / 100))
    left = space.free - need
    if left >= floor:
        return None
    what = (
        f"{size_text(space.free)} free"
        if not need
        else (f"{size_text(space.free)} free and this body needs {size_text(need)}")
    )
    return (
        f"the hub's disk at {space.path} has {what}, below its minimum of {size_text(floor)} "
        f"([disk] min_free {size_text(min_free)}, min_free_percent {min_free_percent:g}%); "
        "the document was not stored. Send it again later; the hub operator is told"
    )


def statvfs_space(path: Path) -> Space:
    stat = os.statvfs(path)
    return Space(path, stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize)


class DiskWatch:
    """Looks at the store's and the spool's file systems; says why intake is closed."""

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        min_free: int,
        min_free_percent: float,
        every: float,
        measure: Callable[[Path], Space] = statvfs_space,
    ) -> None:
        self._paths = list(dict.fromkeys(paths))
        self._min_free, self._min_free_percent = min_free, min_free_percent
        self._every, self._measure = every, measure
        self.spaces: list[Space] = []
        self.low: str | None = None  # why new messages are refused now; None: they are not

    def check(self) -> str | None:
        """Measure now; log a change either way; the reason intake is closed, or None."""
        spaces, problems = [], []
        for path in self._paths:
            try:
                space = self._measure(path)
            except OSError as exc:
                problems.append(f"the free space at {path} cannot be read ({exc.strerror})")
                continue
            spaces.append(space)
            why = judge(space, min_free=self._min_free, min_free_percent=self._min_free_percent)
            if why is not None:
                problems.append(why)
        self.spaces = spaces
        low = "; ".join(problems) or None
        if low is not None and self.low is None:
            log.warning("disk.low", detail=low, free=[s.free for s in spaces])
        elif low is None and self.low is not None:
            log.info("disk.ok", free=[s.free for s in spaces])
        self.low = low
        return low

    def refuse(self, need: int = 0) -> str | None:
        """Why a new message of ``need`` body bytes is refused now; None to take it."""
        if self.low is not None:
            return self.low
        if need:
            for space in self.spaces:
                why = judge(
                    space,
                    min_free=self._min_free,
                    min_free_percent=self._min_free_percent,
                    need=need,
                )
                if why is not None:
                    return why
        return None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.check()
            try:
                async with asyncio.timeout(self._every):
                    await stop.wait()
            except TimeoutError:
                continue
