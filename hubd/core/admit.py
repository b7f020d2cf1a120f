"""Admission of one envelope: the order of the hub's checks, written once.

An envelope reaches the hub with its body inline (:attr:`Path.INLINE`), as the head of a
body that follows in chunks (:attr:`Path.HEAD`), or at the end of such a body
(:attr:`Path.END`); any of them may be a resend of a message the hub already stored. The
shell gathers the facts (:class:`Facts`) and calls :func:`admit`; when the answer is
:class:`NeedLookup`, it asks the store and calls again with the answer. The order:

1. the hop (:mod:`hubd.core.hops`: a neighbour hub relays only for the organisations it
   serves, under a membership key that holds) and gating (:func:`schemas.gating.gate`) of
   the recipients this hop carries: a refusal stands, resend or not;
2. a head whose body is already being spooled goes on (a resend, perhaps on another
   connection);
3. a message the store already holds under this msg_id is answered as before
   (:class:`Resend`), or refused if another frame holds it;
4. a head asks the store first: a body must not be spooled again for a stored message;
5. freshness (``created_at`` within the skew, not expired) -- not at the end, where the
   body may have taken longer than the skew to arrive;
6. the disk watermark (messages to deliver) -- not at the end, the body is on disk;
7. the document rules (messages to deliver); a 批复 needs its 请示 looked up;
   a refusal of 5 to 7 stands only once the store shows no such message: a resend of
   one stored before the clock, the disk or the rules changed keeps its answer;
8. the body's size and hash against the signed header (inline: checked here; at the end:
   the spool's verdict, made while it wrote the bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

from hubd.core import hops
from hubd.core.states import MessageState
from schemas import gating as router
from schemas.directory import Directory
from schemas.envelope import Header, VerifiedEnvelope, check_freshness
from schemas.errors import PeerError, Reason
from schemas.labels import DocType
from schemas.receipts import ReceiptStatus
from schemas.rules import Document, Finding, Referenced, evaluate, settings_of
from schemas.seal import BodyChecker


class Path(StrEnum):
    """How the envelope came."""

    INLINE = "inline"  # the body came with it
    HEAD = "head"  # the body follows in chunks
    END = "end"  # the last chunk of its body arrived


class Lookup(StrEnum):
    """What :func:`admit` needs the store to say before it can decide."""

    STORED = "stored"  # what the store holds under the envelope's msg_id (a resend?)
    REQUEST = "request"  # the 请示 a 批复 answers (its ``in_reply_to``)
    CASE = "case"  # who holds the petition case the envelope continues (its terms.case)


class _NotAsked(Enum):
    NOT_ASKED = "not asked"


NOT_ASKED: Final = _NotAsked.NOT_ASKED  # the store has not been asked (yet)


@dataclass(frozen=True, slots=True)
class Stored:
    """The store already holds the envelope's msg_id: with the same frame? in which state?"""

    same: bool
    state: MessageState


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything :func:`admit` decides on; the shell gathers it."""

    envelope: VerifiedEnvelope
    path: Path
    channel: str  # the channel it arrived on (at the end: the one its latest head came on)
    directory: Directory
    now_ms: int  # when it arrived
    max_skew_ms: int
    body: bytes | None = None  # INLINE: the body that came with it
    spooled: PeerError | None = None  # END: what the spool found wrong with the body
    under_way: bool = False  # HEAD: its body is already being spooled
    disk_low: str | None = None  # why the disk refuses it now (reserving disk_need bytes)
    stored: Stored | _NotAsked | None = NOT_ASKED  # None: the store holds no such msg_id
    request: Referenced | _NotAsked | None = NOT_ASKED  # None: no such 请示 was accepted
    case: CaseFacts | _NotAsked = NOT_ASKED  # what the store holds of its petition case
    peer: str | None = None  # the neighbour hub that relayed it (None: its sender's spoke)


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """What the store holds of a petition's case: the organisations it has passed through
    (senders and recipients of its accepted petitions; None: a new case), and the earlier
    petition of the case its ``in_reply_to`` names, if any: (its sender, its done_by)."""

    parties: frozenset[str] | None
    earlier: tuple[str, int | None] | None = None


EXTENSION_MAX_MS = 30 * 86_400_000  # 信访工作条例: handling extended by at most 30 days


@dataclass(frozen=True, slots=True)
class Admit:
    """Take it: store it and deliver it on ``routes`` (a head: spool its body)."""

    routes: tuple[router.Route, ...]
    warnings: tuple[Finding, ...] = ()  # rules in warn mode that the document breaks


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Store it, never forward it: it arrived on a channel below its label."""

    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """A REJECTED to the sender, nothing kept. ``reason`` is a :class:`Reason`, or a
    document rule's code (``rule.<id>``) when ``rules`` names the rules broken: their
    findings quote the sender's fields, so the shell logs the rules, never the detail."""

    reason: str
    detail: str
    retriable: bool = False
    rules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Resend:
    """A resend of a message the hub stored: answer it as the first time (the sender
    missed that answer). A quarantined one gets its notice again."""

    status: ReceiptStatus
    reason: Reason | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class NeedLookup:
    """Ask the store for ``what`` and call :func:`admit` again with the answer."""

    what: Lookup


