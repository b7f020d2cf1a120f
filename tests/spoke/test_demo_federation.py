"""``make demo-federation`` (spoke/fedemo.py) as a newcomer runs it, judged by the folders and
logs it leaves rather than by what it prints: the 机密 notice delivered on the classified link
across two hubs, the 函 from 农安县 delivered and signed for across three, the 秘密 letter
refused at the national hub with its reason in the sender's status.json, each province's
uplink connected; and every command it prints works as printed. Run with ``--keep``, so the
status page it names is there to load; the printed ``kill`` ends it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.world import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The demo's folder and output, run from a folder of its own with its default scratch
    folder (demo-federation-run/), still running."""
    cwd = tmp_path_factory.mktemp("fedemo")
    done = subprocess.run(
        [sys.executable, "-m", "spoke.fedemo", "--keep"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    left = re.findall(r"(?m)^stop with: kill ([\d ]+)$", done.stdout)
    pids = [int(p) for p in " ".join(left).split()]
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        yield cwd, done.stdout
    finally:
        for pid in pids:  # what it left running, if the test did not stop it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def sent(folder: Path, org: str, name: str) -> dict[str, Any]:
    """The sender's sent/<msg_id>/status.json of the drop named ``name``."""
    for path in (folder / org / "sent").glob("*/status.json"):
        status: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if status["name"] == name:
            return status
    raise AssertionError(f"{org} has no sent/*/status.json for {name}")


def received(folder: Path, org: str, msg_id: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(
        (folder / org / "inbox" / msg_id / "meta.json").read_text(encoding="utf-8")
    )
    return meta


def events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log.read_text(errors="replace").splitlines() if x[:1] == "{"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_three_documents_end_as_the_issue_asks(demo: tuple[Path, str]) -> None:
    run = demo[0] / "demo-federation-run"
    # 机密 from the State Council to Jilin's general office, on the classified link
    notice = sent(run, "cn.gov", "涉密通知.txt")
    assert (notice["classification"], notice["channel"]) == ("SECRET", "classified")
    assert notice["recipients"]["jl.gov"]["status"] == "DELIVERED"
    assert notice["recipients"]["jl.gov"]["copy_number"] == "000001"  # 份号
    assert received(run, "jl.gov", notice["msg_id"])["sender"]["id"] == "cn.gov"
    # the 函 from 农安县 to 康平县: DELIVERED, then 签收, back at the sender
    letter = sent(run, "jl.cc.nongan", "商洽函.txt")
    kangping = letter["recipients"]["ln.sy.kangping"]
    assert kangping["status"] == "SIGNED_FOR"
    assert [h["status"] for h in kangping["history"]] == ["DELIVERED", "SIGNED_FOR"]
    assert received(run, "ln.sy.kangping", letter["msg_id"])["sender"]["id"] == "jl.cc.nongan"
    # the 秘密 letter: accepted by Jilin's hub, refused by the national hub
    refused = sent(run, "jl.gov", "涉密函.txt")
    assert (refused["hub"], refused["status"]) == ("ACCEPTED", "REFUSED")
    ln_gov = refused["recipients"]["ln.gov"]
    assert (ln_gov["status"], ln_gov["reason"]) == ("REFUSED", "policy.no_channel")
    assert ln_gov["detail"].startswith("hub cn.hub refused it: ")
    assert not (run / "ln.gov" / "inbox" / refused["msg_id"]).exists()
    national = events(run / "cn.hub.log")
    assert [(e["msg_id"], e["reason"]) for e in national if e["event"] == "message.rejected"] == [
        (refused["msg_id"], "policy.no_channel")
    ]
    # the operators' path: two uplinks on Jilin's link, one on Liaoning's
    for member, channels in (("jl.hub", ["govnet", "classified"]), ("ln.hub", ["govnet"])):
        up = [
            e["channel"] for e in events(run / f"{member}.log") if e["event"] == "uplink.connected"
        ]
        assert sorted(up) == sorted(channels), member
    # nothing went wrong anywhere that the story does not tell
    for log in run.glob("*.log"):
        errors = [e for e in events(log) if e.get("level") in {"error", "critical"}]
        assert errors == [], log.name


def test_make_demo_federation_runs_this_module_with_the_demo_args() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\ndemo-federation: setup\n", 1)[1].split("\n", 1)[0]
    assert recipe.split() == ["$(PY)", "-m", "spoke.fedemo", "$(DEMO_ARGS)"]


def test_everything_it_prints_works_and_the_kill_ends_it(demo: tuple[Path, str]) -> None:
    cwd, output = demo
    assert "$ hubctl trace" in output  # the 函 at two hubs, each naming the next
    assert output.count("went on through") == 2
    tail = output[output.index("where to look next") :].splitlines()[1:]
    commands = [line.strip() for line in tail if line.startswith("  ") and " --config " in line]
    assert len(commands) == 4
    for command in commands:
        done = subprocess.run(  # noqa: S603 - the demo's own printed commands
            shlex.split(command), cwd=cwd, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        if " trace " in command:  # the 函's whole way, hub by hub, each naming the next
            assert done.stdout.count("--- at the hub of") == 2, done.stdout
            assert "handed on to hub cn.hub" in done.stdout
            assert (
                "relayed by hub jl.hub; routed on govnet to ln.sy.kangping; handed on to hub ln.hub"
                in done.stdout
            )
            assert "relayed by hub cn.hub" in done.stdout  # at Liaoning's hub, the last hop
            assert re.search(r"ln\.sy\.kangping .* SIGNED_FOR", done.stdout), done.stdout
        if "jl.gov.toml" in command:
            assert "REFUSED" in done.stdout, done.stdout
        if " status --config demo-federation-run/cn.hub/hub.toml" in command:  # both members
            for member, link in (("jl.hub", "govnet,classified"), ("ln.hub", "govnet")):
                row = rf"(?m)^{re.escape(member)} \S+ +member +\S+ +{link} +govnet online"
                assert re.search(row, done.stdout), done.stdout
    url = next(line.strip() for line in tail if line.strip().startswith("http://"))
    with urllib.request.urlopen(url, timeout=10) as page:  # noqa: S310 - the demo's loopback
        assert page.status == 200
    kill = re.findall(r"(?m)^stop with: (kill [\d ]+)$", output)[0]
    subprocess.run(shlex.split(kill), check=True)  # noqa: S603 - the demo's printed kill
    pids = [int(p) for p in kill.split()[1:]]
    assert len(pids) == 8  # three hubs, five spokes
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
