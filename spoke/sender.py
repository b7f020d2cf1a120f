"""Sending: outbox drops -> checks -> sealed envelopes -> hub; :class:`Sender` is the
agent's one way in to all of it.

A drop is taken once complete (:mod:`spoke.outbox`), claimed into
``.spoke/work/<ms>-<msg_id>/`` (that msg_id, its tracking id from then on, is the one it is
sealed with), checked (:func:`spoke.checks.prepare`, the document rules included:
:mod:`spoke.ruling`), sealed into ``.spoke/queue/<msg_id>.body`` and recorded, durably,
before it is published (:mod:`spoke.sealing`; a drop that changes meanwhile goes back to
the outbox). No file and no name stops the agent: whatever goes wrong with one drop is
logged once and that drop lands in failed/ with its explanation (:mod:`spoke.failures`).
It is published again after every reconnect and every ``resend_every`` seconds until the
hub's ACCEPTED or REJECTED arrives; what the hub and the recipients answer, and the
``sent/<msg_id>/status.json`` it keeps up to date, is :mod:`spoke.sendstatus`'s. The
original bytes are never altered.
"""

from __future__ import annotations

import asyncio
import functools
import traceback
from pathlib import Path

import structlog
from pydantic import ValidationError

from runtime.tasks import cancel_and_wait
from schemas import transport
from schemas.clock import ms_to_text
from schemas.directory import Directory
from schemas.errors import UsageError, XchgError
from schemas.ids import msg_id_text
from schemas.keys import SigningKey
from schemas.model import describe
from schemas.receipts import ReceiptEntry
from schemas.seal import SourceChangedError
from spoke.checks import prepare, read_metadata
from spoke.context import SpokeContext
from spoke.dirbook import DirectoryUnavailableError
from spoke.failed import Failed
from spoke.failures import Failures
from spoke.files import shown_name
from spoke.keyring import Held, Ready
from spoke.outbox import Claimed, Outbox, Unmovable
from spoke.refusals import Refusal, refuse
from spoke.sealing import ChangedWhileSealing, seal_and_record, transient
from spoke.sendstatus import SendStatus
from spoke.state import Outbound, Sending

log = structlog.get_logger("spoke.outbox")


class Sender:
    """The spoke's sending side: takes drops from the outbox, seals and publishes them;
    what goes wrong is its ``failures``', the answers and status.json its ``status``'."""

    def __init__(self, ctx: SpokeContext) -> None:
        self.ctx = ctx
        config = ctx.config
        self.queue = config.work / "queue"
        self.outbox = Outbox(
            config.folder("outbox"),
            config.work / "work",
            config.limits.stable_for,
            config.limits.metadata_wait,
            config.limits.stable_for_unordered,
            ctx.clock,
        )
        self.failures = Failures(ctx, self.outbox)
        self.status = SendStatus(ctx, self.failures, self.queue)
        self._uploads: dict[bytes, asyncio.Task[None]] = {}
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
            self.status.repair()
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
        failures = self.failures
        for orphan in orphans:
            await failures.guard(orphan.name, functools.partial(failures.fail_orphan, orphan))
        for complete in ready:
            try:
                taken = await failures.guard(
                    complete.name, functools.partial(self.outbox.claim, complete)
                )
            except Unmovable as stuck:
                await failures.guard(
                    complete.name, functools.partial(failures.explain_stuck, stuck)
                )
                continue
            if taken is None:
                continue  # it went away meanwhile (or could not be moved: logged)
            await failures.guard(
                complete.name, functools.partial(failures.forget_stuck, taken.name)
            )
            log.info(
                "drop.claimed",
                name=shown_name(complete.name),
                msg_id=None if taken.msg_id is None else msg_id_text(taken.msg_id),
                work=taken.work.name,
                completeness=complete.completeness.value,
            )
            await self._process(taken, directory, signer)

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
            out = await asyncio.to_thread(
                seal_and_record, self.ctx, prepared, directory, signer, self.queue
            )
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
        self.failures.settled(claimed.name)
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
                placed = await asyncio.to_thread(self.failures.place, claimed.name)
            fail = functools.partial(self.failures.fail, claimed, refusal, placed=placed)
            await asyncio.to_thread(fail)
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

    # ------------------------------------------------------------------ answers

    def receipt(
        self, entry: ReceiptEntry, *, write: bool = True, issuer: str | None = None
    ) -> bytes | None:
        """A receipt about something we sent (blocking: call it in a worker thread): see
        :meth:`SendStatus.receipt`; refused before :meth:`recover` has run."""
        self._check_recovered()
        return self.status.receipt(entry, write=write, issuer=issuer)

    def status_later(self, msg_ids: set[bytes]) -> None:
        """Rewrite these sends' status.json soon, each once (:meth:`SendStatus.later`)."""
        self.status.later(msg_ids)

    async def stop(self) -> None:
        """Stop the uploads; what the receipts changed goes on disk."""
        await cancel_and_wait(list(self._uploads.values()))
        await self.status.stop()


def _said(exc: Exception) -> str:
    """An exception as one short phrase for the log: its sentence, not its values."""
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    if isinstance(exc, ValidationError):
        return f"ValidationError: {describe(exc)}"
    return f"{type(exc).__name__}: {exc}"[:500]
