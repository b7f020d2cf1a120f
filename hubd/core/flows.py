"""The hub's judgement of a flow statement on a document already sent: a recall (撤回) from
its sender, a recipient's answer to a recall, a return (退文), a report of its handling
(已阅, 办理中, 办结; a petition's 受理 or 不予受理). Pure: the shell
(hubd/engine/flows.py) reads what the store holds of the document and carries out the
answer.

A statement arrives verified (schemas.receipts: signed by its issuer, alone in its batch,
a recipient speaking only for itself). What is judged here is what only the hub knows:
whether the document exists, whose it is, which frame of it the statement names, and
where each recipient's delivery stands.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubd.core.deadlines import Handling
from hubd.core.states import DeliveryState
from schemas.errors import Reason
from schemas.ids import msg_id_text
from schemas.labels import Classification, DocType
from schemas.receipts import REPORTS, ReceiptEntry, ReceiptStatus

# a return speaks of a document its recipient holds: published (perhaps confirmed later),
# or handed to the hub it is behind (its DELIVERED may still be on its way through the hubs)
RETURNABLE = frozenset(
    {
        DeliveryState.SENT,
        DeliveryState.DELIVERED,
        DeliveryState.SIGNED_FOR,
        DeliveryState.RELAYED,
    }
)


@dataclass(frozen=True, slots=True)
class Document:
    """What the hub's store holds of the document a statement names."""

    sender: str
    channel: str  # the channel it arrived on: its sender hears back there
    classification: Classification
    frame_sha256: bytes
    recalled: bool  # its sender's RECALL is recorded
    doc_type: DocType = DocType.NOTICE


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the issuer with a signed REFUSED: ``reason`` and a sentence. ``disclose``:
    the issuer is a party to the document, so the answer may carry its label; otherwise it
    says nothing of the document (not even that it exists) and carries the ceiling of the
    channel the statement came on."""

    reason: Reason
    detail: str
    disclose: bool = True


@dataclass(frozen=True, slots=True)
class Recall:
    """The sender withdraws its document: stop what is not delivered, tell every recipient
    (``first``), answer the sender with what stopped. A repeat (``first`` false) is answered
    again and changes nothing."""

    first: bool


@dataclass(frozen=True, slots=True)
class Forward:
    """Record the recipient's statement and forward it, unchanged, to the sender; a report
    of its handling is kept as the delivery's ``handling``."""

    sender: str
    channel: str
    handling: Handling | None = None


Judgement = Refuse | Recall | Forward


def judge(
    entry: ReceiptEntry,
    issuer: str,
    document: Document | None,
    delivery: DeliveryState | None,
) -> Judgement:
    """What the hub does with the flow statement ``entry`` signed by ``issuer``.

    ``document`` is the stored document (None: the hub holds none under that msg_id);
    ``delivery`` the state of its delivery to ``issuer`` (None: not a recipient)."""
    what = entry.status.value
    m = "(no msg_id)" if entry.msg_id is None else msg_id_text(entry.msg_id)
    party = document is not None and (issuer == document.sender or delivery is not None)
    if entry.msg_id is None or document is None or not party:
        # An organisation that neither sent nor received it learns nothing of it, not even
        # that it exists.
        return Refuse(
            Reason.FLOW_UNKNOWN_MESSAGE,
            f"the hub holds no document {m} that {issuer} sent or received: a {what} must "
            "name a document of its own",
            disclose=False,
        )
    if entry.subject != document.frame_sha256:
        return Refuse(
            Reason.FLOW_WRONG_SUBJECT,
            f"the {what} names a frame of {m} other than the one the hub accepted "
            f"(subject {entry.subject.hex()[:16]}…): name the document's own envelope",
        )
    if entry.classification != document.classification:
        return Refuse(
            Reason.FLOW_WRONG_SUBJECT,
            f"the {what} is labelled {entry.classification.name}, not its document's "
            f"{document.classification.name}: a statement carries its document's label",
        )
    if entry.status is ReceiptStatus.RECALL:
        if issuer != document.sender:
            return Refuse(
                Reason.FLOW_NOT_SENDER,
                f"{issuer} may not recall {m}: only its sender, {document.sender}, may",
            )
        return Recall(first=not document.recalled)
    if delivery is None:  # the sender itself, speaking as a recipient
        return Refuse(
            Reason.FLOW_NOT_RECIPIENT,
            f"{issuer} sent {m} and is not one of its recipients: it may not say {what}",
        )
    forward = Forward(document.sender, document.channel)
    if entry.status is ReceiptStatus.RETURNED:
        if document.recalled or delivery not in RETURNABLE:
            why = "its sender recalled it" if document.recalled else f"its delivery is {delivery}"
            return Refuse(
                Reason.FLOW_NOT_RECEIVED,
                f"{issuer} cannot return {m}: {why}; only a document delivered to it can be "
                "returned",
            )
        return forward
    if entry.status in REPORTS:
        if document.recalled or delivery not in RETURNABLE:
            why = "its sender recalled it" if document.recalled else f"its delivery is {delivery}"
            return Refuse(
                Reason.FLOW_NOT_RECEIVED,
                f"{issuer} cannot report {what} on {m}: {why}; only a document delivered to it "
                "is handled",
            )
        petition = entry.status in {ReceiptStatus.CASE_ACCEPTED, ReceiptStatus.CASE_DECLINED}
        if petition and document.doc_type is not DocType.PETITION:
            return Refuse(
                Reason.FLOW_NOT_PETITION,
                f"{m} is a {document.doc_type.name}, not a petition (信访件): it is not accepted "
                f"or declined ({what}); report READ, HANDLING or DONE",
            )
        return Forward(document.sender, document.channel, Handling(entry.status.value))
    if entry.status in {
        ReceiptStatus.WITHDRAWN,
        ReceiptStatus.RECALL_ACCEPTED,
        ReceiptStatus.RECALL_REFUSED,
    }:
        if not document.recalled:
            return Refuse(
                Reason.FLOW_NOT_RECALLED,
                f"{issuer} answered a recall of {m} ({what}), but its sender has not recalled it",
            )
        return forward
    return Refuse(  # verify_receipts lets no other status of an organisation's reach here
        Reason.FLOW_NOT_RECIPIENT, f"a {what} from {issuer} is not a flow statement"
    )
