"""The store's rows for an admitted message: the message, one delivery per route, and its
ledger entry (``message.accepted`` or ``message.quarantined``)."""

from __future__ import annotations

from dataclasses import dataclass

from hubd.core.admit import Admit, Quarantine
from hubd.core.states import DeliveryState, MessageState
from hubd.engine.arrival import Arrival
from hubd.engine.jobs import Payload
from hubd.store.audit import AuditEvent
from hubd.store.writes import NewMessage
from schemas.envelope import VerifiedEnvelope
from schemas.labels import Classification, DocType
from schemas.rules import doc_number_problem
from schemas.terms import Terms
from schemas.untrusted import untrusted_text


@dataclass(frozen=True, slots=True)
class Storing:
    """A verified message on its way into the store, and what it takes to answer it."""

    arrival: Arrival
    envelope: VerifiedEnvelope
    outcome: Admit | Quarantine
    payload: Payload


def findable_doc_number(doc_number: str | None, classification: Classification) -> str | None:
    """The 发文字号 the store keeps as a column for ``hubctl find``: a document's below 秘密,
    and only a well-formed one (else None).

    The number is the sender's text, and it reaches the store even when no rule looked at it
    (a quarantined message skips the rules; a topology may set doc_number_form to warn or
    off). A NUL cannot be stored in PostgreSQL text, and one such row would fail the whole
    group commit it is in, again at every retry; control or direction characters would reach
    ``hubctl find``'s terminal. So only a number of the standard form (which has none of
    them) is kept; any other is found by sender, recipient and time, as a classified one.

    A state secret's number is not kept. The columns outlive retention (which removes the
    frame, the only other place the number is) and reach everyone who may read the store
    or a backup of it; for a classified document the number ties it to its issuing office
    and sequence, which is itself a fact to protect. Such documents are found by sender,
    recipient and time instead; ``hubctl find --doc-number`` says so."""
    if doc_number is None or classification.is_state_secret:
        return None
    if doc_number_problem(doc_number) is not None or untrusted_text(doc_number) != doc_number:
        return None
    return doc_number


def terms_columns(terms: Terms | None, *, open_: bool) -> dict[str, object]:
    """A message's terms as the store keeps them (migration 0010); ``terms_open`` when it
    sets a deadline the deadline desk must watch (not for a quarantined message)."""
    if terms is None:
        return dict.fromkeys(("sign_by", "accept_by", "done_by", "case_no"), None) | {
            "drill": False,
            "terms_open": False,
        }
    return {
        "sign_by": terms.sign_by,
        "accept_by": terms.accept_by,
        "done_by": terms.done_by,
        "case_no": terms.case,
        "drill": terms.drill,
        "terms_open": open_ and bool(terms.deadlines),
    }


def new_message(storing: Storing) -> NewMessage:
    arrival, envelope, outcome = storing.arrival, storing.envelope, storing.outcome
    payload = storing.payload
    header = envelope.header
    quarantine = outcome if isinstance(outcome, Quarantine) else None
    routes = outcome.routes if isinstance(outcome, Admit) else ()
    quarantined = quarantine is not None
    state = MessageState.QUARANTINED if quarantined else MessageState.ACCEPTED
    row = {
        "msg_id": header.msg_id,
        "sender": header.sender,
        "classification": header.classification.rank,
        "precedence": header.precedence.rank,
        "doc_type": header.doc_type.name,
        "created_at": header.created_at,
        "expires_at": header.expires_at,
        "received_at": arrival.at,
        "arrival_channel": arrival.channel,
        "state": state.value,
        "reason": None if quarantine is None else quarantine.reason.value,
        "frame": envelope.frame,
        "frame_sha256": envelope.digest,
        "body_size": payload.body_size,
        "body": payload.body,
        "body_path": None if payload.body_path is None else str(payload.body_path),
        "doc_number": findable_doc_number(header.doc_number, header.classification),
        # every slot: kept for a quarantined message, and for one that goes on through
        # another hub (its copy carries them all, read back from here after a restart)
        "slots": (
            envelope.part_on_way("", "*")
            if envelope.slots is not None and (quarantined or any(r.via for r in routes))
            else None
        ),
        **terms_columns(header.terms, open_=not quarantined),
    }
    deliveries = [
        {
            "msg_id": header.msg_id,
            "recipient": r.recipient,
            "channel": r.channel,
            "precedence": header.precedence.rank,
            "state": DeliveryState.PENDING.value,
            "attempts": 0,
            "expires_at": header.expires_at,
            "created_at": arrival.at,
            "updated_at": arrival.at,
            "slot": None if r.via else envelope.part_for(r.recipient),  # else the message's
        }
        for r in routes
    ]
    detail: dict[str, object] = {
        "channel": arrival.channel,
        "classification": header.classification.name,
        "precedence": header.precedence.name,
        "doc_type": header.doc_type.name,
        "body_size": payload.body_size,
        "frame_sha256": envelope.digest.hex(),
    }
    if arrival.org != header.sender:  # relayed by a neighbour hub (hubd.core.hops)
        detail["from_hub"] = arrival.org
    handed = {r.recipient: r.via for r in routes if r.via is not None}
    if handed and header.slots is None:  # the hop: who carries these recipients' copies on
        detail["via"] = handed
    elif handed:  # a large group's entry stays small: the hubs only
        detail["via_hubs"] = sorted(set(handed.values()))
    if header.slots is None:
        detail["recipients"] = list(header.recipients)
        detail["routes"] = {r.recipient: r.channel for r in routes}
    else:
        # A large group: the entry stays small (a witness fetches it with its proof), and
        # names its recipients by the signed root of their slots; each delivery has its own
        # entries, and the deliveries table names them all.
        detail["recipients"] = header.slots.count
        detail["slots_root"] = header.slots.root.hex()
        channels: dict[str, int] = {}
        for r in routes:
            channels[r.channel] = channels.get(r.channel, 0) + 1
        detail["channels"] = channels
    if isinstance(outcome, Admit) and outcome.warnings:
        # rules in warn mode that the document breaks (ids and articles only)
        detail["rule_warnings"] = [
            {"rule": f.rule.id, "article": f.rule.article} for f in outcome.warnings
        ]
    event = "message.quarantined" if quarantined else "message.accepted"
    audit = [AuditEvent(event, arrival.at, header.msg_id, header.sender, detail)]
    # A 批复 answers its 请示 (the document rules checked that it is the request's recipient
    # that answers): that delivery of the request is handled (办结), for the deadline desk.
    answers = (
        header.in_reply_to
        if header.doc_type is DocType.REPLY and not quarantined and header.in_reply_to
        else None
    )
    # A petition of a case answering an earlier one of the same sender's extends it (延期;
    # admit checked by how much): the store closes the earlier one's deadlines.
    case = None if header.terms is None else header.terms.case
    extends = header.in_reply_to if case is not None and not quarantined else None
    return NewMessage(row, deliveries, audit, answers, extends)
