"""The client connections of the hub's small local servers (metrics, admin socket).

Both answer one request per connection and must not be held by a slow or hostile
client: at most ``limit`` connections are served at once (more are closed unanswered),
the answer must be taken within ``write_timeout``, and closing ends every connection still
open. The servers decide what to answer; this is the part they share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class Clients:
    def __init__(self, limit: int, write_timeout: float) -> None:
        self._limit, self._write_timeout = limit, write_timeout
        self._tasks: set[asyncio.Task[Any]] = set()

    async def serve(
        self,
        writer: asyncio.StreamWriter,
        answer: Callable[[], Awaitable[bytes | None]],
        *,
        accepting: bool,
    ) -> None:
        """Answer one connection with what ``answer`` gives (None: nothing), then close it."""
        task = asyncio.current_task()
        if task is None or not accepting or len(self._tasks) >= self._limit:
            writer.close()
            return
        self._tasks.add(task)
        try:
            reply = await answer()
            if reply is None:
                return
            writer.write(reply)
            async with asyncio.timeout(self._write_timeout):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # the client went away or does not read: nothing to tell it
        except asyncio.CancelledError:
            # close() ended it. Returning (not raising) keeps Python 3.11's stream callback,
            # which asks a cancelled task for its exception, from logging a traceback.
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        """End every connection still being served."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
