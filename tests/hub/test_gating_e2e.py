"""Gating through one real hubd, over the whole matrix (ARCHITECTURE section 2).

Every combination of 5 labels x 4 arrival channels x 5 sender clearances x 5 recipient
clearances (500 messages) goes through one hub, each from a spoke connected on all four
channels and published on the arrival channel under test. The expected outcome of each
comes from :func:`oracle`, written from section 2 alone (it does not call
:mod:`schemas.gating`), and each message's receipts and delivery are checked against it.

Senders and recipients are distinct organisations (``gt.s.<label>`` and ``gt.r.<label>``):
an organisation cannot address itself, so "one org per clearance level" becomes one
sender and one recipient per level.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

from schemas.ids import msg_id_text
from schemas.keys import EncryptionKey, SigningKey
from schemas.labels import Classification
from schemas.receipts import ReceiptStatus
from schemas.topology import parse_topology
from tests.hub.conftest import NO_RETRIES, HubFactory, RecordingSpoke, SpokeMaker
from tests.hubproc import HubProcess
from tests.world import OrgKeys, World, _directory

# Section 2, restated as plain data so that the oracle owes nothing to schemas.labels.
ORDER = ("PUBLIC", "INTERNAL", "CONFIDENTIAL", "SECRET", "TOP_SECRET")
CEILING = {"internet": "PUBLIC", "govnet": "INTERNAL", "classified": "SECRET", "core": "TOP_SECRET"}
CHANNELS = tuple(CEILING)


def rank(label: str) -> int:
    return ORDER.index(label)


@dataclass(frozen=True)
class Org:
    id: str
    clearance: str
    channels: tuple[str, ...]


SENDERS = {
    label: Org(f"gt.s.{label.lower().replace('_', '-')}", label, CHANNELS) for label in ORDER
}
RECIPIENTS = {
    label: Org(f"gt.r.{label.lower().replace('_', '-')}", label, CHANNELS) for label in ORDER
}
# Partly provisioned organisations, for the rules the full matrix cannot reach.
PARTIAL = {
    "gt.p.three": Org("gt.p.three", "SECRET", ("internet", "govnet", "classified")),
    "gt.p.edges": Org("gt.p.edges", "TOP_SECRET", ("govnet", "core")),
    "gt.p.upper": Org("gt.p.upper", "TOP_SECRET", ("govnet", "classified", "core")),
}
ORGS = {o.id: o for o in (*SENDERS.values(), *RECIPIENTS.values(), *PARTIAL.values())}


@dataclass(frozen=True)
class Outcome:
    kind: str  # "deliver" | "reject" | "quarantine"
    detail: str  # the delivery channel, or the reason code


def oracle(label: str, arrival: str, sender: Org, recipient: Org) -> Outcome:
    """What section 2 says the hub must do with one message.

    Where several rules are broken the leak comes first: a message on a channel below its
    label "has already leaked" whoever sent it, so it is quarantined rather than refused
    for a lesser reason. Then the sender's clearance, then the recipient's (rule 1), then
    the channel (rule 2, the lowest-ceiling channel both ends have that admits the label).
    """
    if rank(label) > rank(CEILING[arrival]):
        return Outcome("quarantine", "policy.arrival_channel_below_label")
    if arrival not in sender.channels:
        return Outcome("reject", "policy.sender_not_on_channel")
    if rank(label) > rank(sender.clearance):
        return Outcome("reject", "policy.sender_clearance")
    if rank(label) > rank(recipient.clearance):
        return Outcome("reject", "policy.recipient_clearance")
    shared = [c for c in CHANNELS if c in sender.channels and c in recipient.channels]
    admitting = [c for c in shared if rank(CEILING[c]) >= rank(label)]
    if not admitting:
        return Outcome("reject", "policy.no_channel")
    return Outcome("deliver", min(admitting, key=lambda c: rank(CEILING[c])))


def topology_toml() -> str:
    lines = ['[hub]\nid = "gt.hub"\n']
    for channel, ceiling in CEILING.items():
        lines.append(f'[[channels]]\nid = "{channel}"\nname = "{channel}"\nceiling = "{ceiling}"\n')
    for org in ORGS.values():
        channels = ", ".join(f'"{c}"' for c in org.channels)
        lines.append(
            f'[[orgs]]\nid = "{org.id}"\nname_zh = "测试单位"\nname_en = "{org.id}"\n'
            f'level = "department"\nclearance = "{org.clearance}"\nchannels = [{channels}]\n'
        )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def world() -> World:
    """Overrides the Jilin world for this module: the gating topology, fresh keys."""
    topology = parse_topology(topology_toml(), source="test_gating_e2e topology")
    keys = {o.id: OrgKeys(SigningKey.generate(), EncryptionKey.generate()) for o in topology.orgs}
    hub_key = SigningKey.generate()
    return World(topology, hub_key, keys, _directory(topology, hub_key, keys, 1))


@pytest.fixture
def hub(hub_factory: HubFactory) -> HubProcess:
    """A hub whose retry timer cannot fire within a test. The matrix puts 500 messages
    through at once; on a busy machine some DELIVERED take longer than a fast retry, and
    the second copy that follows (at-least-once, as designed) is no gating outcome."""
    return hub_factory(extra_toml=NO_RETRIES)


@dataclass(frozen=True)
class Case:
    label: str
    arrival: str
    sender: Org
    recipient: Org

    @property
    def expected(self) -> Outcome:
        return oracle(self.label, self.arrival, self.sender, self.recipient)


def full_matrix() -> Iterator[Case]:
    for label, arrival, s, r in itertools.product(ORDER, CHANNELS, ORDER, ORDER):
        yield Case(label, arrival, SENDERS[s], RECIPIENTS[r])


def names(detail: str, word: str) -> bool:
    """``word`` appears in ``detail`` as a whole name ("SECRET" not inside "TOP_SECRET")."""
    return re.search(rf"(?<![A-Za-z_]){re.escape(word)}(?![A-Za-z_])", detail) is not None


async def run_cases(hub: HubProcess, spokes_at: SpokeMaker, cases: Sequence[Case]) -> list[str]:
    """Send every case through ``hub``; returns the problems found (empty: all as expected)."""
    spokes: dict[str, RecordingSpoke] = {}
    for org in ORGS:
        spokes[org] = spokes_at(hub, org, channels=CHANNELS)
        await spokes[org].connect()

    sent: dict[bytes, Case] = {}

    async def send_from(sender: str) -> None:
        spoke = spokes[sender]
        for case in (c for c in cases if c.sender.id == sender):
            sealed, body = spoke.seal(
                [case.recipient.id],
                classification=Classification.parse(case.label),
                contents=[f"{case}".encode()],
            )
            sent[sealed.header.msg_id] = case
            await spoke.publish_envelope(sealed, body, channel=case.arrival)

    await asyncio.gather(*(send_from(s) for s in {c.sender.id for c in cases}))

    def settled(msg_id: bytes, case: Case) -> bool:
        spoke = spokes[case.sender.id]
        return spoke.has(msg_id, ReceiptStatus.REJECTED) or spoke.has(
            msg_id, ReceiptStatus.DELIVERED, case.recipient.id
        )

    for sender in {c.sender.id for c in cases}:
        mine = {m: c for m, c in sent.items() if c.sender.id == sender}
        await spokes[sender].wait_for(
            lambda mine=mine: all(settled(m, c) for m, c in mine.items()), 60
        )
    # A barrier: a PUBLIC document to every recipient, after every verdict. Whatever a
    # refused message might have set going was queued before it, at the same precedence.
    barrier = SENDERS["PUBLIC"]
    for recipient in {c.recipient.id for c in cases}:
        marker = await spokes[barrier.id].send(
            [recipient], classification=Classification.PUBLIC, contents=[b"barrier"]
        )
        await spokes[recipient].wait_for(
            lambda r=recipient, m=marker.header.msg_id: m in spokes[r].received
        )

    quarantined = {
        e.get("msg_id") for e in hub.log_events() if e.get("event") == "message.quarantined"
    }
    problems = []
    for msg_id, case in sent.items():
        problems += check_case(msg_id, case, spokes, quarantined)
    return problems


def check_case(
    msg_id: bytes, case: Case, spokes: dict[str, RecordingSpoke], quarantined: set[object]
) -> list[str]:
    sender, recipient = spokes[case.sender.id], spokes[case.recipient.id]
    expected = case.expected
    entries = sender.receipts[msg_id]
    statuses = sender.statements(msg_id)
    where = {e.status: ch for ch, _, batch in sender.batches for e in batch if e.msg_id == msg_id}
    problems = []

    def bad(what: str) -> None:
        problems.append(
            f"{case.label} on {case.arrival}, {case.sender.id} -> {case.recipient.id}: {what}"
        )

    # Receipts inherit their message's label; a quarantine notice, which carries nothing of
    # the message, is labelled with the ceiling of the channel the leak came in on.
    label = CEILING[case.arrival] if expected.kind == "quarantine" else case.label
    if any(e.classification.name != label for e in entries):
        bad(f"a receipt is not labelled {label}: {[e.classification for e in entries]}")
    if expected.kind == "deliver":
        if statuses != [
            (ReceiptStatus.ACCEPTED, None),
            (ReceiptStatus.DELIVERED, case.recipient.id),
        ]:
            bad(f"expected ACCEPTED then DELIVERED, got {statuses}")
        if recipient.delivered_on.get(msg_id) != [expected.detail]:
            got = recipient.delivered_on.get(msg_id)
            bad(f"expected one delivery on {expected.detail}, got {got}")
        for status, channel in where.items():
            if rank(CEILING[channel]) < rank(case.label):
                bad(f"{status} travelled on {channel}, below the label")
        return problems
    if msg_id in recipient.received:
        bad(f"delivered on {recipient.delivered_on[msg_id]} although refused")
    if statuses != [(ReceiptStatus.REJECTED, None)]:
        bad(f"expected one REJECTED, got {statuses}")
        return problems
    (entry,) = entries
    if entry.reason != expected.detail:
        bad(f"expected reason {expected.detail}, got {entry.reason}: {entry.detail}")
        return problems
    detail = entry.detail or ""
    compared = {
        "policy.arrival_channel_below_label": (case.label, case.arrival, CEILING[case.arrival]),
        "policy.sender_clearance": (case.label, case.sender.id, case.sender.clearance),
        "policy.recipient_clearance": (case.label, case.recipient.id, case.recipient.clearance),
        "policy.no_channel": (case.label, case.sender.id, case.recipient.id),
        "policy.sender_not_on_channel": (case.sender.id, case.arrival),
    }[expected.detail]
    missing = [w for w in compared if not names(detail, w)]
    if missing:
        bad(f"the refusal does not name {missing}: {detail!r}")
    is_quarantined = msg_id_text(msg_id) in quarantined
    if (expected.kind == "quarantine") != is_quarantined:
        bad(f"message.quarantined logged: {is_quarantined}, expected {expected.kind}")
    if expected.kind == "reject" and rank(CEILING[where[ReceiptStatus.REJECTED]]) < rank(
        case.label
    ):
        bad(f"the REJECTED travelled on {where[ReceiptStatus.REJECTED]}, below the label")
    return problems


def test_the_oracle_covers_every_outcome_of_the_matrix() -> None:
    kinds = {c.expected for c in full_matrix()}
    assert {o.kind for o in kinds} == {"deliver", "reject", "quarantine"}
    assert {o.detail for o in kinds if o.kind == "deliver"} == set(CHANNELS)
    assert {o.detail for o in kinds if o.kind != "deliver"} == {
        "policy.arrival_channel_below_label",
        "policy.sender_clearance",
        "policy.recipient_clearance",
    }
    assert len(list(full_matrix())) == 500


async def test_every_label_channel_and_clearance_combination_is_gated_as_section_2_says(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    problems = await run_cases(hub, spokes_at, list(full_matrix()))

    assert problems == []


PARTIAL_CASES = [
    # Rule 2: both ends must be provisioned on the channel; the lowest such that admits C.
    Case("PUBLIC", "internet", PARTIAL["gt.p.three"], PARTIAL["gt.p.edges"]),  # -> govnet
    Case("INTERNAL", "govnet", PARTIAL["gt.p.three"], PARTIAL["gt.p.edges"]),  # -> govnet
    Case("CONFIDENTIAL", "classified", PARTIAL["gt.p.upper"], PARTIAL["gt.p.edges"]),  # -> core
    Case("SECRET", "classified", PARTIAL["gt.p.three"], PARTIAL["gt.p.edges"]),  # no channel
    Case("CONFIDENTIAL", "core", PARTIAL["gt.p.edges"], PARTIAL["gt.p.three"]),  # no channel
    # A sender on a channel it is not provisioned on.
    Case("PUBLIC", "core", PARTIAL["gt.p.three"], PARTIAL["gt.p.upper"]),
]
# A label above the arrival channel from a sender not provisioned there: it has leaked
# all the same (rule 3), so it is quarantined and alerted, not merely refused.
LEAK_OFF_PROVISION = Case("SECRET", "internet", PARTIAL["gt.p.edges"], PARTIAL["gt.p.upper"])


def test_the_partial_cases_reach_the_rules_the_matrix_cannot() -> None:
    assert [c.expected for c in PARTIAL_CASES] == [
        Outcome("deliver", "govnet"),
        Outcome("deliver", "govnet"),
        Outcome("deliver", "core"),
        Outcome("reject", "policy.no_channel"),
        Outcome("reject", "policy.no_channel"),
        Outcome("reject", "policy.sender_not_on_channel"),
    ]
    assert LEAK_OFF_PROVISION.expected == Outcome(
        "quarantine", "policy.arrival_channel_below_label"
    )


async def test_partly_provisioned_organisations_are_routed_on_a_channel_both_have(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    problems = await run_cases(hub, spokes_at, PARTIAL_CASES)

    assert problems == []


async def test_a_leak_from_a_sender_not_provisioned_on_the_channel_is_still_quarantined(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    problems = await run_cases(hub, spokes_at, [LEAK_OFF_PROVISION])

    assert problems == []
