"""EXPIRED and DEAD: the outcomes the hub reports when a delivery cannot be made.

Both are news the sender cannot ask for, so they travel in the hub's durable, numbered
receipt outbox: a spoke's hello (the last numbered batch it holds) brings back what it
missed. EXPIRED: ``expires_at`` passed before the recipient confirmed, and the recipient
never gets the message afterwards. DEAD: the recipient received it ``max_attempts`` times
and never confirmed; the reason is ``delivery.gave_up`` with a sentence.
"""

from __future__ import annotations

import hashlib

import pytest

from runtime.clock import now_ms
from schemas.ids import msg_id_text
from schemas.receipts import ReceiptEntry, ReceiptStatus
from tests.hub.conftest import HubSpawner, SpokeSpawner
from tests.hub.test_crash import delivery_rows, eventually, hub_store_url
from tests.hubproc import HubProcess
from tests.spokesim import SimSpoke

WITHIN = 30.0
EXPIRES_IN = 2_000  # ms: "a few seconds ahead"
FAST_DEATH = "[delivery]\nretry_initial = 0.2\nretry_max = 0.4\nmax_attempts = 3\n"


@pytest.fixture(params=["embedded", "mosquitto"])
def broker_port(request: pytest.FixtureRequest) -> int | None:
    """None for the broker inside hubd, or the port of a Mosquitto of the test's own."""
    if request.param == "embedded":
        return None
    return int(request.getfixturevalue("mosquitto").port)


def batches_with(spoke: SimSpoke, msg_id: bytes, status: ReceiptStatus) -> list[int]:
    """The seq of every receipt batch ``spoke`` got that carries ``status`` for ``msg_id``."""
    return [
        seq
        for _, seq, entries in spoke.receipt_batches
        if any(e.msg_id == msg_id and e.status is status for e in entries)
    ]


def only(spoke: SimSpoke, msg_id: bytes, status: ReceiptStatus) -> ReceiptEntry:
    entries = [e for e in spoke.receipts[msg_id] if e.status is status]
    assert entries, f"no {status} for {msg_id_text(msg_id)}"
    assert all(e == entries[0] for e in entries), entries  # a replay repeats, never differs
    return entries[0]


def logged(hub: HubProcess, event: str, msg_id: bytes) -> bool:
    """hubd's JSON log has ``event`` for ``msg_id``."""
    text = msg_id_text(msg_id)
    return any(e.get("event") == event and e.get("msg_id") == text for e in hub.log_events())


async def expired_at_hub(hub: HubProcess, msg_id: bytes) -> bool:
    rows = await delivery_rows(hub_store_url(hub))
    return rows.get((msg_id, "jl.cc")) == "EXPIRED"


async def test_message_expiring_before_its_offline_recipient_connects_gives_sender_expired(
    broker_port: int | None, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(broker_port=broker_port)
    sender = spawn_spoke(hub, "jl.gov")
    await sender.connect()
    expires_at = now_ms() + EXPIRES_IN
    sealed = await sender.send(["jl.cc"], expires_at=expires_at)  # jl.cc is offline
    msg_id = sealed.header.msg_id
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.ACCEPTED), WITHIN)
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.EXPIRED, "jl.cc"), WITHIN)

    entry = only(sender, msg_id, ReceiptStatus.EXPIRED)
    assert entry.recipient == "jl.cc"
    assert entry.subject == hashlib.sha256(sealed.frame).digest()
    assert entry.classification is sealed.header.classification
    assert entry.at >= expires_at, "not declared expired before its time"
    [seq] = batches_with(sender, msg_id, ReceiptStatus.EXPIRED)
    assert seq >= 1, "EXPIRED travels in a numbered (durable) batch"
    assert await expired_at_hub(hub, msg_id)

    # Durable: a sender that comes back saying it holds nothing from that batch on gets
    # the same batch, with the same number, again.
    await sender.disconnect()
    sender.last_seq["govnet"] = seq - 1
    await sender.connect()
    await sender.wait_for(
        lambda: len(batches_with(sender, msg_id, ReceiptStatus.EXPIRED)) == 2, WITHIN
    )
    assert batches_with(sender, msg_id, ReceiptStatus.EXPIRED) == [seq, seq]

    # The recipient connects later and never receives it: a message sent after its
    # connection arrives, and the expired one did not come before it.
    recipient = spawn_spoke(hub, "jl.cc")
    await recipient.connect()
    marker = await sender.send(["jl.cc"])
    await recipient.wait_for(lambda: marker.header.msg_id in recipient.received, WITHIN)
    assert msg_id not in recipient.received
    assert [a for a in recipient.arrivals if a.msg_id == msg_id] == []
    assert not sender.has(msg_id, ReceiptStatus.DELIVERED)


async def test_expired_receipt_waits_for_a_sender_that_was_offline_and_comes_on_hello(
    broker_port: int | None, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(broker_port=broker_port)
    sender = spawn_spoke(hub, "jl.gov")
    await sender.connect()
    sealed = await sender.send(["jl.cc"], expires_at=now_ms() + EXPIRES_IN)
    msg_id = sealed.header.msg_id
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.ACCEPTED), WITHIN)
    await sender.disconnect()  # gone before the message expires

    assert await eventually(lambda: logged(hub, "delivery.expired", msg_id), WITHIN)
    assert await expired_at_hub(hub, msg_id)
    assert not sender.has(msg_id, ReceiptStatus.EXPIRED)

    await sender.connect()  # hello names the last numbered batch it holds (none)
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.EXPIRED, "jl.cc"), WITHIN)
    [seq] = batches_with(sender, msg_id, ReceiptStatus.EXPIRED)
    assert seq >= 1


async def test_recipient_that_never_confirms_gets_the_message_max_attempts_times_then_dead(
    broker_port: int | None, spawn_hub: HubSpawner, spawn_spoke: SpokeSpawner
) -> None:
    hub = spawn_hub(broker_port=broker_port, extra_toml=FAST_DEATH)  # max_attempts = 3
    sender = spawn_spoke(hub, "jl.gov")
    recipient = spawn_spoke(hub, "jl.cc", auto_deliver=False)  # receives, never confirms
    await recipient.connect()
    await sender.connect()
    sealed = await sender.send(["jl.cc"], contents=[b"please confirm"])
    msg_id = sealed.header.msg_id
    await sender.wait_for(lambda: sender.has(msg_id, ReceiptStatus.DEAD, "jl.cc"), WITHIN)

    entry = only(sender, msg_id, ReceiptStatus.DEAD)
    assert entry.reason == "delivery.gave_up"
    assert entry.detail is not None
    assert "jl.cc" in entry.detail, entry.detail
    assert "3 attempts" in entry.detail, entry.detail
    assert entry.subject == hashlib.sha256(sealed.frame).digest()
    [seq] = batches_with(sender, msg_id, ReceiptStatus.DEAD)
    assert seq >= 1, "DEAD travels in a numbered (durable) batch"
    rows = await delivery_rows(hub_store_url(hub))
    assert rows[(msg_id, "jl.cc")] == "DEAD"

    # The recipient saw it exactly max_attempts times: a message sent after DEAD arrives
    # behind every copy the hub published, and no copy came after.
    marker = await sender.send(["jl.cc"])
    await recipient.wait_for(lambda: marker.header.msg_id in recipient.received, WITHIN)
    assert recipient.received[msg_id].files == [b"please confirm"]
    assert recipient.deliveries[msg_id] == 3
    assert not sender.has(msg_id, ReceiptStatus.DELIVERED)
