"""Chunks of bodies kept in the store (hub replicas: hubd.store.sharedspool), for the
dispatcher: read on a connection of the store's engine (never the group commit's writer),
then published. The dispatcher's pump does not wait: it gets a future that answers as a
publish's would, so a chunk that could not be read is sent again like one whose publish
failed, from where it began.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from hubd.store.db import Store
from hubd.store.sharedspool import read_body
from schemas import transport
from schemas.errors import StoreError
from schemas.ids import msg_id_text

if TYPE_CHECKING:
    from hubd.engine.jobs import Job

log = structlog.get_logger("hubd.dispatch")

Publish = Callable[[str, str, bytes], "asyncio.Future[bool]"]  # as hubd.engine.dispatch's


class StoredChunks:
    """Publishes the next chunk of a stored body for a job (see the module's docstring)."""

    def __init__(self, store: Store, publish: Publish) -> None:
        self._store, self._publish = store, publish
        self._reads: set[asyncio.Task[None]] = set()

    def publish(self, job: Job, to: str) -> tuple[asyncio.Future[bool], bool]:
        """The chunk at ``job.offset`` (advanced past it, as for a file), sent ``to`` the
        recipient or the hub it is reached through: a future of its acknowledgement (False:
        not read, or not published) and whether it is the last."""
        start, size = job.offset, job.payload.body_size
        end = min(start + transport.CHUNK_BYTES, size)
        job.offset = end
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[bool] = loop.create_future()
        task = loop.create_task(self._read_and_publish(job, to, start, end, acked))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)
        return acked, end >= size

    async def _read_and_publish(
        self, job: Job, to: str, start: int, end: int, acked: asyncio.Future[bool]
    ) -> None:
        try:
            data = await read_body(self._store.engine, job.msg_id, start, end - start)
            if len(data) != end - start:
                log.warning("delivery.body_missing", msg_id=msg_id_text(job.msg_id), offset=start)
                return
            chunk = transport.encode(transport.ChunkMsg(job.msg_id, start, data))
            published = self._publish(job.channel, to, chunk)
            await asyncio.wait([published])
            ok = not published.cancelled() and published.exception() is None
            acked.set_result(ok and published.result())
        except StoreError as exc:
            log.warning("delivery.body_unreadable", msg_id=msg_id_text(job.msg_id), error=str(exc))
        finally:
            if not acked.done():  # unreadable, gone, or the hub stopping: try again later
                acked.set_result(False)
