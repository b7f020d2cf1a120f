"""The one reading of the wall clock for hub and spoke alike.

Every function that judges time takes ``now`` (integer milliseconds since the Unix epoch,
UTC; :mod:`schemas.clock`); the entry points and the daemons' injected clocks
(``Hub(clock=...)``, ``SpokeAgent(clock=...)``, the dispatcher's) call this one.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """The wall clock in integer milliseconds since the Unix epoch, UTC."""
    return time.time_ns() // 1_000_000
