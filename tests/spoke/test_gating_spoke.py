"""The spoke gates a drop with the hub's own decision (schemas.gating) before sealing it.

A drop the hub would refuse (a clearance, or no channel both ends share that carries the
label: ``policy.no_channel``) goes to failed/ with the spoke's bilingual explanation and
nothing is sealed or sent. The world of this module is the Jilin exchange with two
provincial departments cleared for 机密: one on govnet and classified, one on govnet and
core (the province is not on core), so that no channel carries a 机密 document from the
province to the second one although both are cleared for it.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.directory import ChannelEntry, Directory
from schemas.errors import Reason
from schemas.gating import Accept, Decision, Reject, decide, gate
from schemas.keys import EncryptionKey, SigningKey
from schemas.labels import Classification
from schemas.topology import parse_topology
from spoke.checks import gate_drop
from spoke.refusals import Refusal
from spoke.tools import rehearse
from tests.hub.test_router import ORDER, header, org
from tests.spoke.conftest import OfflineSpokeFactory
from tests.world import TOPOLOGY_PATH, OrgKeys, World, _directory

DEPARTMENTS = """
[[orgs]]
id = "jl.dept.secrecy"
name_zh = "吉林省国家保密局"
name_en = "Jilin Provincial Administration for the Protection of State Secrets"
level = "department"
parent = "jl.gov"
clearance = "机密"
channels = ["govnet", "classified"]

[[orgs]]
id = "jl.dept.archives"
name_zh = "吉林省档案局"
name_en = "Jilin Provincial Archives Bureau"
level = "department"
parent = "jl.gov"
clearance = "机密"
channels = ["govnet", "core"]
"""


@pytest.fixture(scope="module")
def world() -> World:
    """Overrides the session's world for this module: Jilin and the two departments."""
    text = TOPOLOGY_PATH.read_text(encoding="utf-8") + DEPARTMENTS
    topology = parse_topology(text, source="test_gating_spoke topology")
    keys = {o.id: OrgKeys(SigningKey.generate(), EncryptionKey.generate()) for o in topology.orgs}
    hub_key = SigningKey.generate()
    return World(topology, hub_key, keys, _directory(topology, hub_key, keys, 1))


def meta(**fields: object) -> str:
    """A NAME.meta.toml with quoted keys (Chinese field names need them)."""
    return "".join(
        f"{json.dumps(k, ensure_ascii=False)} = {json.dumps(v, ensure_ascii=False)}\n"
        for k, v in fields.items()
    )


SECRET_NOTICE = {
    "to": ["jl.dept.secrecy", "jl.dept.archives"],
    "classification": "机密★1年",
    "doc_type": "通知",
    "title": "关于做好档案保密检查的通知",
}
BODY = "关于做好档案保密检查的通知。\n".encode()


