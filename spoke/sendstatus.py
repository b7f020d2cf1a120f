"""The answers a send gets, and what ``sent/<msg_id>/status.json`` says of it.

The hub answers every envelope once: ACCEPTED moves the drop from the work area to
``sent/<msg_id>/`` (the document first, its metadata last) with a ``status.json``; REJECTED
moves it to ``failed/`` with the hub's reason (:mod:`spoke.failures`). Either way its sealed
body leaves the queue. The recipients' receipts (DELIVERED, SIGNED_FOR) and the hub's about
them (EXPIRED, DEAD), the recipients' reports of handling (办理) and the hub's reminders
(催办) of the document's deadlines are recorded, and status.json follows them within
:data:`STATUS_EVERY` seconds, rewritten once however many came meanwhile. What a crash
leaves between two of these steps is finished at the next start (:meth:`SendStatus.repair`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from pathlib import Path

import structlog

from runtime.tasks import cancel_and_wait
from schemas.clock import ms_to_text
from schemas.ids import msg_id_text
from schemas.receipts import ReceiptEntry, ReceiptStatus
from spoke.context import SpokeContext
from spoke.failures import Failures
from spoke.files import META_SUFFIXES, durable_rename, shown_name, write_json
from spoke.handling import own_terms
from spoke.inbox import terms_json
from spoke.outbox import Claimed
from spoke.refusals import Refusal, hub_reason_zh
from spoke.state import Outbound, RecallSent
from spoke.tracking import RECALL_PENDING, Recipient, overall_with_recall, overdue

STATUS_EVERY = 0.5  # seconds: status.json follows the receipts this soon, rewritten once
log = structlog.get_logger("spoke.outbox")


class SendStatus:
    """The receipts about what we sent, and each send's status.json."""

    def __init__(self, ctx: SpokeContext, failures: Failures, queue: Path) -> None:
        self.ctx = ctx
        self.failures = failures
        self.sent = ctx.config.folder("sent")
        self.queue = queue
        # sends whose status.json is behind their receipts, rewritten together soon
        # (later): a notice to 10,000 gets 10,000 DELIVERED, not 10,000 rewrites
        self._stale: set[bytes] = set()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ answers

    def receipt(
        self, entry: ReceiptEntry, *, write: bool = True, issuer: str | None = None
    ) -> bytes | None:
        """A receipt about something we sent (blocking: call it in a worker thread), signed
        by ``issuer`` (None: this spoke's hub, or a recipient).

        Returns the msg_id of a send a recipient's receipt changed: its status.json is
        rewritten now, or with ``write=False`` by the caller (:meth:`later`)."""
        state = self.ctx.state
        directory = self.ctx.directory()
        beyond = (
            issuer is not None
            and directory is not None
            and issuer != directory.hub_id
            and directory.hub(issuer) is not None
        )
        if beyond and entry.status is ReceiptStatus.REJECTED:
            return self._refused_beyond(entry, str(issuer), write=write)
        behind = (
            directory is None
            or entry.recipient is None
            or directory.behind(str(issuer), entry.recipient)
        )
        if beyond and not behind:  # a hub speaks only of the recipients behind it
            log.warning("receipt.not_behind", issuer=issuer, recipient=entry.recipient)
            return None
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
                self.write(out.msg_id)
            return out.msg_id
        return None

    def _refused_beyond(self, entry: ReceiptEntry, hub: str, *, write: bool) -> bytes | None:
        """Another hub refused what this spoke's hub accepted and handed on (hubs under
        hubs): the recipients behind that hub are REFUSED, with its reason; the others go
        on as they were."""
        state, directory = self.ctx.state, self.ctx.directory()
        msg_id = entry.msg_id
        if msg_id is None:  # bytes that hub could not read: named by their hash
            accepted = state.outbound("WHERE state = 'ACCEPTED'")
            found = [o for o in accepted if hashlib.sha256(o.frame).digest() == entry.subject]
            msg_id = found[0].msg_id if found else None
        summary = None if msg_id is None else state.summary(msg_id)
        if msg_id is None or summary is None or directory is None:
            return None
        refused = [r for r in json.loads(summary[2]) if directory.behind(hub, r)]
        for recipient in refused:
            state.add_receipt(
                msg_id=msg_id,
                recipient=recipient,
                status="REFUSED",
                at=entry.at,
                reason=entry.reason,
                detail=f"hub {hub} refused it: {entry.detail}",
            )
        log.warning(
            "drop.refused_beyond",
            msg_id=msg_id_text(msg_id),
            hub=hub,
            reason=entry.reason,
            recipients=refused,
        )
        if write and refused:
            self.write(msg_id)
        return msg_id if refused else None

    def _accepted(self, out: Outbound, at: int) -> None:
        self._move_to_sent(out)
        self.ctx.state.set_outbound_state(out.msg_id, "ACCEPTED", at)
        out.body_path.unlink(missing_ok=True)
        log.info("drop.accepted", name=out.name, msg_id=msg_id_text(out.msg_id))
        self.write(out.msg_id)

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
        self.failures.fail(Claimed(out.name, out.work, metas), refusal, msg_id=out.msg_id)
        self.ctx.state.set_outbound_state(out.msg_id, "REJECTED", entry.at)
        out.body_path.unlink(missing_ok=True)

    def repair(self) -> None:
        """What a crash can leave between two steps: finish it (start-up only).

        An ACCEPTED send whose files are still in the work area, or whose status.json was
        never written; a sealed body whose record never was (a crash between the two)."""
        for out in self.ctx.state.outbound("WHERE state = 'ACCEPTED'"):
            folder = self.sent / msg_id_text(out.msg_id)
            if out.work.exists():
                self._move_to_sent(out)
            if not (folder / "status.json").exists():
                self.write(out.msg_id)
        for msg_id in self.ctx.state.status_due():  # receipts a crash kept it from showing
            self.write(msg_id)
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

    # ------------------------------------------------------------------ status.json

    def write(self, msg_id: bytes) -> None:
        """Rewrite ``sent/<msg_id>/status.json`` from the state (blocking); nothing while
        the send has no folder in sent/ (not yet ACCEPTED)."""
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
        recall = self.ctx.state.recall_sent(msg_id)
        if recall is not None:  # every recipient owes an answer, until it gives one
            for info in recipients.values():
                info.recall = RECALL_PENDING
        for recipient, status, at, note in self.ctx.state.flows(msg_id):
            recipients.setdefault(recipient, Recipient()).flow(status, at, note)
        for recipient, deadline, at, _ in self.ctx.state.reminders(msg_id):
            recipients.setdefault(recipient, Recipient()).remind(deadline, at)
        for recipient, reply, at in self.ctx.state.replies_to(msg_id):
            if recipient in recipients:  # a 批复 to our 请示 handles it, as at the hub
                when = ms_to_text(at, precise=True)
                recipients[recipient].replied = {"msg_id": msg_id_text(reply), "at": when}
        rows = self.ctx.state.outbound("WHERE msg_id = ?", [msg_id])
        terms = own_terms(rows[0].frame) if rows else None
        recalled = recall is not None and recall.hub == "RECORDED"  # which ends its deadlines
        if terms is not None and terms.deadlines and not recalled:
            now = self.ctx.clock()
            for info in recipients.values():
                held = None if info.handling is None else str(info.handling["status"])
                held = "DONE" if info.replied is not None else held
                info.overdue = overdue(
                    terms.deadlines, info.status, held, now=now, stopped=info.stopped
                )
        write_json(
            folder / "status.json",
            {
                "msg_id": msg_id_text(msg_id),
                "name": shown_name(name),
                "channel": channel,
                "classification": label,
                "precedence": precedence,
                "hub": state,
                # the recipients' most needy status (spoke.tracking): DEAD if one is DEAD;
                # those whose delivery a recall stopped are not waited for
                "status": overall_with_recall((r.status, r.stopped) for r in recipients.values()),
                "recall": None if recall is None else recall_json(recall),
                # what the recipients were asked, by when (时限; the hub reminds those late)
                "terms": terms_json(terms),
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

    def later(self, msg_ids: set[bytes]) -> None:
        """Rewrite these sends' status.json within :data:`STATUS_EVERY` seconds, each once
        however many receipts came meanwhile."""
        self._stale |= msg_ids
        if self._stale and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(
                self._soon(), name="spoke.status_json"
            )

    async def _soon(self) -> None:
        while self._stale:  # checked on the loop: what came during a write is not left over
            await asyncio.sleep(STATUS_EVERY)
            await asyncio.to_thread(self._write_stale)

    def _write_stale(self) -> None:
        while self._stale:
            self.write(self._stale.pop())

    async def stop(self) -> None:
        """No more waiting: what the receipts changed goes on disk now."""
        if self._task is not None:
            await cancel_and_wait([self._task])
        await asyncio.to_thread(self._write_stale)


def recall_json(recall: RecallSent) -> dict[str, object]:
    """status.json's ``recall``: when it was asked for, why, and what the hub said."""
    refusal = None
    if recall.hub == "REFUSED":
        refusal = {"reason": recall.refusal, "detail": recall.detail}
    return {
        "requested_at": ms_to_text(recall.requested_at, precise=True),
        "reason": recall.reason,
        "hub": recall.hub,  # SENT (no answer yet) | RECORDED | REFUSED
        "answered_at": None
        if recall.answered_at is None
        else ms_to_text(recall.answered_at, precise=True),
        "refusal": refusal,
    }


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
