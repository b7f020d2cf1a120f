"""Sending: outbox drops -> checks -> sealed envelopes -> hub, and the answers back.

A drop is taken once complete (:mod:`spoke.outbox`), claimed into
``.spoke/work/<ms>-<msg_id>/`` (that msg_id, its tracking id from then on, is the one it is
sealed with), checked (:func:`spoke.checks.prepare`, the document rules included:
:mod:`spoke.ruling`), sealed into ``.spoke/queue/<msg_id>.body`` (:mod:`spoke.sealing`; a
drop that changes meanwhile goes back to the outbox) and recorded, durably, before it is
published. No file and no name stops the agent: whatever goes wrong with one drop is logged once and
that drop lands in failed/ with its explanation.
It is published again after every reconnect and every ``resend_every`` seconds until the
hub's ACCEPTED or REJECTED arrives. ACCEPTED moves the drop to ``sent/<msg_id>/`` with a
``status.json`` that the recipients' receipts keep up to date; any refusal moves it to
``failed/`` with ``NAME.error.txt`` and ``NAME.error.json``. The original bytes are never
altered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog
from pydantic import ValidationError

from runtime.tasks import cancel_and_wait
from schemas import transport
from schemas.clock import ms_to_text
from schemas.directory import Directory
from schemas.errors import UsageError, XchgError
from schemas.ids import msg_id_text, new_msg_id
from schemas.keys import SigningKey
from schemas.model import describe
from schemas.receipts import ReceiptEntry, ReceiptStatus
from schemas.rules import Mode
from schemas.seal import Draft, SourceChangedError
from spoke.checks import Prepared, prepare, read_metadata
from spoke.context import SpokeContext
from spoke.dirbook import DirectoryUnavailableError
from spoke.failed import Failed, FailedFolder
from spoke.files import META_SUFFIXES, durable_rename, shown_name, write_json
from spoke.keyring import Held, Ready
from spoke.outbox import Claimed, Orphan, Outbox, Unmovable
from spoke.refusals import Refusal, hub_reason_zh, refuse
from spoke.sealing import (
    ChangedWhileSealing,
    digests,
    fingerprint,
    refuse_duplicate,
    seal_drop,
    transient,
)
from spoke.state import FailedDrop, Outbound, Sending
from spoke.tracking import Recipient, overall_status

T = TypeVar("T")
STATUS_EVERY = 0.5  # seconds: status.json follows the receipts this soon, rewritten once
log = structlog.get_logger("spoke.outbox")


class Sender:
    def __init__(self, ctx: SpokeContext) -> None:
        self.ctx = ctx
        config = ctx.config
        self.failed = config.folder("failed")
        self.sent = config.folder("sent")
        self.queue = config.work / "queue"
        self.outbox = Outbox(
            config.folder("outbox"),
            config.work / "work",
            config.limits.stable_for,
            config.limits.metadata_wait,
            config.limits.stable_for_unordered,
        )
        self.failures = FailedFolder(self.failed)
        self._troubles: set[str] = set()  # drops whose own failure failed: logged once
        self._uploads: dict[bytes, asyncio.Task[None]] = {}
        # sends whose status.json is behind their receipts, rewritten together soon
        # (status_later): a notice to 10,000 gets 10,000 DELIVERED, not 10,000 rewrites
        self._stale: set[bytes] = set()
        self._status_task: asyncio.Task[None] | None = None
        # (held reason, signing kid, directory version) as last recorded, and since when
        # it has been sending (or held for that reason)
        self._gate: tuple[str | None, str | None, int | None] | None = None
        self._since: int | None = None
        # the claims recover() found, for the first scan; None until recover() has run
        self._recovered: list[Claimed] | None = None
        # claimed drops to try again at the next scan, by work folder: with None to check
        # and seal again (a transient failure: a full disk), with the refusal to move to
        # failed/ again (moving it there failed), and where in failed/ it already is if
        # only its explanation failed; and why each waits, as last logged
        self._again: dict[Path, tuple[Claimed, Refusal | None, Failed | None]] = {}
        self._directory_away: str | None = None  # this scan found the hub not answering
        self._waiting: dict[Path, str] = {}

    def recover(self) -> None:
        """Finish what a crash left in the work area (blocking), and keep the claims it
        found for the first scan to check and seal.

        Run it once, at start, to completion before anything else can touch the work
        area: before the links connect, so that no answer from the hub, no resend and no
        scan moves a work folder while recovery looks at them. scan() and receipt()
        refuse to run before it."""
        self._recovered = []
        try:
            self._recovered = self.outbox.recover(self.ctx.state.sealed_from)
            self._repair()
        except Exception:  # what one folder raises must never stop the agent
            log.exception("outbox.scan_failed")  # as when recovery was the first scan's

    def _check_recovered(self) -> None:
        if self._recovered is None:
            raise UsageError("Sender.recover() must run (at start) before the work area is used")

    # ------------------------------------------------------------------ the outbox

    async def scan(self) -> None:
        self._check_recovered()
        self.ctx.refresh_keys()  # a pair 'spoke keygen --rotate' just wrote
        gate = self.ctx.gate()
        self._directory_away = None  # asked again at every scan
        resumed = await self.note_gate(gate)
        if isinstance(gate, Held):
            return  # fail closed: drops wait in the outbox
        if resumed:
            await self.republish()
        directory, signer = gate.directory, gate.signer
        pending = self._recovered or []  # claims a crash cut in half, found by recover()
        while pending:
            await self._process(pending.pop(0), directory, signer)
        again, self._again = self._again, {}
        for claimed, refusal, placed in again.values():  # claims that waited since the last scan
            if refusal is None:
                await self._process(claimed, directory, signer)
            else:
                await self._fail_claimed(claimed, refusal, placed)
        ready, orphans = await asyncio.to_thread(self.outbox.scan)
        for orphan in orphans:
            await self._guard(orphan.name, functools.partial(self._fail_orphan, orphan))
        for complete in ready:
            try:
                taken = await self._guard(
                    complete.name, functools.partial(self.outbox.claim, complete)
                )
            except Unmovable as stuck:
                await self._guard(complete.name, functools.partial(self._explain_stuck, stuck))
                continue
            if taken is None:
                continue  # it went away meanwhile (or could not be moved: logged)
            await self._guard(complete.name, functools.partial(self._forget_stuck, taken.name))
            log.info(
                "drop.claimed",
                name=shown_name(complete.name),
                msg_id=None if taken.msg_id is None else msg_id_text(taken.msg_id),
                work=taken.work.name,
                completeness=complete.completeness.value,
            )
            await self._process(taken, directory, signer)

    async def _guard(self, name: str, step: Callable[[], T]) -> T | None:
        """Run one drop's blocking step in a worker thread; whatever it raises is logged
        once per drop (drop.error, with the traceback) and never stops the outbox (an
        Unmovable drop is the caller's to explain)."""
        try:
            return await asyncio.to_thread(step)
        except Unmovable:
            raise
        except Exception:
            if name not in self._troubles:
                self._troubles.add(name)
                log.exception("drop.error", name=shown_name(name))
            return None

    async def note_gate(self, gate: Ready | Held) -> bool:
        """Log and record a change in whether (and with which key, under which directory
        version) the spoke sends; True when sending resumes after being held. The record
        is what the first line of ``spoke status`` shows: rewritten on every directory
        change, so it names the version the agent uses now."""
        kid = None if isinstance(gate, Held) else gate.signer.kid
        state = (gate.reason if isinstance(gate, Held) else None, kid, gate.version)
        if state == self._gate:
            return False
        previous, self._gate = self._gate, state
        now = self.ctx.clock()
        same_way = previous is not None and previous[0] == state[0]  # held for the same reason
        since = self._since if same_way and self._since is not None else now
        self._since = since
        if isinstance(gate, Held):
            if not same_way:
                log.warning(
                    gate.reason,
                    detail=gate.detail,
                    directory_version=gate.version,
                    expires_at=None if gate.expires_at is None else ms_to_text(gate.expires_at),
                )
            record = Sending(gate.reason, gate.detail, since, gate.version, None)
        else:
            if previous is not None and previous[0] is not None:
                log.info(
                    "spoke.sending_resumed",
                    held_for=previous[0],
                    directory_version=gate.version,
                    signing_kid=kid,
                )
            elif previous is not None and previous[1] != kid:
                log.info(
                    "keys.switched",
                    from_kid=previous[1],
                    to_kid=kid,
                    directory_version=gate.version,
                )
            detail = f"sending; signing with key {kid} (directory v{gate.version})"
            record = Sending(None, detail, since, gate.version, kid)
        await asyncio.to_thread(self.ctx.state.save_sending, record)
        return previous is not None and previous[0] is not None

    async def _process(self, claimed: Claimed, directory: Directory, signer: SigningKey) -> None:
        """Check, seal and publish one claimed drop. Whatever happens, it is sent, or it
        ends in failed/ with its reason (back in the outbox if it changed while sealed),
        or, for a failure that is not the document's (:func:`spoke.sealing.transient`: a
        full disk, a busy state database), it stays claimed and is tried again at the
        next scan, the reason logged once (``drop.waiting``). Nothing the drop does raises
        out of here."""
        refusal: Refusal | None = None
        try:
            if await asyncio.to_thread(self.ctx.state.sealed_from, claimed.work):
                return  # sealed before a restart; waiting for the hub's answer
            if not await self._entries_held(claimed):
                return  # back in the outbox until the hub answers for the directory entries
            directory = self.ctx.directory() or directory  # with the entries just fetched
            limits = self.ctx.config.limits
            prepared = await asyncio.to_thread(
                functools.partial(
                    prepare,
                    claimed,
                    org=self.ctx.org,
                    directory=directory,
                    max_file_bytes=limits.max_file_bytes,
                    max_files=limits.max_files,
                    now=self.ctx.clock(),
                )
            )
            out = await asyncio.to_thread(self._seal, prepared, directory, signer)
        except Refusal as found:
            refusal = found
        except (ChangedWhileSealing, SourceChangedError):
            await self._start_again(claimed)
            return
        except Exception as exc:  # noqa: BLE001 - every failure of a claimed drop is answered
            why = transient(exc)
            if why is not None:
                self._wait(claimed, None, why)
                return
            refusal = self._unsealed(claimed, exc)
        if refusal is not None:
            await self._fail_claimed(claimed, refusal)
            return
        self._troubles.discard(claimed.name)
        self._waiting.pop(claimed.work, None)
        await self.publish(out)

    def _unsealed(self, claimed: Claimed, exc: Exception) -> Refusal:
        """The refusal for a claimed drop that raised ``exc`` while checked or sealed; a
        defect of ours is logged too (drop.error, its traceback inside the one event)."""
        if isinstance(exc, XchgError | OSError):  # expected: the refusal says it all
            error = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return refuse("drop.not_sealed", error=error)
        if isinstance(exc, ValidationError):  # its text would quote the values: not logged
            detail = f"ValidationError: {describe(exc)}"
            trace = "".join(traceback.format_tb(exc.__traceback__)) + detail
            log.error("drop.error", name=shown_name(claimed.name), detail=detail, exception=trace)
            return refuse("drop.internal_error", error=detail)
        log.error("drop.error", name=shown_name(claimed.name), exc_info=exc)
        return refuse("drop.internal_error", error=f"{type(exc).__name__}: {exc}")

    async def _fail_claimed(
        self, claimed: Claimed, refusal: Refusal, placed: Failed | None = None
    ) -> None:
        """Move a claimed drop to failed/ with its reason; if even that fails (failed/ not
        writable, the disk full), what is left is done at the next scan (the rest of the
        move, to the same name, and the explanation), the reason logged once
        (``drop.waiting``)."""
        try:
            if placed is None:  # decided once: a retry finishes the move where it began
                path = await asyncio.to_thread(self.failures.place, claimed.name)
                placed = Failed(path, self.failures.error_stem(path.name))
            await asyncio.to_thread(functools.partial(self._fail, claimed, refusal, placed=placed))
        except Exception as exc:  # noqa: BLE001 - it waits, said in the log; never lost
            why = f"moving it to failed/ failed: {_said(exc)}"
            self._wait(claimed, refusal, why, placed, exc)
            return
        self._waiting.pop(claimed.work, None)

    def _wait(
        self,
        claimed: Claimed,
        refusal: Refusal | None,
        why: str,
        placed: Failed | None = None,
        exc: Exception | None = None,
    ) -> None:
        """Keep a claimed drop for the next scan; say why once (until the reason changes),
        with the traceback of ``exc`` if it is a defect (runtime.startup drops it for an
        OSError or one of ours)."""
        self._again[claimed.work] = (claimed, refusal, placed)
        if self._waiting.get(claimed.work) == why:
            return
        self._waiting[claimed.work] = why
        log.warning(
            "drop.waiting",
            name=shown_name(claimed.name),
            msg_id=None if claimed.msg_id is None else msg_id_text(claimed.msg_id),
            detail=why,
            rule=None if refusal is None else refusal.rule,
            hint="it stays in the spoke's work area and is tried again at every scan",
            exc_info=exc,
        )

    async def _entries_held(self, claimed: Claimed) -> bool:
        """Hold the directory entries the drop's addresses need (its groups, recipients
        and their lines, docs/wire-format.md 7a) before it is judged and sealed. If the hub
        cannot be asked now, the drop stays claimed and waits (False), logged once, and is
        tried again at the next scan; once one drop of a scan waited for the directory, the
        rest of the scan's wait without asking. A metadata file that does not read, or a
        claim already refused, is left for the checks."""
        book = self.ctx.book
        if book is None or claimed.refusal is not None:
            return True
        try:
            metadata = await asyncio.to_thread(read_metadata, claimed, {})
        except Refusal:
            return True
        why = self._directory_away
        if why is None:
            try:
                await book.closure((*metadata.to, *metadata.cc), self.ctx.org)
            except DirectoryUnavailableError as exc:
                why = self._directory_away = f"waits for the directory entries it needs: {exc}"
            else:
                return True
        self._wait(claimed, None, why)
        return False

    async def _start_again(self, claimed: Claimed) -> None:
        """A file changed while it was sealed: back to the outbox, where the completeness
        rules start again; failed/ if a new drop of that name is there already (or if it
        cannot be given back)."""
        try:
            given_back = await asyncio.to_thread(self.outbox.unclaim, claimed)
        except OSError as exc:
            error = exc.strerror or str(exc)
            await self._fail_claimed(claimed, refuse("drop.not_sealed", error=error))
            return
        if given_back:
            self._waiting.pop(claimed.work, None)
            log.warning("drop.changed_while_sealing", name=shown_name(claimed.name))
            return
        await self._fail_claimed(claimed, refuse("drop.changed", document=shown_name(claimed.name)))

    def _seal(self, prepared: Prepared, directory: Directory, signer: SigningKey) -> Outbound:
        meta = prepared.metadata
        entries = digests(prepared)
        print_ = fingerprint(prepared, entries)
        now = self.ctx.clock()
        window_ms = int(self.ctx.config.limits.duplicate_window * 1000)
        refuse_duplicate(self.ctx.state, prepared, print_, now=now, window_ms=window_ms)
        doc = prepared.document  # what the rules judged is exactly what is sealed
        recipients = doc.recipients
        tracked = prepared.claimed.msg_id  # given when the drop was taken
        draft = Draft(
            msg_id=new_msg_id() if tracked is None else tracked,
            sender=self.ctx.org,
            to=doc.to,
            cc=doc.cc,
            classification=meta.classification,
            precedence=meta.precedence,
            doc_type=meta.doc_type,
            title=meta.title,
            created_at=now,
            files=entries,
            expires_at=meta.expires_ms,
            in_reply_to=meta.in_reply_to_bytes,
            doc_number=meta.doc_number,
            signatory=meta.signatory,
            secrecy_period=meta.secrecy_period,
            copy_numbers=dict(doc.copy_numbers),
            directive=meta.directive,
            date=None if meta.date is None else meta.date.isoformat(),
        )
        sealed = seal_drop(prepared, draft, signer, directory, self.queue)
        header = sealed.header
        out = Outbound(
            msg_id=header.msg_id,
            name=prepared.claimed.name,
            work=prepared.claimed.work,
            channel=prepared.channel,
            frame=sealed.frame,
            body_path=self.queue / f"{header.msg_id_text}.body",
            body_size=sealed.body.size,
            state="QUEUED",
            created_at=draft.created_at,
            slots=sealed.slots,
        )
        notes: dict[str, object] = {
            "added_cc": list(prepared.added_cc),
            "copy_numbers": dict(doc.copy_numbers),
            "rule_warnings": [f.as_dict(Mode.WARN) for f in prepared.warnings],
            "files": [
                {"name": shown_name(e.name), "size": e.size, "sha256": e.sha256.hex()}
                for e in entries
            ],
            "completeness": prepared.completeness.value,
            "resend": meta.resend,
            "not_addressed": [n.as_json() for n in prepared.not_addressed],
        }
        self.ctx.state.add_outbound(
            out,
            recipients,
            header.classification.name,
            header.precedence.name,
            notes=notes,
            fingerprint=print_,
            doc_number=meta.doc_number,
        )
        for finding in prepared.warnings:  # never the title: it travels encrypted
            log.warning(
                "rule.warned",
                rule=finding.rule.id,
                article=finding.rule.article,
                msg_id=header.msg_id_text,
                name=shown_name(out.name),
            )  # no finding text: it quotes the document number
        log.info(
            "drop.sealed",
            name=shown_name(out.name),
            msg_id=header.msg_id_text,
            recipients=len(recipients),
            classification=header.classification.name,
            precedence=header.precedence.name,
            channel=out.channel,
            added_cc=list(prepared.added_cc),
            files=len(entries),
            size=sum(e.size for e in entries),
        )
        if prepared.not_addressed:  # the sender named a group: say who it did not reach
            log.warning(
                "drop.not_addressed",
                name=shown_name(out.name),
                msg_id=header.msg_id_text,
                not_addressed=[n.as_json() for n in prepared.not_addressed],
                version=directory.version,
            )
        return out

    # ------------------------------------------------------------------ publishing

    async def publish(self, out: Outbound) -> None:
        """Send the envelope: inline when small; else the head, and chunks when asked."""
        if out.body_size <= transport.INLINE_BODY_MAX:
            try:
                body = await asyncio.to_thread(out.body_path.read_bytes)
            except FileNotFoundError:
                return  # the hub answered meanwhile: the answer removed the sealed body
            await self.ctx.publish_up(
                out.channel, transport.encode(transport.EnvelopeMsg(out.frame, body, out.slots))
            )
        else:  # the hub answers a head with "resume from N"
            await self.ctx.publish_up(
                out.channel, transport.encode(transport.EnvelopeMsg(out.frame, None, out.slots))
            )

    async def republish(self, channel: str | None = None, older_than_ms: int | None = None) -> None:
        """Every envelope still waiting for the hub's answer (after a reconnect, or a while);
        nothing while the spoke is held (fail closed)."""
        if isinstance(self.ctx.gate(), Held):
            return
        where, args = "WHERE state = 'QUEUED'", []
        if channel is not None:
            where, args = where + " AND channel = ?", [channel]
        for out in self.ctx.state.outbound(where, args):
            if older_than_ms is not None and out.created_at > self.ctx.clock() - older_than_ms:
                continue
            upload = self._uploads.get(out.msg_id)
            if upload is not None and not upload.done():
                continue
            await self.publish(out)

    def resume(self, msg_id: bytes, offset: int) -> None:
        """The hub holds ``offset`` bytes of our body: send the rest, chunk by chunk."""
        rows = self.ctx.state.outbound("WHERE msg_id = ? AND state = 'QUEUED'", [msg_id])
        if not rows:
            return
        previous = self._uploads.pop(msg_id, None)
        if previous is not None:
            previous.cancel()
        self._uploads[msg_id] = asyncio.get_running_loop().create_task(self._pump(rows[0], offset))

    async def _pump(self, out: Outbound, offset: int) -> None:
        position = offset
        try:
            handle = out.body_path.open("rb")  # closed by the with below, across awaits
        except FileNotFoundError:
            return  # the hub answered meanwhile: the answer removed the sealed body
        with handle:
            handle.seek(position)
            while position < out.body_size:
                data = handle.read(transport.CHUNK_BYTES)
                if not data:
                    return
                message = transport.encode(transport.ChunkMsg(out.msg_id, position, data))
                if not await self.ctx.publish_up(out.channel, message):
                    return  # the connection dropped: the next head asks where to resume
                position += len(data)

    async def stop(self) -> None:
        await cancel_and_wait(list(self._uploads.values()))
        if self._status_task is not None:
            await cancel_and_wait([self._status_task])
        await asyncio.to_thread(self._write_stale)  # what the receipts changed, on disk

    def status_later(self, msg_ids: set[bytes]) -> None:
        """Rewrite these sends' status.json within :data:`STATUS_EVERY` seconds, each once
        however many receipts came meanwhile."""
        self._stale |= msg_ids
        if self._stale and (self._status_task is None or self._status_task.done()):
            self._status_task = asyncio.get_running_loop().create_task(
                self._status_soon(), name="spoke.status_json"
            )

    async def _status_soon(self) -> None:
        while self._stale:  # checked on the loop: what came during a write is not left over
            await asyncio.sleep(STATUS_EVERY)
            await asyncio.to_thread(self._write_stale)

    def _write_stale(self) -> None:
        while self._stale:
            self.write_status(self._stale.pop())

    # ------------------------------------------------------------------ answers

    def receipt(self, entry: ReceiptEntry, *, write: bool = True) -> bytes | None:
        """A receipt about something we sent (blocking: call it in a worker thread).

        Returns the msg_id of a send a recipient's receipt changed: its status.json is
        rewritten now, or with ``write=False`` by the caller (:meth:`status_later`)."""
        self._check_recovered()
        state = self.ctx.state
        if entry.msg_id is not None:
            rows = state.outbound("WHERE msg_id = ?", [entry.msg_id])
        elif entry.status is ReceiptStatus.REJECTED:  # refused bytes: match them by their hash
            queued = state.outbound("WHERE state = 'QUEUED'")
            rows = [o for o in queued if hashlib.sha256(o.frame).digest() == entry.subject]
        else:
            rows = []
        if not rows:
            return None
        out = rows[0]
        if entry.status is ReceiptStatus.ACCEPTED and out.state == "QUEUED":
            self._accepted(out, entry.at)
        elif entry.status is ReceiptStatus.REJECTED and out.state == "QUEUED":
            self._rejected(out, entry)
        elif entry.recipient is not None:
            # DELIVERED / SIGNED_FOR from a recipient, EXPIRED / DEAD from the hub about one
            state.add_receipt(
                msg_id=out.msg_id,
                recipient=entry.recipient,
                status=entry.status.value,
                at=entry.at,
                reason=entry.reason,
                detail=entry.detail,
            )
            log.info(
                "drop.receipt",
                status=entry.status.value,
                msg_id=msg_id_text(out.msg_id),
                recipient=entry.recipient,
            )
            if write:
                self.write_status(out.msg_id)
            return out.msg_id
        return None

    def _accepted(self, out: Outbound, at: int) -> None:
        self._move_to_sent(out)
        self.ctx.state.set_outbound_state(out.msg_id, "ACCEPTED", at)
        out.body_path.unlink(missing_ok=True)
        log.info("drop.accepted", name=out.name, msg_id=msg_id_text(out.msg_id))
        self.write_status(out.msg_id)

    def _rejected(self, out: Outbound, entry: ReceiptEntry) -> None:
        what_zh, hint_zh = hub_reason_zh(entry.reason, retriable=entry.retriable)
        reason = entry.reason or "hub.rejected"
        refusal = Refusal(
            reason,
            f"the hub refused it: {entry.detail}",
            _hint(entry.reason, retriable=entry.retriable),
            {"reason": entry.reason, "retriable": entry.retriable},
            message_zh=f"枢纽拒收（{reason}）：{what_zh}。枢纽的说明：{entry.detail}",
            hint_zh=hint_zh,
        )
        metas = tuple(p.name for p in out.work.glob("*") if p.name.endswith(META_SUFFIXES))
        self._fail(Claimed(out.name, out.work, metas), refusal, msg_id=out.msg_id)
        self.ctx.state.set_outbound_state(out.msg_id, "REJECTED", entry.at)
        out.body_path.unlink(missing_ok=True)

    def _repair(self) -> None:
        """What a crash can leave between two steps: finish it (start-up only).

        An ACCEPTED send whose files are still in the work area, or whose status.json was
        never written; a sealed body whose record never was (a crash between the two)."""
        for out in self.ctx.state.outbound("WHERE state = 'ACCEPTED'"):
            folder = self.sent / msg_id_text(out.msg_id)
            if out.work.exists():
                self._move_to_sent(out)
            if not (folder / "status.json").exists():
                self.write_status(out.msg_id)
        for msg_id in self.ctx.state.status_due():  # receipts a crash kept it from showing
            self.write_status(msg_id)
        queued = {o.body_path.name for o in self.ctx.state.outbound("WHERE state = 'QUEUED'")}
        for body in self.queue.glob("*.body"):
            if body.name not in queued:
                body.unlink()
                log.info("drop.orphan_body_removed", file=body.name)

    def _move_to_sent(self, out: Outbound) -> Path:
        """The document first, its metadata last (as a claim moves them)."""
        folder = self.sent / msg_id_text(out.msg_id)
        folder.mkdir(parents=True, exist_ok=True)
        if out.work.exists():
            items = sorted(out.work.iterdir(), key=lambda p: p.name.endswith(META_SUFFIXES))
            for item in items:
                durable_rename(item, folder / item.name)
            with contextlib.suppress(OSError):
                out.work.rmdir()
        return folder

    def write_status(self, msg_id: bytes) -> None:
        folder = self.sent / msg_id_text(msg_id)
        mark = self.ctx.state.status_mark(msg_id)
        summary = self.ctx.state.summary(msg_id)
        if summary is None or not folder.exists():
            return
        name, channel, recipients_json, label, precedence, state, created, answered = summary
        recipients = {r: Recipient() for r in json.loads(recipients_json)}
        for recipient, status, at, reason, detail in self.ctx.state.receipts(msg_id):
            recipients.setdefault(recipient, Recipient()).add(status, at, reason, detail)
        notes = self.ctx.state.notes(msg_id)
        copies: dict[str, str] = notes.get("copy_numbers", {})
        for recipient, number in copies.items():
            recipients.setdefault(recipient, Recipient()).copy_number = number
        write_json(
            folder / "status.json",
            {
                "msg_id": msg_id_text(msg_id),
                "name": shown_name(name),
                "channel": channel,
                "classification": label,
                "precedence": precedence,
                "hub": state,
                # the recipients' most needy status (spoke.tracking): DEAD if one is DEAD
                "status": overall_status(r.status for r in recipients.values()),
                "created_at": ms_to_text(created, precise=True),
                "accepted_at": None if answered is None else ms_to_text(answered, precise=True),
                "recipients": {r: info.as_json() for r, info in recipients.items()},
                "added_cc": notes.get("added_cc", []),  # by auto_cc (自动抄送)
                "rule_warnings": notes.get("rule_warnings", []),  # rules set to warn
                # exactly what was sealed: compare with sha256sum, here and at the recipients
                "files": notes.get("files", []),
                "completeness": notes.get("completeness"),  # why the drop was taken
                "resend": notes.get("resend", False),
                # members of an addressed group it did not go to: [{org, group, reason}]
                "not_addressed": notes.get("not_addressed", []),
            },
        )
        self.ctx.state.status_written(msg_id, mark)

    # ------------------------------------------------------------------ failed/

    def _fail(
        self,
        claimed: Claimed,
        refusal: Refusal,
        *,
        msg_id: bytes | None = None,
        placed: Failed | None = None,
    ) -> None:
        """Move a drop to failed/ unchanged (to ``placed``, where an earlier try began),
        with NAME.error.txt and NAME.error.json, under its tracking id (``msg_id``: the one
        the hub refused; else the claim's)."""
        by_hub = msg_id is not None
        tracked = msg_id or claimed.msg_id or new_msg_id()
        failed = self._take(claimed, placed)
        self._record_failed(claimed.name, failed, refusal, tracked, by_hub=by_hub)
        with contextlib.suppress(OSError):
            claimed.work.rmdir()
        self._troubles.discard(claimed.name)

    def _take(self, claimed: Claimed, placed: Failed | None = None) -> Failed:
        """Move what is left of a claimed drop (the document, its metadata, its
        temporaries) into failed/, unchanged: to ``placed`` if given."""
        metas = [claimed.work / m for m in claimed.meta_names]
        extras = [claimed.work / n for n in claimed.beside]
        target = None if placed is None else placed.path
        return self.failures.take(claimed.payload, metas, claimed.name, extras, target=target)

    def _record_failed(
        self, name: str, failed: Failed, refusal: Refusal, msg_id: bytes, *, by_hub: bool
    ) -> None:
        """Explain a drop now in failed/, remember it under its tracking id, log it."""
        at = self.ctx.clock()
        by = "hub" if by_hub else "spoke"
        self.failures.explain(failed, refusal, original=name, at=at, msg_id=msg_id, by=by)
        shown = shown_name(name), shown_name(failed.path.name)  # as status shows them
        self.ctx.state.add_failed(FailedDrop(msg_id, *shown, refusal.rule, by, at))
        log.warning(
            "drop.failed",
            name=shown_name(name),
            rule=refusal.rule,
            detail=refusal.loggable,  # never a 发文字号 or another value of the metadata
            msg_id=msg_id_text(msg_id),
            refused_by=by,
        )

    def _explain_stuck(self, stuck: Unmovable) -> None:
        """The spoke may not move a drop: say so beside it, in the outbox (NAME.error.txt,
        .json; ignored there), and leave it until something of it changes."""
        refusal = refuse(
            "drop.cannot_move",
            {"document": shown_name(stuck.name), "error": stuck.error.strerror},
            document=shown_name(stuck.name),
            error=stuck.error.strerror or str(stuck.error),
        )
        beside = FailedFolder(self.outbox.folder)
        where = Failed(self.outbox.folder / stuck.name, beside.error_stem(stuck.name))
        beside.explain(where, refusal, original=stuck.name, at=self.ctx.clock())
        log.warning("drop.stuck", name=shown_name(stuck.name), detail=refusal.message)

    def _forget_stuck(self, name: str) -> None:
        """A drop that could not be moved has been now: its explanation in the outbox goes."""
        beside = FailedFolder(self.outbox.folder)
        stem = beside.error_stem(name)
        machine = self.outbox.folder / f"{stem}.error.json"
        with contextlib.suppress(OSError, ValueError):
            if json.loads(machine.read_text(encoding="utf-8"))["rule"] == "drop.cannot_move":
                machine.unlink()
                (self.outbox.folder / f"{stem}.error.txt").unlink(missing_ok=True)

    def _fail_orphan(self, orphan: Orphan) -> None:
        source = self.outbox.folder / orphan.name
        if not (source.exists() or source.is_symlink()):
            return  # taken away meanwhile: nothing to answer
        try:
            failed = self.failures.take(source, [], orphan.name)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                return
            self.outbox.mark_stuck(orphan.key)
            self._explain_stuck(Unmovable(orphan.name, exc))
            return
        self._record_failed(orphan.name, failed, orphan.refusal, new_msg_id(), by_hub=False)
        self._troubles.discard(orphan.name)


def _said(exc: Exception) -> str:
    """An exception as one short phrase for the log: its sentence, not its values."""
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    if isinstance(exc, ValidationError):
        return f"ValidationError: {describe(exc)}"
    return f"{type(exc).__name__}: {exc}"[:500]


def _hint(reason: str | None, *, retriable: bool) -> str:
    if retriable:
        return "The hub could not take it now; drop the document again later."
    if reason is None:
        return "Ask the hub operator."
    if reason.startswith("rule."):
        return (
            "The hub's document rules (行文规则) refused it: correct what the sentence names "
            "(docs/rules.md explains every rule) and drop the document again."
        )
    if reason.startswith("policy."):
        return "Change the label or the recipients so that the rule is met, then drop it again."
    if reason == "replay.clock_skew":
        return "Set this server's clock right (NTP), then drop the document again."
    if reason.startswith(("sig.", "directory.", "envelope.")):
        return "This organisation's keys or directory may be out of date: ask the hub operator."
    return (
        "Correct what the reason names and drop the document again; ask the hub operator if unsure."
    )
