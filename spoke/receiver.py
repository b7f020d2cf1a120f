"""Receiving: envelopes from the hub into ``inbox/<msg_id>/``, then a signed DELIVERED.

DELIVERED is sent only after the inbox folder is durable; a msg_id already received is
never written twice (it is answered with DELIVERED again, since the hub resends until it
hears one). Large bodies arrive in chunks, staged in ``.spoke/incoming/<msg_id>.part`` so
a broken download resumes where it stopped. Sign-for (签收) sends SIGNED_FOR.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import stat
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from runtime.files import atomic_write
from schemas import transport
from schemas.directory import Directory
from schemas.envelope import VerifiedEnvelope, verify_envelope
from schemas.errors import PeerError, Reason
from schemas.ids import msg_id_text
from schemas.keys import EncryptionKey
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts
from spoke.context import SpokeContext
from spoke.dirbook import DirectoryUnavailableError, peek_sender
from spoke.files import fit_name, shown_name
from spoke.flowfiles import TAKEN_OUT, open_kept_note, settle_recall
from spoke.handling import write_reminders
from spoke.inbox import META, InboxWrite, mark_signed_for
from spoke.keyring import Held

log = structlog.get_logger("spoke.inbox")


@dataclass
class Incoming:
    """A chunked body arriving from the hub, staged to disk."""

    envelope: VerifiedEnvelope
    channel: str
    part: Path
    received: int


class Receiver:
    def __init__(self, ctx: SpokeContext) -> None:
        self.ctx = ctx
        self.inbox = ctx.config.folder("inbox")
        self.incoming = ctx.config.work / "incoming"
        self._transfers: dict[bytes, Incoming] = {}
        self._pending: dict[tuple[str, str], list[ReceiptEntry]] = defaultdict(list)
        # sign-for requests that failed, by name, as they were: logged once, left alone
        self._bad_requests: dict[str, tuple[int, int, int]] = {}
        # a document answering one (in_reply_to) arrived: the agent rewrites that send's
        # status.json (a 批复 handles its 请示)
        self.on_reply: Callable[[bytes], None] | None = None

    # ------------------------------------------------------------------ envelopes

    async def envelope(
        self, channel: str, frame: bytes, body: bytes | None, slot: bytes | None = None
    ) -> None:
        """An envelope from the hub; ``slot``: this spoke's slot and its proof, when the
        header signs its recipients' slots instead of naming them (schemas.slots)."""
        await self._sender_held(frame)
        directory = self.ctx.directory()
        if directory is None:
            log.warning("inbox.no_directory", channel=channel)
            return
        try:
            envelope = verify_envelope(frame, directory, recipient=self.ctx.org, slots=slot)
        except PeerError as exc:
            log.error("inbox.refused", channel=channel, reason=exc.reason.value, detail=exc.message)
            return
        header = envelope.header
        if self.ctx.org not in header.keys:
            log.warning("inbox.not_for_us", msg_id=header.msg_id_text, sender=header.sender)
            return
        if self.ctx.state.received(header.msg_id):
            log.info("inbox.duplicate", msg_id=header.msg_id_text, sender=header.sender)
            recall = self.ctx.state.recall_received(header.msg_id)
            if recall is not None:  # recalled: filed as decided (a crash may have stopped it)
                await asyncio.to_thread(settle_recall, self.ctx, recall)
            self.acknowledge(envelope, channel, ReceiptStatus.DELIVERED)
            return
        key = self._key_for(envelope, channel)
        if key is None:
            return  # no DELIVERED: the hub sends it again, and the key file may be back
        if body is not None:
            await self._write(directory, envelope, channel, key, body=body)
            return
        transfer = self._transfers.get(header.msg_id)
        if transfer is None:
            part = self.incoming / f"{header.msg_id_text}.part"
            size = await asyncio.to_thread(_size, part)
            transfer = self._transfers[header.msg_id] = Incoming(envelope, channel, part, size)
        if transfer.received >= envelope.body.size:  # complete before a crash: open it now
            del self._transfers[header.msg_id]
            await self._write(directory, envelope, channel, key, path=transfer.part)
            return
        resume = transport.ResumeMsg(header.msg_id, transfer.received)
        await self.ctx.publish_up(channel, transport.encode(resume))

    async def _sender_held(self, frame: bytes) -> None:
        """The sender's directory entry, fetched if this spoke does not hold it yet (the
        frame names the sender outside its signature for this); without it the envelope
        is refused as from an unknown sender and the hub sends it again later."""
        book = self.ctx.book
        sender = peek_sender(frame)
        if book is None or sender is None:
            return
        try:
            await book.ensure([sender, self.ctx.org])  # its own too: judged once it is held
        except DirectoryUnavailableError as exc:
            log.info("inbox.sender_entry_deferred", sender=sender, detail=str(exc))

    async def chunk(self, msg_id: bytes, offset: int, data: bytes) -> None:
        transfer = self._transfers.get(msg_id)
        if transfer is None or offset != transfer.received:
            return  # not announced, or out of order: the hub resends from where we stand
        await asyncio.to_thread(_append, transfer.part, data)
        transfer.received += len(data)
        if transfer.received < transfer.envelope.body.size:
            return
        del self._transfers[msg_id]
        directory = self.ctx.directory()
        key = self._key_for(transfer.envelope, transfer.channel)
        if directory is None or key is None:
            return
        await self._write(directory, transfer.envelope, transfer.channel, key, path=transfer.part)

    def _key_for(self, envelope: VerifiedEnvelope, channel: str) -> EncryptionKey | None:
        """The held encryption key the file key was sealed to (by its kid): the current
        one, or a retired one during and after a rotation. None (logged) if not held."""
        sealed = envelope.header.keys.get(self.ctx.org)
        if sealed is None:
            return None
        key = self.ctx.held_keys().encryption_key(sealed.kid)
        if key is None and self.ctx.refresh_keys(force=True):
            key = self.ctx.held_keys().encryption_key(sealed.kid)
        if key is None:
            held = ", ".join(self.ctx.held_keys().kids[1])
            log.error(
                "inbox.refused",
                msg_id=envelope.header.msg_id_text,
                sender=envelope.header.sender,
                channel=channel,
                reason=Reason.ENV_KEY_UNSEAL_FAILED.value,
                detail=(
                    f"the file key is sealed to encryption key {sealed.kid} of {self.ctx.org}, "
                    f"which this spoke does not hold (it holds {held}); put that key file back "
                    f"beside {self.ctx.config.spoke.enc_key.name}: the hub sends the document "
                    "again until it is opened"
                ),
            )
        return key

    async def _write(
        self,
        directory: Directory,
        envelope: VerifiedEnvelope,
        channel: str,
        key: EncryptionKey,
        *,
        body: bytes | None = None,
        path: Path | None = None,
    ) -> None:
        header = envelope.header
        received = self.ctx.clock()
        try:
            folder = await asyncio.to_thread(
                functools.partial(
                    self._write_sync,
                    directory=directory,
                    envelope=envelope,
                    channel=channel,
                    key=key,
                    received=received,
                    body=body,
                    path=path,
                )
            )
        except PeerError as exc:
            log.error(
                "inbox.refused",
                msg_id=header.msg_id_text,
                sender=header.sender,
                reason=exc.reason.value,
                detail=exc.message,
            )
            if path is not None:
                await asyncio.to_thread(path.unlink, missing_ok=True)
            return
        log.info(
            "inbox.received",
            msg_id=header.msg_id_text,
            sender=header.sender,
            folder=folder.name,
            classification=header.classification.name,
            precedence=header.precedence.name,
        )
        self.acknowledge(envelope, channel, ReceiptStatus.DELIVERED)
        if header.in_reply_to is not None and self.on_reply is not None:
            self.on_reply(header.in_reply_to)

    def _write_sync(
        self,
        *,
        directory: Directory,
        envelope: VerifiedEnvelope,
        channel: str,
        key: EncryptionKey,
        received: int,
        body: bytes | None,
        path: Path | None,
    ) -> Path:
        done = self.inbox / envelope.header.msg_id_text
        note_key = None  # not known again after a crash here: its notes go unread
        if (done / META).is_file():
            folder = done  # renamed into place, then a crash before it was recorded
        else:
            writer = InboxWrite(self.inbox, envelope, self.ctx.org, key)
            try:
                if body is not None:
                    writer.feed(body)
                elif path is not None:
                    writer.feed_file(path)
                folder = writer.commit(directory, received_at=received, channel=channel)
            except BaseException:
                writer.abort()
                raise
            note_key = writer.note_key
        header = envelope.header
        self.ctx.state.add_inbound(
            msg_id=header.msg_id,
            sender=header.sender,
            channel=channel,
            folder=folder,
            digest=envelope.digest,
            classification=header.classification.name,
            at=received,
            note_key=note_key,
            doc_type=header.doc_type.name,
            in_reply_to=header.in_reply_to,
        )
        write_reminders(self.ctx, header.msg_id)  # 催办 that came before it (spoke.handling)
        recall = self.ctx.state.recall_received(header.msg_id)
        if recall is not None:  # recalled before it arrived: filed straight (spoke.flows)
            if note_key is not None:
                recall = open_kept_note(self.ctx, recall, note_key)  # its reason, now
            folder = settle_recall(self.ctx, recall) or folder
        if path is not None:
            path.unlink(missing_ok=True)
        return folder

    # ------------------------------------------------------------------ receipts out

    def acknowledge(self, envelope: VerifiedEnvelope, channel: str, status: ReceiptStatus) -> None:
        """Queue a signed receipt; batches go out per (original sender, channel)."""
        header = envelope.header
        self._queue(
            msg_id=header.msg_id,
            sender=header.sender,
            channel=channel,
            subject=envelope.digest,
            label=header.classification,
            status=status,
        )

    def _queue(
        self,
        *,
        msg_id: bytes,
        sender: str,
        channel: str,
        subject: bytes,
        label: Classification,
        status: ReceiptStatus,
    ) -> None:
        entry = ReceiptEntry(
            msg_id=msg_id,
            recipient=self.ctx.org,
            status=status,
            at=self.ctx.clock(),
            subject=subject,
            classification=label,
            reason=None,
            detail=None,
            retriable=False,
        )
        self._pending[(sender, channel)].append(entry)

    async def flush(self) -> None:
        """One signature per original sender: the hub forwards each batch unchanged."""
        gate = self.ctx.gate()
        if isinstance(gate, Held):
            return  # fail closed: they go out once the spoke may send again
        pending, self._pending = self._pending, defaultdict(list)
        for (sender, channel), entries in pending.items():
            frame = sign_receipts(self.ctx.org, gate.signer, entries, at=self.ctx.clock())
            if not await self.ctx.publish_up(
                channel, transport.encode(transport.ReceiptsMsg(frame, 0))
            ):
                self._pending[(sender, channel)].extend(entries)  # not connected: next flush
                continue
            await asyncio.to_thread(  # kept for evidence files (spoke prove)
                self.ctx.state.keep_receipt_frame,
                frame,
                hashlib.sha256(frame).digest(),
                self.ctx.org,
                [e.msg_id for e in entries if e.msg_id is not None],
                at=self.ctx.clock(),
                sent_only=False,
            )

    async def send_alone(self, channel: str, entry: ReceiptEntry) -> tuple[bytes, bool] | None:
        """A flow statement, signed alone in its batch (schemas.receipts: it travels alone)
        and published now, not merged into the per-sender batches: (frame, whether the
        broker took it); None while the spoke may not send (fail closed)."""
        gate = self.ctx.gate()
        if isinstance(gate, Held):
            return None
        frame = sign_receipts(self.ctx.org, gate.signer, [entry], at=self.ctx.clock())
        published = await self.publish_alone(channel, frame, entry.msg_id)
        return frame, published

    async def publish_alone(self, channel: str, frame: bytes, msg_id: bytes | None) -> bool:
        """A signed batch published as it is (again), and kept for evidence files."""
        if not await self.ctx.publish_up(
            channel, transport.encode(transport.ReceiptsMsg(frame, 0))
        ):
            return False
        await asyncio.to_thread(
            self.ctx.state.keep_receipt_frame,
            frame,
            hashlib.sha256(frame).digest(),
            self.ctx.org,
            [] if msg_id is None else [msg_id],
            at=self.ctx.clock(),
            sent_only=False,
        )
        return True

    # ------------------------------------------------------------------ sign-for

    async def sign_for(self, msg_id: bytes) -> bool:
        """签收: send SIGNED_FOR for a document in the inbox; False if it is not there."""
        row = self.ctx.state.inbound(msg_id)
        if row is None or not (self.inbox / msg_id_text(msg_id)).is_dir():
            return False  # never received, or recalled or returned since
        recall = self.ctx.state.recall_received(msg_id)
        if recall is not None and recall.decision in TAKEN_OUT:
            log.warning("inbox.sign_for_recalled", msg_id=msg_id_text(msg_id))
            return False  # its sender withdrew it (still in inbox/ only after a crash)
        sender, channel, folder, digest, label, signed = row
        self._queue(
            msg_id=msg_id,
            sender=sender,
            channel=channel,
            subject=bytes(digest),
            label=Classification[label],
            status=ReceiptStatus.SIGNED_FOR,
        )
        if signed is None:
            at = self.ctx.clock()
            await asyncio.to_thread(self.ctx.state.set_signed_for, msg_id, at)
            await asyncio.to_thread(mark_signed_for, Path(folder), at)
        log.info("inbox.signed_for", msg_id=msg_id_text(msg_id), sender=sender)
        return True

    async def sign_for_requests(self, folder: Path) -> None:
        """The file convention: an empty file ``signfor/<msg_id>`` asks for 签收.

        A request that names no document is answered with ``NAME.error.txt`` (its name
        shortened where the file system needs it) and removed; one request's trouble never
        stops the others, and is logged once."""
        requests = await asyncio.to_thread(_requests, folder)
        self._bad_requests = {n: s for n, s in self._bad_requests.items() if n in requests}
        for name, seen in requests.items():
            if self._bad_requests.get(name) == seen:
                continue  # it failed as it is: tried again once it changes
            try:
                await self._sign_for_request(folder, folder / name)
            except Exception:
                self._bad_requests[name] = seen
                log.exception("signfor.failed", request=shown_name(name))

    async def _sign_for_request(self, folder: Path, request: Path) -> None:
        name = request.name.removesuffix(".signfor")
        msg_id = b""
        if len(name) == 32 and name == name.lower():
            with contextlib.suppress(ValueError):
                msg_id = bytes.fromhex(name)
        if len(msg_id) != 16 or not await self.sign_for(msg_id):
            shown = shown_name(request.name)
            problem = (
                f"“{shown}”没有对应收件箱中的文件：签收请求文件应以文件在 inbox/ 中的文件夹名"
                "（msg_id，32 位十六进制）命名。\n"
                f"'{shown}' does not name a document in this spoke's inbox: name the request "
                "file exactly after the document's inbox folder (its msg_id, 32 hex digits).\n"
            )
            error = folder / f"{fit_name(request.name, room=len('.error.txt'))}.error.txt"
            await asyncio.to_thread(_write_once, error, problem.encode())
        await asyncio.to_thread(request.unlink, missing_ok=True)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def _requests(folder: Path) -> dict[str, tuple[int, int, int]]:
    """The requests in ``folder`` (a request is a file of any kind), each with its inode,
    mtime and ctime."""
    found = {}
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or entry.name.endswith(".error.txt"):
            continue
        with contextlib.suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                found[entry.name] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    return dict(sorted(found.items()))


def _write_once(path: Path, data: bytes) -> None:
    """``data`` into ``path`` unless it already says exactly that (a rewrite would wake the
    agent's own watch of the folder)."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return
    atomic_write(path, data, mode=0o644)