Outcome = Admit | Quarantine | Refuse | Resend | NeedLookup

HOPS: Final = (  # the refusals of hubd.core.hops
    Reason.FED_OUTSIDE_PREFIX,
    Reason.FED_MEMBERSHIP,
    Reason.FED_WRONG_HOP,
    Reason.FED_LOOP,
)
GATING: Final = (  # the refusals of schemas.gating.gate
    Reason.POLICY_SENDER_NOT_ON_CHANNEL,
    Reason.POLICY_SENDER_CLEARANCE,
    Reason.POLICY_RECIPIENT_CLEARANCE,
    Reason.POLICY_NO_CHANNEL,
    Reason.ENV_UNKNOWN_RECIPIENT,
    Reason.ENV_RECIPIENT_AWAITING_KEYS,
)
RULES: Final = "rule.*"  # a document rule's refusal: its code is the rule's (rule.<id>)
REFUSALS: Final = (
    *HOPS,
    *GATING,
    Reason.REPLAY_DUPLICATE,
    Reason.REPLAY_CLOCK_SKEW,
    Reason.REPLAY_EXPIRED,
    Reason.ENV_DEADLINE_PAST,
    Reason.HUB_DISK_LOW,
    Reason.ENV_CASE_NOT_HELD,
    Reason.ENV_EXTENSION_TOO_LONG,
    RULES,
    Reason.BODY_TRAILING_DATA,
    Reason.BODY_TRUNCATED,
    Reason.BODY_HASH_MISMATCH,
)
QUARANTINES: Final = (Reason.POLICY_ARRIVAL_CHANNEL,)
QUARANTINED_AGAIN: Final = "this message is quarantined: it arrived on a channel below its label"


def disk_need(path: Path, envelope: VerifiedEnvelope) -> int:
    """Body bytes the disk must have room for, beyond its watermark, to take the envelope.

    A head reserves its whole body before a byte is spooled; an inline body is small and
    already in memory, so the watermark alone decides; at the end the body is on disk.
    """
    return envelope.body.size if path is Path.HEAD else 0


def admit(facts: Facts) -> Outcome:
    """The hub's decision on one envelope, from ``facts`` alone (the order: module doc)."""
    header = facts.envelope.header
    directory = facts.directory
    wrong = hops.judge_arrival(header.sender, facts.peer, directory, facts.now_ms)
    recipients = hops.onward(header.recipients, facts.peer, directory)
    if wrong is None and not recipients and facts.peer is not None:
        wrong = hops.loop_refusal(facts.peer, len(header.recipients))
    if wrong is not None:
        return Refuse(wrong.reason, wrong.detail)
    decision = router.gate(
        header.sender, header.classification, recipients, facts.channel, directory
    )
    if isinstance(decision, router.Reject):
        return Refuse(decision.reason, decision.detail, retriable=decision.retriable)
    if facts.path is Path.HEAD and facts.under_way:
        return _taken(decision, ())
    if isinstance(facts.stored, Stored):
        return answer_stored(facts.stored, header.msg_id_text)
    if facts.path is Path.HEAD and facts.stored is NOT_ASKED:
        return NeedLookup(Lookup.STORED)
    checked = _circumstances(facts, deliver=isinstance(decision, router.Accept))
    if isinstance(checked, NeedLookup):
        return checked
    if isinstance(checked, Refuse):
        return NeedLookup(Lookup.STORED) if facts.stored is NOT_ASKED else checked
    body = _body(facts)
    if body is not None:
        return body
    return _taken(decision, checked)


