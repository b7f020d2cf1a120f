"""The hub's admission of an envelope (hubd.core.admit), as a table: synchronous, no broker,
no store, the time given.

Every case names the path the envelope came by (inline, head, end), the facts the shell
gathered, what the store answers each question admit asks (NeedLookup), the questions it
must ask in that order, and the outcome. A last test checks that the table covers every
refusal and quarantine reason the module declares it can return, and another that what it
declares for gating is every reason schemas.gating constructs a refusal or quarantine with.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import pytest

from hubd.core import hops
from hubd.core.admit import (
    GATING,
    HOPS,
    QUARANTINED_AGAIN,
    QUARANTINES,
    REFUSALS,
    RULES,
    Admit,
    CaseFacts,
    Facts,
    Lookup,
    NeedLookup,
    Outcome,
    Path,
    Quarantine,
    Refuse,
    Resend,
    Stored,
    admit,
    answer_stored,
    disk_need,
)
from hubd.core.states import MessageState
from schemas import gating as router
from schemas.directory import Directory, OrgEntry
from schemas.envelope import VerifiedEnvelope, verify_envelope
from schemas.errors import PeerError, Reason
from schemas.gating import Route
from schemas.ids import new_msg_id
from schemas.labels import Classification, DocType
from schemas.receipts import ReceiptStatus
from schemas.rules import Referenced
from schemas.seal import BodyChecker
from schemas.terms import Terms
from tests.federation import MEMBER, federated, make_hub_keys
from tests.world import NOW, World

DAY_MS = 86_400_000

SKEW = 300_000  # the hub's max_skew_ms in these cases
DISK_LOW = "the hub's disk holds less than its watermark; send it again later"


# ---------------------------------------------------------------------------- builders


def changed_org(directory: Directory, org_id: str, **fields: Any) -> Directory:
    """``directory`` with one organisation changed (as a reload after the envelope came)."""
    orgs = tuple(o.model_copy(update=fields) if o.id == org_id else o for o in directory.orgs)
    return directory.model_copy(update={"orgs": orgs})


def without_org(directory: Directory, org_id: str) -> Directory:
    orgs: tuple[OrgEntry, ...] = tuple(o for o in directory.orgs if o.id != org_id)
    return directory.model_copy(update={"orgs": orgs})


@dataclass(frozen=True)
class Letter:
    """A sealed envelope as the hub verified it, and its body."""

    envelope: VerifiedEnvelope
    body: bytes


def letter(
    world: World, sender: str = "jl.gov", to: tuple[str, ...] = ("jl.cc",), **kw: Any
) -> Letter:
    sealed, body = world.seal(sender, to, **kw)
    return Letter(verify_envelope(sealed.frame, world.directory, expected_sender=sender), body)


def body_problem(envelope: VerifiedEnvelope, body: bytes) -> PeerError:
    """What the spool finds when ``body`` is written for ``envelope`` (a chunked body)."""
    checker = BodyChecker(envelope.body)
    try:
        checker.feed(body)
        checker.close()
    except PeerError as exc:
        return exc
    raise AssertionError("the body was whole")


def tampered(body: bytes) -> bytes:
    return bytes([body[0] ^ 1]) + body[1:]


# ---------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    build: Callable[[World], Letter] = letter
    facts: Callable[[World, Letter], Mapping[str, Any]] = lambda _w, _s: {}
    answers: Mapping[Lookup, Callable[[Letter], Any]] = field(default_factory=dict)
    asks: tuple[Lookup, ...] = ()  # the questions admit must ask, in this order
    expect: type[Outcome] = Admit
    reason: str | None = None  # the Refuse/Quarantine reason (RULES for a document rule)
    check: Callable[[Outcome], bool] = lambda _o: True


NOTHING_STORED: Mapping[Lookup, Callable[[Letter], Any]] = {Lookup.STORED: lambda _s: None}
STORED_SAME = {Lookup.STORED: lambda _s: Stored(same=True, state=MessageState.ACCEPTED)}
STORED_QUARANTINED = {Lookup.STORED: lambda _s: Stored(same=True, state=MessageState.QUARANTINED)}
STORED_OTHER = {Lookup.STORED: lambda _s: Stored(same=False, state=MessageState.ACCEPTED)}
TO_CC = (Route("jl.cc", "govnet"),)
LATE = {"now_ms": NOW + SKEW + 1}


def dir_with(**change: Any) -> Callable[[World, Letter], Mapping[str, Any]]:
    org_id = change.pop("org")
    return lambda w, _s: {"directory": changed_org(w.directory, org_id, **change)}


def petition(world: World, done_by: int | None = None) -> Letter:
    case = Terms(sign_by=None, done_by=done_by, case="吉信〔2026〕7号", accept_by=None, drill=False)
    return letter(world, doc_type=DocType.PETITION, terms=case)


def reply(world: World) -> Letter:
    return letter(world, doc_type=DocType.REPLY, in_reply_to=REQUEST_ID)


REQUEST_ID = new_msg_id()
REQUEST_FROM_CC = Referenced(REQUEST_ID, "jl.cc", DocType.REQUEST, ("jl.gov",))

HUB_KEYS = make_hub_keys()


def relayed(
    peer: str | None = MEMBER, **change: Any
) -> Callable[[World, Letter], Mapping[str, Any]]:
    """Facts of an envelope relayed by ``peer`` to a hub whose directory is federated
    (tests.federation: Yanbian's organisations behind the member hub yb.hub)."""
    return lambda w, _s: {"directory": federated(w, HUB_KEYS, **change), "peer": peer}


FROM_YANBIAN = ("jl.yb", ("jl.cc", "jl.yb.yanji"))  # one recipient on each side

CASES = [
    # ---- hubs under hubs: the hop is judged before anything else
    Case("inline: a member hub's relay is admitted for the recipients not behind it",
         Path.INLINE, build=lambda w: letter(w, *FROM_YANBIAN),
         facts=relayed(),
         check=lambda o: isinstance(o, Admit) and o.routes == (Route("jl.cc", "govnet"),)),
    Case("inline: a hub relaying for an organisation it does not serve is refused",
         Path.INLINE, facts=relayed(), expect=Refuse, reason=Reason.FED_OUTSIDE_PREFIX,
         check=lambda o: isinstance(o, Refuse) and "jl.gov, which it does not serve" in o.detail),
    Case("head: a hub whose membership key is revoked relays nothing, before the store",
         Path.HEAD, build=lambda w: letter(w, *FROM_YANBIAN),
         facts=relayed(revoked=(HUB_KEYS[MEMBER].kid,)),
         expect=Refuse, reason=Reason.FED_MEMBERSHIP),
    Case("inline: an outside organisation sending as a spoke of this hub is refused",
         Path.INLINE, build=lambda w: letter(w, *FROM_YANBIAN),
         facts=relayed(None), expect=Refuse, reason=Reason.FED_WRONG_HOP),
    Case("inline: a relayed envelope older than the skew is admitted (the first hub judged it)",
         Path.INLINE, build=lambda w: letter(w, *FROM_YANBIAN),
         facts=lambda w, s: {**relayed()(w, s), **LATE},
         check=lambda o: isinstance(o, Admit) and o.routes == (Route("jl.cc", "govnet"),)),
    Case("end: an envelope whose every recipient is behind the hub it came from is a loop",
         Path.END, build=lambda w: letter(w, "jl.yb", ("jl.yb.yanji",)),
         facts=relayed(), expect=Refuse, reason=Reason.FED_LOOP),
    # ---- every path takes a good envelope
    Case("inline: a good envelope is admitted with its routes", Path.INLINE,
         check=lambda o: isinstance(o, Admit) and o.routes == TO_CC and not o.warnings),
    Case("head: a new head asks the store first, then is admitted", Path.HEAD,
         answers=NOTHING_STORED, asks=(Lookup.STORED,),
         check=lambda o: isinstance(o, Admit) and o.routes == TO_CC),
    Case("head: a head whose body is being spooled goes on without asking", Path.HEAD,
         facts=lambda _w, _s: {"under_way": True, **LATE}),
    Case("end: a complete body is admitted", Path.END,
         check=lambda o: isinstance(o, Admit) and o.routes == TO_CC),
    Case("end: freshness is not judged again at the end (the body takes its time)", Path.END,
         facts=lambda _w, _s: LATE),
    Case("end: the disk is not judged at the end (the body is on it)", Path.END,
         facts=lambda _w, _s: {"disk_low": DISK_LOW}),
    Case("inline: a rule in warn mode admits with its warning", Path.INLINE,
         build=lambda w: letter(w, to=("jl.cc.nongan",)),
         check=lambda o: isinstance(o, Admit) and [f.rule.id for f in o.warnings]
         == ["skip_level_down"]),
    # ---- gating: refused on every path, and never asks the store
    Case("inline: a sender not on the arrival channel is refused", Path.INLINE,
         facts=dir_with(org="jl.gov", channels=("internet", "classified")),
         expect=Refuse, reason=Reason.POLICY_SENDER_NOT_ON_CHANNEL),
    Case("head: a label above the sender's clearance is refused before the store is asked",
         Path.HEAD, facts=dir_with(org="jl.gov", clearance=Classification.PUBLIC),
         expect=Refuse, reason=Reason.POLICY_SENDER_CLEARANCE),
    Case("end: a recipient no longer cleared for the label is refused", Path.END,
         facts=dir_with(org="jl.cc", clearance=Classification.PUBLIC),
         expect=Refuse, reason=Reason.POLICY_RECIPIENT_CLEARANCE),
    Case("inline: no channel carries the label to the recipient", Path.INLINE,
         facts=dir_with(org="jl.cc", channels=("internet",)),
         expect=Refuse, reason=Reason.POLICY_NO_CHANNEL),
    Case("end: a recipient gone from the directory is refused", Path.END,
         facts=lambda w, _s: {"directory": without_org(w.directory, "jl.cc")},
         expect=Refuse, reason=Reason.ENV_UNKNOWN_RECIPIENT),
    Case("end: a recipient whose keys a reload dropped is refused as awaiting keys",
         Path.END, facts=dir_with(org="jl.cc", sign_keys=(), enc_keys=()),
         expect=Refuse, reason=Reason.ENV_RECIPIENT_AWAITING_KEYS,
         check=lambda o: isinstance(o, Refuse) and "recipient jl.cc" in o.detail
         and "awaiting keys" in o.detail),
    # ---- quarantine: kept whatever the disk and the rules say
    Case("inline: a label above the arrival channel's ceiling is quarantined", Path.INLINE,
         build=lambda w: letter(w, doc_type=DocType.REPORT),
         facts=lambda _w, _s: {"channel": "internet", "disk_low": DISK_LOW},
         expect=Quarantine, reason=Reason.POLICY_ARRIVAL_CHANNEL),
    Case("head: a leaked head is asked about, then quarantined (its body is taken)", Path.HEAD,
         facts=lambda _w, _s: {"channel": "internet"}, answers=NOTHING_STORED,
         asks=(Lookup.STORED,), expect=Quarantine, reason=Reason.POLICY_ARRIVAL_CHANNEL),
    # ---- freshness, the disk, the rules: refused once the store shows no such message
    Case("inline: created_at beyond the skew is refused once the store has no such message",
         Path.INLINE, facts=lambda _w, _s: LATE, answers=NOTHING_STORED,
         asks=(Lookup.STORED,), expect=Refuse, reason=Reason.REPLAY_CLOCK_SKEW),
    Case("head: an expired head is refused", Path.HEAD,
         build=lambda w: letter(w, expires_at=NOW + 1000),
         facts=lambda _w, _s: {"now_ms": NOW + 1000}, answers=NOTHING_STORED,
         asks=(Lookup.STORED,), expect=Refuse, reason=Reason.REPLAY_EXPIRED),
    Case("inline: a deadline of its terms already past when it arrives is refused",
         Path.INLINE,
         build=lambda w: letter(w, terms=Terms(sign_by=NOW + 1000, done_by=None, case=None,
                                               accept_by=None, drill=False)),
         facts=lambda _w, _s: {"now_ms": NOW + 1000}, answers=NOTHING_STORED,
         asks=(Lookup.STORED,), expect=Refuse, reason=Reason.ENV_DEADLINE_PAST,
         check=lambda o: isinstance(o, Refuse) and "terms.sign_by" in o.detail),
    Case("inline: below the disk watermark it is refused, retriable", Path.INLINE,
         facts=lambda _w, _s: {"disk_low": DISK_LOW}, answers=NOTHING_STORED,
         asks=(Lookup.STORED,), expect=Refuse, reason=Reason.HUB_DISK_LOW,
         check=lambda o: isinstance(o, Refuse) and o.retriable and o.detail == DISK_LOW),
    Case("inline: a document rule refuses it, naming the rule", Path.INLINE,
         build=lambda w: letter(w, doc_type=DocType.REPORT), answers=NOTHING_STORED,
         asks=(Lookup.STORED,), expect=Refuse, reason=RULES,
         check=lambda o: isinstance(o, Refuse) and o.reason == "rule.type_direction"
         and o.rules == ("type_direction",) and not o.retriable),
    Case("end: a rule refusal at the end also asks whether it is a stored message", Path.END,
         build=lambda w: letter(w, doc_type=DocType.REPORT), answers=NOTHING_STORED,
         asks=(Lookup.STORED,), expect=Refuse, reason=RULES),
    # ---- a 批复 needs its 请示
    Case("inline: a 批复 asks for its 请示 and is admitted when the recipient sent it",
         Path.INLINE, build=reply, answers={Lookup.REQUEST: lambda _s: REQUEST_FROM_CC},
         asks=(Lookup.REQUEST,)),
    Case("head: a 批复's head asks the store twice: a resend? its 请示?", Path.HEAD,
         build=reply, answers={**NOTHING_STORED, Lookup.REQUEST: lambda _s: REQUEST_FROM_CC},
         asks=(Lookup.STORED, Lookup.REQUEST)),
    Case("inline: a 批复 to no stored 请示 is refused by the rule", Path.INLINE,
         build=reply, answers={**NOTHING_STORED, Lookup.REQUEST: lambda _s: None},
         asks=(Lookup.REQUEST, Lookup.STORED), expect=Refuse, reason=RULES,
         check=lambda o: isinstance(o, Refuse) and o.rules == ("reply_request",)),
    # ---- a petition's case: continued only by an organisation it passed through
    Case("inline: a petition with a new case number is admitted once the store is asked",
         Path.INLINE, build=petition, answers={Lookup.CASE: lambda _s: CaseFacts(None)},
         asks=(Lookup.CASE,)),
    Case("inline: a case transferred on by an organisation it passed through is admitted",
         Path.INLINE, build=petition,
         answers={Lookup.CASE: lambda _s: CaseFacts(frozenset({"cn.gov", "jl.gov"}))},
         asks=(Lookup.CASE,)),
    Case("inline: a case that never passed through the sender is refused, naming it",
         Path.INLINE, build=petition,
         answers={**NOTHING_STORED,
                  Lookup.CASE: lambda _s: CaseFacts(frozenset({"cn.gov", "jl.jl"}))},
         asks=(Lookup.CASE, Lookup.STORED), expect=Refuse, reason=Reason.ENV_CASE_NOT_HELD,
         check=lambda o: isinstance(o, Refuse) and "吉信〔2026〕7号" in o.detail),
    Case("inline: the sender's own petition extended by 30 days (延期) is admitted",
         Path.INLINE, build=lambda w: petition(w, done_by=NOW + 40 * DAY_MS),
         answers={Lookup.CASE: lambda _s: CaseFacts(frozenset({"jl.gov"}),
                                                    ("jl.gov", NOW + 10 * DAY_MS))},
         asks=(Lookup.CASE,)),
    Case("inline: an extension beyond 30 days is refused, saying by how much", Path.INLINE,
         build=lambda w: petition(w, done_by=NOW + 41 * DAY_MS),
         answers={**NOTHING_STORED,
                  Lookup.CASE: lambda _s: CaseFacts(frozenset({"jl.gov"}),
                                                    ("jl.gov", NOW + 10 * DAY_MS))},
         asks=(Lookup.CASE, Lookup.STORED), expect=Refuse,
         reason=Reason.ENV_EXTENSION_TOO_LONG,
         check=lambda o: isinstance(o, Refuse) and "31 days" in o.detail),
    # ---- the body, last
    Case("inline: a body longer than signed is refused", Path.INLINE,
         facts=lambda _w, s: {"body": s.body + b"x"},
         expect=Refuse, reason=Reason.BODY_TRAILING_DATA),
    Case("inline: a body shorter than signed is refused", Path.INLINE,
         facts=lambda _w, s: {"body": s.body[:-1]},
         expect=Refuse, reason=Reason.BODY_TRUNCATED),
    Case("inline: a body whose hash differs is refused", Path.INLINE,
         facts=lambda _w, s: {"body": tampered(s.body)},
         expect=Refuse, reason=Reason.BODY_HASH_MISMATCH),
    Case("end: the spool's verdict on a damaged body is the refusal", Path.END,
         facts=lambda _w, s: {"spooled": body_problem(s.envelope, tampered(s.body))},
         expect=Refuse, reason=Reason.BODY_HASH_MISMATCH),
    Case("end: gating comes before the body's verdict", Path.END,
         facts=lambda w, s: {
             "spooled": body_problem(s.envelope, tampered(s.body)),
             "directory": changed_org(w.directory, "jl.cc", clearance=Classification.PUBLIC),
         },
         expect=Refuse, reason=Reason.POLICY_RECIPIENT_CLEARANCE),
    # ---- resends of a stored message
    Case("inline resend: a late resend of a stored message is ACCEPTED again", Path.INLINE,
         facts=lambda _w, _s: LATE, answers=STORED_SAME, asks=(Lookup.STORED,),
         expect=Resend, check=lambda o: o == Resend(ReceiptStatus.ACCEPTED)),
    Case("inline resend: a stored message refused by today's rules keeps its answer",
         Path.INLINE, build=lambda w: letter(w, doc_type=DocType.REPORT),
         answers=STORED_SAME, asks=(Lookup.STORED,), expect=Resend),
    Case("head resend: a head of a stored message gets its answer, no transfer", Path.HEAD,
         answers=STORED_SAME, asks=(Lookup.STORED,), expect=Resend),
    Case("head resend: a stored quarantined message gets its notice again", Path.HEAD,
         answers=STORED_QUARANTINED, asks=(Lookup.STORED,), expect=Resend,
         check=lambda o: o == Resend(ReceiptStatus.REJECTED, Reason.POLICY_ARRIVAL_CHANNEL,
                                     QUARANTINED_AGAIN)),
    Case("head resend: a msg_id stored with another frame is refused as a replay", Path.HEAD,
         answers=STORED_OTHER, asks=(Lookup.STORED,), expect=Refuse,
         reason=Reason.REPLAY_DUPLICATE,
         check=lambda o: isinstance(o, Refuse) and "fresh random msg_id" in o.detail),
    Case("end resend: a rule refusal of a stored message at the end keeps the answer",
         Path.END, build=lambda w: letter(w, doc_type=DocType.REPORT),
         answers=STORED_SAME, asks=(Lookup.STORED,), expect=Resend),
    Case("inline resend: gating refuses even a stored message (as always)", Path.INLINE,
         facts=dir_with(org="jl.gov", clearance=Classification.PUBLIC),
         answers=STORED_SAME, expect=Refuse, reason=Reason.POLICY_SENDER_CLEARANCE),
]  # fmt: skip


def facts_for(world: World, case: Case, sealed: Letter) -> Facts:
    base = Facts(
        sealed.envelope,
        case.path,
        "govnet",
        world.directory,
        NOW,
        SKEW,
        body=sealed.body if case.path is Path.INLINE else None,
    )
    return replace(base, **case.facts(world, sealed))


def run(
    facts: Facts, answers: Mapping[Lookup, Callable[[Letter], Any]], sealed: Letter
) -> tuple[Outcome, list[Lookup]]:
    """admit, and admit again with the store's answer after each NeedLookup."""
    asked: list[Lookup] = []
    for _ in range(len(Lookup) + 1):
        outcome = admit(facts)
        if not isinstance(outcome, NeedLookup):
            return outcome, asked
        asked.append(outcome.what)
        answer = answers[outcome.what](sealed)
        field_name = {
            Lookup.STORED: "stored",
            Lookup.REQUEST: "request",
            Lookup.CASE: "case",
        }[outcome.what]
        facts = replace(facts, **{field_name: answer})
    raise AssertionError(f"admit kept asking: {asked}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_admit_decides_each_case_of_the_table(world: World, case: Case) -> None:
    sealed = case.build(world)
    outcome, asked = run(facts_for(world, case, sealed), case.answers, sealed)
    assert type(outcome) is case.expect, outcome
    assert tuple(asked) == case.asks
    if isinstance(outcome, Refuse):
        assert (RULES if outcome.rules else outcome.reason) == case.reason
        assert outcome.detail
    elif isinstance(outcome, Quarantine):
        assert outcome.reason == case.reason
        assert "quarantined" in outcome.detail
    assert case.check(outcome), outcome


def test_the_table_covers_every_reason_admit_can_return() -> None:
    covered = {c.reason for c in CASES if c.reason is not None}
    assert covered == set(REFUSALS) | set(QUARANTINES)


def reasons_constructed(module: ModuleType, kind: type) -> set[Reason]:
    """The ``Reason.X`` each ``kind(...)`` call in ``module``'s source is given first."""
    found = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == kind.__name__
        ):
            first = node.args[0] if node.args else node.keywords[0].value
            assert isinstance(first, ast.Attribute), ast.unparse(node)
            found.add(Reason[first.attr])
    return found


def test_admit_declares_every_reason_gating_can_refuse_or_quarantine_with() -> None:
    # The table's self-check above sees only the reasons admit declares: a refusal that
    # schemas.gating.decide gained and GATING lacks would pass it unseen.
    assert reasons_constructed(router, router.Reject) == set(GATING)
    assert reasons_constructed(hops, hops.Wrong) == set(HOPS)
    assert reasons_constructed(router, router.Quarantine) == set(QUARANTINES)


def test_the_table_covers_every_path_and_every_question() -> None:
    assert {c.path for c in CASES} == set(Path)
    assert {q for c in CASES for q in c.asks} == set(Lookup)
    assert {c.expect for c in CASES} == {Admit, Quarantine, Refuse, Resend}


# ---------------------------------------------------------------------------- details


def test_a_head_reserves_its_whole_body_on_disk_and_an_inline_body_only_the_watermark(
    world: World,
) -> None:
    sealed = letter(world, contents=(b"x" * 5000,))
    assert disk_need(Path.HEAD, sealed.envelope) == sealed.envelope.body.size > 5000
    assert disk_need(Path.INLINE, sealed.envelope) == 0
    assert disk_need(Path.END, sealed.envelope) == 0


def fresh_facts(world: World, path: Path, sealed: Letter, **change: Any) -> Facts:
    body = sealed.body if path is Path.INLINE else None
    facts = Facts(sealed.envelope, path, "govnet", world.directory, NOW, SKEW, body=body)
    return replace(facts, **change)


def test_a_new_head_below_the_watermark_is_refused_retriable(world: World) -> None:
    facts = fresh_facts(world, Path.HEAD, letter(world), disk_low=DISK_LOW, stored=None)
    assert admit(facts) == Refuse(Reason.HUB_DISK_LOW, DISK_LOW, retriable=True)


def test_an_inline_refusal_stands_once_the_store_has_answered_none(world: World) -> None:
    facts = fresh_facts(world, Path.INLINE, letter(world), now_ms=NOW + SKEW + 1, stored=None)
    outcome = admit(facts)
    assert isinstance(outcome, Refuse)
    assert outcome.reason == Reason.REPLAY_CLOCK_SKEW


def test_the_store_answer_for_a_resend_names_the_msg_id_when_the_frame_differs() -> None:
    answer = answer_stored(Stored(same=False, state=MessageState.ACCEPTED), "0123abcd")
    assert answer == Refuse(
        Reason.REPLAY_DUPLICATE,
        "msg_id 0123abcd was already used for another message; "
        "every message needs a fresh random msg_id",
    )
