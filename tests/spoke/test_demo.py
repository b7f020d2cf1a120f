"""``make demo`` (spoke/demo.py) as a newcomer runs it: it ends by saying where to look next,
every command and address it prints works as printed, and its hub starts without an
expiry warning. Run with ``--keep``, so the status page it names is there to load; the
printed ``kill`` ends it (the same commands, less the page, are printed without it)."""

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

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def demo_output(tmp_path: Path) -> Iterator[str]:
    """The demo's output, run from ``tmp_path`` with its default folder (demo-run/)."""
    done = subprocess.run(
        [sys.executable, "-m", "spoke.demo", "--backlog", "3", "--keep"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    left = re.findall(r"(?m)^stop with: kill ([\d ]+)$", done.stdout)
    pids = [int(p) for p in " ".join(left).split()]
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        yield done.stdout
    finally:
        for pid in pids:  # the hub and spokes it left running, if the test did not stop them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def printed(output: str) -> tuple[list[str], str, str]:
    """The commands under 'where to look next', the status page's address, the kill line."""
    tail = output[output.index("where to look next") :].splitlines()[1:]
    commands = [line.strip() for line in tail if line.startswith("  ") and " --config " in line]
    url = next(line.strip() for line in tail if line.strip().startswith("http://"))
    kill = re.findall(r"(?m)^stop with: (kill [\d ]+)$", output)[0]
    return commands, url, kill


def warnings(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("level") in {"warning", "error", "critical"}:
                events.append(event)
    return events


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_demo_says_where_to_look_next_and_everything_it_prints_works(
    demo_output: str, tmp_path: Path
) -> None:
    commands, url, kill = printed(demo_output)
    assert any(c.endswith("hubctl status --config demo-run/hub.toml") for c in commands)
    for command in commands:
        done = subprocess.run(  # noqa: S603 - the demo's own printed commands
            shlex.split(command), cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        assert done.stdout.strip(), command
        if " trace " in command:  # the 机密 report, signed for by 国务院办公厅
            assert "SIGNED_FOR" in done.stdout
        if " status --config demo-run/hub.toml" in command:  # the running hub answered
            assert "answered on" in done.stdout
    with urllib.request.urlopen(url, timeout=10) as page:  # noqa: S310 - the demo's loopback
        assert page.status == 200
        assert b"<html" in page.read().lower()
    # the directory the demo signs outlives [expiry] directory_warn_days: a quiet start
    run = tmp_path / "demo-run"
    told = warnings(run / "hub.log")
    # the one the story means: 农安县 never acknowledges the emergency notice
    assert [(e["event"], e.get("unacknowledged")) for e in told] == [
        ("emergency.unacknowledged", ["jl.cc.nongan"])
    ] * len(told)
    assert told, "the unacknowledged emergency is named in the hub's log"
    for log in run.glob("*.log"):
        expiring = [e for e in warnings(log) if str(e.get("event", "")).endswith("expiring")]
        assert expiring == [], log.name
    subprocess.run(shlex.split(kill), check=True)  # noqa: S603 - the demo's printed kill
    pids = [int(p) for p in kill.split()[1:]]
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
