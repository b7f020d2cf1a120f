"""``spoke send`` says at once when a drop is certain to fail, and every drop has an id.

It exited 0 ("queued") for drops the agent was certain to refuse a moment later. Now it
checks the drop as the agent will, against the directory the agent holds: a drop certain
to fail goes to failed/ as the agent puts it there, under a tracking id (the msg_id it
would have been sent with; the hub never saw it), and the command exits 1 with one
bilingual line. ``spoke status ID`` and ``spoke status NAME`` say where a document is.

The spoke is installed with a verified directory in its state and not running: the
command is the only actor (an idle agent would take the queued drops).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from spoke.cli import app
from spoke.state import SpokeState
from tests.hubproc import live_directory
from tests.spoke.conftest import OfflineSpokeFactory
from tests.spoke.procs import SpokeProcess
from tests.world import World, seed_held

ORG = "jl.cc"  # a prefecture: INTERNAL, govnet only; its superiors are jl.gov and cn.gov
GOOD = ["--to", "jl.gov", "--classification", "内部", "--type", "报告", "--title", "关于供暖的报告"]
GOOD += ["--signatory", "刘某"]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def idle(world: World, tmp_path: Path) -> SpokeProcess:
    """jl.cc installed, holding a verified directory, its agent not running; one file of
    a drop may hold at most 64 bytes."""
    spoke = SpokeProcess(tmp_path / ORG, ORG, world, unused_port(), ("govnet",))
    spoke.limits = {**spoke.limits, "max_file_bytes": 64}
    spoke.write()
    for name in ("outbox", "failed", "sent", "inbox", "signfor"):
        (spoke.root / name).mkdir(parents=True)
    state = SpokeState(spoke.root / ".spoke" / "state.db")
    seed_held(state, live_directory(world), world.hub_key)
    state.close()
    return spoke


def spoke(idle: SpokeProcess, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--config", str(idle.config)])


def document(tmp_path: Path, data: bytes = "供暖情况报告正文\n".encode()) -> Path:
    path = tmp_path / "报告.txt"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("args", "data", "rule"),
    [
        (["--to", "jl.nowhere"], None, "drop.unknown_recipient"),
        (["--type", "便条"], None, "drop.bad_metadata"),  # no such 文种
        (["--classification", "机密★1年"], None, "drop.sender_clearance"),  # the hub's gating
        (["--to", "jl.gov,cn.gov", "--type", "请示"], None, "rule.request_recipient"),
        ([], b"x" * 65, "drop.file_too_large"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith(("drop.", "rule.")) else "",
)
def test_send_of_a_drop_certain_to_fail_exits_1_and_puts_it_in_failed_with_an_id(
    idle: SpokeProcess, tmp_path: Path, args: list[str], data: bytes | None, rule: str
) -> None:
    path = document(tmp_path, *([] if data is None else [data]))
    options = dict(zip(GOOD[::2], GOOD[1::2], strict=True)) | dict(
        zip(args[::2], args[1::2], strict=True)
    )

    done = spoke(idle, "send", str(path), *(x for kv in options.items() for x in kv))

    assert done.exit_code == 1, done.output
    assert done.stdout == ""
    [line] = done.stderr.splitlines()  # one line, in both languages
    assert line.startswith(f"spoke send: 交换程序拒收（{rule}），未发送")
    assert f"The spoke refused it ({rule}); nothing was sent" in line
    assert sorted(p.name for p in idle.outbox.iterdir()) == []  # nothing queued
    failed = sorted(p.name for p in idle.failed.iterdir())
    assert failed == ["报告.txt", "报告.txt.error.json", "报告.txt.error.txt", "报告.txt.meta.json"]
    assert (idle.failed / "报告.txt").read_bytes() == path.read_bytes()
    error = json.loads((idle.failed / "报告.txt.error.json").read_text(encoding="utf-8"))
    assert (error["rule"], error["refused_by"]) == (rule, "spoke")
    assert f"tracking id {error['msg_id']}" in line
    assert f"msg_id: {error['msg_id']}" in (idle.failed / "报告.txt.error.txt").read_text()

    # where is it? by its id and by its name
    for query in (error["msg_id"], "报告.txt"):
        found = spoke(idle, "status", query)
        assert found.exit_code == 0, found.output
        [row] = [r for r in found.stdout.splitlines() if error["msg_id"] in r]
        assert "refused by the spoke (never sent): failed/报告.txt" in row
        assert rule in row
    if rule.startswith("rule."):  # what each finding says, as NAME.error.txt does
        assert "请示只能主送一个上级机关" in line


def test_send_of_a_drop_that_passes_queues_it_metadata_last_and_status_finds_it_by_name(
    idle: SpokeProcess, tmp_path: Path
) -> None:
    done = spoke(idle, "send", str(document(tmp_path)), *GOOD)

    assert done.exit_code == 0, done.output
    assert "queued as the drop '报告.txt'" in done.stdout
    assert "not checked here" not in done.stdout
    assert sorted(p.name for p in idle.outbox.iterdir()) == ["报告.txt", "报告.txt.meta.json"]
    assert list(idle.failed.iterdir()) == []
    found = spoke(idle, "status", "报告.txt")
    assert found.exit_code == 0, found.output
    assert "outbox/" in found.stdout
    assert "not taken yet" in found.stdout


def test_status_of_something_unknown_exits_2_with_one_line_saying_what_to_give(
    idle: SpokeProcess,
) -> None:
    for query in ("0123456789abcdef0123456789abcdef", "无此文件.txt"):
        done = spoke(idle, "status", query)
        assert done.exit_code == 2
        [line] = done.stderr.splitlines()
        assert line.startswith("spoke status: ")
        assert "32 hex digits" in line
        assert "a drop" in line


def test_send_as_a_process_exits_1_with_one_line_and_no_traceback(
    idle: SpokeProcess, tmp_path: Path
) -> None:
    done = idle.cli("send", str(document(tmp_path)), *GOOD[:1], "jl.nowhere", *GOOD[2:])

    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "drop.unknown_recipient" in line
    assert "Traceback" not in done.stderr


async def test_the_agent_tracks_each_drop_by_the_id_it_took_it_under_sent_or_refused(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    gov = offline_spoke("jl.gov")
    notice = 'classification = "内部"\ndoc_type = "通知"\ntitle = "关于供暖的通知"\n'
    gov.drop("好.txt", b"a notice\n", f'to = "jl.cc"\n{notice}')
    gov.drop("坏.txt", b"a notice\n", f'to = "jl.nowhere"\n{notice}')

    with capture_logs() as logs:
        await gov.settle()

    claimed = {e["name"]: e["msg_id"] for e in logs if e["event"] == "drop.claimed"}
    [out] = gov.outbound()
    assert claimed["好.txt"] == out.msg_id.hex()  # the id it was taken under is the msg_id
    [failed] = [e for e in logs if e["event"] == "drop.failed"]
    assert (failed["msg_id"], failed["refused_by"]) == (claimed["坏.txt"], "spoke")
    error = json.loads((gov.failed / "坏.txt.error.json").read_text(encoding="utf-8"))
    assert error["msg_id"] == claimed["坏.txt"]
    [known] = gov.ctx.state.failed_drops(msg_id=bytes.fromhex(claimed["坏.txt"]))
    assert (known.name, known.failed, known.rule) == ("坏.txt", "坏.txt", "drop.unknown_recipient")
    assert gov.ctx.state.failed_drops(name="坏.txt") == [known]
