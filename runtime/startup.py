"""What both daemons do at start: structlog, configured once, and the event loop; and the
guard every command runs under (:func:`guarded`).

Logs: JSON lines for journald, a console on a tty.

Event names are stable and dotted (``message.accepted``, ``delivery.acked``...), listed in
docs/operations.md. Fields carry ids, labels, channels and timings; never a title or a
signatory or any content.

An expected error (an :class:`~schemas.errors.XchgError`, or a file the operator named that
cannot be read) is one line on stderr, in Chinese and English, one JSON event in a daemon's
log and a documented exit code (docs/operations.md, "Exit codes"); a traceback only for a
bug, and then inside that one JSON event (its ``exception`` field), never as loose lines.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, Literal, NoReturn

import structlog
import typer

from schemas.errors import ConfigError, StoreError, TransportError, XchgError
from schemas.untrusted import untrusted_text

# Exit codes, the same for hubd, hubctl and spoke (docs/operations.md, "Exit codes").
EXIT_REFUSED = 1  # an expected error not below; hubctl and spoke: the answer is no
EXIT_CONFIG = 2  # the configuration, a key file, a folder, the directory, a port: fix it
EXIT_UNAVAILABLE = 3  # a service it needs (the store, a broker) failed: try again later
EXIT_BUG = 70  # EX_SOFTWARE (sysexits.h): a bug; the traceback is in the log event

_JSON_LOGS = {"on": False}  # configure() says whether the log stream is JSON lines
# "中文 … / English": a message that already says it in both languages
_BILINGUAL = re.compile(r"^[^/]*[\u4e00-\u9fff][^/]* / ")


def safe_fields(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Every text field of a log event made safe (:func:`untrusted_text`): a field may quote
    what a peer sent, and a log line must not carry a terminal escape, a bidi override or a
    forged newline. Tracebacks are formatted after this and keep their lines."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = untrusted_text(value)
        elif isinstance(value, list | tuple) and any(isinstance(v, str) for v in value):
            event[key] = [untrusted_text(v) if isinstance(v, str) else v for v in value]
    return event


def configure(fmt: Literal["auto", "json", "console"] = "auto", level: str = "info") -> None:
    numeric = logging.getLevelNamesMapping()[level.upper()]
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    _JSON_LOGS["on"] = not console
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            expected_errors_untraced,
            safe_fields,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries that use the standard library (aiomqtt, amqtt, alembic): warnings and up.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    for noisy in ("amqtt", "transitions", "alembic", "aiomqtt", "mqtt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, on uvloop where it is installed (PERF-NOTES: +5% to +50% on MQTT)."""
    try:
        import uvloop  # noqa: PLC0415 - optional accelerator
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


# ---------------------------------------------------------------------- expected errors


def one_line(text: str) -> str:
    """A message on one line: a ConfigError lists its problems one per line."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def sentence(exc: BaseException) -> str:
    """An expected error's message on one line (an OSError as its file and the reason)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return one_line(str(exc))


def error_code(exc: BaseException) -> str | None:
    """The machine code an error carries (a PeerError's reason, a refusal's code)."""
    code = getattr(exc, "reason", None) or getattr(exc, "code", None)
    return None if code is None else str(code)


def expected_errors_untraced(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """A processor: an XchgError or OSError logged with ``exc_info`` (``log.exception`` in
    a handler that catches everything) is an expected error, logged as its sentence
    (``error``) and its code (``reason``), without a traceback. A bug keeps its traceback."""
    exc_info = event.get("exc_info")
    if not exc_info:
        return event
    if isinstance(exc_info, BaseException):
        exc: BaseException | None = exc_info
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    else:
        exc = sys.exc_info()[1]
    if isinstance(exc, (XchgError, OSError)):
        del event["exc_info"]
        event.setdefault("error", sentence(exc))
        code = error_code(exc)
        if code is not None:
            event.setdefault("reason", code)
    return event


def classify(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, what to do in Chinese) for an expected error; None for a bug."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG, "配置有误：请按后面的说明修正后重试"
    if isinstance(exc, StoreError) and not exc.retriable:  # trying again cannot help
        return EXIT_CONFIG, "数据库需要先处理：请按后面的说明处理后再启动"
    if isinstance(exc, (StoreError, TransportError)):
        return EXIT_UNAVAILABLE, "所需的服务（数据库或消息代理）出错：请按后面的说明检查后重试"
    if isinstance(exc, XchgError):
        return EXIT_REFUSED, "未执行：请按后面的说明处理后重试"
    if isinstance(exc, OSError):
        return EXIT_CONFIG, "文件或目录无法访问：请检查路径、属主与权限后重试"
    return None


def explain(exc: BaseException) -> str:
    """An expected error as the one line a terminal shows after the command's name: what
    to do in Chinese, then the English sentence (unless it already speaks both)."""
    english = sentence(exc)
    if _BILINGUAL.search(english):
        return english
    known = classify(exc)
    return f"{'未执行：请按后面的说明处理后重试' if known is None else known[1]} / {english}"


def _json_stderr_logger() -> Any:
    """A logger writing one JSON line on stderr: where a bug's event goes when the process
    has no JSON log (a command, or a daemon on a terminal)."""
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def report(prog: str, event: str, exc: BaseException) -> int:
    """Say what failed (one line on stderr, one JSON event) and return the exit code."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # a TaskGroup's one failed task: what it raised
    known = classify(exc)
    if known is None:
        sys.stderr.write(
            f"{prog}: 内部错误（程序缺陷），请把日志中的 {event} 事件报告给维护者 / internal error "
            f"(a bug): {type(exc).__name__}: {one_line(str(exc))[:300]}; report the {event} "
            "log event (its exception field holds the traceback) to the maintainers\n"
        )
        logger = structlog.get_logger() if _JSON_LOGS["on"] else _json_stderr_logger()
        logger.error(event, exit_code=EXIT_BUG, kind="bug", exc_info=exc)
        return EXIT_BUG
    code = known[0]
    sys.stderr.write(f"{prog}: {explain(exc)}\n")
    if _JSON_LOGS["on"]:  # a daemon's log gets the event; a terminal only the line
        fields: dict[str, object] = {"exit_code": code, "error": sentence(exc)}
        reason = error_code(exc)
        if reason is not None:
            fields["reason"] = reason
        structlog.get_logger().error(event, **fields)
    return code


def command_name(prog: str, app: typer.Typer, argv: Sequence[str]) -> str:
    """``prog`` and the (sub)commands ``argv`` names, e.g. "hubctl directory build"."""
    words = [prog]
    command: object = typer.main.get_command(app)
    for arg in argv:
        subcommands = getattr(command, "commands", None)  # a group's, by name
        if not isinstance(subcommands, dict) or arg not in subcommands:
            break
        words.append(arg)
        command = subcommands[arg]
    return " ".join(words)


def guarded(prog: str, event: str, app: typer.Typer, argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line ``argv`` (default: the process's) of ``app`` under the guard:
    an error that escapes it is reported by :func:`report` (event ``event``) and becomes
    the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name=prog)
    except Exception as exc:  # noqa: BLE001 - the one place every escaped error is reported
        sys.stdout.flush()
        raise SystemExit(report(command_name(prog, app, args), event, exc)) from None
    raise SystemExit(0)
