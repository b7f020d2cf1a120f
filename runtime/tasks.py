"""Stopping tasks so that stopping always ends.

``task.cancel()`` followed by ``await task`` (or ``gather``, or leaving a TaskGroup) waits
for ever when the task swallows its cancellation, and on Python 3.11 it can without
meaning to: ``asyncio.wait_for`` returns the inner result instead of raising when the
cancellation and the result arrive in the same loop step (CPython gh-86296, fixed in 3.12
by rewriting ``wait_for`` on ``asyncio.timeout``). aiomqtt awaits every PUBACK, SUBACK and
CONNACK through ``wait_for``, so a spoke's listener cancelled while it publishes can go on
listening, and whoever waits for it hangs. A CI run was lost to exactly that.

Two rules keep the class out: our own code never calls ``asyncio.wait_for`` (ruff bans it;
``async with asyncio.timeout(...)`` has no such race), and whatever stops a task stops it
with :func:`cancel_and_wait`, which cancels again until the task is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

# How long to give a cancelled task before cancelling it again. A task that honours its
# cancellation ends in one loop step; one that swallowed it is cancelled again at once.
RECANCEL_EVERY = 0.05


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]] | asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and return once every one of them is done.

    A task that swallows a cancellation is cancelled again until it ends. What the tasks
    raised (their cancellation included) is taken, not raised: the caller is stopping
    them. The caller's own cancellation is not swallowed: it propagates as usual.
    """
    every = [tasks] if isinstance(tasks, asyncio.Future) else list(tasks)
    waiting = {task for task in every if not task.done()}
    while waiting:
        for task in waiting:
            task.cancel()
        _, waiting = await asyncio.wait(waiting, timeout=RECANCEL_EVERY)
    for task in every:  # taken, so asyncio does not log "exception was never retrieved"
        if not task.cancelled():
            task.exception()
