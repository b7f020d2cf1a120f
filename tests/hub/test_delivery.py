"""End to end through a real hubd and a real broker: delivery and every receipt.

One recipient and many (to + cc, and the @prefectures group) open the very same bytes
once each; the sender hears ACCEPTED, then each recipient's DELIVERED and SIGNED_FOR,
forwarded in numbered batches; a sender that was away gets what it missed after its
hello. The main tests run on SQLite and PostgreSQL, on both brokers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from schemas import topics, transport
from schemas.directory import Directory
from schemas.labels import Classification
from schemas.receipts import ReceiptStatus, verify_receipts
from tests.hub.conftest import (
    NO_RETRIES,
    HubFactory,
    Observer,
    SpokeFactory,
    SpokeMaker,
    wait_for_log,
)
from tests.hubproc import HubProcess


async def test_document_reaches_its_recipient_and_the_sender_gets_accepted_then_delivered(
    hub: HubProcess, spokes: SpokeFactory
) -> None:
    gov, cc = spokes("jl.gov"), spokes("jl.cc")
    await cc.connect()
    await gov.connect()

    sealed = await gov.send(["jl.cc"], contents=[b"notice body"])
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.DELIVERED, "jl.cc"))

    assert [s for s, _ in gov.statuses(msg_id)] == [ReceiptStatus.ACCEPTED, ReceiptStatus.DELIVERED]
    assert cc.received[msg_id].files == [b"notice body"]
    assert cc.deliveries[msg_id] == 1


async def test_secret_document_on_govnet_is_quarantined_and_refused(
    hub: HubProcess, spokes: SpokeFactory
) -> None:
    gov, cc = spokes("jl.gov"), spokes("cn.gov")
    await cc.connect()
    await gov.connect()

    sealed = await gov.send(["cn.gov"], classification=Classification.SECRET)
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.REJECTED))

    entry = gov.receipts[msg_id][0]
    assert entry.reason == "policy.arrival_channel_below_label"
    assert "govnet" in (entry.detail or "")
    assert msg_id not in cc.received


# ---------------------------------------------------------------------------------------
# One and many recipients, every receipt, on SQLite and PostgreSQL.

ADDRESSING = {
    "one": (("jl.cc",), ()),
    "to_and_cc": (("jl.cc", "jl.jl"), ("jl.dept.health", "jl.dept.finance", "jl.cc.nongan")),
    "group": ((), ()),  # @prefectures, expanded from the directory in the test
}


@pytest.fixture
def stored_hub(hub_factory: HubFactory, store_url: str) -> HubProcess:
    return hub_factory(store_url=store_url, extra_toml=NO_RETRIES)


@pytest.mark.parametrize("addressing", list(ADDRESSING))
async def test_every_recipient_opens_the_same_bytes_once_and_the_sender_hears_from_each(
    stored_hub: HubProcess, spokes_at: SpokeMaker, live_dir: Directory, addressing: str
) -> None:
    to, cc = ADDRESSING[addressing]
    if addressing == "group":
        to = live_dir.expand(["@prefectures"])
        assert len(to) == 9
    recipients = [spokes_at(stored_hub, org) for org in (*to, *cc)]
    gov = spokes_at(stored_hub, "jl.gov")
    for spoke in (*recipients, gov):
        await spoke.connect()

    contents = [b"first attachment", b"second attachment " * 100]
    sealed = await gov.send(to, cc=cc, contents=contents)
    msg_id = sealed.header.msg_id
    await gov.wait_for(
        lambda: all(gov.has(msg_id, ReceiptStatus.DELIVERED, r.org) for r in recipients),
        within=30,
    )
    # A barrier for stray duplicates: a later document to every recipient, same precedence.
    marker = await gov.send(to, cc=cc, contents=[b"marker"])
    for r in recipients:
        await r.wait_for(lambda r=r: marker.header.msg_id in r.received, within=30)

    for r in recipients:
        assert r.received[msg_id].files == contents
        assert r.received[msg_id].envelope.frame == sealed.frame  # the same bytes for all
        assert r.order.count(msg_id) == 1, f"{r.org} opened it {r.order.count(msg_id)} times"
        assert r.delivered_on[msg_id] == ["govnet"]
    statuses = gov.statements(msg_id)
    assert statuses[0] == (ReceiptStatus.ACCEPTED, None)
    assert sorted(statuses[1:], key=str) == sorted(
        [(ReceiptStatus.DELIVERED, r.org) for r in recipients], key=str
    )
    assert gov.seqs(msg_id, ReceiptStatus.ACCEPTED) == [0]  # answers, not news: unnumbered


async def test_signed_for_from_the_recipient_reaches_the_sender_numbered_after_delivered(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc = spokes_at(hub, "jl.gov"), spokes_at(hub, "jl.cc")
    await cc.connect()
    await gov.connect()
    sealed = await gov.send(["jl.cc"])
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.DELIVERED, "jl.cc"))

    await cc.acknowledge(cc.received[msg_id].envelope, ReceiptStatus.SIGNED_FOR)
    await gov.wait_for(lambda: gov.has(msg_id, ReceiptStatus.SIGNED_FOR, "jl.cc"))

    assert [s for s, _ in gov.statements(msg_id)] == [
        ReceiptStatus.ACCEPTED,
        ReceiptStatus.DELIVERED,
        ReceiptStatus.SIGNED_FOR,
    ]
    (delivered,) = gov.seqs(msg_id, ReceiptStatus.DELIVERED)
    (signed,) = gov.seqs(msg_id, ReceiptStatus.SIGNED_FOR)
    assert 0 < delivered < signed
    signed_entry = next(e for e in gov.receipts[msg_id] if e.status is ReceiptStatus.SIGNED_FOR)
    assert signed_entry.subject == hashlib.sha256(sealed.frame).digest()


async def test_sender_offline_when_delivered_arrived_gets_it_after_reconnecting(
    stored_hub: HubProcess, spokes_at: SpokeMaker, live_dir: Directory
) -> None:
    gov, cc = spokes_at(stored_hub, "jl.gov"), spokes_at(stored_hub, "jl.cc")
    await cc.connect()
    await gov.connect()
    first = (await gov.send(["jl.cc"], contents=[b"first"])).header.msg_id
    await gov.wait_for(lambda: gov.has(first, ReceiptStatus.DELIVERED, "jl.cc"))
    (first_seq,) = gov.seqs(first, ReceiptStatus.DELIVERED)
    assert first_seq > 0
    assert gov.last_seq["govnet"] == first_seq

    await cc.disconnect()
    await wait_for_log(stored_hub, offline("jl.cc"))
    second = (await gov.send(["jl.cc"], contents=[b"second"])).header.msg_id
    await gov.wait_for(lambda: gov.has(second, ReceiptStatus.ACCEPTED))
    await gov.disconnect()
    await wait_for_log(stored_hub, offline("jl.gov"))

    async with Observer(stored_hub.port, topics.down("govnet", "jl.gov")) as watch:
        await cc.connect()  # receives the second document; its DELIVERED finds gov away
        await watch.wait_for(
            lambda: any(delivered_batch(p, second, live_dir) for _, p, _ in watch.messages)
        )
    assert not gov.has(second, ReceiptStatus.DELIVERED)

    await gov.connect()  # hello carries last_seq = first_seq
    await gov.wait_for(lambda: gov.has(second, ReceiptStatus.DELIVERED, "jl.cc"))

    (second_seq,) = gov.seqs(second, ReceiptStatus.DELIVERED)
    assert second_seq > first_seq
    assert gov.seqs(first, ReceiptStatus.DELIVERED) == [first_seq]  # not replayed again
    replayed = await wait_for_log(
        stored_hub, lambda e: e.get("event") == "receipts.replayed" and e.get("org") == "jl.gov"
    )
    assert replayed["after"] == first_seq


def offline(org: str) -> Callable[[dict[str, object]], bool]:
    return lambda e: e.get("event") == "spoke.offline" and e.get("org") == org


def delivered_batch(payload: bytes, msg_id: bytes, directory: Directory) -> bool:
    """Is ``payload`` a numbered receipt batch carrying DELIVERED for ``msg_id``?"""
    message = transport.decode(payload)
    if not isinstance(message, transport.ReceiptsMsg) or message.seq == 0:
        return False
    entries = verify_receipts(message.frame, directory).batch.entries
    return any(e.msg_id == msg_id and e.status is ReceiptStatus.DELIVERED for e in entries)
