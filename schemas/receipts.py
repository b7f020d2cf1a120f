"""Signed receipts: ACCEPTED, REJECTED, DELIVERED, SIGNED_FOR, EXPIRED, DEAD; and the
statements of the flows on a document already sent (recall 撤回, return 退文).

Receipts travel in signed batches: one Ed25519 signature over a list of entries, so a
busy hub or spoke pays one signature per flush, not per message. An issuer batches only
entries bound for the same destination on the same channel, so a forwarded batch never
shows one sender another's traffic and never carries a label above its channel.

Frame: canonical map ``{"v": 1, "from": issuer, "kid": kid, "rcpt": bin, "sig": bin64}``
with ``sig = Ed25519(issuer, "xchg/v1/rcpt\\0" || rcpt)``.

A batch is version 1 (nine keys an entry, the six statuses above) unless an entry carries
a flow status or a note: then it is version 2, whose entries have a tenth key, ``note``
(schemas.notes: words only the document's parties can read). A reader of version 1 only
refuses a version 2 batch, so what earlier spokes exchange is unchanged. A batch from an
organisation that carries a flow statement carries nothing else: the hub forwards it
unchanged to every party of that one document, and a second statement would show them
another document's traffic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import Field, ValidationError, model_validator

from schemas import codec
from schemas.directory import Directory, Millis
from schemas.errors import Reason, SchemaError, SignatureError, UsageError
from schemas.ids import KeyId, MsgIdBytes, OrgId, check_key_id, check_org_id
from schemas.keys import DOMAIN_RECEIPT, SigningKey, verify_signature
from schemas.model import ReceiptVersion, WireClassification, WireModel, describe
from schemas.notes import MAX_NOTE_BYTES

MAX_ENTRIES = 5000
# A Reason value ("sig.invalid") or a document-rule id ("rule.no_skip_level").
REASON_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"


class ReceiptStatus(StrEnum):
    ACCEPTED = "ACCEPTED"  # the hub stored it durably and will deliver it
    REJECTED = "REJECTED"  # the hub refused it (reason + sentence)
    DELIVERED = "DELIVERED"  # the recipient wrote it durably to its inbox
    SIGNED_FOR = "SIGNED_FOR"  # 签收: a person or system at the recipient acknowledged it
    EXPIRED = "EXPIRED"  # expires_at passed before delivery
    DEAD = "DEAD"  # the hub gave up after its retry limit
    # flows on a document already sent (version 2 batches only)
    RECALL = "RECALL"  # 撤回: its sender withdraws it (recipient nil; the reason in the note)
    RECALLED = "RECALLED"  # hub: the recall is recorded (recipient nil); or, for a recipient,
    #                        its delivery was stopped before it had the document
    WITHDRAWN = "WITHDRAWN"  # recipient: not signed for, taken out of its inbox (or never had)
    RECALL_ACCEPTED = "RECALL_ACCEPTED"  # recipient: had signed for it, agrees to the recall
    RECALL_REFUSED = "RECALL_REFUSED"  # recipient: had signed for it, keeps it (why: the note)
    RETURNED = "RETURNED"  # 退文: the recipient sends it back (the reason in the note)
    REFUSED = "REFUSED"  # hub: a flow statement refused, with reason and detail
    # handling (办理) reports, a recipient's about itself, and the hub's reminders (催办)
    READ = "READ"  # 已阅
    HANDLING = "HANDLING"  # 办理中
    DONE = "DONE"  # 办结 (the note: the result, a link to the answer)
    CASE_ACCEPTED = "CASE_ACCEPTED"  # 受理: a petition's organ takes it on
    CASE_DECLINED = "CASE_DECLINED"  # 不予受理: it does not (the note: why)
    REMINDED = "REMINDED"  # hub: 催办, a deadline of the document's terms near or passed

    @property
    def zh(self) -> str:
        return _ZH[self.value]

    @property
    def issued_by_hub(self) -> bool:
        return self in _BY_HUB

    @property
    def issued_by_sender(self) -> bool:
        """Said by the document's sender about the document as a whole."""
        return self is ReceiptStatus.RECALL

    @property
    def flow(self) -> bool:
        """A flow status: only in a version 2 batch."""
        return self not in _V1


