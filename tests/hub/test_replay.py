"""Replay and forgery at the hub's door (ARCHITECTURE section 4), through a real hubd.

msg_id is unique forever; a resend of the very same frame is answered again (the sender
may have missed the first answer) but delivered once; created_at must be within the skew
window and expires_at in the future; the MQTT topic's owner must be the signed sender;
and bytes that cannot be read still get a REJECTED that names what they were (their hash).
"""

from __future__ import annotations

import hashlib

import pytest

from runtime.clock import now_ms
from schemas import transport
from schemas.clock import ms_to_text
from schemas.receipts import ReceiptEntry, ReceiptStatus
from tests.hub.conftest import NO_RETRIES, HubFactory, RecordingSpoke, SpokeMaker
from tests.hubproc import HubProcess

MAX_SKEW_S = 300  # the hub's default [delivery] max_skew


@pytest.fixture
def hub(hub_factory: HubFactory) -> HubProcess:
    return hub_factory(extra_toml=NO_RETRIES)  # a second copy can only come from a bug


async def pair(spokes_at: SpokeMaker, hub: HubProcess) -> tuple[RecordingSpoke, RecordingSpoke]:
    gov, cc = spokes_at(hub, "jl.gov"), spokes_at(hub, "jl.cc")
    await cc.connect()
    await gov.connect()
    return gov, cc


def rejection(spoke: RecordingSpoke, msg_id: bytes | None) -> ReceiptEntry:
    return next(e for e in spoke.receipts[msg_id] if e.status is ReceiptStatus.REJECTED)


async def delivered_barrier(gov: RecordingSpoke, cc: RecordingSpoke) -> None:
    """A fresh document, sent now and delivered: whatever the hub decided before it has
    been published before it (same precedence, first in first out)."""
    marker = await gov.send(["jl.cc"], contents=[b"marker"])
    await cc.wait_for(lambda: marker.header.msg_id in cc.received)


async def test_the_same_envelope_twice_is_accepted_twice_and_delivered_once(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc = await pair(spokes_at, hub)
    sealed, body = gov.seal(["jl.cc"], contents=[b"sent twice"])
    msg_id = sealed.header.msg_id

    await gov.publish_envelope(sealed, body)
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.DELIVERED, "jl.cc"))
    await gov.publish_envelope(sealed, body)
    await gov.wait_for(
        lambda: [s for s, _ in gov.statements(msg_id)].count(ReceiptStatus.ACCEPTED) == 2
    )
    await delivered_barrier(gov, cc)

    assert cc.order.count(msg_id) == 1
    assert cc.received[msg_id].files == [b"sent twice"]
    assert [s for s, _ in gov.statements(msg_id)] == [
        ReceiptStatus.ACCEPTED,
        ReceiptStatus.DELIVERED,
        ReceiptStatus.ACCEPTED,
    ]


async def test_a_resend_before_delivery_is_accepted_again_and_delivered_once(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc = spokes_at(hub, "jl.gov"), spokes_at(hub, "jl.cc")
    await gov.connect()  # jl.cc is away: the delivery waits at the hub
    sealed, body = gov.seal(["jl.cc"], contents=[b"resent while waiting"])
    msg_id = sealed.header.msg_id
    for _ in range(2):
        await gov.publish_envelope(sealed, body)
    await gov.wait_for(
        lambda: [s for s, _ in gov.statements(msg_id)].count(ReceiptStatus.ACCEPTED) == 2
    )

    await cc.connect()
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.DELIVERED, "jl.cc"))
    await delivered_barrier(gov, cc)

    assert cc.order.count(msg_id) == 1


