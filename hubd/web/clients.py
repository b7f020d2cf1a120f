"""The client connections of the hub's small local servers (metrics, admin socket).

Both answer one request per connection and must not be held by a slow or hostile
client: at most ``limit`` connections are served at once (more are closed unanswered),
the answer must be taken within ``write_timeout``, and closing ends every connection still
open. The servers decide what to answer; this is the part they share.

Given the connection's reader, the answer is followed by a lingering close (RFC 9112,
9.6): the write side is shut, then what the client still sends is read and dropped, for
at most ``linger`` seconds and :data:`LINGER_BYTES`, until it closes too. Closing a socket
with unread bytes resets the connection, and a reset can make the client lose the answer
it has not read yet (the 408 to a client still trickling its head, the 431 to one still
sending the rest of an oversized head).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from runtime.tasks import cancel_and_wait

LINGER_BYTES = 1024 * 1024  # read and dropped after the answer, at most


class Clients:
    def __init__(self, limit: int, write_timeout: float, *, linger: float = 0.0) -> None:
        self._limit, self._write_timeout, self._linger = limit, write_timeout, linger
        self._tasks: set[asyncio.Task[Any]] = set()

    async def serve(
        self,
        writer: asyncio.StreamWriter,
        answer: Callable[[], Awaitable[bytes | None]],
        *,
        accepting: bool,
        reader: asyncio.StreamReader | None = None,
    ) -> None:
        """Answer one connection with what ``answer`` gives (None: nothing), then close it
        (lingering, given its ``reader``)."""
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
            if reader is not None and self._linger > 0:
                await self._linger_on(writer, reader)
        except (TimeoutError, ConnectionError):
            pass  # the client went away or does not read: nothing to tell it
        except asyncio.CancelledError:
            # close() ended it. Returning (not raising) keeps Python 3.11's stream callback,
            # which asks a cancelled task for its exception, from logging a traceback.
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _linger_on(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        """Shut the write side, then drop what the client still sends until it closes."""
        writer.write_eof()
        left = LINGER_BYTES
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._linger):
                while left > 0 and (dropped := await reader.read(min(left, 65536))):
                    left -= len(dropped)

    async def close(self) -> None:
        """End every connection still being served."""
        await cancel_and_wait(list(self._tasks))