_ZH = {
    "ACCEPTED": "已受理",
    "REJECTED": "已拒收",
    "DELIVERED": "已送达",
    "SIGNED_FOR": "已签收",
    "EXPIRED": "已过期",
    "DEAD": "无法投递",
    "RECALL": "撤回",
    "RECALLED": "已撤回（未送达）",
    "WITHDRAWN": "已撤出收件箱",
    "RECALL_ACCEPTED": "同意撤回",
    "RECALL_REFUSED": "不同意撤回",
    "RETURNED": "已退文",
    "REFUSED": "已驳回",
    "READ": "已阅",
    "HANDLING": "办理中",
    "DONE": "办结",
    "CASE_ACCEPTED": "受理",
    "CASE_DECLINED": "不予受理",
    "REMINDED": "催办",
}
_V1 = frozenset(
    {
        ReceiptStatus.ACCEPTED,
        ReceiptStatus.REJECTED,
        ReceiptStatus.DELIVERED,
        ReceiptStatus.SIGNED_FOR,
        ReceiptStatus.EXPIRED,
        ReceiptStatus.DEAD,
    }
)
_BY_HUB = frozenset(
    {
        ReceiptStatus.ACCEPTED,
        ReceiptStatus.REJECTED,
        ReceiptStatus.EXPIRED,
        ReceiptStatus.DEAD,
        ReceiptStatus.RECALLED,
        ReceiptStatus.REFUSED,
        ReceiptStatus.REMINDED,
    }
)
_NEEDS_REASON = frozenset(
    {ReceiptStatus.REJECTED, ReceiptStatus.DEAD, ReceiptStatus.REFUSED, ReceiptStatus.REMINDED}
)
# a recipient's report of its handling (办理): the hub keeps the latest per delivery
REPORTS = frozenset(
    {
        ReceiptStatus.READ,
        ReceiptStatus.HANDLING,
        ReceiptStatus.DONE,
        ReceiptStatus.CASE_ACCEPTED,
        ReceiptStatus.CASE_DECLINED,
    }
)
# the statuses whose entry may carry a note (words for the document's parties)
NOTED = frozenset(
    {
        ReceiptStatus.RECALL,
        ReceiptStatus.WITHDRAWN,
        ReceiptStatus.RECALL_ACCEPTED,
        ReceiptStatus.RECALL_REFUSED,
        ReceiptStatus.RETURNED,
        *REPORTS,
    }
)


class ReceiptEntry(WireModel):
    """One statement about one message (and, where it applies, one recipient)."""

    msg_id: MsgIdBytes | None  # None only when the refused bytes had no readable msg_id
    recipient: OrgId | None  # None: about the message as a whole (ACCEPTED / REJECTED)
    status: Annotated[ReceiptStatus, Field(strict=False)]  # the wire carries the value
    at: Millis
    subject: Annotated[bytes, Field(min_length=32, max_length=32)]  # SHA-256 of the frame
    classification: WireClassification  # receipts inherit the label of their message
    reason: Annotated[str, Field(max_length=64, pattern=REASON_PATTERN)] | None
    detail: Annotated[str, Field(min_length=1, max_length=2000)] | None  # names rule and values
    retriable: bool  # a REJECTED the sender may simply send again later
    # version 2 only: schemas.notes, sealed under the document's note key
    note: Annotated[bytes, Field(min_length=41, max_length=MAX_NOTE_BYTES)] | None = None

    @model_validator(mode="after")
    def _refusals_explain_themselves(self) -> Self:
        if self.status in _NEEDS_REASON and (self.reason is None or self.detail is None):
            raise ValueError(f"a {self.status} receipt must carry a reason code and a sentence")
        if self.note is not None and self.status not in NOTED:
            raise ValueError(f"a {self.status} receipt carries no note")
        if self.status.issued_by_sender and self.recipient is not None:
            raise ValueError(f"a {self.status} speaks of the document as a whole: no recipient")
        return self


class ReceiptBatch(WireModel):
    v: ReceiptVersion  # 1: the six statuses, nine keys an entry; 2: any status, with ``note``
    issuer: OrgId
    issuer_kid: KeyId
    at: Millis
    entries: Annotated[tuple[ReceiptEntry, ...], Field(min_length=1, max_length=MAX_ENTRIES)]

    @model_validator(mode="before")
    @classmethod
    def _entries_of_their_version(cls, data: Any) -> Any:
        """A version 1 entry has no ``note`` key; a version 2 entry has it (nil or bin)."""
        if isinstance(data, dict) and isinstance(data.get("entries"), list | tuple):
            v = data.get("v")
            for entry in data["entries"]:
                if isinstance(entry, dict) and ("note" in entry) != (v == 2):
                    raise ValueError(
                        "a version 2 batch's entries carry a note (nil or bytes), "
                        "a version 1 batch's none"
                    )
        return data

    @model_validator(mode="after")
    def _flows_only_in_version_2(self) -> Self:
        if self.v == 1:
            for entry in self.entries:
                if entry.status.flow:
                    raise ValueError(f"a {entry.status} travels in a version 2 batch")
        elif not any(e.status.flow or e.note is not None for e in self.entries):
            # what a version 1 batch can say travels as one: a reader of version 1 only
            # must never be handed it as version 2 (it would refuse it)
            raise ValueError("a batch with no flow status and no note is version 1")
        return self

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        if self.v == 1:
            for entry in wire["entries"]:
                del entry["note"]  # a version 1 batch is exactly what it was before notes
        return wire


