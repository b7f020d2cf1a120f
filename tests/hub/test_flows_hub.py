"""Recall (撤回) and return (退文) at a real hubd process, with simulated spokes on a real
Mosquitto: what the hub stops, forwards, answers and refuses (hubd/engine/flows.py).

The spokes here are test doubles that sign exactly the statements a test names, so each
refusal can be provoked; the real spoke's side is tested in tests/spoke and end to end in
tests/test_flows_e2e.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from runtime.clock import now_ms
from schemas import transport
from schemas.ids import msg_id_text
from schemas.labels import Classification
from schemas.notes import open_note, seal_note
from schemas.receipts import ReceiptEntry, ReceiptStatus, sign_receipts
from schemas.seal import Sealed
from tests.hub.conftest import NO_RETRIES, HubFactory, RecordingSpoke, SpokeMaker
from tests.hubproc import HubProcess

S = ReceiptStatus


@pytest.fixture
def broker_kind() -> str:
    return "mosquitto"


@pytest.fixture
def hub(hub_factory: HubFactory) -> HubProcess:
    return hub_factory(extra_toml=NO_RETRIES)


def statement(
    spoke: RecordingSpoke,
    status: ReceiptStatus,
    sealed: Sealed,
    *,
    recipient: str | None,
    note: str | None = None,
    subject: bytes | None = None,
    label: Classification | None = None,
) -> bytes:
    """``spoke``'s signed one-entry statement about ``sealed``, as a transport message."""
    msg_id = sealed.header.msg_id
    entry = ReceiptEntry(
        msg_id=msg_id,
        recipient=recipient,
        status=status,
        at=now_ms(),
        subject=subject or hashlib.sha256(sealed.frame).digest(),
        classification=label or sealed.header.classification,
        reason=None,
        detail=None,
        retriable=False,
        note=None
        if note is None
        else seal_note(sealed.note_key, note, msg_id=msg_id, status=status.value, issuer=spoke.org),
    )
    frame = sign_receipts(spoke.org, spoke.signing, [entry], at=now_ms())
    return transport.encode(transport.ReceiptsMsg(frame, 0))


def entries(spoke: RecordingSpoke, msg_id: bytes, status: ReceiptStatus) -> list[ReceiptEntry]:
    return [e for e in spoke.receipts[msg_id] if e.status is status]


async def test_recall_stops_the_offline_recipients_delivery_tells_the_others_and_answers_the_sender(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc, jl = (spokes_at(hub, o) for o in ("jl.gov", "jl.cc", "jl.jl"))
    await gov.connect()
    await cc.connect()
    sealed = await gov.send(["jl.cc", "jl.jl"], contents=[b"a notice sent in error"])
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, S.DELIVERED, "jl.cc"), within=20)

    await gov.publish_raw(statement(gov, S.RECALL, sealed, recipient=None, note="附件有误"))

    await gov.wait_for(lambda: gov.has(msg_id, S.RECALLED, "jl.jl"), within=20)
    answered = entries(gov, msg_id, S.RECALLED)
    assert sorted((e.recipient or "") for e in answered) == ["", "jl.jl"], (
        "the hub answers for the document and for the one delivery it stopped, not jl.cc's"
    )
    await cc.wait_for(lambda: bool(entries(cc, msg_id, S.RECALL)), within=20)
    (told,) = entries(cc, msg_id, S.RECALL)
    assert (
        open_note(
            sealed.note_key, told.note or b"", msg_id=msg_id, status="RECALL", issuer="jl.gov"
        )
        == "附件有误"
    ), "the recipient reads the sender's reason; the hub forwarded it unchanged"

    await jl.connect()  # offline until now: it hears of the recall, never of the document
    await jl.wait_for(lambda: bool(entries(jl, msg_id, S.RECALL)), within=20)
    assert msg_id not in jl.received
    assert [seq > 0 for _, seq, e in jl.batches if e[0].status is S.RECALL] == [True]

    traced = await asyncio.to_thread(
        CliRunner().invoke,
        hubctl_app,
        ["trace", msg_id_text(msg_id), "--json", "--config", str(hub.folder / "hub.toml")],
    )
    assert traced.exit_code == 0, traced.output
    shown = json.loads(traced.stdout)
    states = {d["recipient"]: d["state"] for d in shown["deliveries"]}
    assert states == {"jl.cc": "DELIVERED", "jl.jl": "RECALLED"}
    events = [(s["event"], s["org"]) for s in shown["timeline"]]
    assert ("receipt.recall", "jl.gov") in events
    assert ("delivery.recalled", "jl.jl") in events
    assert "附件有误" not in traced.stdout, "the hub cannot read the reason, nor show it"
    status = await asyncio.to_thread(
        CliRunner().invoke, hubctl_app, ["status", "--config", str(hub.folder / "hub.toml")]
    )
    assert "recalled by their senders before delivery (撤回): 1" in status.stdout, status.output


