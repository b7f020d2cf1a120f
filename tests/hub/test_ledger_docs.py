"""Every `hubctl audit` command docs/operations.md tells an operator to type, run as written
(paths and placeholders replaced by this test's), in the order of a restore from backup."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubd.cli import hubctl_app
from tests.hub.test_ledger_tamper import (
    SIGNED_AT,
    add_message,
    append,
    make_hub,
    sign,
)
from tests.hub.test_store import new_message
from tests.world import REPO, World

GUIDE = REPO / "docs" / "operations.md"
CONFIG = "/etc/govxchg/hub.toml"


def audit_commands() -> list[str]:
    """The guide's `hubctl audit ...` commands: code lines and inline spans, as written."""
    text = GUIDE.read_text(encoding="utf-8")
    found = [line for line in text.splitlines() if line.startswith("hubctl audit ")]
    found += [" ".join(span.split()) for span in re.findall(r"`(hubctl audit [^`]+)`", text)]
    cron = [
        line for line in text.splitlines() if re.match(r"^[0-9*]+ [0-9*]+ .* hubctl audit", line)
    ]
    return list(dict.fromkeys(found)) + cron


def test_the_guide_shows_each_audit_command_the_tests_below_run() -> None:
    commands = audit_commands()
    for start in (
        "hubctl audit verify --config",
        "hubctl audit restored --reason",
        "hubctl audit prove MSG_ID",
        "hubctl audit check-evidence FILE",
    ):
        assert any(c.startswith(start) for c in commands), start


def test_every_audit_command_of_the_guide_runs_as_written(
    tmp_path: Path, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = make_hub(tmp_path / "hub", world)
    add_message(hub, 1)
    append(hub, 3)
    sign(hub, SIGNED_AT + 4)
    backup = tmp_path / "backup-2026-11-30.db"
    shutil.copyfile(hub.db, backup)
    append(hub, 4)
    work = tmp_path / "work"
    work.mkdir()
    (work / "checkpoint.ckpt").write_bytes(sign(hub, SIGNED_AT + 8))  # a spoke's, copied over
    shutil.copyfile(hub.public_key_file, work / "hub.pub.json")
    (work / "config").mkdir()  # a bare `hubctl audit verify` reads config/hub.toml
    shutil.copyfile(hub.config, work / "config" / "hub.toml")
    monkeypatch.chdir(work)
    msg_id = new_message(1).row["msg_id"].hex()

    def run(command: str) -> tuple[int, str]:
        command = command.replace(CONFIG, str(hub.config))
        command = command.replace(
            "sqlite+aiosqlite:////backup/hub-DATE.db", f"sqlite+aiosqlite:///{backup}"
        )
        command = command.replace("MSG_ID", msg_id).replace("FILE", "evidence.json")
        argv = shlex.split(command, comments=True)
        result = CliRunner().invoke(hubctl_app, argv[1:])
        return result.exit_code, result.output

    commands = audit_commands()

    # intact, before the restore
    verifies = [c for c in commands if c.startswith("hubctl audit verify")]
    for command in verifies:
        if "evidence.json" not in command:  # those check the file prove writes (below)
            code, output = run(command)
            assert code == 0, (command, output)
    code, output = run(next(c for c in commands if c.startswith("hubctl audit prove")))
    assert code == 0, output
    code, output = run(next(c for c in commands if c.startswith("hubctl audit check-evidence")))
    assert code == 0, output
    for command in verifies:
        if "evidence.json" in command:
            code, output = run(command)
            assert code == 0, (command, output)

    # the cron line, through a shell, with hubctl on the PATH as the package installs it
    cron = next(c for c in commands if not c.startswith("hubctl"))
    line = " ".join(cron.split()[6:])  # minute hour day month weekday user, then the command
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(  # noqa: S603 - the guide's own line
        ["bash", "-c", line.replace(CONFIG, str(hub.config))],  # noqa: S607
        env=env,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    # the restore from backup, as the runbook orders it
    shutil.copyfile(backup, hub.db)
    witnessed = next(c for c in commands if "--witness checkpoint.ckpt" in c)
    code, output = run(witnessed)
    assert code == 1, output
    assert "the store is older than what the witness saw" in output
    code, output = run(next(c for c in commands if c.startswith("hubctl audit restored --reason")))
    assert code == 0, output
    code, output = run(witnessed)
    assert code == 0, output
    assert "explained:" in output
