"""One hub per state folder: the running hub holds an exclusive lock on ``hubd.lock``.

The store's audit chain and receipt numbers are counted by the one process that writes
them; a second writer would fork the chain. So the hub holds ``flock(LOCK_EX)`` on
``<state_dir>/hubd.lock`` from before it opens the store until it exits (the kernel
drops the lock when the process dies, so a killed hub leaves nothing to clean up), and
``hubctl redeliver`` writes the store itself only while it holds the same lock, that is
only while no hub runs on that folder. The lock says nothing about hubs on other
machines sharing a PostgreSQL store (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path

from schemas.errors import ConfigError, XchgError


class LockHeldError(XchgError):
    """Another process holds the state folder's lock: a hub runs there (or hubctl writes)."""


class HubLock:
    """``with HubLock(path):`` holds the lock or raises LockHeldError; released on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock now or raise LockHeldError (never waits)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except PermissionError:  # the hub's group may only read it: flock works on that too
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeldError(
                f"{self.path} is locked by another process: a hub is running on this state "
                "folder (or hubctl is writing its store)"
            ) from None
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> HubLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


async def hold_state_lock(path: Path, wait: float = 10.0) -> HubLock:
    """The state folder's lock for the hub, waiting ``wait`` s for a hubctl that holds it
    while it writes the store of a stopped hub; ConfigError naming ``hub.state_dir`` if
    another hub holds it."""
    lock = HubLock(path)
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            lock.acquire()
        except LockHeldError as exc:
            if asyncio.get_running_loop().time() >= deadline:
                raise ConfigError(
                    "hub configuration",
                    [("hub.state_dir", f"{exc}; stop the other hub, or give this one its own")],
                ) from exc
            await asyncio.sleep(0.2)  # a hubctl holds it for one short transaction
            continue
        return lock
