"""The routing brain (schemas.gating.decide, as the hub runs it) against an oracle written
from ARCHITECTURE section 2.

The oracle below knows nothing of schemas.gating: it orders labels by its own list and
applies the gating rules in the documented order (arrival ceiling first, then provenance,
then the clearances, then least privilege). Directories are built directly from the wire
models, so every case states exactly which organisation sits on which channel.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import itertools
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import gating
from schemas.directory import ChannelEntry, Directory, KeyEntry, OrgEntry, OrgLevel
from schemas.envelope import Header, verify_envelope
from schemas.errors import Reason
from schemas.gating import Accept, Decision, Quarantine, Reject, Route, decide
from schemas.keys import EncryptionKey, SigningKey
from schemas.labels import Classification, DocType, Precedence, SecrecyPeriod
from tests.world import World

# The oracle's own order: it never asks Classification how to compare.
ORDER = (
    Classification.PUBLIC,
    Classification.INTERNAL,
    Classification.CONFIDENTIAL,
    Classification.SECRET,
    Classification.TOP_SECRET,
)
CHANNELS = {  # ARCHITECTURE section 1: the four networks and their ceilings
    "internet": Classification.PUBLIC,
    "govnet": Classification.INTERNAL,
    "classified": Classification.SECRET,
    "core": Classification.TOP_SECRET,
}


def rank(label: Classification) -> int:
    return ORDER.index(label)


def slug(label: Classification) -> str:
    return label.name.lower().replace("_", "-")


# ---------------------------------------------------------------------------- builders


@functools.cache
def held_keys(org_id: str) -> tuple[KeyEntry, KeyEntry]:
    """A signing and an encryption key for ``org_id`` (fixed per id): the router reads no
    key, but an organisation without any is awaiting its keys and receives nothing."""
    sign = SigningKey(hashlib.sha256(b"sign " + org_id.encode()).digest())
    enc = EncryptionKey(hashlib.sha256(b"encrypt " + org_id.encode()).digest())
    return (
        KeyEntry(kid=sign.kid, public=sign.public, not_before=0, not_after=1 << 50),
        KeyEntry(kid=enc.kid, public=enc.public, not_before=0, not_after=1 << 50),
    )


def org(org_id: str, clearance: Classification, channels: Sequence[str]) -> OrgEntry:
    sign, enc = held_keys(org_id)
    return OrgEntry(
        id=org_id,
        name_zh=f"单位{org_id}",
        name_en=f"Organisation {org_id}",
        level=OrgLevel.DEPARTMENT,
        parent=None,
        code=None,
        clearance=clearance,
        channels=tuple(channels),
        sign_keys=(sign,),
        enc_keys=(enc,),
        directive_to=(),
    )


def directory(
    orgs: Sequence[OrgEntry], channels: dict[str, Classification] | None = None
) -> Directory:
    return Directory(
        v=1,
        hub_id="t.hub",
        version=1,
        issued_at=0,
        expires_at=1,
        hub_keys=(),
        channels=tuple(
            ChannelEntry(id=cid, name=f"channel {cid}", ceiling=ceiling)
            for cid, ceiling in (channels or CHANNELS).items()
        ),
        orgs=tuple(orgs),
        revoked=(),
        groups=(),
    )


def header(
    sender: str,
    to: Sequence[str],
    label: Classification,
    *,
    cc: Sequence[str] = (),
) -> Header:
    """A header as verify_envelope would hand it over (the router reads no keys)."""
    return Header(
        v=1,
        msg_id=bytes(range(16)),
        sender=sender,
        sender_kid="0123456789abcdef",
        to=tuple(to),
        cc=tuple(cc),
        classification=label,
        precedence=Precedence.ROUTINE,
        doc_type=DocType.NOTICE,
        created_at=1_795_000_000_000,
        expires_at=None,
        in_reply_to=None,
        dir_version=1,
        doc_number=None,
        signatory=None,
        secrecy_period=None,
        copy_numbers={},
        directive=False,
        keys={},
    )


# Every clearance as a sender and as a recipient, everyone on all four channels.
MATRIX_DIRECTORY = directory(
    [org(f"s.{slug(c)}", c, list(CHANNELS)) for c in ORDER]
    + [org(f"r.{slug(c)}", c, list(CHANNELS)) for c in ORDER]
)


# ---------------------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class Expected:
    kind: str  # "accept" | "reject" | "quarantine"
    reason: Reason | None = None
    routes: tuple[tuple[str, str], ...] = ()
    about: str | None = None  # the recipient a refusal names


def oracle(
    d: Directory, sender_id: str, recipients: Sequence[str], label: Classification, arrival: str
) -> Expected:
    channels = {c.id: c.ceiling for c in d.channels}
    orgs = {o.id: o for o in d.orgs}
    # Rule 3: a label above the arrival channel's ceiling has leaked; nothing else matters.
    if rank(label) > rank(channels[arrival]):
        return Expected("quarantine", Reason.POLICY_ARRIVAL_CHANNEL)
    sender = orgs[sender_id]
    if arrival not in sender.channels:
        return Expected("reject", Reason.POLICY_SENDER_NOT_ON_CHANNEL)
    # Rule 1, the sender's side.
    if rank(label) > rank(sender.clearance):
        return Expected("reject", Reason.POLICY_SENDER_CLEARANCE)
    routes = []
    for rid in recipients:
        recipient = orgs[rid]
        if rank(label) > rank(recipient.clearance):
            return Expected("reject", Reason.POLICY_RECIPIENT_CLEARANCE, about=rid)
        # Rule 2: least privilege among the channels both ends share.
        candidates = sorted(
            (rank(channels[c]), c)
            for c in sender.channels
            if c in recipient.channels and rank(channels[c]) >= rank(label)
        )
        if not candidates:
            return Expected("reject", Reason.POLICY_NO_CHANNEL, about=rid)
        routes.append((rid, candidates[0][1]))
    return Expected("accept", routes=tuple(routes))


def outcome(decision: Decision) -> Expected:
    match decision:
        case Accept(routes):
            return Expected("accept", routes=tuple((r.recipient, r.channel) for r in routes))
        case Reject(reason, _detail):
            return Expected("reject", reason)
        case Quarantine(reason, _detail):
            return Expected("quarantine", reason)
    raise AssertionError(f"not a decision: {decision!r}")


def without_about(expected: Expected) -> Expected:
    return Expected(expected.kind, expected.reason, expected.routes)


# ---------------------------------------------------------------------------- the matrix

MATRIX = list(itertools.product(ORDER, CHANNELS, ORDER, ORDER))


@pytest.mark.parametrize(
    ("label", "arrival", "sender_clearance", "recipient_clearance"),
    MATRIX,
    ids=[f"{a.name}-on-{b}-from-{c.name}-to-{d.name}" for a, b, c, d in MATRIX],
)
def test_decision_matches_the_gating_rules_for_every_label_channel_and_clearance(
    label: Classification,
    arrival: str,
    sender_clearance: Classification,
    recipient_clearance: Classification,
) -> None:
    sender, recipient = f"s.{slug(sender_clearance)}", f"r.{slug(recipient_clearance)}"

    decision = decide(header(sender, [recipient], label), arrival, MATRIX_DIRECTORY)

    expected = oracle(MATRIX_DIRECTORY, sender, [recipient], label, arrival)
    assert outcome(decision) == without_about(expected)


def test_the_matrix_reaches_every_kind_of_decision() -> None:
    """A matrix whose cases all end alike would prove little about the order of the rules."""
    seen = set()
    for label, arrival, sc, rc in MATRIX:
        result = outcome(
            decide(header(f"s.{slug(sc)}", [f"r.{slug(rc)}"], label), arrival, MATRIX_DIRECTORY)
        )
        seen.add((result.kind, result.reason))
    assert seen == {
        ("accept", None),
        ("quarantine", Reason.POLICY_ARRIVAL_CHANNEL),
        ("reject", Reason.POLICY_SENDER_CLEARANCE),
        ("reject", Reason.POLICY_RECIPIENT_CLEARANCE),
    }


LEAST_PRIVILEGE = {  # the lowest of the four ceilings at or above each label
    Classification.PUBLIC: "internet",
    Classification.INTERNAL: "govnet",
    Classification.CONFIDENTIAL: "classified",  # no CONFIDENTIAL network: the next one up
    Classification.SECRET: "classified",
    Classification.TOP_SECRET: "core",
}


@pytest.mark.parametrize("label", ORDER, ids=[c.name for c in ORDER])
def test_accepted_message_goes_on_the_lowest_channel_that_admits_its_label(
    label: Classification,
) -> None:
    decision = decide(header("s.top-secret", ["r.top-secret"], label), "core", MATRIX_DIRECTORY)

    assert decision == Accept((Route("r.top-secret", LEAST_PRIVILEGE[label]),))


# ---------------------------------------------------------------------------- specific rules


def test_internal_between_orgs_on_govnet_and_classified_goes_on_govnet() -> None:
    d = directory(
        [
            org("jl.gov", Classification.SECRET, ["classified", "govnet"]),
            org("cn.gov", Classification.SECRET, ["classified", "govnet"]),
        ]
    )
    decision = decide(header("jl.gov", ["cn.gov"], Classification.INTERNAL), "classified", d)

    assert decision == Accept((Route("cn.gov", "govnet"),))


def test_secret_between_orgs_on_govnet_and_classified_goes_on_classified() -> None:
    d = directory(
        [
            org("jl.gov", Classification.SECRET, ["govnet", "classified"]),
            org("cn.gov", Classification.SECRET, ["govnet", "classified"]),
        ]
    )
    decision = decide(header("jl.gov", ["cn.gov"], Classification.SECRET), "classified", d)

    assert decision == Accept((Route("cn.gov", "classified"),))


def test_confidential_without_a_shared_secret_channel_is_refused_for_lack_of_a_channel() -> None:
    d = directory(
        [
            org("jl.gov", Classification.SECRET, ["govnet", "classified"]),
            org("jl.cc", Classification.SECRET, ["govnet", "core"]),
            org("jl.jl", Classification.SECRET, ["govnet"]),
        ]
    )
    # jl.cc shares govnet (too low) and nothing else usable; core is not shared.
    decision = decide(header("jl.gov", ["jl.cc"], Classification.CONFIDENTIAL), "classified", d)

    assert isinstance(decision, Reject)
    assert decision.reason is Reason.POLICY_NO_CHANNEL
    assert "jl.gov" in decision.detail
    assert "jl.cc" in decision.detail
    assert "govnet" in decision.detail  # what they do share
    assert "CONFIDENTIAL" in decision.detail


def test_sender_not_provisioned_on_the_arrival_channel_is_refused() -> None:
    d = directory(
        [
            org("jl.gov", Classification.SECRET, ["govnet", "classified"]),
            org("jl.cc", Classification.INTERNAL, ["govnet"]),
        ]
    )
    decision = decide(header("jl.cc", ["jl.gov"], Classification.PUBLIC), "internet", d)

    assert isinstance(decision, Reject)
    assert decision.reason is Reason.POLICY_SENDER_NOT_ON_CHANNEL
    assert "jl.cc" in decision.detail
    assert "internet" in decision.detail


# Someone publishes on a channel the directory does not provision them on (no broker ACL
# stops it on the embedded broker). Whether the label fits that channel decides: below
# the ceiling it is a provenance refusal; above it the document has leaked (rule 3).
NOT_ON_CHANNEL = [
    (label, arrival)
    for label in ORDER
    for arrival in ("internet", "core")  # the sender below is on govnet and classified only
]


@pytest.mark.parametrize(
    ("label", "arrival"), NOT_ON_CHANNEL, ids=[f"{a.name}-on-{b}" for a, b in NOT_ON_CHANNEL]
)
def test_message_from_a_sender_not_on_the_arrival_channel_is_quarantined_if_it_leaked(
    label: Classification, arrival: str
) -> None:
    d = directory(
        [
            org("cn.gov", Classification.TOP_SECRET, ["govnet", "classified"]),
            org("jl.gov", Classification.TOP_SECRET, ["govnet", "classified"]),
        ]
    )
    decision = decide(header("cn.gov", ["jl.gov"], label), arrival, d)

    if rank(label) > rank(CHANNELS[arrival]):
        assert isinstance(decision, Quarantine), decision
        assert decision.reason is Reason.POLICY_ARRIVAL_CHANNEL
    else:
        assert isinstance(decision, Reject), decision
        assert decision.reason is Reason.POLICY_SENDER_NOT_ON_CHANNEL


def test_unknown_arrival_channel_is_refused_not_routed() -> None:
    decision = decide(
        header("s.secret", ["r.secret"], Classification.PUBLIC), "nosuchnet", MATRIX_DIRECTORY
    )

    assert isinstance(decision, Reject)
    assert decision.reason is Reason.POLICY_SENDER_NOT_ON_CHANNEL


# ---------------------------------------------------------------------------- the Jilin exchange


def test_real_envelopes_on_the_jilin_topology_are_gated_as_the_oracle_says(world: World) -> None:
    """Headers that went through seal and verify_envelope, on config/topology.toml."""
    cases = [
        ("jl.gov", ["jl.cc"], Classification.INTERNAL, "govnet"),
        ("jl.gov", ["cn.gov"], Classification.INTERNAL, "classified"),  # goes down to govnet
        ("jl.gov", ["cn.gov"], Classification.SECRET, "classified"),
        ("jl.gov", ["cn.gov"], Classification.SECRET, "govnet"),  # leaked
        ("jl.gov", ["cn.gov", "jl.cc"], Classification.SECRET, "classified"),
        ("jl.cc", ["jl.gov"], Classification.CONFIDENTIAL, "govnet"),  # leaked before all else
        ("jl.cc", ["jl.gov"], Classification.INTERNAL, "govnet"),
        (
            "jl.gov",
            ["jl.cc"],
            Classification.PUBLIC,
            "internet",
        ),  # arrives on internet, goes on govnet
    ]
    for sender, to, label, arrival in cases:
        extra: dict[str, object] = {}
        if label.is_state_secret:
            extra = {
                "secrecy_period": SecrecyPeriod.parse("1年"),
                "copy_numbers": {r: f"{i:06d}" for i, r in enumerate(to, start=1)},
            }
        sealed, _ = world.seal(sender, to, classification=label, **extra)
        verified = verify_envelope(sealed.frame, world.directory, expected_sender=sender)

        decision = decide(verified.header, arrival, world.directory)

        expected = oracle(world.directory, sender, to, label, arrival)
        assert outcome(decision) == without_about(expected), (sender, to, label, arrival)


# ---------------------------------------------------------------------------- refusal wording


def test_quarantine_detail_names_the_label_and_the_channel_ceiling() -> None:
    decision = decide(
        header("s.secret", ["r.secret"], Classification.SECRET), "govnet", MATRIX_DIRECTORY
    )

    assert isinstance(decision, Quarantine)
    assert str(Classification.SECRET) in decision.detail  # "SECRET 机密"
    assert "govnet" in decision.detail
    assert str(Classification.INTERNAL) in decision.detail  # govnet's ceiling
    assert_sentence(decision.detail)


def test_sender_clearance_refusal_names_label_sender_and_its_clearance() -> None:
    decision = decide(
        header("s.internal", ["r.secret"], Classification.SECRET), "classified", MATRIX_DIRECTORY
    )

    assert isinstance(decision, Reject)
    assert decision.reason is Reason.POLICY_SENDER_CLEARANCE
    assert str(Classification.SECRET) in decision.detail
    assert "s.internal" in decision.detail
    assert str(Classification.INTERNAL) in decision.detail
    assert_sentence(decision.detail)


def test_recipient_clearance_refusal_names_label_recipient_and_its_clearance() -> None:
    decision = decide(
        header("s.secret", ["r.confidential"], Classification.SECRET),
        "classified",
        MATRIX_DIRECTORY,
    )

    assert isinstance(decision, Reject)
    assert decision.reason is Reason.POLICY_RECIPIENT_CLEARANCE
    assert str(Classification.SECRET) in decision.detail
    assert "r.confidential" in decision.detail
    assert str(Classification.CONFIDENTIAL) in decision.detail
    assert_sentence(decision.detail)


def assert_sentence(detail: str) -> None:
    """Words for an operator: no Python reprs, and it says what to do."""
    assert "Classification." not in detail
    assert "<" not in detail
    assert ";" in detail or "." in detail  # the problem, then the remedy
    assert len(detail.split()) >= 10


# ---------------------------------------------------------------------------- several recipients


def test_one_uncleared_recipient_among_several_rejects_the_whole_message_naming_it() -> None:
    d = MATRIX_DIRECTORY
    decision = decide(
        header(
            "s.secret",
            ["r.secret", "r.top-secret"],
            Classification.SECRET,
            cc=["r.internal"],
        ),
        "classified",
        d,
    )

    assert isinstance(decision, Reject)
    assert decision.reason is Reason.POLICY_RECIPIENT_CLEARANCE
    assert "r.internal" in decision.detail
    assert "r.secret" not in decision.detail
    assert "r.top-secret" not in decision.detail


def test_one_unreachable_recipient_among_several_rejects_the_whole_message_naming_it() -> None:
    d = directory(
        [
            org("jl.gov", Classification.SECRET, ["govnet", "classified"]),
            org("cn.gov", Classification.SECRET, ["govnet", "classified"]),
            org("jl.cc", Classification.SECRET, ["govnet"]),
        ]
    )
    decision = decide(header("jl.gov", ["cn.gov", "jl.cc"], Classification.SECRET), "classified", d)

    assert isinstance(decision, Reject)
    assert decision.reason is Reason.POLICY_NO_CHANNEL
    assert "jl.cc" in decision.detail
    assert "cn.gov" not in decision.detail


def test_every_recipient_gets_its_own_least_privileged_channel() -> None:
    d = directory(
        [
            org("jl.gov", Classification.SECRET, ["internet", "govnet", "classified"]),
            org("cn.gov", Classification.SECRET, ["govnet", "classified"]),
            org("jl.cc", Classification.INTERNAL, ["govnet"]),
            org("jl.web", Classification.PUBLIC, ["internet", "govnet"]),
        ]
    )
    decision = decide(
        header("jl.gov", ["cn.gov", "jl.cc", "jl.web"], Classification.PUBLIC, cc=()),
        "govnet",
        d,
    )

    assert decision == Accept(
        (Route("cn.gov", "govnet"), Route("jl.cc", "govnet"), Route("jl.web", "internet"))
    )


# ---------------------------------------------------------------------------- random directories

LABELS = st.sampled_from(ORDER)
# Five possible channels with distinct ceilings, so "the lowest ceiling" is one channel.
ALL_CHANNELS = {**CHANNELS, "restricted": Classification.CONFIDENTIAL}


@st.composite
def worlds(
    draw: st.DrawFn,
) -> tuple[Directory, str, list[str], Classification, str]:
    channel_ids = draw(
        st.lists(st.sampled_from(sorted(ALL_CHANNELS)), min_size=1, max_size=5, unique=True)
    )
    channels = {c: ALL_CHANNELS[c] for c in channel_ids}
    count = draw(st.integers(min_value=2, max_value=6))
    orgs = [
        org(
            f"o{i}",
            draw(LABELS),
            draw(st.lists(st.sampled_from(channel_ids), min_size=1, unique=True)),
        )
        for i in range(count)
    ]
    sender = draw(st.sampled_from(orgs))
    others = [o.id for o in orgs if o.id != sender.id]
    recipients = draw(st.lists(st.sampled_from(others), min_size=1, unique=True))
    arrival = draw(st.sampled_from(sender.channels))  # provenance is tested above
    return directory(orgs, channels), sender.id, recipients, draw(LABELS), arrival


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_decisions_over_random_directories_match_the_oracle(
    case: tuple[Directory, str, list[str], Classification, str],
) -> None:
    d, sender, recipients, label, arrival = case

    decision = decide(header(sender, recipients, label), arrival, d)

    expected = oracle(d, sender, recipients, label, arrival)
    assert outcome(decision) == without_about(expected)
    if expected.about is not None:
        assert isinstance(decision, Reject)
        assert expected.about in decision.detail


@settings(max_examples=150, deadline=None)
@given(worlds())
def test_nothing_is_ever_routed_on_a_channel_below_its_label_or_not_shared(
    case: tuple[Directory, str, list[str], Classification, str],
) -> None:
    d, sender, recipients, label, arrival = case

    decision = decide(header(sender, recipients, label), arrival, d)

    if isinstance(decision, Accept):
        assert [r.recipient for r in decision.routes] == recipients
        for route in decision.routes:
            channel = d.channel(route.channel)
            assert channel is not None
            assert rank(channel.ceiling) >= rank(label)
            sender_org, recipient_org = d.org(sender), d.org(route.recipient)
            assert sender_org is not None
            assert recipient_org is not None
            assert route.channel in sender_org.channels
            assert route.channel in recipient_org.channels


# ---------------------------------------------------------------------------- purity


def test_router_imports_no_io_clock_or_framework_module() -> None:
    tree = ast.parse(Path(gating.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module)

    roots = {name.split(".")[0] for name in imported}
    assert roots <= {"__future__", "collections", "dataclasses", "schemas"}, roots


@contextmanager
def io_watch() -> Iterator[list[str]]:
    """Collect the audit events (open, socket, subprocess, ...) raised inside the block."""
    seen: list[str] = []
    _WATCHERS.append(seen)
    try:
        yield seen
    finally:
        _WATCHERS.remove(seen)


_WATCHERS: list[list[str]] = []


def _audit_hook(event: str, _args: tuple[object, ...]) -> None:
    if _WATCHERS and event.partition(".")[0] in {"open", "socket", "subprocess", "os", "shutil"}:
        _WATCHERS[-1].append(event)


sys.addaudithook(_audit_hook)  # audit hooks cannot be removed; it records only when watched


def test_decide_reads_no_clock_and_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_clock() -> float:
        raise AssertionError("decide read the clock")

    for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter"):
        monkeypatch.setattr(time, name, no_clock)
    cases = [
        (header("s.secret", ["r.secret", "r.public"], label), arrival)
        for label in ORDER
        for arrival in CHANNELS
    ]

    with io_watch() as events:
        first = [decide(h, a, MATRIX_DIRECTORY) for h, a in cases]
        second = [decide(h, a, MATRIX_DIRECTORY) for h, a in cases]

    assert events == []
    assert first == second  # the same question always gets the same answer
