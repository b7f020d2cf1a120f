"""Sending: outbox drops -> checks -> sealed envelopes -> hub, and the answers back.

A drop is claimed into ``.spoke/work/<token>/``, checked (:func:`spoke.outbox.prepare`,
the document rules included: :mod:`spoke.ruling`), sealed into
``.spoke/queue/<msg_id>.body`` and recorded, durably, before it is published.
It is published again after every reconnect and every ``resend_every`` seconds until the
hub's ACCEPTED or REJECTED arrives. ACCEPTED moves the drop to ``sent/<msg_id>/`` with a
``status.json`` that the recipients' receipts keep up to date; any refusal moves it to
``failed/`` with ``NAME.error.txt`` and ``NAME.error.json``. The original bytes are never
altered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import os
from pathlib import Path

import structlog

from schemas import transport
from schemas.clock import ms_to_text
from schemas.directory import Directory
from schemas.errors import XchgError
from schemas.ids import msg_id_text
from schemas.keys import SigningKey
from schemas.localfs import atomic_write
from schemas.receipts import ReceiptEntry, ReceiptStatus
from schemas.rules import Mode
from schemas.seal import Draft, describe_file, seal_streams
from spoke.context import SpokeContext
from spoke.files import Refusal, durable_rename, printable, unique_path, write_json
from spoke.keyring import Held, Ready
from spoke.outbox import Claimed, Orphan, Outbox, Prepared, prepare
from spoke.state import Outbound, Sending

log = structlog.get_logger("spoke.outbox")
STATUS_ORDER = ["PENDING", "DELIVERED", "SIGNED_FOR", "EXPIRED", "DEAD"]


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
        )
        self._uploads: dict[bytes, asyncio.Task[None]] = {}
        self._gate: tuple[str | None, str | None] | None = None  # (held reason, signing kid)
        self._recovered = False

    # ------------------------------------------------------------------ the outbox

    async def scan(self) -> None:
        self.ctx.refresh_keys()  # a pair 'spoke keygen --rotate' just wrote
        gate = self.ctx.gate()
        resumed = await self.note_gate(gate)
        if isinstance(gate, Held):
            return  # fail closed: drops wait in the outbox
        if resumed:
            await self.republish()
        directory, signer = gate.directory, gate.signer
        if not self._recovered:  # once, at start: claims a crash cut in half
            self._recovered = True
            for claimed in await asyncio.to_thread(self.outbox.recover, self.ctx.state.sealed_from):
                await self._process(claimed, directory, signer)
            await asyncio.to_thread(self._repair)
        ready, orphans = await asyncio.to_thread(self.outbox.scan)
        for orphan in orphans:
            await asyncio.to_thread(self._fail_orphan, orphan)
        for name, meta_name in ready:
            claimed = await asyncio.to_thread(self.outbox.claim, name, meta_name)
            log.info("drop.claimed", name=name, work=claimed.work.name)
            await self._process(claimed, directory, signer)

    async def note_gate(self, gate: Ready | Held) -> bool:
        """Log and record a change in whether (and with which key) the spoke sends; True
        when sending resumes after being held."""
        state = (gate.reason, None) if isinstance(gate, Held) else (None, gate.signer.kid)
        if state == self._gate:
            return False
        previous, self._gate = self._gate, state
        now = self.ctx.clock()
        if isinstance(gate, Held):
            log.warning(
                gate.reason,
                detail=gate.detail,
                directory_version=gate.version,
                expires_at=None if gate.expires_at is None else ms_to_text(gate.expires_at),
            )
            record = Sending(gate.reason, gate.detail, now, gate.version, None)
        else:
            kid = gate.signer.kid
            if previous is not None and previous[0] is not None:
                log.info(
                    "spoke.sending_resumed",
                    held_for=previous[0],
                    directory_version=gate.version,
                    signing_kid=kid,
                )
            elif previous is not None:
                log.info(
                    "keys.switched",
                    from_kid=previous[1],
                    to_kid=kid,
                    directory_version=gate.version,
                )
            detail = f"sending; signing with key {kid} (directory v{gate.version})"
            record = Sending(None, detail, now, gate.version, kid)
        await asyncio.to_thread(self.ctx.state.save_sending, record)
        return previous is not None and previous[0] is not None

    async def _process(self, claimed: Claimed, directory: Directory, signer: SigningKey) -> None:
        if self.ctx.state.sealed_from(claimed.work):
            return  # sealed before a restart; waiting for the hub's answer
        limits = self.ctx.config.limits
        try:
            prepared = await asyncio.to_thread(
                prepare,
                claimed,
                org=self.ctx.org,
                directory=directory,
                max_file_bytes=limits.max_file_bytes,
                max_files=limits.max_files,
            )
            out = await asyncio.to_thread(self._seal, prepared, directory, signer)
        except Refusal as refusal:
            await asyncio.to_thread(self._fail, claimed, refusal)
            return
        except XchgError as exc:
            unsealed = Refusal(
                "drop.not_sealed",
                f"the drop could not be sealed: {exc}.",
                "Make sure no file changes while it is in the outbox, then drop it again.",
                {},
            )
            await asyncio.to_thread(self._fail, claimed, unsealed)
            return
        await self.publish(out)

    def _seal(self, prepared: Prepared, directory: Directory, signer: SigningKey) -> Outbound:
        meta = prepared.metadata
        entries = []
        for name, path in prepared.files:
            with path.open("rb") as source:
                entries.append(describe_file(name, _media_type(name), source))
        doc = prepared.document  # what the rules judged is exactly what is sealed
        recipients = doc.recipients
        draft = Draft(
            sender=self.ctx.org,
            to=doc.to,
            cc=doc.cc,
            classification=meta.classification,
            precedence=meta.precedence,
            doc_type=meta.doc_type,
            title=meta.title,
            created_at=self.ctx.clock(),
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
        partial = self.queue / f".{prepared.claimed.work.name}.body.tmp"
        sources = [path.open("rb") for _, path in prepared.files]
        try:
            with partial.open("wb") as sink:
                sealed = seal_streams(draft, signer, directory, sources, sink)
                sink.flush()
                os.fsync(sink.fileno())
        finally:
            for source in sources:
                source.close()
        header = sealed.header
        body = self.queue / f"{header.msg_id_text}.body"
        partial.replace(body)
        out = Outbound(
            msg_id=header.msg_id,
            name=prepared.claimed.name,
            work=prepared.claimed.work,
            channel=prepared.channel,
            frame=sealed.frame,
            body_path=body,
            body_size=sealed.body.size,
            state="QUEUED",
            created_at=draft.created_at,
        )
        notes: dict[str, object] = {
            "added_cc": list(prepared.added_cc),
            "copy_numbers": dict(doc.copy_numbers),
            "rule_warnings": [f.as_dict(Mode.WARN) for f in prepared.warnings],
        }
        self.ctx.state.add_outbound(
            out, recipients, header.classification.name, header.precedence.name, notes=notes
        )
        for finding in prepared.warnings:  # never the title: it travels encrypted
            log.warning(
                "rule.warned",
                rule=finding.rule.id,
                article=finding.rule.article,
                msg_id=header.msg_id_text,
                name=out.name,
            )  # no finding text: it quotes the document number
        log.info(
            "drop.sealed",
            name=out.name,
            msg_id=header.msg_id_text,
            recipients=len(recipients),
            classification=header.classification.name,
            precedence=header.precedence.name,
            channel=out.channel,
            added_cc=list(prepared.added_cc),
        )
        return out

    # ------------------------------------------------------------------ publishing

    async def publish(self, out: Outbound) -> None:
        """Send the envelope: inline when small; else the head, and chunks when asked."""
        if out.body_size <= transport.INLINE_BODY_MAX:
            body = await asyncio.to_thread(out.body_path.read_bytes)
            await self.ctx.publish_up(
                out.channel, transport.encode(transport.EnvelopeMsg(out.frame, body))
            )
        else:  # the hub answers a head with "resume from N"
            await self.ctx.publish_up(
                out.channel, transport.encode(transport.EnvelopeMsg(out.frame, None))
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
        with out.body_path.open("rb") as handle:
            handle.seek(position)
            while position < out.body_size:
                data = handle.read(transport.CHUNK_BYTES)
                if not data:
                    return
                message = transport.encode(transport.ChunkMsg(out.msg_id, position, data))
                if not await self.ctx.publish_up(out.channel, message):
                    return  # the connection dropped: the next head asks where to resume
                position += len(data)

    def stop(self) -> None:
        for task in self._uploads.values():
            task.cancel()

    # ------------------------------------------------------------------ answers

    def receipt(self, entry: ReceiptEntry) -> None:
        """A receipt about something we sent (blocking: call it in a worker thread)."""
        state = self.ctx.state
        if entry.msg_id is not None:
            rows = state.outbound("WHERE msg_id = ?", [entry.msg_id])
        elif entry.status is ReceiptStatus.REJECTED:  # refused bytes: match them by their hash
            queued = state.outbound("WHERE state = 'QUEUED'")
            rows = [o for o in queued if hashlib.sha256(o.frame).digest() == entry.subject]
        else:
            rows = []
        if not rows:
            return
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
            self.write_status(out.msg_id)

    def _accepted(self, out: Outbound, at: int) -> None:
        self._move_to_sent(out)
        self.ctx.state.set_outbound_state(out.msg_id, "ACCEPTED", at)
        out.body_path.unlink(missing_ok=True)
        log.info("drop.accepted", name=out.name, msg_id=msg_id_text(out.msg_id))
        self.write_status(out.msg_id)

    def _rejected(self, out: Outbound, entry: ReceiptEntry) -> None:
        refusal = Refusal(
            entry.reason or "hub.rejected",
            f"the hub refused it: {entry.detail}",
            _hint(entry.reason, retriable=entry.retriable),
            {"reason": entry.reason, "retriable": entry.retriable},
        )
        self._fail(
            Claimed(out.name, out.work, _meta_name(out.work, out.name)), refusal, msg_id=out.msg_id
        )
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
            items = sorted(
                out.work.iterdir(), key=lambda p: p.name.endswith((".meta.toml", ".meta.json"))
            )
            for item in items:
                durable_rename(item, folder / item.name)
            with contextlib.suppress(OSError):
                out.work.rmdir()
        return folder

    def write_status(self, msg_id: bytes) -> None:
        folder = self.sent / msg_id_text(msg_id)
        summary = self.ctx.state.summary(msg_id)
        if summary is None or not folder.exists():
            return
        name, channel, recipients_json, label, precedence, state, created, answered = summary
        recipients: dict[str, dict[str, object]] = {
            r: {"status": "PENDING"} for r in json.loads(recipients_json)
        }
        for recipient, status, at, reason, detail in self.ctx.state.receipts(msg_id):
            info = recipients.setdefault(recipient, {"status": "PENDING"})
            info[f"{status.lower()}_at"] = ms_to_text(at, precise=True)
            if reason:
                info["reason"], info["detail"] = reason, detail
            if STATUS_ORDER.index(status) > STATUS_ORDER.index(str(info["status"])):
                info["status"] = status
        notes = self.ctx.state.notes(msg_id)
        copies: dict[str, str] = notes.get("copy_numbers", {})
        for recipient, number in copies.items():
            recipients.setdefault(recipient, {"status": "PENDING"})["copy_number"] = number
        write_json(
            folder / "status.json",
            {
                "msg_id": msg_id_text(msg_id),
                "name": name,
                "channel": channel,
                "classification": label,
                "precedence": precedence,
                "hub": state,
                "created_at": ms_to_text(created, precise=True),
                "accepted_at": None if answered is None else ms_to_text(answered, precise=True),
                "recipients": recipients,
                "added_cc": notes.get("added_cc", []),  # by auto_cc (自动抄送)
                "rule_warnings": notes.get("rule_warnings", []),  # rules set to warn
            },
        )

    # ------------------------------------------------------------------ failed/

    def _fail(self, claimed: Claimed, refusal: Refusal, *, msg_id: bytes | None = None) -> None:
        """Move a drop to failed/ unchanged, with NAME.error.txt and NAME.error.json."""
        target = unique_path(self.failed, claimed.name)
        if claimed.payload.exists() or claimed.payload.is_symlink():
            durable_rename(claimed.payload, target)
        if claimed.meta.exists():
            suffix = claimed.meta_name[len(claimed.name) :]
            durable_rename(claimed.meta, self.failed / f"{target.name}{suffix}")
        self._write_error(target.name, refusal, msg_id)
        with contextlib.suppress(OSError):
            claimed.work.rmdir()
        log.warning(
            "drop.failed",
            name=claimed.name,
            rule=refusal.rule,
            # a rule's finding (the spoke's or the hub's) quotes the document number
            detail=None if refusal.rule.startswith("rule.") else refusal.message,
            msg_id=None if msg_id is None else msg_id_text(msg_id),
        )

    def _fail_orphan(self, orphan: Orphan) -> None:
        target = unique_path(self.failed, orphan.name)
        durable_rename(self.outbox.folder / orphan.name, target)
        self._write_error(target.name, orphan.refusal, None)
        log.warning(
            "drop.failed", name=orphan.name, rule=orphan.refusal.rule, detail=orphan.refusal.message
        )

    def _write_error(self, name: str, refusal: Refusal, msg_id: bytes | None) -> None:
        """NAME.error.txt (for people) and NAME.error.json (for systems), saying the same."""
        at = ms_to_text(self.ctx.clock())
        shown = printable(name)
        detail = printable(refusal.as_json())
        lines = [f"{shown} was not sent.", "", f"Why: {detail['message']}"]
        if refusal.findings:  # the document rules: every finding, Chinese then English
            lines += ["", *(f"  {printable(f.sentence())}" for f in refusal.findings), ""]
        lines += [f"What to do: {detail['hint']}", "", f"Rule: {detail['rule']}", f"When: {at}"]
        if msg_id is not None:
            lines.append(f"msg_id: {msg_id_text(msg_id)}")
        lines.append("The document and its metadata are next to this file, unchanged.")
        text = ("\n".join(lines) + "\n").encode("utf-8")
        atomic_write(self.failed / f"{name}.error.txt", text, mode=0o644)
        machine = {**detail, "name": shown, "at": at}
        machine["msg_id"] = None if msg_id is None else msg_id_text(msg_id)
        write_json(self.failed / f"{name}.error.json", machine)


def _meta_name(work: Path, name: str) -> str:
    for suffix in (".meta.toml", ".meta.json"):
        if (work / f"{name}{suffix}").exists():
            return f"{name}{suffix}"
    return f"{name}.meta.toml"


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


def _media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"