async def test_a_repeated_recall_is_answered_again_and_changes_nothing(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc = spokes_at(hub, "jl.gov"), spokes_at(hub, "jl.cc")
    await gov.connect()
    await cc.connect()
    sealed = await gov.send(["jl.cc"], contents=[b"x"])
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, S.DELIVERED, "jl.cc"), within=20)
    for _ in range(2):
        await gov.publish_raw(statement(gov, S.RECALL, sealed, recipient=None))
    await gov.wait_for(lambda: len(entries(gov, msg_id, S.RECALLED)) >= 2, within=20)
    said = [r for s, r in gov.statements(msg_id) if s is S.RECALLED]
    assert said == [None, None], "two answers, each for the document: nothing stopped twice"
    await cc.wait_for(lambda: bool(entries(cc, msg_id, S.RECALL)), within=20)
    told = [s for s, _ in cc.statements(msg_id) if s is S.RECALL]
    assert told == [S.RECALL], "the recipients are told once"


async def test_recall_by_an_organisation_that_did_not_send_it_is_refused_and_stops_nothing(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc, jl = (spokes_at(hub, o) for o in ("jl.gov", "jl.cc", "jl.jl"))
    await gov.connect()
    await cc.connect()
    sealed = await gov.send(["jl.cc", "jl.jl"], contents=[b"y"])
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, S.DELIVERED, "jl.cc"), within=20)

    await cc.publish_raw(statement(cc, S.RECALL, sealed, recipient=None))

    await cc.wait_for(lambda: bool(entries(cc, msg_id, S.REFUSED)), within=20)
    (refused,) = entries(cc, msg_id, S.REFUSED)
    assert refused.reason == "flow.not_sender"
    assert "only its sender, jl.gov" in (refused.detail or "")
    await jl.connect()  # its delivery was not stopped
    await jl.wait_for(lambda: msg_id in jl.received, within=20)
    assert not entries(jl, msg_id, S.RECALL)


async def test_return_and_recall_answers_reach_the_sender_and_misplaced_ones_are_refused(
    hub: HubProcess, spokes_at: SpokeMaker
) -> None:
    gov, cc, jl = (spokes_at(hub, o) for o in ("jl.gov", "jl.cc", "jl.jl"))
    for spoke in (gov, cc, jl):
        await spoke.connect()
    returned = await gov.send(["jl.cc"], contents=[b"misaddressed"])
    other = await gov.send(["jl.cc"], contents=[b"kept"])
    for sealed in (returned, other):
        await gov.wait_for(
            lambda s=sealed: gov.has(s.header.msg_id, S.DELIVERED, "jl.cc"),
            within=20,
        )
    r_id, o_id = returned.header.msg_id, other.header.msg_id

    await cc.publish_raw(statement(cc, S.RETURNED, returned, recipient="jl.cc", note="非我单位"))
    await gov.wait_for(lambda: gov.has(r_id, S.RETURNED, "jl.cc"), within=20)
    (back,) = entries(gov, r_id, S.RETURNED)
    assert (
        open_note(
            returned.note_key, back.note or b"", msg_id=r_id, status="RETURNED", issuer="jl.cc"
        )
        == "非我单位"
    )

    # an answer to a recall nobody made; a return by an organisation it was not sent to;
    # a statement naming another frame of the document
    await cc.publish_raw(statement(cc, S.WITHDRAWN, other, recipient="jl.cc"))
    await jl.publish_raw(statement(jl, S.RETURNED, other, recipient="jl.jl"))
    await cc.publish_raw(statement(cc, S.RETURNED, other, recipient="jl.cc", subject=bytes(32)))
    await cc.wait_for(lambda: len(entries(cc, o_id, S.REFUSED)) == 2, within=20)
    await jl.wait_for(lambda: bool(entries(jl, o_id, S.REFUSED)), within=20)
    assert sorted(e.reason or "" for e in entries(cc, o_id, S.REFUSED)) == [
        "flow.not_recalled",
        "flow.wrong_subject",
    ]
    (outsider,) = entries(jl, o_id, S.REFUSED)
    assert outsider.reason == "flow.unknown_message", "told nothing of another's document"
    assert "jl.gov" not in (outsider.detail or "")
    assert all(e.recipient == "jl.cc" for e in entries(cc, o_id, S.REFUSED))

    # labelled above the channel it came on: refused on that channel's ceiling, saying
    # nothing of the document
    high = statement(cc, S.RETURNED, other, recipient="jl.cc", label=Classification.TOP_SECRET)
    await cc.publish_raw(high)
    await cc.wait_for(lambda: len(entries(cc, o_id, S.REFUSED)) == 3, within=20)
    above = [e for e in entries(cc, o_id, S.REFUSED) if (e.reason or "").startswith("policy.")]
    assert [(e.reason, e.classification) for e in above] == [
        ("policy.arrival_channel_below_label", Classification.INTERNAL)
    ]

    await gov.publish_raw(statement(gov, S.RECALL, other, recipient=None))
    await cc.wait_for(lambda: bool(entries(cc, o_id, S.RECALL)), within=20)
    await cc.publish_raw(
        statement(cc, S.RECALL_REFUSED, other, recipient="jl.cc", note="已按此文部署工作")
    )
    await gov.wait_for(lambda: gov.has(o_id, S.RECALL_REFUSED, "jl.cc"), within=20)
    assert not gov.has(o_id, S.RETURNED)
    assert [e.recipient for e in entries(gov, o_id, S.RECALLED)] == [None], (
        "jl.cc had confirmed it: nothing was stopped"
    )
