"""Deadlines, reports and the emergency alarm at a real hubd process with simulated spokes
on a real Mosquitto (issue 16, parts 2 and 4): reminders (催办) reach the late recipient and
the sender, a report of handling reaches the sender and meets its deadline, a deadline past
on arrival is refused, an unacknowledged 应急 at 特提 runs the operator's command, and
``hubctl overdue`` lists who is late."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from runtime.clock import now_ms
from schemas.ids import msg_id_text
from schemas.labels import DocType, Precedence
from schemas.receipts import ReceiptEntry, ReceiptStatus
from schemas.terms import Terms
from tests.hub.conftest import NO_RETRIES, HubFactory, RecordingSpoke, SpokeMaker
from tests.hub.test_flows_hub import statement
from tests.hubproc import HubProcess

S = ReceiptStatus
FAST = NO_RETRIES + '\n[deadlines]\nlook_every = 0.3\nremind_before = "2s"\n'


@pytest.fixture
def broker_kind() -> str:
    return "mosquitto"


def terms(**set_: object) -> Terms:
    fields: dict[str, object] = {
        "sign_by": None,
        "done_by": None,
        "case": None,
        "accept_by": None,
        "drill": False,
    }
    return Terms(**(fields | set_))  # type: ignore[arg-type]


def reminded(spoke: RecordingSpoke, msg_id: bytes) -> list[ReceiptEntry]:
    return [e for e in spoke.receipts[msg_id] if e.status is S.REMINDED]


async def hubctl(hub: HubProcess, *args: str) -> str:
    result = await asyncio.to_thread(
        CliRunner().invoke, hubctl_app, [*args, "--config", str(hub.folder / "hub.toml")]
    )
    assert result.exit_code == 0, result.output
    return result.stdout


async def test_a_late_recipient_and_its_sender_are_reminded_and_a_report_meets_done_by(
    hub_factory: HubFactory, spokes_at: SpokeMaker
) -> None:
    hub = hub_factory(extra_toml=FAST)
    gov, cc, jl = (spokes_at(hub, o) for o in ("jl.gov", "jl.cc", "jl.jl"))
    for spoke in (gov, cc, jl):
        await spoke.connect()
    sealed = await gov.send(
        ["jl.cc", "jl.jl"], contents=[b"x"], terms=terms(done_by=now_ms() + 4_000)
    )
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, S.DELIVERED, "jl.jl"), within=20)
    await cc.publish_raw(statement(cc, S.DONE, sealed, recipient="jl.cc", note="已办结"))
    await gov.wait_for(lambda: gov.has(msg_id, S.DONE, "jl.cc"), within=20)

    await jl.wait_for(lambda: len(reminded(jl, msg_id)) >= 2, within=20)  # before, then due
    assert {e.reason for e in reminded(jl, msg_id)} == {"deadline.done_by"}
    assert all(e.recipient == "jl.jl" for e in reminded(gov, msg_id)), "jl.cc reported 办结"
    assert reminded(gov, msg_id), "the sender hears who is late"
    assert not reminded(cc, msg_id)

    listed = json.loads(await hubctl(hub, "overdue", "--json"))
    late = [(o["recipient"], o["deadline"]) for o in listed["overdue"]]
    assert late == [("jl.jl", "done_by")]
    text = await hubctl(hub, "overdue", "jl.cc")
    assert text.startswith("nothing overdue (owed by or to jl.cc)")


async def test_a_document_whose_deadline_passed_before_it_arrived_is_refused(
    hub_factory: HubFactory, spokes_at: SpokeMaker
) -> None:
    hub = hub_factory(extra_toml=FAST)
    gov = spokes_at(hub, "jl.gov")
    await gov.connect()
    now = now_ms()
    sealed = await gov.send(["jl.cc"], contents=[b"y"], created_at=now - 2_000,
                            terms=terms(sign_by=now - 1_000))  # fmt: skip
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, S.REJECTED), within=20)
    (rejected,) = [e for e in gov.receipts[msg_id] if e.status is S.REJECTED]
    assert rejected.reason == "envelope.deadline_past"


async def test_an_unacknowledged_emergency_runs_the_operators_command_and_a_drill_says_so(
    hub_factory: HubFactory, spokes_at: SpokeMaker, tmp_path: Path
) -> None:
    out = tmp_path / "alarm.json"
    script = tmp_path / "alarm.py"
    script.write_text(
        f"import sys, pathlib\npathlib.Path({str(out)!r}).write_bytes(sys.stdin.buffer.read())\n"
    )
    command = json.dumps([sys.executable, str(script)])
    hub = hub_factory(extra_toml=FAST + f"emergency_command = {command}\n")
    gov, cc, jl = (spokes_at(hub, o) for o in ("jl.gov", "jl.cc", "jl.jl"))
    for spoke in (gov, cc, jl):
        await spoke.connect()
    sealed = await gov.send(
        ["jl.cc", "jl.jl"],
        contents=[b"emergency"],
        doc_type=DocType.EMERGENCY,
        precedence=Precedence.FLASH,
        terms=terms(sign_by=now_ms() + 3_000, drill=True),
    )
    msg_id = sealed.header.msg_id
    await gov.wait_for(lambda: gov.has(msg_id, S.DELIVERED, "jl.jl"), within=20)
    await cc.acknowledge(cc.received[msg_id].envelope, S.SIGNED_FOR)  # jl.jl never does

    async def alarmed() -> dict[str, Any]:
        for _ in range(200):
            if out.exists() and out.stat().st_size:
                found: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(hub.log_tail())

    described = await alarmed()
    assert described["event"] == "emergency.unacknowledged"
    assert described["drill"] is True
    assert described["msg_id"] == msg_id_text(msg_id)
    assert [u["org"] for u in described["unacknowledged"]] == ["jl.jl"]
    events = [e for e in hub.log_events() if e.get("event") == "emergency.unacknowledged"]
    assert events
    assert events[0]["unacknowledged"] == ["jl.jl"]
    assert events[0]["drill"] is True
    await gov.wait_for(lambda: bool(reminded(gov, msg_id)), within=20)
    assert all("【演练】" in (e.detail or "") for e in reminded(gov, msg_id))
