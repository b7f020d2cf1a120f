"""hubd and hubctl as systemd and the operator run them: real processes, real exit codes.

Issue 13: ``hubd run --config config/hub.toml`` in a fresh clone printed a 50-line
traceback for the missing hub key. Now an expected failure is one line on stderr (Chinese,
then English, saying what to do), one ``hub.failed`` JSON event on stdout and exit 2.
``hubctl reload`` (the unit's ExecReload) asks the running hub to reload its directory and
exits 0 with the version now served, or 1 with the reason when the hub refuses the file
and keeps serving the old one. The other cases run in-process (tests/runtime/test_guard.py,
tests/test_key_file_errors.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from schemas.directory import sign_directory
from tests.hub.conftest import HubSpawner, wait_for_log
from tests.hubproc import live_directory
from tests.world import REPO, World

HUBCTL = Path(sys.executable).parent / "hubctl"  # the console script ExecReload runs


def hubd_run(folder: Path) -> subprocess.CompletedProcess[str]:
    """``hubd run --config config/hub.toml`` in ``folder``, as the README has it run."""
    return subprocess.run(
        [sys.executable, "-m", "hubd", "run", "--config", "config/hub.toml"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hubd_run_in_a_fresh_clone_says_in_one_line_to_make_the_hub_key_and_exits_2(
    tmp_path: Path,
) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")  # a clone: no certs/, no state/

    done = hubd_run(tmp_path)

    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("hubd run: 配置有误")
    assert "hub.key" in line
    assert str(tmp_path / "certs" / "hub" / "hub.sign.key") in line
    assert "hubctl keys init" in line
    [event] = [json.loads(line) for line in done.stdout.splitlines()]
    assert (event["event"], event["level"], event["exit_code"]) == ("hub.failed", "error", 2)
    assert "Traceback" not in done.stdout + done.stderr


def test_an_embedded_broker_on_port_0_is_a_configuration_error_in_one_line_not_a_bug(
    tmp_path: Path,
) -> None:
    """Port 0 passed the check, then paho refused it at start: exit 70, "a bug"."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    config = tmp_path / "config" / "hub.toml"
    text = config.read_text(encoding="utf-8")
    listen = 'listen = "127.0.0.1:11883"'
    assert listen in text
    config.write_text(text.replace(listen, 'listen = "127.0.0.1:0"'), encoding="utf-8")

    done = hubd_run(tmp_path)

    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("hubd run: 配置有误")
    assert "broker.listen" in line
    assert "port 0" in line
    assert "Traceback" not in done.stdout + done.stderr


def hubctl_reload(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script, as the unit runs it
        [str(HUBCTL), "reload", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_hubctl_reload_answers_the_version_the_hub_now_serves_and_exits_0(
    spawn_hub: HubSpawner, world: World
) -> None:
    hub = spawn_hub()
    served = hub.folder / "keys" / "directory.bin"
    served.write_bytes(sign_directory(live_directory(world, version=2), world.hub_key))

    done = hubctl_reload(hub.folder / "hub.toml")
    reloaded = await wait_for_log(hub, lambda e: e.get("event") == "directory.reloaded")

    assert done.returncode == 0, done.stderr
    assert "the hub now serves directory v2 (was v1)" in done.stdout
    assert done.stderr == ""
    assert reloaded["version"] == 2


async def test_hubctl_reload_of_a_refused_directory_exits_1_with_the_reason_and_the_old_stays(
    spawn_hub: HubSpawner,
) -> None:
    hub = spawn_hub()
    (hub.folder / "keys" / "directory.bin").write_bytes(b"not a signed directory")

    done = hubctl_reload(hub.folder / "hub.toml")
    failed = await wait_for_log(hub, lambda e: e.get("event") == "directory.reload_failed")

    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("hubctl reload: 新目录文件被拒绝，枢纽继续使用 v1 / ")
    assert "keeps serving v1" in line
    assert "hubctl directory build" in line
    assert "Traceback" not in done.stdout + done.stderr
    assert failed["level"] == "error"
    assert failed["kept_version"] == 1
    assert str(failed["reason"]).startswith("decode.")
    assert "exception" not in failed
    assert hub.process is not None
    assert hub.process.poll() is None  # serving v1 still


def test_the_units_reload_is_hubctl_reload_beside_the_hubd_it_starts() -> None:
    unit = (REPO / "config" / "systemd" / "hubd.service").read_text(encoding="utf-8")
    settings = dict(line.split("=", 1) for line in unit.splitlines() if line and line[0].isalpha())

    start, reload = settings["ExecStart"].split(), settings["ExecReload"].split()

    assert start[:2] == ["/opt/govxchg/.venv/bin/hubd", "run"]
    assert reload == ["/opt/govxchg/.venv/bin/hubctl", "reload", *start[2:]]
