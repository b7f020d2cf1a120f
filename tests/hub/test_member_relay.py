"""A member hub's link at the hub above it, with one real hubd: what the member relays for
the organisations it serves is verified end to end, gated for this hop's recipients only,
delivered, answered with this hub's signed ACCEPTED on the member's own down topic, and
the recipient's DELIVERED goes back to the member; what it relays for anyone else, or under
a revoked membership key, is refused (docs/architecture.md, "Hubs under hubs").

The member hub is played by a simulated client on the member's topics (as a member hub's
uplink connects): it publishes envelopes its organisations sealed, unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from schemas.directory import Directory
from schemas.errors import Reason
from schemas.keys import EncryptionKey
from schemas.receipts import ReceiptStatus
from tests.federation import MEMBER, federated, make_hub_keys
from tests.hub.conftest import SpokeFactory
from tests.hubproc import HubProcess, live_directory
from tests.spokesim import SimSpoke
from tests.world import World

HUB_KEYS = make_hub_keys()


@pytest.fixture
def broker_kind() -> str:
    return "embedded"  # the link is topics like any other: one broker is enough here


@pytest.fixture
def membership() -> str:
    return "valid"  # a test parametrizes it to "revoked"


@pytest.fixture
def live_dir(world: World, membership: str) -> Directory:
    revoked = (HUB_KEYS[MEMBER].kid,) if membership == "revoked" else ()
    base = live_directory(world)
    return federated(world, HUB_KEYS, base, revoked=(*base.revoked, *revoked))


@pytest.fixture
async def member(live_dir: Directory, hub: HubProcess) -> AsyncIterator[SimSpoke]:
    link = SimSpoke(
        MEMBER, HUB_KEYS[MEMBER], EncryptionKey.generate(), live_dir, "127.0.0.1", hub.port
    )
    link.auto_deliver = False
    async with link:
        yield link


def sealer(world: World, live_dir: Directory, org: str) -> SimSpoke:
    """An organisation's sealing, as its own spoke at its own hub does it (not connected)."""
    keys = world.keys[org]
    return SimSpoke(org, keys.signing, keys.encryption, live_dir, "127.0.0.1", 0)


async def test_a_member_relays_for_its_own_organisations_and_hears_accepted_and_delivered(
    world: World, live_dir: Directory, member: SimSpoke, spokes: SpokeFactory
) -> None:
    jl_cc = spokes("jl.cc")
    await jl_cc.connect()
    sealed, body = sealer(world, live_dir, "jl.yb").seal(("jl.cc", "jl.yb.yanji"))
    msg_id = sealed.header.msg_id

    await member.publish_envelope(sealed, body)

    await member.wait_for(lambda: member.has(msg_id, ReceiptStatus.DELIVERED, "jl.cc"), 20)
    assert member.has(msg_id, ReceiptStatus.ACCEPTED)
    assert msg_id in jl_cc.received
    # jl.yb.yanji is behind the member: this hub never routes it (nor sends it back)
    assert not member.has(msg_id, ReceiptStatus.DELIVERED, "jl.yb.yanji")
    assert msg_id not in member.received


@pytest.mark.parametrize("membership", ["valid", "revoked"])
async def test_a_member_relaying_for_an_organisation_outside_its_prefix_is_refused(
    world: World, live_dir: Directory, member: SimSpoke, spokes: SpokeFactory, membership: str
) -> None:
    jl_cc = spokes("jl.cc")
    await jl_cc.connect()
    # a genuine envelope of Jilin's own general office, replayed by the member hub
    sealed, body = sealer(world, live_dir, "jl.gov").seal(("jl.cc",))
    msg_id = sealed.header.msg_id

    await member.publish_envelope(sealed, body)

    await member.wait_for(lambda: member.has(msg_id, ReceiptStatus.REJECTED), 20)
    (rejected,) = member.receipts[msg_id]
    expected = Reason.FED_MEMBERSHIP if membership == "revoked" else Reason.FED_OUTSIDE_PREFIX
    assert rejected.reason == expected.value
    assert msg_id not in jl_cc.received


@pytest.mark.parametrize("membership", ["revoked"])
async def test_a_member_whose_membership_key_is_revoked_relays_nothing(
    world: World, live_dir: Directory, member: SimSpoke, spokes: SpokeFactory
) -> None:
    jl_cc = spokes("jl.cc")
    await jl_cc.connect()
    sealed, body = sealer(world, live_dir, "jl.yb").seal(("jl.cc",))
    msg_id = sealed.header.msg_id

    await member.publish_envelope(sealed, body)

    await member.wait_for(lambda: member.has(msg_id, ReceiptStatus.REJECTED), 20)
    (rejected,) = member.receipts[msg_id]
    assert rejected.reason == Reason.FED_MEMBERSHIP.value
    assert msg_id not in jl_cc.received
