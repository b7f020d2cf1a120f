"""hubd and hubctl as systemd and the operator run them: real processes, real exit codes.

Issue 13: ``hubd run --config config/hub.toml`` in a fresh clone printed a 50-line
traceback for the missing hub key. Now an expected failure is one line on stderr (Chinese,
then English, saying what to do), one ``hub.failed`` JSON event on stdout and exit 2.
The other cases run in-process (tests/runtime/test_guard.py,
tests/test_key_file_errors.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.world import REPO


def test_hubd_run_in_a_fresh_clone_says_in_one_line_to_make_the_hub_key_and_exits_2(
    tmp_path: Path,
) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")  # a clone: no certs/, no state/

    done = subprocess.run(
        [sys.executable, "-m", "hubd", "run", "--config", "config/hub.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("hubd run: 配置有误")
    assert "hub.key" in line
    assert str(tmp_path / "certs" / "hub" / "hub.sign.key") in line
    assert "hubctl keys init" in line
    [event] = [json.loads(line) for line in done.stdout.splitlines()]
    assert (event["event"], event["level"], event["exit_code"]) == ("hub.failed", "error", 2)
    assert "Traceback" not in done.stdout + done.stderr
