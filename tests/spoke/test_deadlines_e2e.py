"""Deadlines, reminders (催办), reports of handling and the emergency alarm end to end
(issue 16, parts 2, 4 and 5): real spoke processes, a real hubd with a fast deadline desk
and an emergency command, the embedded broker, metadata and commands as integrators use
them. A recipient offline when its deadline passes gets its reminders when it comes back.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from tests.spoke.procs import FAST_HUB, Exchange, SpokeProcess, eventually, make_exchange
from tests.world import World

WITHIN = 40.0


@pytest.fixture(scope="module")
def alarm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the emergency command writes what the hub handed it (one JSON per line)."""
    folder = tmp_path_factory.mktemp("alarm")
    script = folder / "alarm.py"
    out = folder / "alarms.jsonl"
    script.write_text(
        "import sys\n"
        f"with open({str(out)!r}, 'ab') as f:\n"
        "    f.write(sys.stdin.buffer.read() + b'\\n')\n"
    )
    return folder


@pytest.fixture(scope="module")
def exchange(
    world: World, tmp_path_factory: pytest.TempPathFactory, alarm: Path
) -> Iterator[Exchange]:
    command = json.dumps([sys.executable, str(alarm / "alarm.py")])
    desk = f'[deadlines]\nlook_every = 0.3\nremind_before = "2s"\nemergency_command = {command}\n'
    ex = make_exchange(tmp_path_factory.mktemp("deadlines"), world, "embedded",
                       hub_toml=FAST_HUB + desk)  # fmt: skip
    try:
        asyncio.run(ex.running("jl.gov", "jl.cc"))
        yield ex
    finally:
        ex.close()


def sent_status(spoke: SpokeProcess, name: str) -> dict[str, Any]:
    status = spoke.status(name)
    assert status is not None
    return status


