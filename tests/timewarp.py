"""hubd and the spoke agent as real processes on a clock the test moves.

    GOVX_TEST_CLOCK=FILE python -m tests.timewarp hubd --config hub.toml
    GOVX_TEST_CLOCK=FILE python -m tests.timewarp spoke --config spoke.toml

Both daemons take their clock as a parameter (``Hub(clock=...)``, ``SpokeAgent(clock=...)``);
this launcher starts them exactly as ``hubd run`` and ``spoke run`` do, with a clock that
is the real one plus the offset (milliseconds) written in FILE, re-read whenever the file
changes. A test moves every process that shares FILE a week ahead with one
:meth:`TestClock.advance`, so claims about time (a key's window after a 7-day overlap, a
directory reaching its expiry) are exact without waiting and without short windows.
What the clock decides about: key windows, directory expiry, message freshness, receipt
times, and the hub's delivery timers (retries, expiry: the dispatcher runs on the hub's
clock), so a jump ahead makes every timer it passes fall due at once. The spoke's resends
and other timers still run on real time.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from runtime.files import atomic_write

ENV = "GOVX_TEST_CLOCK"


class TestClock:
    """The test's side: one offset file shared by the processes it moves."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._write()

    def _write(self) -> None:
        atomic_write(self.path, str(self.offset).encode(), mode=0o644)

    def advance(self, ms: int) -> None:
        self.offset += ms
        self._write()

    def now(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset

    @property
    def env(self) -> dict[str, str]:
        return {ENV: str(self.path)}


class OffsetClock:
    """The process's side: real time plus the offset in the file (re-read when it changes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = -1
        self._offset = 0

    def __call__(self) -> int:
        try:
            stamp = self.path.stat().st_mtime_ns
        except OSError:
            stamp = self._stamp
        if stamp != self._stamp:
            self._stamp = stamp
            self._offset = int(self.path.read_text().strip() or "0")
        return time.time_ns() // 1_000_000 + self._offset


def main(argv: list[str]) -> None:
    from runtime.startup import configure, run_loop  # noqa: PLC0415 - after argv is read

    if len(argv) != 3 or argv[0] not in {"hubd", "spoke"} or argv[1] != "--config":
        raise SystemExit("usage: python -m tests.timewarp hubd|spoke --config FILE")
    clock = OffsetClock(Path(os.environ[ENV]))
    config = Path(argv[2])
    if argv[0] == "hubd":
        from hubd.config import load_config as load_hub  # noqa: PLC0415
        from hubd.daemon import Hub  # noqa: PLC0415

        settings = load_hub(config)
        configure(settings.logging.format, settings.logging.level)
        run_loop(Hub(settings, clock=clock).run())
        return
    from spoke.agent import SpokeAgent  # noqa: PLC0415
    from spoke.config import load_config as load_spoke  # noqa: PLC0415

    spoke = load_spoke(config)
    configure(spoke.logging.format, spoke.logging.level)
    run_loop(SpokeAgent(spoke, clock=clock).run())


if __name__ == "__main__":
    main(sys.argv[1:])
