"""A member hub's link at the hub above it, with one real hubd: what the member relays for
the organisations it serves is verified end to end, gated for this hop's recipients only,
delivered, answered with this hub's signed ACCEPTED on the member's own down topic, and
the recipient's DELIVERED goes back to the member; what it relays for anyone else, or under
a revoked membership key, is refused (docs/architecture.md, "Hubs under hubs").

The member hub is played by a simulated client on the member's topics (as a member hub's
uplink connects): it publishes envelopes its organisations sealed, unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from runtime.clock import now_ms
from schemas import transport
from schemas.directory import Directory
from schemas.errors import Reason
from schemas.keys import EncryptionKey, SigningKey
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts, subject_of
from tests.federation import MEMBER, federated, make_hub_keys
from tests.hub.conftest import SpokeFactory, wait_for_log
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


def signed(issuer: str, key: SigningKey, msg_id: bytes, status: ReceiptStatus, **kw: Any) -> bytes:
    entry = ReceiptEntry(
        msg_id=msg_id,
        recipient=kw.pop("recipient", None),
        status=status,
        at=now_ms(),
        subject=kw.pop("subject"),
        classification=Classification.INTERNAL,
        reason=kw.pop("reason", None),
        detail=kw.pop("detail", None),
        retriable=False,
    )
    frame = sign_receipts(issuer, key, [entry], at=now_ms())
    return transport.encode(transport.ReceiptsMsg(frame, 0))


async def test_a_document_behind_a_member_is_handed_over_on_its_accepted_then_delivered_back(
    world: World, live_dir: Directory, member: SimSpoke, spokes: SpokeFactory, hub: HubProcess
) -> None:
    jl_cc = spokes("jl.cc")
    await jl_cc.connect()
    sealed, body = jl_cc.seal(("jl.yb",))
    msg_id, subject = sealed.header.msg_id, subject_of(sealed.frame)

    await jl_cc.publish_envelope(sealed, body)

    # the copy for jl.yb goes to the member hub's topic, unchanged, and again until it answers
    await member.wait_for(lambda: sum(a.msg_id == msg_id for a in member.arrivals) >= 2, 20)
    await member.publish_raw(
        signed(MEMBER, HUB_KEYS[MEMBER], msg_id, ReceiptStatus.ACCEPTED, subject=subject)
    )
    relayed = await wait_for_log(hub, lambda e: e.get("event") == "delivery.relayed")
    assert relayed["recipient"] == "jl.yb"
    assert relayed["hub"] == MEMBER
    copies = sum(a.msg_id == msg_id for a in member.arrivals)
    await asyncio.sleep(3.5)  # beyond two retry intervals (1 s, then 2 s): nothing is resent
    assert sum(a.msg_id == msg_id for a in member.arrivals) == copies

    # the recipient's DELIVERED, relayed by its hub, reaches the sender through this hub
    await member.publish_raw(
        signed(
            "jl.yb",
            world.keys["jl.yb"].signing,
            msg_id,
            ReceiptStatus.DELIVERED,
            recipient="jl.yb",
            subject=subject,
        )
    )
    await jl_cc.wait_for(lambda: jl_cc.has(msg_id, ReceiptStatus.DELIVERED, "jl.yb"), 20)
    assert not jl_cc.has(msg_id, ReceiptStatus.REJECTED)


async def test_a_member_may_not_relay_the_receipts_of_an_organisation_it_does_not_serve(
    world: World, live_dir: Directory, member: SimSpoke, spokes: SpokeFactory, hub: HubProcess
) -> None:
    jl_cc, jl_gov = spokes("jl.cc"), spokes("jl.gov")
    await jl_cc.connect()
    await jl_gov.connect()
    sealed, body = jl_cc.seal(("jl.gov",))
    msg_id, subject = sealed.header.msg_id, subject_of(sealed.frame)
    jl_gov.auto_deliver = False  # it never confirms: only a forged DELIVERED could
    await jl_cc.publish_envelope(sealed, body)
    await jl_gov.wait_for(lambda: any(a.msg_id == msg_id for a in jl_gov.arrivals), 20)

    await member.publish_raw(
        signed(
            "jl.gov",
            world.keys["jl.gov"].signing,
            msg_id,
            ReceiptStatus.DELIVERED,
            recipient="jl.gov",
            subject=subject,
        )
    )

    refused = await wait_for_log(hub, lambda e: e.get("event") == "receipt.refused")
    assert refused["reason"] == Reason.FED_OUTSIDE_PREFIX.value
    assert not jl_cc.has(msg_id, ReceiptStatus.DELIVERED)


async def test_a_member_cannot_expire_or_hand_over_a_delivery_not_behind_it(
    world: World, live_dir: Directory, member: SimSpoke, spokes: SpokeFactory, hub: HubProcess
) -> None:
    """A member hub signs statements only about what lies behind it: its EXPIRED of this
    hub's own offline recipient, or an ACCEPTED naming one, moves nothing; the copy for the
    recipient behind it is handed over by its whole-document ACCEPTED as usual."""
    jl_cc = spokes("jl.cc")
    await jl_cc.connect()
    sealed, body = jl_cc.seal(("jl.gov", "jl.yb"))  # jl.gov (this hub's, offline), jl.yb
    msg_id, subject = sealed.header.msg_id, subject_of(sealed.frame)
    await jl_cc.publish_envelope(sealed, body)
    await member.wait_for(lambda: any(a.msg_id == msg_id for a in member.arrivals), 20)

    for forged in (
        signed(
            MEMBER,
            HUB_KEYS[MEMBER],
            msg_id,
            ReceiptStatus.EXPIRED,
            recipient="jl.gov",
            subject=subject,
            reason="delivery.expired",
            detail="forged",
        ),
        signed(
            MEMBER,
            HUB_KEYS[MEMBER],
            msg_id,
            ReceiptStatus.ACCEPTED,
            recipient="jl.gov",
            subject=subject,
        ),
    ):
        await member.publish_raw(forged)
    await member.publish_raw(
        signed(MEMBER, HUB_KEYS[MEMBER], msg_id, ReceiptStatus.ACCEPTED, subject=subject)
    )

    relayed = await wait_for_log(hub, lambda e: e.get("event") == "delivery.relayed")
    assert relayed["recipient"] == "jl.yb"
    await asyncio.sleep(1.0)  # the forged statements were read before the true ACCEPTED
    jl_gov = spokes("jl.gov")
    await jl_gov.connect()  # still awaited: delivered now
    await jl_gov.wait_for(lambda: msg_id in jl_gov.received, 20)
    assert not jl_cc.has(msg_id, ReceiptStatus.EXPIRED)