async def recipient_where(
    spoke: SpokeProcess, name: str, org: str, check: Any, what: str
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = spoke.status(name)
        entry = None if status is None else status["recipients"].get(org)
        return entry if entry is not None and check(entry) else None

    found: dict[str, Any] = await eventually(reached, what, within=WITHIN)
    return found


async def test_a_late_recipient_is_reminded_even_offline_and_a_report_reaches_the_sender(
    exchange: Exchange,
) -> None:
    gov, cc = exchange.spokes["jl.gov"], exchange.spokes["jl.cc"]
    meta = {"主送": ["jl.cc", "jl.jl"], "密级": "内部", "文种": "通知", "标题": "限时签收通知",
            "签收时限": "4s", "办理时限": "1d"}  # fmt: skip
    gov.drop("限时通知.txt", "请按时签收。\n".encode(), meta)
    status = await gov.wait_status("限时通知.txt", "jl.cc", within=WITHIN)
    msg_id = str(status["msg_id"])
    assert status["terms"]["sign_by"] is not None
    assert cc.cli("sign-for", msg_id).returncode == 0
    inbox_meta = json.loads((cc.inbox / msg_id / "meta.json").read_text(encoding="utf-8"))
    assert inbox_meta["terms"]["done_by"] is not None, "the recipient sees what is asked"

    late = await recipient_where(
        gov, "限时通知.txt", "jl.jl", lambda e: (e.get("overdue") or {}).get("sign_by"),
        "jl.jl overdue at the sender",
    )  # fmt: skip
    assert [r["deadline"] for r in late["reminders"]][:2] == ["sign_by", "sign_by"]
    assert not (sent_status(gov, "限时通知.txt")["recipients"]["jl.cc"].get("overdue") or {}).get(
        "sign_by"
    ), "jl.cc signed for it in time"

    jl = await exchange.spoke("jl.jl").started()  # offline until now: it catches up
    reminders = jl.inbox / msg_id / "reminders.json"
    await eventually(reminders.exists, "jl.jl's reminders after catching up", within=WITHIN)
    said = json.loads(reminders.read_text(encoding="utf-8"))
    assert {r["deadline"] for r in said} == {"sign_by"}

    done = cc.cli("report", msg_id, "--status", "办结", "--comment", "已按要求落实")
    assert done.returncode == 0, done.stderr
    handled = await recipient_where(
        gov, "限时通知.txt", "jl.cc", lambda e: (e.get("handling") or {}).get("status") == "DONE",
        "jl.cc's 办结 at the sender",
    )  # fmt: skip
    assert handled["handling"]["comment"] == "已按要求落实"
    assert exchange.hub is not None
    assert "已按要求落实" not in (exchange.hub.folder / "hubd.log").read_text(encoding="utf-8")


async def test_an_emergency_drill_nobody_at_one_recipient_acknowledges_alarms_the_operator(
    exchange: Exchange, alarm: Path
) -> None:
    gov, cc = exchange.spokes["jl.gov"], exchange.spokes["jl.cc"]
    jl = await exchange.spoke("jl.jl").started() if not exchange.spoke("jl.jl").running else (
        exchange.spokes["jl.jl"]
    )  # fmt: skip
    meta = {"主送": ["jl.cc", "jl.jl"], "密级": "内部", "紧急程度": "特提", "文种": "应急",
            "标题": "关于启动防汛应急响应的通知", "签收时限": "3s", "演练": True}  # fmt: skip
    gov.drop("应急演练.txt", "立即启动应急响应。\n".encode(), meta)
    status = await gov.wait_status("应急演练.txt", "jl.jl", within=WITHIN)
    msg_id = str(status["msg_id"])
    assert cc.cli("sign-for", msg_id).returncode == 0  # jl.jl never signs for it

    alarms = alarm / "alarms.jsonl"

    def raised() -> dict[str, Any] | None:
        if not alarms.exists():
            return None
        for line in alarms.read_text(encoding="utf-8").splitlines():
            found: dict[str, Any] = json.loads(line)
            if found["msg_id"] == msg_id:
                return found
        return None

    described = await eventually(raised, "the emergency command's JSON", within=WITHIN)
    assert described["drill"] is True
    assert [u["org"] for u in described["unacknowledged"]] == ["jl.jl"]
    reminders = jl.inbox / msg_id / "reminders.json"
    await eventually(reminders.exists, "jl.jl reminded of the emergency", within=WITHIN)
    assert all("【演练】" in r["detail"] for r in json.loads(reminders.read_text(encoding="utf-8")))


async def test_a_deadline_already_past_and_a_report_on_a_document_never_received_are_refused(
    exchange: Exchange,
) -> None:
    gov, cc = exchange.spokes["jl.gov"], exchange.spokes["jl.cc"]
    meta = {"主送": "jl.cc", "密级": "内部", "文种": "通知", "标题": "过期时限",
            "签收时限": "2020-01-01T00:00:00+08:00"}  # fmt: skip
    gov.drop("过期时限.txt", b"x\n", meta)

    def failed() -> tuple[str, dict[str, Any]] | None:
        return gov.failure("过期时限.txt")

    _text, error = await eventually(failed, "the drop refused", within=WITHIN)
    assert error["rule"] == "drop.deadline_past"

    never = cc.cli("report", "0" * 32, "--status", "DONE")
    assert never.returncode != 0
    (line,) = never.stderr.strip().splitlines()
    assert "0" * 32 in line


async def test_a_petition_transferred_down_is_accepted_and_handled_and_no_stranger_joins_its_case(
    exchange: Exchange,
) -> None:
    gov, cc = exchange.spokes["jl.gov"], exchange.spokes["jl.cc"]
    county = await exchange.spoke("jl.cc.nongan").started()
    stranger = exchange.spokes.get("jl.jl") or await exchange.spoke("jl.jl").started()
    case = "吉信〔2026〕0815号"

    def petition(to: str, title: str) -> dict[str, object]:
        return {"主送": to, "密级": "内部", "文种": "信访件", "标题": title, "信访件编号": case,
                "受理时限": "15天", "办理时限": "60天"}  # fmt: skip

    gov.drop(
        "来信转送.txt", "（信访人及诉求，只在加密内容中）\n".encode(), petition("jl.cc", "转送")
    )
    first = await gov.wait_status("来信转送.txt", "jl.cc", within=WITHIN)
    cc.drop("来信交办.txt", "请农安县依法办理。\n".encode(), petition("jl.cc.nongan", "交办"))
    down = await cc.wait_status("来信交办.txt", "jl.cc.nongan", within=WITHIN)
    assert first["terms"]["case"] == down["terms"]["case"] == case

    stranger.drop("冒用案号.txt", b"x\n", petition("jl.cc", "not mine"))

    def refused() -> tuple[str, dict[str, Any]] | None:
        return stranger.failure("冒用案号.txt")

    _text, error = await eventually(refused, "the stranger's petition refused", within=WITHIN)
    assert error["rule"] == "envelope.case_not_held"

    msg_id = str(down["msg_id"])
    for status, wanted in (("受理", "CASE_ACCEPTED"), ("办结", "DONE")):
        done = county.cli("report", msg_id, "--status", status, "--comment", "已依法答复信访人")
        assert done.returncode == 0, done.stderr
        await recipient_where(
            cc, "来信交办.txt", "jl.cc.nongan",
            lambda e, w=wanted: (e.get("handling") or {}).get("status") == w,
            f"农安县's {status} at 长春市",
        )  # fmt: skip
    assert exchange.hub is not None
    config = str(exchange.hub.folder / "hub.toml")
    shown = await asyncio.to_thread(
        CliRunner().invoke, hubctl_app, ["cases", case, "--json", "--config", config]
    )
    assert shown.exit_code == 0, shown.output
    history = json.loads(shown.stdout)
    assert [s["sender"] for s in history["steps"]] == ["jl.gov", "jl.cc"]
    assert history["open"] is False
    assert "信访人" not in shown.stdout
