"""What the hub answers a sender: ACCEPTED, REJECTED (after its ledger entry), the
quarantine notice, and the answer again to a resend.

A REJECTED the hub signs is an audit entry first (wire-format 12.4): its receipt goes out
once the entry is committed, or, should the commit fail, all the same. The refusals wait in
:attr:`Answers.rejections` for the intake's next commit.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from hubd.core.admit import Refuse, Resend, Stored, answer_stored
from hubd.engine.arrival import Arrival, Then
from hubd.engine.issuer import ReceiptIssuer
from hubd.store.audit import AuditEvent
from hubd.store.writes import AppendAudit, Operation
from schemas.directory import Directory
from schemas.envelope import VerifiedEnvelope
from schemas.errors import PeerError, Reason
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus

log = structlog.get_logger("hubd.ingest")
security = structlog.get_logger("hubd.security")


@dataclass(slots=True)
class RejectedEntry(AppendAudit):
    """The ledger entry of a REJECTED the hub signs (wire-format 12.4): its receipt goes out
    once the entry is committed, or, should the commit fail, all the same."""


class Answers:
    """Signs and sends the hub's answers to senders, and counts them."""

    def __init__(
        self,
        *,
        directory: Callable[[], Directory],
        issuer: ReceiptIssuer,
        clock: Callable[[], int],
        queued: Callable[[], None],
    ) -> None:
        self._directory, self._issuer, self._clock = directory, issuer, clock
        self._queued = queued  # a refusal waits for its ledger entry: the intake commits it
        self.counts: dict[str, int] = {"accepted": 0, "rejected": 0, "quarantined": 0}
        # REJECTED receipts waiting for their ledger entries
        self.rejections: list[tuple[Operation, Then]] = []

    @staticmethod
    def fields(envelope: VerifiedEnvelope, arrival: Arrival) -> dict[str, object]:
        header = envelope.header
        return {
            "msg_id": header.msg_id_text,
            "sender": header.sender,
            "classification": header.classification.name,
            "precedence": header.precedence.name,
            "channel": arrival.channel,
        }

    def ceiling(self, channel_id: str) -> Classification:
        """The highest label ``channel_id`` may carry (TOP_SECRET if it is unknown).

        A quarantine notice goes back on the channel the leak came in on, labelled with
        that channel's ceiling: it carries the msg_id and hash, nothing of the content,
        and the sender must learn to stop resending.
        """
        return self._directory().ceiling(channel_id)

    def issue(
        self,
        arrival: Arrival,
        envelope: VerifiedEnvelope,
        status: ReceiptStatus,
        reason: str | None = None,
        detail: str | None = None,
        *,
        retriable: bool = False,
        label: Classification | None = None,
        refused: bool = False,
    ) -> None:
        """Answer the sender; a refusal (``refused``) only once its ledger entry is in."""
        entry = ReceiptEntry(
            msg_id=envelope.header.msg_id,
            recipient=None,
            status=status,
            at=self._clock(),
            subject=envelope.digest,
            classification=envelope.header.classification if label is None else label,
            reason=reason,
            detail=detail,
            retriable=retriable,
        )
        if refused:
            self._issue_rejected(arrival, entry)
            return
        self._issuer.issue(arrival.org, arrival.channel, entry)

    def _issue_rejected(self, arrival: Arrival, entry: ReceiptEntry) -> None:
        """Sign and send a REJECTED once its ``message.rejected`` entry is in the ledger
        (wire-format 12.4). Its detail is the machine reason only: the receipt's sentence
        may quote the sender's own fields (a rule's finding quotes the document number).

        Bytes on the up topic of an organisation the directory does not list get the ledger
        entry (``answered``: false) and a security event, and no receipt: answering would
        create a down topic for an unknown id and talk to a stranger."""
        directory = self._directory()
        stranger = not (directory.has_topic(arrival.org) or directory.relaying(arrival.org))
        detail: dict[str, object] = {
            "channel": arrival.channel,
            "reason": entry.reason,
            "frame_sha256": entry.subject.hex(),
            "retriable": entry.retriable,
        }
        if stranger:
            detail["answered"] = False
            security.warning(
                "message.stranger",
                org=arrival.org,
                channel=arrival.channel,
                reason=entry.reason,
                frame_sha256=entry.subject.hex(),
            )
        event = AuditEvent("message.rejected", entry.at, entry.msg_id, arrival.org, detail)
        send = (
            _unanswered if stranger else functools.partial(self._rejection_recorded, arrival, entry)
        )
        self.rejections.append((RejectedEntry([event]), send))
        self._queued()

    def _rejection_recorded(self, arrival: Arrival, entry: ReceiptEntry, _result: object) -> None:
        self._issuer.issue(arrival.org, arrival.channel, entry)

    def refuse(self, arrival: Arrival, envelope: VerifiedEnvelope, refusal: Refuse) -> None:
        """A signed REJECTED. For the document rules the receipt names every finding, both
        languages, and the log only the rules: a finding quotes the sender's own fields (the
        document number, in any escaping), so no finding text is ever logged."""
        self.counts["rejected"] += 1
        reason = str(refusal.reason)
        fields = self.fields(envelope, arrival)
        if refusal.rules:
            log.warning("message.rejected", reason=reason, rules=list(refusal.rules), **fields)
        else:
            log.warning("message.rejected", reason=reason, detail=refusal.detail, **fields)
        self.issue(
            arrival,
            envelope,
            ReceiptStatus.REJECTED,
            reason,
            refusal.detail,
            retriable=refusal.retriable,
            refused=True,
        )

    def resend(self, arrival: Arrival, envelope: VerifiedEnvelope, resend: Resend) -> None:
        """The answer again, to a resend of a stored message (the sender missed it)."""
        if resend.status is ReceiptStatus.ACCEPTED:
            self.issue(arrival, envelope, ReceiptStatus.ACCEPTED)
        else:  # the quarantine notice, on the channel it came in on
            self.issue(
                arrival,
                envelope,
                resend.status,
                None if resend.reason is None else resend.reason.value,
                resend.detail,
                label=self.ceiling(arrival.channel),
            )
        log.info("message.duplicate", **self.fields(envelope, arrival))

    def stored_already(self, arrival: Arrival, envelope: VerifiedEnvelope, stored: Stored) -> None:
        """The store holds the envelope's msg_id already: answer as :func:`answer_stored` says."""
        answer = answer_stored(stored, envelope.header.msg_id_text)
        if isinstance(answer, Refuse):
            self.refuse(arrival, envelope, answer)
        else:
            self.resend(arrival, envelope, answer)

    def reject_unreadable(
        self, arrival: Arrival, exc: PeerError, *, frame: bytes | None = None
    ) -> None:
        """A REJECTED for bytes we could not authenticate: it speaks of their hash."""
        flag_revoked(arrival, exc, "envelope")
        self.counts["rejected"] += 1
        data = frame if frame is not None else arrival.payload
        log.warning(
            "message.rejected",
            sender=arrival.org,
            channel=arrival.channel,
            reason=exc.reason.value,
            detail=exc.message,
        )
        # its label is unknown: treat it as the most its channel may carry
        entry = unreadable_entry(exc, data, at=self._clock(), label=self.ceiling(arrival.channel))
        self._issue_rejected(arrival, entry)


def _unanswered(_result: object) -> None:
    """A refusal of a stranger's bytes: recorded, never answered."""


def unreadable_entry(
    exc: PeerError, data: bytes, *, at: int, label: Classification
) -> ReceiptEntry:
    """The REJECTED entry for bytes the hub could not authenticate: it speaks of their hash."""
    return ReceiptEntry(
        msg_id=None,
        recipient=None,
        status=ReceiptStatus.REJECTED,
        at=at,
        subject=hashlib.sha256(data).digest(),
        classification=label,
        reason=exc.reason.value,
        detail=exc.message[:2000],
        retriable=False,
    )


def flag_revoked(arrival: Arrival, exc: PeerError, what: str) -> None:
    """A revoked key presented: a security event (after a compromise, it is the thief)."""
    if exc.reason is Reason.SIG_KEY_REVOKED:
        security.error(
            "key.revoked_used",
            org=arrival.org,
            channel=arrival.channel,
            what=what,
            detail=exc.message,
        )
