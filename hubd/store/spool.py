"""The spool: large bodies arriving in chunks are written to disk, never held in memory.

``<msg_id>.frame`` holds the verified envelope frame (and ``<msg_id>.slots`` a large group's
recipient slots, schemas.slots), ``<msg_id>.from`` the channel and organisation it came
from, and ``<msg_id>.part`` the body bytes received so far, so a transfer broken by a
disconnect or a hub restart resumes from the last byte the hub has (it asks the sender
with a ``resume`` message). A finished body is fsynced and renamed to ``<msg_id>.body``
before the message is stored and ACCEPTED.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runtime.files import fsync_dir
from schemas.envelope import VerifiedEnvelope
from schemas.ids import msg_id_text
from schemas.seal import BodyChecker


@dataclass(slots=True)
class Transfer:
    envelope: VerifiedEnvelope
    channel: str
    org: str
    part: Path
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


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._transfers: dict[bytes, Transfer] = {}

    def path(self, msg_id: bytes, suffix: str) -> Path:
        return self.folder / f"{msg_id_text(msg_id)}.{suffix}"

    def get(self, msg_id: bytes) -> Transfer | None:
        return self._transfers.get(msg_id)

    def begin(self, envelope: VerifiedEnvelope, channel: str, org: str) -> Transfer:
        """Start receiving a body, or return the transfer already under way."""
        msg_id = envelope.header.msg_id
        transfer = self._transfers.get(msg_id)
        if transfer is not None:
            return transfer
        self.path(msg_id, "frame").write_bytes(envelope.frame)
        if envelope.slots is not None:
            self.path(msg_id, "slots").write_bytes(envelope.slots.blob())
        self.path(msg_id, "from").write_text(f"{channel}\n{org}\n", encoding="ascii")
        transfer = Transfer(envelope, channel, org, self.path(msg_id, "part"))
        transfer.part.touch()
        self._transfers[msg_id] = transfer
        return transfer

    def adopt(self, envelope: VerifiedEnvelope, channel: str, org: str) -> Transfer:
        """After a restart: pick up a partial body from disk and re-hash what is there."""
        transfer = Transfer(envelope, channel, org, self.path(envelope.header.msg_id, "part"))
        with transfer.part.open("rb") as handle:
            while block := handle.read(1 << 20):
                transfer.checker.feed(block)
                transfer.received += len(block)
        self._transfers[transfer.msg_id] = transfer
        return transfer

    def append(self, transfer: Transfer, offset: int, data: bytes) -> bool:
        """Write ``data`` if it starts where the transfer stands; False if it does not."""
        if offset != transfer.received:
            return False
        transfer.checker.feed(data)  # raises on more than the signed size
        with transfer.part.open("ab") as handle:
            handle.write(data)
        transfer.received += len(data)
        return True

    def finish(self, transfer: Transfer) -> Path:
        """Check size and hash, make the body durable, return its final path.

        Blocking (fsync of the whole body): call it in a worker thread. The transfer stays
        known until :meth:`forget`, so a head resent meanwhile is answered, not restarted.
        """
        transfer.checker.close()
        body = self.path(transfer.msg_id, "body")
        fd = os.open(transfer.part, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        transfer.part.replace(body)
        self._unlink_head(transfer.msg_id)
        fsync_dir(self.folder)
        return body

    def forget(self, transfer: Transfer) -> None:
        """The message is stored (or refused): the spool no longer tracks it."""
        self._transfers.pop(transfer.msg_id, None)

    def discard(self, transfer: Transfer) -> None:
        self._transfers.pop(transfer.msg_id, None)
        transfer.part.unlink(missing_ok=True)
        self._unlink_head(transfer.msg_id)

    def _unlink_head(self, msg_id: bytes) -> None:
        for suffix in ("frame", "slots", "from"):
            self.path(msg_id, suffix).unlink(missing_ok=True)

    def partial(self) -> list[tuple[str, str, bytes, bytes | None]]:
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
