"""Signed receipts: ACCEPTED, REJECTED, DELIVERED, SIGNED_FOR, EXPIRED, DEAD.

Receipts travel in signed batches: one Ed25519 signature over a list of entries, so a
busy hub or spoke pays one signature per flush, not per message. An issuer batches only
entries bound for the same destination on the same channel, so a forwarded batch never
shows one sender another's traffic and never carries a label above its channel.

Frame: canonical map ``{"v": 1, "from": issuer, "kid": kid, "rcpt": bin, "sig": bin64}``
with ``sig = Ed25519(issuer, "xchg/v1/rcpt\\0" || rcpt)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, ValidationError, model_validator

from schemas import codec
from schemas.directory import Directory, Millis
from schemas.errors import Reason, SchemaError, SignatureError, UsageError
from schemas.ids import KeyId, MsgIdBytes, OrgId, check_key_id, check_org_id
from schemas.keys import DOMAIN_RECEIPT, SigningKey, verify_signature
from schemas.model import Version1, WireClassification, WireModel, describe

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

    @property
    def zh(self) -> str:
        return {
            "ACCEPTED": "已受理",
            "REJECTED": "已拒收",
            "DELIVERED": "已送达",
            "SIGNED_FOR": "已签收",
            "EXPIRED": "已过期",
            "DEAD": "无法投递",
        }[self.value]

    @property
    def issued_by_hub(self) -> bool:
        return self in _BY_HUB


_BY_HUB = frozenset(
    {ReceiptStatus.ACCEPTED, ReceiptStatus.REJECTED, ReceiptStatus.EXPIRED, ReceiptStatus.DEAD}
)
_NEEDS_REASON = frozenset({ReceiptStatus.REJECTED, ReceiptStatus.DEAD})


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

    @model_validator(mode="after")
    def _refusals_explain_themselves(self) -> Self:
        if self.status in _NEEDS_REASON and (self.reason is None or self.detail is None):
            raise ValueError(f"a {self.status} receipt must carry a reason code and a sentence")
        return self


class ReceiptBatch(WireModel):
    v: Version1
    issuer: OrgId
    issuer_kid: KeyId
    at: Millis
    entries: Annotated[tuple[ReceiptEntry, ...], Field(min_length=1, max_length=MAX_ENTRIES)]


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
    try:
        batch = ReceiptBatch(v=1, issuer=issuer, issuer_kid=key.kid, at=at, entries=tuple(entries))
    except ValidationError as exc:
        raise UsageError(f"cannot sign this receipt batch: {describe(exc)}") from exc
    for entry in batch.entries:
        if not entry.status.issued_by_hub and entry.recipient != issuer:
            raise UsageError(f"{issuer} cannot sign {entry.status} for {entry.recipient}")
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
    from_hub = issuer == directory.hub_id
    for entry in batch.entries:
        if entry.status.issued_by_hub != from_hub:
            raise SignatureError(
                Reason.RCPT_WRONG_ISSUER,
                f"{entry.status} receipts are issued by "
                f"{'the hub' if entry.status.issued_by_hub else 'the recipient'}, not {issuer}",
            )
        if not from_hub and entry.recipient != issuer:
            raise SignatureError(
                Reason.RCPT_WRONG_ISSUER,
                f"{issuer} may only speak for itself, not for recipient {entry.recipient}",
            )
    return VerifiedReceipts(batch=batch, frame=frame)


def subject_of(frame: bytes) -> bytes:
    """What a receipt speaks of: SHA-256 of the exact envelope frame bytes."""
    return hashlib.sha256(frame).digest()
