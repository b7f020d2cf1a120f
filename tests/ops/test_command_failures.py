"""Every command's failure as docs/operations.md "Exit codes" gives it: one line on stderr,
Chinese then English, and the code of the error's class (2: the command line or the
configuration; 3: the store or a broker; 1: another expected error), the same code the
guard gives the error when it escapes (runtime.startup). In-process through the guard the
console scripts run (runtime.startup.guarded), one real process for the exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from hubd.cli import hubctl_app, hubd_app
from runtime import startup
from spoke.cli import app as spoke_app
from tests.world import REPO

HUBCTL = Path(sys.executable).parent / "hubctl"  # the console script
UNREACHABLE = "postgresql+asyncpg://x@127.0.0.1:1/none"  # nothing listens on port 1
MSG_ID = "f38d1176b05cec1fa39ef2dce1710f11"
UNAVAILABLE = "所需的服务（数据库或消息代理）出错：请按后面的说明检查后重试 / "


def run(
    capsys: pytest.CaptureFixture[str], prog: str, app: typer.Typer, *argv: str
) -> tuple[int, list[str]]:
    """The command line under the guard, as the console script runs it: (exit code,
    stderr lines)."""
    with pytest.raises(SystemExit) as exited:
        startup.guarded(prog, f"{prog}.failed", app, list(argv))
    _, err = capsys.readouterr()
    assert isinstance(exited.value.code, int)
    return exited.value.code, err.splitlines()


@pytest.mark.parametrize(
    "argv",
    [
        ["trace", MSG_ID, "--store", UNREACHABLE],
        ["find", "--from", "jl.cc", "--store", UNREACHABLE],
        ["queue", "--store", UNREACHABLE, "--config", "/nonexistent/hub.toml"],
        ["dead", "--store", UNREACHABLE],
        ["audit", "verify", "--store", UNREACHABLE, "--config", "/nonexistent/hub.toml"],
    ],
)
def test_a_question_to_an_unreachable_store_is_one_line_and_exits_3_to_try_again(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, err = run(capsys, "hubctl", hubctl_app, *argv)

    assert code == startup.EXIT_UNAVAILABLE == 3
    [line] = err
    command = " ".join(["hubctl", *argv[: 2 if argv[0] == "audit" else 1]])
    assert line.startswith(f"{command}: {UNAVAILABLE}")
    assert "Connect call failed" in line


def test_hubctl_trace_on_an_unreachable_store_exits_3_from_the_console_script() -> None:
    done = subprocess.run(  # noqa: S603 - our own console script
        [str(HUBCTL), "trace", MSG_ID, "--store", UNREACHABLE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 3, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"hubctl trace: {UNAVAILABLE}")


def test_audit_verify_with_a_bad_configuration_is_one_bilingual_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "hub.toml"
    bad.write_text('[hub]\nid = "x"\nkey = 5\n', encoding="utf-8")  # two problems

    code, err = run(capsys, "hubctl", hubctl_app, "audit", "verify", "--config", str(bad))

    assert code == startup.EXIT_CONFIG == 2
    [line] = err
    assert line.startswith("hubctl audit verify: 配置有误：请按后面的说明修正后重试 / ")
    assert line.count(f"{bad}: hub.") == 2  # both problems, on the one line


def test_audit_check_evidence_of_a_file_that_is_not_one_says_so_in_both_languages(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    hub_pub = tmp_path / "hub.pub.json"
    hub_pub.write_text("{}", encoding="utf-8")
    evidence = tmp_path / "evidence.json"
    evidence.write_text("not evidence", encoding="utf-8")

    code, err = run(
        capsys, "hubctl", hubctl_app, "audit", "check-evidence", str(evidence),
        "--hub-key", str(hub_pub), "--config", "/nonexistent/hub.toml",
    )  # fmt: skip

    assert code == 2  # no hub key to trust: the --hub-key file is not one
    [line] = err
    assert line.startswith("hubctl audit check-evidence: 命令行或它指定的文件有误")
    assert "cannot read --hub-key" in line


@pytest.mark.parametrize(
    ("prog", "app", "argv", "english"),
    [
        ("hubctl", hubctl_app, ["find", "--limit", "0"], "Invalid value for '--limit'"),
        ("hubctl", hubctl_app, ["audit", "restored"], "Missing option '--reason'"),
        ("hubctl", hubctl_app, ["queue", "--bogus"], "No such option: --bogus"),
        ("hubd", hubd_app, ["run", "--bogus"], "No such option: --bogus"),
        ("spoke", spoke_app, ["status", "--bogus"], "No such option: --bogus"),
    ],
)
def test_a_command_line_error_is_one_bilingual_line_exit_2_for_hubd_hubctl_and_spoke(
    capsys: pytest.CaptureFixture[str],
    prog: str,
    app: typer.Typer,
    argv: list[str],
    english: str,
) -> None:
    code, err = run(capsys, prog, app, *argv)

    assert code == 2
    [line] = err
    command = " ".join([prog, *argv[: 2 if argv[0] == "audit" else 1]])
    assert line.startswith(f"{command}: 命令行有误：请按后面的说明改正 / {english}")
    assert line.endswith(f"; see '{command} --help'")


def test_the_guides_command_line_error_is_what_hubctl_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    guide = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    [shown] = [line for line in guide.splitlines() if line.startswith("hubctl find: 命令行有误")]

    code, err = run(capsys, "hubctl", hubctl_app, "find", "--limit", "0")

    assert (code, err) == (2, [shown])
