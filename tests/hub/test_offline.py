"""Offline recipients: the hub keeps their deliveries and flushes them when they return.

ARCHITECTURE section 6: "the hub keeps their deliveries and flushes them when the spoke's
presence comes back; it never relies on broker-side queues". The hubs here never resend
within a test (``NO_RETRIES``), so every document that arrives came from the flush on
return, and a document published while the hub wrongly thought the recipient online would
be lost and fail the test. Runs on both brokers and on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest

from schemas.receipts import ReceiptStatus
from tests.hub.conftest import (
    NO_RETRIES,
    HubFactory,
    RecordingSpoke,
    SpokeMaker,
    wait_for_log,
)
from tests.hubproc import HubProcess

COUNT = 50


@pytest.fixture
def hub(hub_factory: HubFactory, store_url: str) -> HubProcess:
    return hub_factory(store_url=store_url, extra_toml=NO_RETRIES)


async def send_batch(sender: RecordingSpoke, to: str, count: int) -> dict[bytes, bytes]:
    """``count`` documents with distinct contents; waits until each is ACCEPTED."""
    sent: dict[bytes, bytes] = {}
    for n in range(count):
        content = f"offline document {n}".encode()
        sealed = await sender.send([to], contents=[content])
        sent[sealed.header.msg_id] = content
    await sender.wait_for(
        lambda: all(sender.has(m, ReceiptStatus.ACCEPTED) for m in sent), within=30
    )
    return sent


async def assert_each_arrives_once(
    sender: RecordingSpoke, recipient: RecordingSpoke, sent: dict[bytes, bytes]
) -> None:
    await sender.wait_for(
        lambda: all(sender.has(m, ReceiptStatus.DELIVERED, recipient.org) for m in sent),
        within=30,
    )
    # A barrier: one more document, sent after every DELIVERED. A duplicate publish of an
    # earlier document would have been queued before it, at the same precedence.
    marker = await sender.send([recipient.org], contents=[b"marker"])
    await recipient.wait_for(lambda: marker.header.msg_id in recipient.received, within=30)

    assert {m: recipient.received[m].files for m in sent} == {m: [c] for m, c in sent.items()}
    opened = [m for m in recipient.order if m in sent]
    assert len(opened) == COUNT
    assert len(set(opened)) == COUNT, "a document was delivered more than once"
    for msg_id in sent:
        statuses = [s for s, r in sender.statements(msg_id) if r == recipient.org]
        assert statuses == [ReceiptStatus.DELIVERED]


async def test_recipient_that_never_connected_receives_all_50_documents_once_on_arrival(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc = spokes_at(hub, "jl.gov"), spokes_at(hub, "jl.cc")
    await gov.connect()
    sent = await send_batch(gov, "jl.cc", COUNT)
    assert not any(gov.has(m, ReceiptStatus.DELIVERED) for m in sent)

    await cc.connect()

    await assert_each_arrives_once(gov, cc, sent)


async def test_recipient_that_crashed_receives_all_50_documents_once_when_it_returns(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc = spokes_at(hub, "jl.gov"), spokes_at(hub, "jl.cc")
    await cc.connect()
    await gov.connect()
    await wait_for_log(hub, lambda e: e.get("event") == "spoke.online" and e.get("org") == "jl.cc")

    await cc.crash()  # no DISCONNECT: the broker publishes the spoke's will, "offline"
    await wait_for_log(hub, lambda e: e.get("event") == "spoke.offline" and e.get("org") == "jl.cc")
    sent = await send_batch(gov, "jl.cc", COUNT)
    assert not cc.received

    await cc.connect()

    await assert_each_arrives_once(gov, cc, sent)
