"""A loopback port for a server started a moment later (the demo's, the tests')."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_GIVEN: set[int] = set()
_NOT_OURS = frozenset({1883, 5432, 8883, 11883})  # this machine's own services, the defaults


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback port for a server a test starts later, below the kernel's ephemeral range.

    Asking the kernel for port 0 hands out an ephemeral port, which the kernel may give
    again, between this call and the server's bind, as the source port of any outgoing
    connection on the machine (a spoke's to its broker, a test's probe); the server then
    fails with EADDRINUSE, rarely, and a CI run lost a hub that way (exit 2 at start).
    Below the range no connection takes it; a port bound here without SO_REUSEADDR is free
    of TIME_WAIT too; none is handed out twice by one process. Not for production: a
    service listens where its configuration says."""
    low, _ = _ephemeral_range()
    candidates = range(20000, low) if low > 21000 else range(low // 2, low)
    for _ in range(1000):
        port = random.choice(candidates)  # noqa: S311 - a port number, not a secret
        if port in _GIVEN or port in _NOT_OURS:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {candidates}")
