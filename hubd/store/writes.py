"""The operations a caller hands the store (:class:`hubd.store.db.Store`): each is one
change that the group commit applies in its transaction, in the order submitted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    insert,
    select,
)

from hubd.core.states import DeliveryState, MessageState
from hubd.store import ledger as ledgerstore
from hubd.store import tables as t
from hubd.store.audit import AuditEvent


@dataclass(slots=True)
class NewMessage:
    """Store one accepted (or quarantined) message with its deliveries."""

    row: dict[str, Any]
    deliveries: list[dict[str, Any]]
    audit: list[AuditEvent]
    # a 批复 (REPLY) answering this 请示: its sender's delivery of it is handled (DONE)
    answers: bytes | None = None
    # a petition answering an earlier one of its own sender's in the same case extends it
    # (延期): the earlier one's deadlines are closed, this one's count
    extends: bytes | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    pass


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The msg_id is already stored; ``same`` says whether with the very same frame."""

    same: bool
    state: MessageState


@dataclass(slots=True)
class DeliveryUpdate:
    msg_id: bytes
    recipient: str
    state: DeliveryState
    attempts: int  # KEEP_ATTEMPTS: leave the stored count as it is
    at: int


@dataclass(slots=True)
class UpdateDeliveries:
    updates: list[DeliveryUpdate]
    audit: list[AuditEvent]


@dataclass(slots=True)
class RecordReceipts:
    """A verified receipt batch, the rows it yields and the delivery states it moves."""

    sha256: bytes
    issuer: str
    frame: bytes
    received_at: int
    rows: list[dict[str, Any]]
    audit: list[AuditEvent]
    forward: tuple[str, str] | None = None  # (dest, channel): number it in the same commit
    updates: list[DeliveryUpdate] = field(default_factory=list)


@dataclass(slots=True)
class QueueReceipts:
    """A signed receipt batch for ``dest`` on ``channel``; the result is its number."""

    dest: str
    channel: str
    frame: bytes
    created_at: int
    # the recipients an EXPIRED/DEAD batch speaks for: a replica writes it as their owner
    owners: tuple[str, ...] = ()


@dataclass(slots=True)
class AdvanceNumbering:
    """Continue (dest, channel)'s receipt numbering after ``floor``; the result says whether
    the store's own numbering was below it (and so was moved)."""

    dest: str
    channel: str
    floor: int
    at: int


@dataclass(slots=True)
class AppendAudit:
    audit: list[AuditEvent]


@dataclass(slots=True)
class Announce:
    """Replicas: tell the others (when the commit lands) that these messages have
    deliveries waiting (a redelivery moved them back), or with ``recalled`` that their
    sender recalled them (each drops what it delivers of them); a lone hub writes nothing."""

    msg_ids: list[bytes]
    recalled: bool = False


class DirectWrite(ABC):
    """An operation that runs its own statements in the group commit's transaction.

    For the operator's and retention's changes (hubd.ops.redeliver, hubd.engine.retention), whose
    effect depends on the rows as they are when written, not as a caller last read them.
    ``apply`` runs when the batch is planned, in operation order: it sees every earlier
    commit, not the other operations of its own batch (their rows are written after). It
    returns the caller's result and the audit events for what it actually changed.
    """

    __slots__ = ()

    @abstractmethod
    def apply(self, conn: Connection) -> tuple[Any, list[AuditEvent]]:
        """Change the rows; return (result, audit events for the change)."""


@dataclass(slots=True)
class SaveCheckpoint(DirectWrite):
    """Keep a signed checkpoint of the ledger's tree (hubd.engine.checkpoints); result: None."""

    checkpoint: ledgerstore.StoredCheckpoint

    def apply(self, conn: Connection) -> tuple[None, list[AuditEvent]]:
        cp = self.checkpoint
        known = conn.execute(
            select(t.ledger_checkpoints.c.size).where(t.ledger_checkpoints.c.size == cp.size)
        ).first()
        if known is None:  # signed twice for one size (a race with a proof): keep the first
            conn.execute(
                insert(t.ledger_checkpoints).values(
                    size=cp.size, root=cp.root, at=cp.at, kid=cp.kid, frame=cp.frame
                )
            )
        return None, []


@dataclass(slots=True)
class SaveCosignature(DirectWrite):
    """Keep a witness's countersignature; result: True if new, False for a repeat."""

    size: int
    org: str
    kid: str
    sig: bytes
    at: int

    def apply(self, conn: Connection) -> tuple[bool, list[AuditEvent]]:
        c = t.ledger_cosignatures.c
        known = conn.execute(select(c.size).where(c.size == self.size, c.org == self.org)).first()
        if known is not None:
            return False, []
        conn.execute(
            insert(t.ledger_cosignatures).values(
                size=self.size, org=self.org, kid=self.kid, sig=self.sig, at=self.at
            )
        )
        return True, []


Operation = (
    NewMessage
    | UpdateDeliveries
    | RecordReceipts
    | QueueReceipts
    | AdvanceNumbering
    | AppendAudit
    | Announce
    | DirectWrite
)


def owners(ops: Sequence[Operation]) -> set[str]:
    """The organisations a write acts as owner of, on a store shared by replicas (the
    fence it carries, hubd.engine.replicas): the sender of a new message, the recipient
    whose receipts are recorded, the recipients whose deliveries change or whose EXPIRED
    or DEAD the hub tells."""
    orgs: set[str] = set()
    for op in ops:
        if isinstance(op, NewMessage):
            orgs.add(op.row["sender"])
        elif isinstance(op, RecordReceipts):
            orgs.add(op.issuer)
        elif isinstance(op, UpdateDeliveries):
            orgs.update(u.recipient for u in op.updates)
        elif isinstance(op, QueueReceipts):
            orgs.update(op.owners)
    return orgs
