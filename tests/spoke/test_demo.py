"""``make demo`` (spoke/demo.py) as a newcomer runs it: it ends by saying where to look next,
every command it prints works as printed, and its hub starts without an expiry warning."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def run_demo(cwd: Path) -> str:
    """The demo from ``cwd`` with its default folder (demo-run/), a short backlog."""
    done = subprocess.run(
        [sys.executable, "-m", "spoke.demo", "--backlog", "3"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def next_steps(output: str) -> list[str]:
    """The commands under 'where to look next'."""
    tail = output[output.index("where to look next") :].splitlines()[1:]
    return [line.strip() for line in tail if line.startswith("  ") and " --config " in line]


def warnings(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("level") in {"warning", "error", "critical"}:
                events.append(event)
    return events


def test_the_demo_says_where_to_look_next_and_every_command_it_prints_works(
    tmp_path: Path,
) -> None:
    output = run_demo(tmp_path)
    commands = next_steps(output)
    assert any(c.endswith("hubctl status --config demo-run/hub.toml") for c in commands), output
    assert any(" trace " in c for c in commands), output
    for command in commands:
        done = subprocess.run(  # noqa: S603 - the demo's own printed commands
            shlex.split(command), cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        assert done.stdout.strip(), command
    trace = next(c for c in commands if " trace " in c)
    traced = subprocess.run(  # noqa: S603
        shlex.split(trace), cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert "SIGNED_FOR" in traced.stdout  # the 机密 report, signed for by 国务院办公厅
    # the directory the demo signs outlives [expiry] directory_warn_days: a quiet start
    run = tmp_path / "demo-run"
    assert warnings(run / "hub.log") == []
    for log in run.glob("*.log"):
        expiring = [e for e in warnings(log) if str(e.get("event", "")).endswith("expiring")]
        assert expiring == [], log.name