def answer_stored(stored: Stored, msg_id_text: str) -> Refuse | Resend:
    """The answer to an envelope whose msg_id the store already holds."""
    if not stored.same:
        return Refuse(
            Reason.REPLAY_DUPLICATE,
            f"msg_id {msg_id_text} was already used for another message; "
            "every message needs a fresh random msg_id",
        )
    if stored.state is MessageState.ACCEPTED:
        return Resend(ReceiptStatus.ACCEPTED)
    return Resend(ReceiptStatus.REJECTED, Reason.POLICY_ARRIVAL_CHANNEL, QUARANTINED_AGAIN)


def _taken(
    decision: router.Accept | router.Quarantine, warnings: tuple[Finding, ...]
) -> Admit | Quarantine:
    if isinstance(decision, router.Quarantine):
        return Quarantine(decision.reason, decision.detail)
    return Admit(decision.routes, warnings)


def _circumstances(facts: Facts, *, deliver: bool) -> tuple[Finding, ...] | Refuse | NeedLookup:
    """Freshness, the disk and the rules: the warnings if they pass."""
    header = facts.envelope.header
    if facts.path is not Path.END:
        try:
            check_freshness(
                header,
                now=facts.now_ms,
                max_skew_ms=facts.max_skew_ms,
                relayed=facts.peer is not None,
            )
        except PeerError as exc:
            return Refuse(exc.reason, exc.message)
    if not deliver:
        return ()  # a quarantined message is kept whatever the disk and the rules say
    if facts.path is not Path.END and facts.disk_low is not None:
        return Refuse(Reason.HUB_DISK_LOW, facts.disk_low, retriable=True)
    referenced: Referenced | None = None
    case = None if header.terms is None else header.terms.case
    if case is not None:
        if isinstance(facts.case, _NotAsked):
            return NeedLookup(Lookup.CASE)
        refused = _case_refusal(header, case, facts.case)
        if refused is not None:
            return refused
    if header.doc_type is DocType.REPLY and header.in_reply_to is not None:
        if isinstance(facts.request, _NotAsked):
            return NeedLookup(Lookup.REQUEST)
        referenced = facts.request
    directory = facts.directory
    evaluation = evaluate(
        Document.from_header(header), directory, settings_of(directory), referenced=referenced
    )
    if not evaluation.ok:
        refusals = evaluation.refusals
        return Refuse(
            refusals[0].rule.reason,
            evaluation.refusal_text(),
            rules=tuple(dict.fromkeys(f.rule.id for f in refusals)),
        )
    return evaluation.warnings


def _case_refusal(header: Header, case: str, held: CaseFacts) -> Refuse | None:
    """A petition continues its case only from an organisation the case passed through;
    one answering (in_reply_to) an earlier petition of its own to the same case extends
    its handling (延期), by at most 30 days."""
    if held.parties is not None and header.sender not in held.parties:
        return Refuse(
            Reason.ENV_CASE_NOT_HELD,
            f"petition case {case} has not passed through {header.sender}: only an "
            "organisation that sent or received it may transfer it (转送、交办) or add to it; "
            "a new petition needs a case number of its own",
        )
    earlier = held.earlier
    done_by = None if header.terms is None else header.terms.done_by
    own = earlier is not None and earlier[0] == header.sender
    was = None if earlier is None else earlier[1]
    if own and was is not None and done_by is not None and done_by - was > EXTENSION_MAX_MS:
        return Refuse(
            Reason.ENV_EXTENSION_TOO_LONG,
            f"petition case {case}: done_by is extended by {(done_by - was) / 86_400_000:g} "
            "days; the 信访工作条例 allows at most 30 more",
        )
    return None


def _body(facts: Facts) -> Refuse | None:
    """The body against the signed header's size and hash."""
    if facts.path is Path.END:
        problem = facts.spooled
    elif facts.body is None:
        return None  # a head: the spool checks the chunks as they come
    else:
        checker = BodyChecker(facts.envelope.body)
        try:
            checker.feed(facts.body)
            checker.close()
        except PeerError as exc:
            problem = exc
        else:
            return None
    return None if problem is None else Refuse(problem.reason, problem.message)