async def test_secret_drop_to_a_recipient_no_shared_channel_carries_is_refused_before_sealing(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    gov = offline_spoke("jl.gov")
    hub_says = gate(
        "jl.gov",
        Classification.SECRET,
        ("jl.dept.secrecy", "jl.dept.archives"),
        "classified",
        gov.directory,
    )
    assert isinstance(hub_says, Reject)  # what the hub answers once it is sent
    assert (hub_says.reason, hub_says.recipient) == (Reason.POLICY_NO_CHANNEL, "jl.dept.archives")

    gov.drop("通知.txt", BODY, meta(**SECRET_NOTICE))
    await gov.settle()

    assert gov.outbound() == []  # nothing sealed, so nothing is ever sent
    assert gov.queued() == []
    assert sorted(p.name for p in gov.failed.iterdir()) == [
        "通知.txt",
        "通知.txt.error.json",
        "通知.txt.error.txt",
        "通知.txt.meta.toml",
    ]
    assert (gov.failed / "通知.txt").read_bytes() == BODY
    error = json.loads((gov.failed / "通知.txt.error.json").read_text(encoding="utf-8"))
    assert error["rule"] == "drop.no_route"
    assert error["values"] == {
        "classification": "SECRET",
        "org": "jl.gov",
        "recipient": "jl.dept.archives",
        "shared": ["govnet"],
    }
    for sentence in (error["message"], error["message_zh"]):
        assert "jl.dept.archives" in sentence
        assert "govnet" in sentence
    assert "operator" in error["hint"]
    assert "运维" in error["hint_zh"]


async def test_secret_drop_to_recipients_a_channel_carries_is_sealed_on_that_channel(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    gov = offline_spoke("jl.gov")
    gov.drop("通知.txt", BODY, meta(**{**SECRET_NOTICE, "to": ["jl.dept.secrecy"]}))
    await gov.settle()

    [out] = gov.outbound()
    assert out.channel == "classified"
    assert list(gov.failed.iterdir()) == []


def test_dry_run_refuses_the_recipient_no_shared_channel_carries(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    """``spoke send --dry-run`` says what the agent does: refused, and for whom."""
    gov = offline_spoke("jl.gov")
    report = rehearse(
        dict(SECRET_NOTICE), meta_name="通知.txt.meta.json", org="jl.gov", directory=gov.directory
    )

    assert not isinstance(report, Refusal)
    assert not report.accepted
    channels = {r.recipient: r.channel for r in report.routes}
    assert channels == {"jl.dept.secrecy": "classified", "jl.dept.archives": None}
    [problem] = report.gate_problems
    assert problem.startswith("jl.dept.archives: ")
    assert "govnet" in problem


# ------------------------------------------------------------ the spoke and the hub agree

CEILINGS = {
    "internet": Classification.PUBLIC,
    "govnet": Classification.INTERNAL,
    "restricted": Classification.CONFIDENTIAL,
    "classified": Classification.SECRET,
    "core": Classification.TOP_SECRET,
}
# what the spoke calls the hub's refusal on the channel it would have sent on
SPOKE_RULE = {
    Reason.POLICY_SENDER_CLEARANCE: "drop.sender_clearance",
    Reason.POLICY_RECIPIENT_CLEARANCE: "drop.above_clearance",
    Reason.POLICY_NO_CHANNEL: "drop.no_route",
}


@st.composite
def sends(draw: st.DrawFn) -> tuple[Directory, str, Classification, list[str]]:
    """A small directory (some of the five channels, two to six organisations on some of
    them), a sender, a label and some of the others as recipients."""
    channel_ids = draw(
        st.lists(st.sampled_from(sorted(CEILINGS)), min_size=1, max_size=5, unique=True)
    )
    orgs = [
        org(
            f"o{i}",
            draw(st.sampled_from(ORDER)),
            draw(st.lists(st.sampled_from(channel_ids), min_size=1, unique=True)),
        )
        for i in range(draw(st.integers(min_value=2, max_value=6)))
    ]
    directory = Directory(
        v=1,
        hub_id="t.hub",
        version=1,
        issued_at=0,
        expires_at=1,
        hub_keys=(),
        channels=tuple(
            ChannelEntry(id=c, name=f"channel {c}", ceiling=CEILINGS[c]) for c in channel_ids
        ),
        orgs=tuple(orgs),
        revoked=(),
        groups=(),
    )
    sender = draw(st.sampled_from(orgs))
    others = [o.id for o in orgs if o.id != sender.id]
    recipients = draw(st.lists(st.sampled_from(others), min_size=1, unique=True))
    return directory, sender.id, draw(st.sampled_from(ORDER)), recipients


@settings(max_examples=300, deadline=None)
@given(sends())
def test_the_spoke_accepts_a_drop_exactly_when_the_hub_accepts_it_on_some_channel(
    case: tuple[Directory, str, Classification, list[str]],
) -> None:
    directory, sender, label, recipients = case
    entry = directory.org(sender)
    assert entry is not None
    hub: dict[str, Decision] = {
        arrival: decide(header(sender, recipients, label), arrival, directory)
        for arrival in entry.channels
    }

    try:
        channel: str | Refusal = gate_drop(sender, label, recipients, directory)
    except Refusal as refusal:
        channel = refusal
    if isinstance(channel, Refusal):
        assert not any(isinstance(d, Accept) for d in hub.values()), (channel.rule, hub)
        refused = {
            (SPOKE_RULE.get(d.reason), d.recipient) for d in hub.values() if isinstance(d, Reject)
        }
        # the hub's reason on every channel the sender is on that admits the label
        if channel.rule == "drop.no_channel":  # there is none
            assert refused == set()
        elif channel.rule == "drop.sender_clearance":
            assert refused <= {("drop.sender_clearance", None)}
        else:  # about the same recipient
            assert channel.rule in {"drop.above_clearance", "drop.no_route"}, channel.rule
            about = channel.values.get("recipient", channel.values.get("org"))
            assert refused == {(channel.rule, about)}
    else:
        assert isinstance(hub[channel], Accept), hub[channel]
