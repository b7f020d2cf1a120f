"""The spool: large bodies arriving in chunks are written down as they come, never held
in memory. Two kinds share one interface (:class:`BodySpool`), which the engine uses:

- :class:`Spool`, a folder (the default: a SQLite hub, or one PostgreSQL hub). Appending
  is a plain file append on the event loop (:meth:`Spool.append_now`), no task or thread
  hop per chunk; the 1 GiB document's throughput depends on it.
- :class:`hubd.store.sharedspool.StoreSpool`, the store's tables, for replicas sharing one
  PostgreSQL store (issue 15): a transfer one replica began, another continues.

In the folder, ``<msg_id>.frame`` holds the verified envelope frame (and ``<msg_id>.slots``
a large group's recipient slots, schemas.slots), ``<msg_id>.from`` the channel and
organisation it came from, and ``<msg_id>.part`` the body bytes received so far, so a
transfer broken by a disconnect or a hub restart resumes from the last byte the hub has
(it asks the sender with a ``resume`` message). A finished body is fsynced and renamed to
``<msg_id>.body`` before the message is stored and ACCEPTED.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hubd.store.bodyref import BodyRef
from runtime.files import fsync_dir
from schemas.envelope import VerifiedEnvelope
from schemas.errors import StoreError
from schemas.ids import msg_id_text
from schemas.seal import BodyChecker

Partial = tuple[str, str, bytes, bytes | None]  # (channel, org, frame, slots)


class TransferMovedError(StoreError):
    """Another replica appended to (or finished) this transfer first: this replica's
    view of it is stale; it was forgotten, and the store holds what is true."""

    def __init__(self, msg_id: bytes) -> None:
        super().__init__(
            f"传输 {msg_id_text(msg_id)} 已由另一副本继续 / transfer {msg_id_text(msg_id)} "
            "was continued by another replica; ask the sender to resume from what the "
            "store holds",
            retriable=True,
        )


@dataclass(slots=True)
class Transfer:
    envelope: VerifiedEnvelope
    channel: str
    org: str
    part: Path | None  # the folder spool's .part file (None in the store)
    received: int = 0
    finishing: bool = False  # a task is finishing (storing) it: nobody else may
    checker: BodyChecker = field(init=False)

    def __post_init__(self) -> None:
        self.checker = BodyChecker(self.envelope.body)

    @property
    def msg_id(self) -> bytes:
        return self.envelope.header.msg_id

    @property
    def complete(self) -> bool:
        return self.received >= self.envelope.body.size


class BodySpool(Protocol):
    """What the engine asks of a spool (the folder, or the store shared by replicas)."""

    shared: bool  # True: transfers may live in the store beyond this process's memory

    def get(self, msg_id: bytes) -> Transfer | None:
        """A transfer this process is tracking (no I/O)."""

    async def find(self, msg_id: bytes) -> Transfer | None:
        """:meth:`get`, then (the store) a transfer another replica began, adopted."""

    async def begin(self, envelope: VerifiedEnvelope, channel: str, org: str) -> Transfer:
        """Start receiving a body, or return the transfer already under way."""

    def append_now(self, transfer: Transfer, offset: int, data: bytes) -> bool | None:
        """Append without awaiting, if this spool can (see :meth:`append`); None: it
        cannot, await :meth:`append`."""

    async def append(self, transfer: Transfer, offset: int, data: bytes) -> bool:
        """Write ``data`` durably-ordered if it starts where the transfer stands; False if
        it does not. PeerError past the signed size; TransferMovedError (the store) when
        another replica appended first."""

    async def finish(self, transfer: Transfer) -> BodyRef:
        """Check size and hash, make the body durable, return where it now lives."""

    def forget(self, transfer: Transfer) -> None:
        """The message is stored (or refused): the spool no longer tracks it."""

    async def discard(self, transfer: Transfer) -> None:
        """Forget the transfer and remove what was received of it."""

    async def remove(self, body: BodyRef) -> None:
        """Remove a finished body that no stored message needs."""

    async def partial(self) -> list[Partial]:
        """Every transfer a previous run (or another replica) left unfinished."""

    async def adopt(self, envelope: VerifiedEnvelope, channel: str, org: str) -> Transfer:
        """Pick up a partial body and re-hash what is there."""


class Spool:
    """The spool folder (see the module's docstring)."""

    shared = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._transfers: dict[bytes, Transfer] = {}

    def path(self, msg_id: bytes, suffix: str) -> Path:
        return self.folder / f"{msg_id_text(msg_id)}.{suffix}"

    def get(self, msg_id: bytes) -> Transfer | None:
        return self._transfers.get(msg_id)

    async def find(self, msg_id: bytes) -> Transfer | None:
        return self._transfers.get(msg_id)  # a restart adopted the folder's (Hub._recover_spool)

    async def begin(self, envelope: VerifiedEnvelope, channel: str, org: str) -> Transfer:
        """Start receiving a body, or return the transfer already under way (small files,
        written on the loop as before: a head is rare next to its chunks)."""
        msg_id = envelope.header.msg_id
        transfer = self._transfers.get(msg_id)
        if transfer is not None:
            return transfer
        self.path(msg_id, "frame").write_bytes(envelope.frame)
        if envelope.slots is not None:
            self.path(msg_id, "slots").write_bytes(envelope.slots.blob())
        self.path(msg_id, "from").write_text(f"{channel}\n{org}\n", encoding="ascii")
        transfer = Transfer(envelope, channel, org, self.path(msg_id, "part"))
        self._part(transfer).touch()
        self._transfers[msg_id] = transfer
        return transfer

    async def adopt(self, envelope: VerifiedEnvelope, channel: str, org: str) -> Transfer:
        """After a restart: pick up a partial body from disk and re-hash what is there."""
        transfer = Transfer(envelope, channel, org, self.path(envelope.header.msg_id, "part"))
        with self._part(transfer).open("rb") as handle:
            while block := handle.read(1 << 20):
                transfer.checker.feed(block)
                transfer.received += len(block)
        self._transfers[transfer.msg_id] = transfer
        return transfer

    def append_now(self, transfer: Transfer, offset: int, data: bytes) -> bool:
        """Write ``data`` if it starts where the transfer stands; False if it does not."""
        if offset != transfer.received:
            return False
        transfer.checker.feed(data)  # raises on more than the signed size
        with self._part(transfer).open("ab") as handle:
            handle.write(data)
        transfer.received += len(data)
        return True

    async def append(self, transfer: Transfer, offset: int, data: bytes) -> bool:
        return self.append_now(transfer, offset, data)

    async def finish(self, transfer: Transfer) -> Path:
        """Check size and hash, make the body durable (fsync in a worker thread), return
        its final path. The transfer stays known until :meth:`forget`, so a head resent
        meanwhile is answered, not restarted."""
        return await asyncio.to_thread(self._finish, transfer)

    def _finish(self, transfer: Transfer) -> Path:
        transfer.checker.close()
        part = self._part(transfer)
        body = self.path(transfer.msg_id, "body")
        fd = os.open(part, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        part.replace(body)
        self._unlink_head(transfer.msg_id)
        fsync_dir(self.folder)
        return body

    def forget(self, transfer: Transfer) -> None:
        self._transfers.pop(transfer.msg_id, None)

    async def discard(self, transfer: Transfer) -> None:
        self._transfers.pop(transfer.msg_id, None)
        self._part(transfer).unlink(missing_ok=True)
        self._unlink_head(transfer.msg_id)

    async def remove(self, body: BodyRef) -> None:
        if isinstance(body, Path):
            body.unlink(missing_ok=True)

    def _unlink_head(self, msg_id: bytes) -> None:
        for suffix in ("frame", "slots", "from"):
            self.path(msg_id, suffix).unlink(missing_ok=True)

    def _part(self, transfer: Transfer) -> Path:
        return transfer.part or self.path(transfer.msg_id, "part")

    async def partial(self) -> list[Partial]:
        """(channel, org, frame, slots) of every transfer a previous run left on disk."""
        found = []
        for frame_path in sorted(self.folder.glob("*.frame")):
            origin = frame_path.with_suffix(".from")
            if frame_path.with_suffix(".part").exists() and origin.exists():
                channel, org = origin.read_text(encoding="ascii").split()[:2]
                slots_path = frame_path.with_suffix(".slots")
                slots = slots_path.read_bytes() if slots_path.exists() else None
                found.append((channel, org, frame_path.read_bytes(), slots))
        return found