@dataclass(frozen=True, slots=True)
class VerifiedReceipts:
    batch: ReceiptBatch
    frame: bytes


def sign_receipts(
    issuer: str, key: SigningKey, entries: Sequence[ReceiptEntry], *, at: int
) -> bytes:
    """One signed frame over ``entries`` (all bound for the same destination).

    Raises UsageError for a batch no verifier would accept (empty, too long, or a
    recipient speaking for someone else).
    """
    flows = any(e.status.flow or e.note is not None for e in entries)
    try:
        batch = ReceiptBatch(
            v=2 if flows else 1, issuer=issuer, issuer_kid=key.kid, at=at, entries=tuple(entries)
        )
    except ValidationError as exc:
        raise UsageError(f"cannot sign this receipt batch: {describe(exc)}") from exc
    for entry in batch.entries:
        if entry.status.issued_by_hub or entry.status.issued_by_sender:
            continue
        if entry.recipient != issuer:
            raise UsageError(f"{issuer} cannot sign {entry.status} for {entry.recipient}")
    if (
        any(e.status.flow for e in batch.entries)
        and len(batch.entries) > 1
        and not (all(e.status.issued_by_hub for e in batch.entries))
    ):
        raise UsageError("an organisation's flow statement travels alone in its batch")
    body = codec.encode(batch.to_wire())
    if len(body) > codec.RECEIPT_LIMITS.max_size - 256:
        raise UsageError(f"receipt batch of {len(body)} bytes is too large; send smaller batches")
    sig = key.sign(DOMAIN_RECEIPT, body)
    return codec.encode({"v": 1, "from": issuer, "kid": key.kid, "rcpt": body, "sig": sig})


def verify_receipts(
    frame: bytes, directory: Directory, *, expected_issuer: str | None = None
) -> VerifiedReceipts:
    """Verify a receipt frame: signature first, then decode; hub statuses only from the hub."""
    outer = codec.decode_frame(
        frame, codec.RECEIPT_FRAME_LIMITS, {"from": str, "kid": str, "rcpt": bytes, "sig": bytes}
    )
    issuer, kid, body, sig = outer["from"], outer["kid"], outer["rcpt"], outer["sig"]
    try:
        check_org_id(issuer, what="receipt issuer")
        check_key_id(kid)
    except ValueError as exc:
        raise SchemaError(Reason.SCHEMA_INVALID, str(exc)) from exc
    if expected_issuer is not None and issuer != expected_issuer:
        raise SignatureError(
            Reason.RCPT_WRONG_ISSUER,
            f"receipt claims issuer {issuer} but arrived from {expected_issuer}",
        )
    key = directory.signing_key_entry(issuer, kid)
    if not verify_signature(key.public, DOMAIN_RECEIPT, body, sig):
        raise SignatureError(
            Reason.RCPT_BAD_SIGNATURE,
            f"receipt signature does not verify with {issuer}'s key {kid}",
        )
    batch = ReceiptBatch.from_wire(codec.decode_map(body, codec.RECEIPT_LIMITS), what="receipts")
    if batch.issuer != issuer or batch.issuer_kid != kid:
        raise SignatureError(Reason.RCPT_WRONG_ISSUER, "signed issuer differs from the frame's")
    directory.check_key_window(key, issuer, batch.at)
    from_hub = directory.is_hub(issuer)  # this hub, or another of the federation
    for entry in batch.entries:
        if entry.status.issued_by_hub != from_hub:
            raise SignatureError(
                Reason.RCPT_WRONG_ISSUER,
                f"{entry.status} receipts are issued by "
                f"{'the hub' if entry.status.issued_by_hub else 'an organisation'}, "
                f"not {issuer}",
            )
        if not from_hub and not entry.status.issued_by_sender and entry.recipient != issuer:
            raise SignatureError(
                Reason.RCPT_WRONG_ISSUER,
                f"{issuer} may only speak for itself, not for recipient {entry.recipient}",
            )
    if not from_hub and len(batch.entries) > 1 and any(e.status.flow for e in batch.entries):
        raise SchemaError(
            Reason.FLOW_ONE_PER_BATCH,
            f"{issuer}'s batch carries a flow statement among {len(batch.entries)} entries; "
            "a flow statement travels alone",
        )
    return VerifiedReceipts(batch=batch, frame=frame)


def subject_of(frame: bytes) -> bytes:
    """What a receipt speaks of: SHA-256 of the exact envelope frame bytes."""
    return hashlib.sha256(frame).digest()
