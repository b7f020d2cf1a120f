"""The deadline desk (hubd.engine.deadlines) on a real store (SQLite and PostgreSQL), its
clock moved by hand: which reminders (催办) it signs, numbers and sends to whom, what it
counts as overdue, when a document is closed, and the emergency alarm with the operator's
command run on a JSON description."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Connection, select, update

from hubd.config import Deadlines
from hubd.core.deadlines import DAY_MS, MINUTE_MS, Handling, Kind
from hubd.core.states import DeliveryState
from hubd.engine.deadlines import DeadlineDesk
from hubd.engine.flows import SetHandling, StopDeliveries
from hubd.engine.issuer import ReceiptIssuer
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.db import Store
from hubd.store.terms import all_items
from hubd.store.writes import DeliveryUpdate, DirectWrite, UpdateDeliveries
from hubd.web.statuspage import overdue_json
from schemas import transport
from schemas.ids import msg_id_text
from schemas.labels import DocType, Precedence
from schemas.receipts import ReceiptStatus, verify_receipts
from tests.hub.test_store import NOW, db_url, msg_id, new_message  # noqa: F401 - a fixture
from tests.world import World


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:  # noqa: F811 - the store of test_store
    async with Store(db_url) as opened:
        yield opened


class Sent(list[tuple[str, str, bytes]]):
    """What the issuer published: (channel, org, payload)."""


def issuer_for(world: World, store: Store, clock: Clock, sent: Sent) -> ReceiptIssuer:
    loop = asyncio.get_running_loop()

    def publish(channel: str, org: str, payload: bytes) -> asyncio.Future[bool]:
        sent.append((channel, org, payload))
        done = loop.create_future()
        done.set_result(True)
        return done

    return ReceiptIssuer(world.directory.hub_id, world.hub_key, store, publish, clock)


async def with_terms(store: Store, n: int, recipients: tuple[str, ...], **terms: object) -> bytes:
    message = new_message(n, recipients=recipients)
    message.row |= {
        "sign_by": None,
        "accept_by": None,
        "done_by": None,
        "case_no": None,
        "drill": False,
        "terms_open": True,
    } | terms
    await store.submit(message)
    return msg_id(n)


def reminders(world: World, sent: Sent) -> list[tuple[str, str | None, str | None]]:
    """(to whom, about which recipient, which deadline) of every REMINDED sent."""
    out = []
    for _channel, org, payload in sent:
        message = transport.decode(payload)
        assert isinstance(message, transport.ReceiptsMsg)
        assert message.seq > 0, "reminders are numbered: an offline spoke gets them at hello"
        for e in verify_receipts(message.frame, world.directory).batch.entries:
            assert e.status is ReceiptStatus.REMINDED
            out.append((org, e.recipient, e.reason))
    return sorted(out)


async def test_sign_by_is_reminded_before_and_when_due_to_the_late_recipient_and_its_sender(
    store: Store, world: World
) -> None:
    clock, sent = Clock(), Sent()
    desk = DeadlineDesk(store, issuer_for(world, store, clock, sent), Deadlines(), clock)
    m = await with_terms(store, 1, ("jl.cc", "jl.jl"), sign_by=NOW + 3 * DAY_MS)
    signed = DeliveryUpdate(m, "jl.cc", DeliveryState.SIGNED_FOR, 1, NOW + 5)
    await store.submit(UpdateDeliveries([signed], []))

    await desk.round()
    assert sent == [], "three days ahead: nothing yet"
    clock.now = NOW + 2 * DAY_MS
    await desk.round()
    assert reminders(world, sent) == [
        ("jl.gov", "jl.jl", "deadline.sign_by"),
        ("jl.jl", "jl.jl", "deadline.sign_by"),
    ], "jl.cc signed for it: only jl.jl is urged, and its sender told"
    await desk.round()
    assert len(sent) == 2, "once per stage"
    clock.now = NOW + 3 * DAY_MS
    await desk.round()
    assert len(reminders(world, sent)) == 4
    assert desk.overdue[Kind.SIGN] == 1
    rows = await store.read(select(t.reminders.c.count).where(t.reminders.c.msg_id == m))
    assert [r[0] for r in rows] == [2]


async def test_a_document_whose_every_deadline_is_met_is_closed_and_read_no_more(
    store: Store, world: World
) -> None:
    clock, sent = Clock(), Sent()
    desk = DeadlineDesk(store, issuer_for(world, store, clock, sent), Deadlines(), clock)
    m = await with_terms(store, 2, ("jl.cc",), done_by=NOW + DAY_MS)
    await store.submit(SetHandling(m, "jl.cc", Handling.DONE, NOW + 10))
    await desk.round()
    opened = await store.read(select(t.messages.c.terms_open).where(t.messages.c.msg_id == m))
    assert opened[0][0] in (False, 0)
    clock.now = NOW + 2 * DAY_MS
    await desk.round()
    assert sent == []


async def test_an_unacknowledged_emergency_is_alarmed_and_the_operators_command_gets_json(
    store: Store, world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "alarm.json"
    script = tmp_path / "alarm.py"
    script.write_text(
        f"import sys, pathlib; pathlib.Path({str(out)!r}).write_bytes(sys.stdin.buffer.read())\n"
    )
    settings = Deadlines(emergency_command=(sys.executable, str(script)))
    clock, sent = Clock(), Sent()
    desk = DeadlineDesk(store, issuer_for(world, store, clock, sent), settings, clock)
    m = await with_terms(store, 3, ("jl.cc", "jl.jl"), sign_by=NOW + 10 * MINUTE_MS, drill=True)
    await store.submit(  # an emergency notice at 特提
        Relabel(m, DocType.EMERGENCY, Precedence.FLASH)
    )
    signed = DeliveryUpdate(m, "jl.cc", DeliveryState.SIGNED_FOR, 1, NOW + 5)
    await store.submit(UpdateDeliveries([signed], []))
    clock.now = NOW + 10 * MINUTE_MS
    await desk.round()
    await desk.hooks_done()
    described = json.loads(out.read_text(encoding="utf-8"))
    assert described["event"] == "emergency.unacknowledged"
    assert described["drill"] is True
    assert [u["org"] for u in described["unacknowledged"]] == ["jl.jl"]
    assert desk.unacknowledged == 1
    page = overdue_json(desk, clock.now)  # the status page's part, in red
    assert page["emergencies"] == [
        {
            "msg_id": msg_id_text(m),
            "sender": "jl.gov",
            "sign_by": NOW + 10 * MINUTE_MS,
            "drill": True,
            "unacknowledged": ["jl.jl"],
        }
    ]
    assert page["total"] == 1
    clock.now += 5 * MINUTE_MS  # every five minutes while it is not acknowledged
    await desk.round()
    await desk.hooks_done()
    assert len([org for org, _, _ in reminders(world, sent) if org == "jl.jl"]) == 2


@dataclass(slots=True)
class Relabel(DirectWrite):
    msg_id: bytes
    doc_type: DocType
    precedence: Precedence

    def apply(self, conn: Connection) -> tuple[None, list[AuditEvent]]:
        conn.execute(
            update(t.messages)
            .where(t.messages.c.msg_id == self.msg_id)
            .values(doc_type=self.doc_type.name, precedence=self.precedence.rank)
        )
        return None, []


async def test_a_recalled_document_is_reminded_of_no_more(store: Store, world: World) -> None:
    clock, sent = Clock(), Sent()
    desk = DeadlineDesk(store, issuer_for(world, store, clock, sent), Deadlines(), clock)
    m = await with_terms(store, 4, ("jl.cc", "jl.jl"), sign_by=NOW + DAY_MS)
    delivered = DeliveryUpdate(m, "jl.cc", DeliveryState.DELIVERED, 1, NOW + 5)
    await store.submit(UpdateDeliveries([delivered], []))  # jl.cc has it: not stopped
    await store.submit(StopDeliveries(m, NOW + 10))
    clock.now = NOW + 2 * DAY_MS
    await desk.round()
    assert sent == [], "nobody is reminded of a document its sender withdrew"


async def test_a_deadline_reminded_the_most_is_read_no_more_and_still_listed_overdue(
    store: Store, world: World
) -> None:
    clock, sent = Clock(), Sent()
    settings = Deadlines(max_overdue=0)
    desk = DeadlineDesk(store, issuer_for(world, store, clock, sent), settings, clock)
    m = await with_terms(store, 5, ("jl.cc",), done_by=NOW + 2 * DAY_MS)
    for day in (1, 2, 3):  # before, when due; then nothing more
        clock.now = NOW + day * DAY_MS
        await desk.round()
    assert len(reminders(world, sent)) == 4  # two reminders, each to jl.cc and its sender
    opened = await store.read(select(t.messages.c.terms_open).where(t.messages.c.msg_id == m))
    assert opened[0][0] in (False, 0), "the desk reads it no more"
    late = [i for i in await store.read_sync(all_items) if i.msg_id == m]
    assert [(i.recipient, i.open.kind) for i in late] == [("jl.cc", Kind.DONE)]


async def test_a_petition_extended_by_its_sender_is_reminded_of_its_new_deadline_only(
    store: Store, world: World
) -> None:
    case = {"case_no": "吉信〔2026〕9号", "doc_type": "PETITION"}
    first = await with_terms(store, 8, ("jl.cc",), done_by=NOW + 10 * DAY_MS, **case)
    extension = new_message(9, recipients=("jl.cc",))
    extension.row |= {"sign_by": None, "accept_by": None, "done_by": NOW + 40 * DAY_MS,
                      "drill": False, "terms_open": True, **case}  # fmt: skip
    extension.extends = first
    await store.submit(extension)
    stranger = new_message(10, recipients=("jl.cc",))  # another sender cannot close it
    stranger.row |= {"sender": "jl.jl", "sign_by": None, "accept_by": None, "done_by": None,
                     "drill": False, "terms_open": False, **case}  # fmt: skip
    stranger.extends = msg_id(9)
    await store.submit(stranger)
    m = t.messages.c
    rows = await store.read(select(m.msg_id, m.terms_open).where(m.case_no == case["case_no"]))
    still = {bytes(r[0]): bool(r[1]) for r in rows}
    assert still == {first: False, msg_id(9): True, msg_id(10): False}
