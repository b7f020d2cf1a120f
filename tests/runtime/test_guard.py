"""The guard every command runs under (runtime.startup.guarded), in-process.

An expected error is one line on stderr, Chinese then English, saying what to do, and a
documented exit code; a daemon whose log is JSON also gets one event for it. A bug gets
one line too, and its traceback only inside one JSON event's ``exception`` field. The log
processor drops the traceback of an expected error logged with ``log.exception``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog
import typer

from runtime import startup
from schemas.errors import ConfigError, Reason, SignatureError, StoreError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
sub = typer.Typer()
app.add_typer(sub, name="keys")
FAILURES: dict[str, BaseException] = {}


@app.command()
def run(what: str) -> None:
    raise FAILURES[what]


@sub.command("list")
def keys_list(what: str) -> None:
    raise FAILURES[what]


@pytest.fixture(autouse=True)
def _restored(structlog_restored: None) -> None:
    """configure() is global; each test leaves structlog as it found it."""


def guarded(
    capsys: pytest.CaptureFixture[str], failure: BaseException, *, daemon: bool, sub: bool = False
) -> tuple[int, list[str], list[str]]:
    """Run the app's command that raises ``failure``: (exit code, stdout, stderr lines)."""
    if daemon:
        startup.configure("json")
    FAILURES["x"] = failure
    with pytest.raises(SystemExit) as exited:
        startup.guarded("hubd", "hub.failed", app, ["keys", "list", "x"] if sub else ["run", "x"])
    out, err = capsys.readouterr()
    assert isinstance(exited.value.code, int)
    return exited.value.code, out.splitlines(), err.splitlines()


def test_a_config_error_is_one_bilingual_line_exit_2_and_one_json_event_in_a_daemon(
    capsys: pytest.CaptureFixture[str],
) -> None:
    problems = [("hub.key", "it does not exist"), ("hub.directory", "neither does this")]
    failure = ConfigError("/etc/govxchg/hub.toml", problems)

    code, out, err = guarded(capsys, failure, daemon=True)

    assert code == startup.EXIT_CONFIG == 2
    assert err == [
        (
            "hubd run: 配置有误：请按后面的说明修正后重试 / /etc/govxchg/hub.toml: hub.key: it "
            "does not exist; /etc/govxchg/hub.toml: hub.directory: neither does this"
        )
    ]
    [event] = [json.loads(line) for line in out]
    assert event["event"] == "hub.failed"
    assert event["level"] == "error"
    assert event["exit_code"] == 2
    assert "hub.key: it does not exist" in event["error"]
    assert "exception" not in event


def test_on_a_terminal_an_expected_error_is_the_line_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = guarded(capsys, StoreError("the store is down", retriable=True), daemon=False)

    assert code == startup.EXIT_UNAVAILABLE == 3
    assert out == []
    assert err == [
        "hubd run: 所需的服务（数据库或消息代理）出错：请按后面的说明检查后重试 / the store is down"
    ]


def test_a_store_error_trying_again_cannot_fix_exits_2_so_systemd_does_not_restart(
    capsys: pytest.CaptureFixture[str],
) -> None:
    failure = StoreError("the ledger is behind its checkpoints", retriable=False)

    code, _, err = guarded(capsys, failure, daemon=False)

    assert code == startup.EXIT_CONFIG
    hint = "数据库需要先处理：请按后面的说明处理后再启动"
    assert err == [f"hubd run: {hint} / the ledger is behind its checkpoints"]


def test_an_expected_error_of_one_task_in_a_task_group_is_reported_as_itself(
    capsys: pytest.CaptureFixture[str],
) -> None:
    failure = ExceptionGroup(
        "unhandled errors in a TaskGroup", [StoreError("down", retriable=True)]
    )

    code, _, err = guarded(capsys, failure, daemon=False)

    assert code == startup.EXIT_UNAVAILABLE
    assert err[0].endswith(" / down")


def test_a_file_that_cannot_be_read_names_the_file_and_the_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "hub.sign.key"
    try:
        missing.read_bytes()
    except OSError as exc:
        failure = exc

    code, _, err = guarded(capsys, failure, daemon=False, sub=True)

    assert code == 2
    hint = "文件或目录无法访问：请检查路径、属主与权限后重试"
    assert err == [f"hubd keys list: {hint} / {missing}: No such file or directory"]


def test_a_message_that_already_speaks_both_languages_is_not_prefixed_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    failure = SignatureError(Reason.SIG_INVALID, "签名无效，请重新签发 / the signature is invalid")

    code, out, err = guarded(capsys, failure, daemon=True)

    assert code == startup.EXIT_REFUSED == 1
    assert err == ["hubd run: [sig.invalid] 签名无效，请重新签发 / the signature is invalid"]
    [event] = [json.loads(line) for line in out]
    assert event["reason"] == "sig.invalid"


def test_a_bug_is_one_line_and_its_traceback_is_only_inside_the_json_event(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = guarded(capsys, ZeroDivisionError("division by zero"), daemon=True)

    assert code == startup.EXIT_BUG == 70
    assert len(err) == 1
    assert err[0].startswith("hubd run: 内部错误（程序缺陷）")
    assert "ZeroDivisionError: division by zero" in err[0]
    assert "Traceback" not in err[0]
    [event] = [json.loads(line) for line in out]
    assert (event["event"], event["kind"], event["exit_code"]) == ("hub.failed", "bug", 70)
    assert event["exception"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError" in event["exception"]


def test_a_bug_in_a_command_without_a_json_log_puts_its_one_json_event_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = guarded(capsys, KeyError("oops"), daemon=False)

    assert code == 70
    assert out == []
    line, event_line = err
    assert line.startswith("hubd run: 内部错误")
    event = json.loads(event_line)
    assert "KeyError" in event["exception"]


def test_an_expected_error_logged_with_log_exception_has_its_reason_and_no_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    startup.configure("json")
    log = structlog.get_logger("test")
    try:
        raise SignatureError(Reason.SIG_KEY_REVOKED, "key k1 is revoked")
    except SignatureError:
        log.exception("message.failed", org="jl.cc")
    try:
        raise ValueError("a bug")
    except ValueError:
        log.exception("message.failed", org="jl.cc")

    expected, bug = (json.loads(line) for line in capsys.readouterr().out.splitlines())

    assert expected["reason"] == "sig.key_revoked"
    assert expected["error"] == "[sig.key_revoked] key k1 is revoked"
    assert "exception" not in expected
    assert "ValueError: a bug" in bug["exception"]