async def test_the_same_msg_id_on_another_frame_is_rejected_as_duplicate(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc = await pair(spokes_at, hub)
    original = await gov.send(["jl.cc"], contents=[b"the original"])
    msg_id = original.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.DELIVERED, "jl.cc"))

    impostor, body = gov.seal(["jl.cc"], contents=[b"another text"], msg_id=msg_id)
    assert impostor.frame != original.frame
    await gov.publish_envelope(impostor, body)
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.REJECTED))
    await delivered_barrier(gov, cc)

    entry = rejection(gov, msg_id)
    assert entry.reason == "replay.duplicate_msg_id"
    assert entry.subject == hashlib.sha256(impostor.frame).digest()  # it speaks of the impostor
    assert entry.detail is not None
    assert original.header.msg_id_text in entry.detail
    assert cc.received[msg_id].files == [b"the original"]
    assert cc.order.count(msg_id) == 1


async def test_created_at_outside_the_skew_window_is_rejected_as_clock_skew(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc = await pair(spokes_at, hub)
    skewed = now_ms() - 2 * MAX_SKEW_S * 1000
    sealed = await gov.send(["jl.cc"], created_at=skewed)
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.REJECTED))
    await delivered_barrier(gov, cc)

    entry = rejection(gov, msg_id)
    assert entry.reason == "replay.clock_skew"
    assert entry.detail is not None
    assert ms_to_text(skewed) in entry.detail  # the value compared, readable
    assert f"the limit is {MAX_SKEW_S} s" in entry.detail  # and the limit it compared against
    assert "clock" in entry.detail  # what to do
    assert msg_id not in cc.received
    assert gov.statements(msg_id) == [(ReceiptStatus.REJECTED, None)]


async def test_expires_at_in_the_past_is_rejected_as_expired(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc = await pair(spokes_at, hub)
    now = now_ms()
    sealed = await gov.send(["jl.cc"], created_at=now - 60_000, expires_at=now - 1_000)
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.REJECTED))
    await delivered_barrier(gov, cc)

    entry = rejection(gov, msg_id)
    assert entry.reason == "replay.expired"
    assert entry.detail is not None
    assert ms_to_text(now - 1_000) in entry.detail
    assert "send it again" in entry.detail
    assert msg_id not in cc.received


async def test_envelope_published_on_another_spokes_topic_is_not_delivered_and_its_owner_is_told(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc, jl = (spokes_at(hub, org) for org in ("jl.gov", "jl.cc", "jl.jl"))
    for spoke in (gov, cc, jl):
        await spoke.connect()
    # jl.cc's client signs its own envelope to jl.gov and publishes it on jl.jl's up topic.
    sealed, body = cc.seal(["jl.gov"], contents=[b"forged route"])
    payload = transport.encode(transport.EnvelopeMsg(sealed.frame, body))
    await cc.publish_raw(payload, as_org="jl.jl")
    await jl.wait_for(lambda: any(e.status is ReceiptStatus.REJECTED for e in jl.receipts[None]))
    honest = await cc.send(["jl.gov"], contents=[b"honest"])
    await gov.wait_for(lambda: honest.header.msg_id in gov.received)

    entry = rejection(jl, None)
    assert entry.reason == "sig.sender_mismatch"
    assert entry.subject == hashlib.sha256(sealed.frame).digest()
    assert entry.detail is not None
    assert "jl.cc" in entry.detail
    assert "jl.jl" in entry.detail
    assert sealed.header.msg_id not in gov.received
    assert sealed.header.msg_id not in cc.receipts  # nothing was accepted in jl.cc's name


async def test_garbage_bytes_get_a_rejected_receipt_naming_their_sha256(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, _ = await pair(spokes_at, hub)
    garbage = bytes(range(256)) * 3

    await gov.publish_raw(garbage)
    await gov.wait_for(lambda: any(e.status is ReceiptStatus.REJECTED for e in gov.receipts[None]))

    entry = rejection(gov, None)
    assert entry.msg_id is None
    assert entry.subject == hashlib.sha256(garbage).digest()
    assert entry.reason is not None
    assert entry.reason.startswith(("decode.", "schema."))
    assert entry.detail
