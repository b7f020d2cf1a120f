"""Recall (撤回), return (退文) and reports of handling (办理): the flows on a document
already sent.

As the sender, the spoke asks the hub to recall a document it sent (``recall/<msg_id>``,
``spoke recall``): one RECALL statement, signed alone, its reason sealed in a note only the
document's parties can open (schemas.notes), sent on the document's channel and sent again
(the same bytes: the hub answers a repeat again) at every connection and every
:data:`RESEND_EVERY` seconds until the hub answers RECALLED (recorded) or REFUSED. What the
hub and the recipients then say of it, and any recipient's RETURNED, goes into the
document's status.json (spoke.tracking); a returned document is copied to ``returned/``.

As a recipient, the spoke takes a RECALL its sender signed (the hub forwards it unchanged):
not received yet, it is recorded so that the document goes straight to ``recalled/`` if it
arrives; received and not signed for, it moves to ``recalled/``; signed for already, it
stays in the inbox with a pending ``recall.json`` until the organisation answers
(``recall-answers/<msg_id>.accept`` or ``.refuse``, ``spoke recall-answer``). A return
(``return/<msg_id>``, ``spoke return``) moves the document to ``sentback/``. Each answer is a
statement signed alone and sent on the document's channel, kept until the broker takes it.

A report (``reports/<msg_id>.<status>``, ``spoke report``: 已阅, 办理中, 办结, a petition's 受理
or 不予受理) is such a statement too, its comment in the note; the sender's spoke records
the reports it is forwarded, and both sides take the hub's reminders (催办). The files
they write, and which report may be made, are spoke.handling's.

A request file that cannot be done is answered with ``NAME.error.txt`` (Chinese and English:
the rule, the value, what to do) and removed, as sign-for's are. Logs name the document,
the organisation and the status, never a note's words (they may quote a classified text).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from pathlib import Path

import structlog

from schemas.clock import ms_to_text
from schemas.errors import PeerError, Reason
from schemas.ids import msg_id_text
from schemas.labels import Classification
from schemas.notes import open_note, seal_note
from schemas.receipts import REPORTS, ReceiptEntry, ReceiptStatus, VerifiedReceipts
from spoke.context import SpokeContext
from spoke.files import fit_name, shown_name
from spoke.flowfiles import (
    RETURN_JSON,
    file_returned,
    file_sentback,
    return_refused,
    settle_recall,
)
from spoke.flowrequests import (
    NotNowError,
    RequestRefusedError,
    read_request,
    report_status,
    request_msg_id,
)
from spoke.handling import handling_refused, report_refusal, take_reminder, write_handling
from spoke.receiver import Receiver, _requests, _write_once
from spoke.sender import Sender
from spoke.state import RecallReceived
from spoke.tracking import hub_recall

log = structlog.get_logger("spoke.flows")
RESEND_EVERY = 60.0  # seconds: a recall the hub has not answered is sent again
REQUEST_FOLDERS = ("recall", "recall-answers", "return", "reports")
_ANSWER_STATUS = {
    "withdrawn": ReceiptStatus.WITHDRAWN,
    "accepted": ReceiptStatus.RECALL_ACCEPTED,
    "refused": ReceiptStatus.RECALL_REFUSED,
}
_RECIPIENT_SAYS = frozenset(
    {
        ReceiptStatus.WITHDRAWN,
        ReceiptStatus.RECALL_ACCEPTED,
        ReceiptStatus.RECALL_REFUSED,
        ReceiptStatus.RETURNED,
        *REPORTS,
    }
)


def answer_refusal(msg_id: bytes, recall: RecallReceived | None, *, accept: bool) -> None:
    """Raise RequestRefusedError if this recall cannot be answered so (the agent and the
    ``spoke recall-answer`` command judge alike): no recall, one withdrawn, or a refusal
    after the organisation accepted it (the document has left the inbox)."""
    shown = msg_id_text(msg_id)
    allowed = ("pending", "refused", "accepted") if accept else ("pending", "refused")
    if recall is None or recall.decision not in allowed:
        now = "没有撤回" if recall is None else f"已处理（{recall.decision}）"
        raise RequestRefusedError(
            Reason.FLOW_NOT_RECALLED.value,
            f"{shown} {now}，无需答复：只有已签收文件的撤回需要同意或不同意",
            f"{shown} has "
            + ("no recall" if recall is None else f"a recall already {recall.decision}")
            + " to answer: only a recall of a document signed for waits for an answer",
        )


class Flows:
    """Both sides of recall and return for one spoke (the agent's ``flows``)."""

    def __init__(self, ctx: SpokeContext, receiver: Receiver, sender: Sender) -> None:
        self.ctx = ctx
        self.receiver = receiver
        self.sender = sender
        self._bad: dict[str, tuple[int, int, int]] = {}  # failed requests, as they were

    # ================================================================ request files

    async def requests(self) -> None:
        """Take the request files in ``recall/``, ``recall-answers/`` and ``return/``."""
        for kind in REQUEST_FOLDERS:
            folder = self.ctx.config.folder(kind)
            if not folder.is_dir():
                continue
            found = await asyncio.to_thread(_requests, folder)
            keys = {f"{kind}/{n}": seen for n, seen in found.items()}
            self._bad = {
                k: s for k, s in self._bad.items() if not k.startswith(f"{kind}/") or k in keys
            }
            for name, seen in found.items():
                key = f"{kind}/{name}"
                if self._bad.get(key) == seen:
                    continue  # it failed as it is: tried again once it changes
                try:
                    await self._request(kind, folder / name)
                except Exception:  # one request's trouble never stops the others
                    self._bad[key] = seen
                    log.exception("flow.request_failed", request=f"{kind}/{shown_name(name)}")

    async def _request(self, kind: str, path: Path) -> None:
        try:
            name, text = await asyncio.to_thread(read_request, path, kind)
            msg_id = request_msg_id(name, kind)
            if kind == "recall":
                await self.recall(msg_id, text or None)
            elif kind == "return":
                if not text:
                    raise RequestRefusedError(
                        "flow.no_reason",
                        "退文须说明理由：请把理由写入文件内容",
                        "a return needs its reason: write it into the file",
                    )
                await self.send_back(msg_id, text)
            elif kind == "reports":
                status = report_status(path.name.rpartition(".")[2])
                await self.report(msg_id, status, text or None)
            else:
                await self.answer(msg_id, accept=path.name.endswith(".accept"), text=text or None)
        except NotNowError:
            log.info("flow.request_held", kind=kind, request=shown_name(path.name))
            return  # the spoke may not sign now: taken again at a later scan
        except RequestRefusedError as refused:
            log.warning(
                "flow.request_refused", kind=kind, request=shown_name(path.name), rule=refused.rule
            )
            error = path.parent / f"{fit_name(path.name, room=len('.error.txt'))}.error.txt"
            await asyncio.to_thread(_write_once, error, refused.text().encode())
        await asyncio.to_thread(path.unlink, missing_ok=True)

    # ================================================================ the sender's recall

    async def recall(self, msg_id: bytes, reason: str | None) -> None:
        """撤回 a document this spoke sent and the hub accepted: recorded, then sent."""
        shown = msg_id_text(msg_id)
        rows = self.ctx.state.outbound("WHERE msg_id = ? AND state = 'ACCEPTED'", [msg_id])
        if not rows or not (self.ctx.config.folder("sent") / shown).is_dir():
            raise RequestRefusedError(
                Reason.FLOW_NOT_SENDER.value,
                f"本机没有发出过 {shown}（sent/ 中没有此文件夹），只能撤回本单位发出并已受理的文件",
                f"this spoke did not send {shown} (no sent/{shown}/): only a document this "
                "organisation sent and the hub accepted can be recalled",
            )
        earlier = self.ctx.state.recall_sent(msg_id)
        if earlier is not None and earlier.hub != "REFUSED":
            log.info("recall.repeated", msg_id=shown, hub=earlier.hub)
            if earlier.hub == "SENT":
                await self._send_recall(msg_id)
            return
        await asyncio.to_thread(self.ctx.state.request_recall, msg_id, self.ctx.clock(), reason)
        log.info("recall.requested", msg_id=shown, with_reason=reason is not None)
        await self._send_recall(msg_id)
        await asyncio.to_thread(self.sender.status.write, msg_id)

    async def _send_recall(self, msg_id: bytes) -> None:
        recall = self.ctx.state.recall_sent(msg_id)
        rows = self.ctx.state.outbound("WHERE msg_id = ?", [msg_id])
        summary = self.ctx.state.summary(msg_id)
        if recall is None or not rows or summary is None:
            return
        out = rows[0]
        if recall.frame is not None:
            published = await self.receiver.publish_alone(out.channel, recall.frame, msg_id)
            log.info("recall.sent", msg_id=msg_id_text(msg_id), again=True, published=published)
            return
        note = None
        key = self.ctx.state.note_key(msg_id)
        if recall.reason is not None and key is None:
            log.warning("recall.no_note_key", msg_id=msg_id_text(msg_id))  # sealed before notes
        elif recall.reason is not None and key is not None:
            note = seal_note(
                key, recall.reason, msg_id=msg_id, status="RECALL", issuer=self.ctx.org
            )
        entry = ReceiptEntry(
            msg_id=msg_id,
            recipient=None,
            status=ReceiptStatus.RECALL,
            at=self.ctx.clock(),
            subject=hashlib.sha256(out.frame).digest(),
            classification=Classification[summary[3]],
            reason=None,
            detail=None,
            retriable=False,
            note=note,
        )
        sent = await self.receiver.send_alone(out.channel, entry)
        if sent is None:
            log.info("recall.held", msg_id=msg_id_text(msg_id))  # signed once it may send
            return
        frame, published = sent
        await asyncio.to_thread(self.ctx.state.set_recall_frame, msg_id, frame)
        log.info("recall.sent", msg_id=msg_id_text(msg_id), again=False, published=published)

    async def resend(self, channel: str | None = None) -> None:
        """Recalls the hub has not answered, and this spoke's statements the broker has not
        taken (or could not be signed), on ``channel`` or every channel."""
        for recall in self.ctx.state.recalls_waiting():
            found = self.ctx.state.message_channel(recall.msg_id)
            if found is not None and channel in (None, found[0]):
                await self._send_recall(recall.msg_id)
        for msg_id, status, on, frame in self.ctx.state.flow_out(unpublished=True):
            if channel in (None, on) and await self.receiver.publish_alone(on, frame, msg_id):
                await asyncio.to_thread(self.ctx.state.flow_out_published, msg_id, status)
        for decided in self.ctx.state.recalls_unstated():
            if channel in (None, decided.channel):
                await asyncio.to_thread(settle_recall, self.ctx, decided)  # a crash's gap
                await self._answer_again(decided)

    def repair(self) -> None:
        """What a crash can leave between a decision and its folders: finish it (blocking;
        at the agent's start). Each recall received: its document filed as decided
        (:func:`settle_recall`); each RETURNED the hub refused: the document back in the
        inbox with its error files (:func:`return_refused`)."""
        for recall in self.ctx.state.recalls_received():
            try:
                settle_recall(self.ctx, recall)
            except Exception:  # one document's trouble never stops the others, nor the start
                log.exception("recall.repair_failed", msg_id=msg_id_text(recall.msg_id))
        for msg_id, status, reason, detail in self.ctx.state.flow_out_refusals():
            if status != ReceiptStatus.RETURNED.value:
                continue
            try:
                return_refused(self.ctx, msg_id, reason, detail)
            except Exception:
                log.exception("return.repair_failed", msg_id=msg_id_text(msg_id))

    # ================================================================ statements that came

    async def batch(self, channel: str, verified: VerifiedReceipts) -> set[bytes]:
        """The flow statements of a verified batch; the msg_ids of sends whose status.json
        they changed."""
        issuer = verified.batch.issuer
        changed: set[bytes] = set()
        for entry in verified.batch.entries:
            if not entry.status.flow or entry.msg_id is None:
                continue
            if entry.status is ReceiptStatus.RECALL:
                await self._recalled(channel, issuer, entry)
            elif entry.status is ReceiptStatus.REMINDED:  # 催办 (spoke.handling)
                changed |= await asyncio.to_thread(take_reminder, self.ctx, entry)
            elif entry.status.issued_by_hub:
                changed |= await asyncio.to_thread(self._from_hub, entry)
            elif entry.status in _RECIPIENT_SAYS:
                changed |= await asyncio.to_thread(self._from_recipient, issuer, entry)
        return changed

    def _from_hub(self, entry: ReceiptEntry) -> set[bytes]:
        assert entry.msg_id is not None  # noqa: S101 - checked by the caller
        msg_id, state, shown = entry.msg_id, self.ctx.state, msg_id_text(entry.msg_id)
        recall = state.recall_sent(msg_id)
        if entry.recipient is None and recall is not None:
            after = hub_recall(recall.hub, entry.status.value)
            if entry.status is ReceiptStatus.RECALLED:
                if after != recall.hub:
                    state.answer_recall(msg_id, after, entry.at)
                log.info("recall.recorded", msg_id=shown)
                return {msg_id}
            if recall.frame is not None and entry.subject == hashlib.sha256(recall.frame).digest():
                if after != recall.hub:
                    state.answer_recall(msg_id, after, entry.at, entry.reason, entry.detail)
                log.warning(
                    "recall.refused", msg_id=shown, reason=entry.reason, detail=entry.detail
                )
                return {msg_id}
        elif entry.status is ReceiptStatus.RECALLED and entry.recipient is not None:
            if state.outbound("WHERE msg_id = ?", [msg_id]):
                if state.add_flow(msg_id, entry.recipient, entry.status.value, entry.at, None):
                    log.info("recall.stopped", msg_id=shown, recipient=entry.recipient)
                return {msg_id}
        elif entry.status is ReceiptStatus.REFUSED and entry.recipient == self.ctx.org:
            for out_id, status, _, mine in state.flow_out():
                if out_id == msg_id and hashlib.sha256(mine).digest() == entry.subject:
                    reason = entry.reason or "flow.refused"
                    state.flow_out_refused(msg_id, status, reason, entry.detail)
                    log.warning(
                        "flow.refused", msg_id=shown, status=status, reason=entry.reason,
                        detail=entry.detail, shown_in=f"spoke status {shown}",
                    )  # fmt: skip
                    if status in REPORTS:  # handling.json says so
                        handling_refused(self.ctx, msg_id, status, reason, entry.detail)
                    if status == ReceiptStatus.RETURNED.value:  # the document comes back
                        folder = return_refused(self.ctx, msg_id, reason, entry.detail)
                        log.warning(
                            "return.refused", msg_id=shown, reason=reason,
                            folder=None if folder is None else folder.parent.name,
                        )  # fmt: skip
                    return set()
        log.warning("flow.ignored", msg_id=shown, status=entry.status.value, reason="not ours")
        return set()

    def _from_recipient(self, issuer: str, entry: ReceiptEntry) -> set[bytes]:
        assert entry.msg_id is not None  # noqa: S101 - checked by the caller
        msg_id, shown = entry.msg_id, msg_id_text(entry.msg_id)
        rows = self.ctx.state.outbound("WHERE msg_id = ?", [msg_id])
        if not rows or issuer not in self.ctx.state.recipients(msg_id):
            log.warning(
                "flow.ignored", msg_id=shown, status=entry.status.value, issuer=issuer,
                reason="not a recipient of a document this spoke sent",
            )  # fmt: skip
            return set()
        text = self._open(entry, issuer, self.ctx.state.note_key(msg_id))
        if not self.ctx.state.add_flow(msg_id, issuer, entry.status.value, entry.at, text):
            return set()  # the same statement again
        log.info(
            "flow.statement", msg_id=shown, recipient=issuer, status=entry.status.value,
            with_note=text is not None,
        )  # fmt: skip
        if entry.status is ReceiptStatus.RETURNED:
            folder = file_returned(self.ctx, msg_id, issuer, entry.at, text)
            log.warning("return.received", msg_id=shown, recipient=issuer, folder=folder.name)
        return {msg_id}

    def _open(self, entry: ReceiptEntry, issuer: str, key: bytes | None) -> str | None:
        """A statement's words, or None (none, or they do not open: logged, never raised)."""
        if entry.note is None or entry.msg_id is None:
            return None
        if key is None:
            log.warning("flow.no_note_key", msg_id=msg_id_text(entry.msg_id), issuer=issuer)
            return None
        try:
            return open_note(
                key, entry.note, msg_id=entry.msg_id, status=entry.status.value, issuer=issuer
            )
        except PeerError as exc:
            log.warning(
                "flow.bad_note", msg_id=msg_id_text(entry.msg_id), issuer=issuer,
                status=entry.status.value, reason=exc.reason.value,
            )  # fmt: skip
            return None

    # ================================================================ the recipient's side

    async def _recalled(self, channel: str, issuer: str, entry: ReceiptEntry) -> None:
        """A RECALL signed by ``issuer``, forwarded by the hub."""
        assert entry.msg_id is not None  # noqa: S101 - checked by the caller
        msg_id, state, shown = entry.msg_id, self.ctx.state, msg_id_text(entry.msg_id)
        row = state.inbound(msg_id)
        earlier = state.recall_received(msg_id)
        held = (row[0], bytes(row[3])) if row is not None else None
        said = held or (None if earlier is None else (earlier.sender, earlier.subject))
        if said is not None and said != (issuer, entry.subject):
            why = "not its sender" if said[0] != issuer else "names another frame of it"
            log.warning("flow.ignored", msg_id=shown, status="RECALL", issuer=issuer, reason=why)
            return
        if earlier is not None:  # the same recall again: answered again, nothing moves twice
            log.info("recall.repeated", msg_id=shown, sender=issuer, decision=earlier.decision)
            await asyncio.to_thread(settle_recall, self.ctx, earlier)  # unless a crash stopped it
            await self._answer_again(earlier)
            return
        # not held yet: the sealed reason is kept, and opened when the document comes
        reason = None if row is None else self._open(entry, issuer, state.note_key(msg_id))
        signed = row is not None and row[5] is not None  # signed for: the organisation answers
        now = self.ctx.clock()
        recall = RecallReceived(
            msg_id, issuer, entry.subject, channel if row is None else row[1],
            entry.classification.name, reason, now, "pending" if signed else "withdrawn",
            None, None if signed else now, note=entry.note if row is None else None,
        )  # fmt: skip
        # the decision first, then the folders: a crash between them is finished wherever
        # the decision is read again (a repeated RECALL, resend(), the agent's start)
        await asyncio.to_thread(state.add_recall_received, recall)
        await asyncio.to_thread(settle_recall, self.ctx, recall)
        if signed:
            log.warning("recall.pending", msg_id=shown, sender=issuer)
            return
        log.info("recall.withdrawn", msg_id=shown, sender=issuer, held=row is not None)
        await self._state(recall, ReceiptStatus.WITHDRAWN, None)

    async def _answer_again(self, recall: RecallReceived) -> None:
        status = _ANSWER_STATUS.get(recall.decision)
        if status is None:
            return  # pending: the organisation has not answered yet
        for msg_id, said, on, frame in self.ctx.state.flow_out():
            if msg_id == recall.msg_id and said == status.value:
                if await self.receiver.publish_alone(on, frame, msg_id):
                    await asyncio.to_thread(self.ctx.state.flow_out_published, msg_id, said)
                return
        await self._state(recall, status, recall.answer)  # never signed (the spoke was held)

    async def _state(self, recall: RecallReceived, status: ReceiptStatus, text: str | None) -> None:
        """Sign and send this spoke's statement about a recalled document (kept to resend)."""
        await self._say(
            recall.msg_id, status, recall.channel, recall.subject, recall.classification, text
        )

    async def _say(  # noqa: PLR0917 - the statement's fields, each named at the call
        self,
        msg_id: bytes,
        status: ReceiptStatus,
        channel: str,
        subject: bytes,
        label: str,
        text: str | None,
    ) -> int | None:
        """When it was signed (None: held, the spoke may not send now)."""
        note = None
        key = self.ctx.state.note_key(msg_id)
        if text is not None and key is not None:
            note = seal_note(key, text, msg_id=msg_id, status=status.value, issuer=self.ctx.org)
        at = self.ctx.clock()
        entry = ReceiptEntry(
            msg_id=msg_id,
            recipient=self.ctx.org,
            status=status,
            at=at,
            subject=subject,
            classification=Classification[label],
            reason=None,
            detail=None,
            retriable=False,
            note=note,
        )
        sent = await self.receiver.send_alone(channel, entry)
        if sent is None:
            log.info("flow.held", msg_id=msg_id_text(msg_id), status=status.value)
            return None  # a recall's answer: signed and sent by resend() once it may send
        frame, published = sent
        state = self.ctx.state
        await asyncio.to_thread(
            state.add_flow_out, msg_id, status.value, channel, frame, self.ctx.clock()
        )
        if published:
            await asyncio.to_thread(state.flow_out_published, msg_id, status.value)
        log.info(
            "flow.stated", msg_id=msg_id_text(msg_id), status=status.value, published=published
        )
        return at

    async def answer(self, msg_id: bytes, *, accept: bool, text: str | None) -> None:
        """The organisation's answer to a recall of a document it had signed for."""
        shown = msg_id_text(msg_id)
        recall = self.ctx.state.recall_received(msg_id)
        answer_refusal(msg_id, recall, accept=accept)
        assert recall is not None  # noqa: S101 - answer_refusal refuses None
        decision = "accepted" if accept else "refused"
        recall = replace(recall, decision=decision, answer=text, answered_at=self.ctx.clock())
        await asyncio.to_thread(
            self.ctx.state.decide_recall, msg_id, decision, recall.answered_at or 0, text
        )
        # filed before the statement: one never signed is signed by resend(), which files
        # it again first (a crash between the record and the move)
        await asyncio.to_thread(settle_recall, self.ctx, recall)
        status = ReceiptStatus.RECALL_ACCEPTED if accept else ReceiptStatus.RECALL_REFUSED
        await self._state(recall, status, text)
        log.info("recall.answered", msg_id=shown, decision=decision)

    async def send_back(self, msg_id: bytes, text: str) -> None:
        """退文: return a document in the inbox to its sender, with the reason."""
        shown = msg_id_text(msg_id)
        row = self.ctx.state.inbound(msg_id)
        inbox = self.ctx.config.folder("inbox") / shown
        done = self.ctx.config.folder("sentback") / shown
        if row is not None and not inbox.is_dir() and (done / RETURN_JSON).is_file():
            log.info("return.repeated", msg_id=shown)  # moved before a crash: done
            return
        if row is None or not inbox.is_dir():
            raise RequestRefusedError(
                Reason.FLOW_NOT_RECEIVED.value,
                f"收件箱中没有 {shown}：只能退回收件箱中的文件（已撤回或已退回的不能再退）",
                f"{shown} is not in this spoke's inbox: only a document in inbox/ can be "
                "returned (not one recalled or returned already)",
            )
        sender, channel, _, digest, label, _ = row
        said = self.ctx.state.flow_said(msg_id, ReceiptStatus.RETURNED.value)
        if said != "":  # signed before a crash and not refused: not signed twice
            stated = await self._say(
                msg_id, ReceiptStatus.RETURNED, channel, bytes(digest), label, text
            )
            if stated is None:
                raise NotNowError  # held: the document stays in the inbox until it is said
        at = self.ctx.clock()
        record = {
            "msg_id": shown,
            "sender": sender,
            "at": ms_to_text(at, precise=True),
            "reason": text,
        }
        folder = await asyncio.to_thread(file_sentback, self.ctx, msg_id, inbox, record)
        log.info("return.sent", msg_id=shown, sender=sender, folder=folder.name)

    async def report(self, msg_id: bytes, status: ReceiptStatus, text: str | None) -> None:
        """办理: report this organisation's handling of a document it received (已阅, 办理中,
        办结; a petition's 受理, 不予受理), with an optional comment sealed for its sender."""
        state = self.ctx.state
        await asyncio.to_thread(report_refusal, self.ctx.config, state, msg_id, status)
        row = state.inbound(msg_id)
        assert row is not None  # noqa: S101 - report_refusal refuses a document not received
        _, channel, _, digest, label, _ = row
        at = await self._say(msg_id, status, channel, bytes(digest), label, text)
        if at is None:
            raise NotNowError  # held: the request waits for the spoke to send again
        written = await asyncio.to_thread(write_handling, self.ctx, msg_id, status, at, text)
        log.info(
            "report.sent", msg_id=msg_id_text(msg_id), status=status.value,
            with_comment=text is not None, handling_json=written is not None,
        )  # fmt: skip
