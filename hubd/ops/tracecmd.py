"""``hubctl trace``: one message's life at this hub, and, with ``--follow``, at the other
hubs it went through whose configuration the operator can read (hubs under hubs)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hubd.config import CONFIG_HELP, find_config, load_config
from hubd.ops import query, trace, traceview
from runtime.clock import now_ms
from runtime.startup import refusal as _fail
from schemas.errors import ConfigError, XchgError
from schemas.ids import parse_msg_id

ConfigOption = Annotated[Path | None, typer.Option(help=CONFIG_HELP)]
StoreOption = Annotated[
    str | None, typer.Option(help="Store URL (default: the one --config names)")
]
FollowOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--follow",
        help="Another hub's configuration file (repeatable): trace the message in its store "
        "too, up or down the way it went (hubs under hubs), where you can read it",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the answer as JSON")]


def _traced(url: str, msg_id: bytes) -> trace.Trace | None:
    async def ask() -> trace.Trace | None:
        async with query.reading(url) as read:
            return await trace.trace(read, msg_id, now=now_ms())

    return asyncio.run(ask())


def trace_command(
    msg_id: Annotated[str, typer.Argument(help="The message's msg_id: 32 lowercase hex digits")],
    config: ConfigOption = None,
    store: StoreOption = None,
    follow: FollowOption = None,
    as_json: JsonOption = False,
) -> None:
    """The life of one message from the audit ledger: accepted (or quarantined), routed,
    each delivery attempt, each receipt, expiry or death; each delivery's next hub. Exit 1:
    the store does not know it."""
    try:
        wanted = parse_msg_id(msg_id)
    except ValueError as exc:
        hint = ValueError(f"{exc}; copy it from a receipt, a log line or 'hubctl queue'")
        raise _fail("hubctl trace", hint) from exc
    others = follow or []
    try:
        answer = _traced(store or load_config(find_config(config)).store_url(), wanted)
        followed = [(p, _traced(load_config(p).store_url(), wanted)) for p in others]
    except (ConfigError, XchgError) as exc:
        raise _fail("hubctl trace", exc) from exc
    if answer is None:
        typer.echo(
            f"hubctl trace: the hub's store holds no message {msg_id}: it never reached this "
            "hub, or the hub refused it (refusals are not stored; look for message.rejected "
            "with this msg_id in the hub's log)",
            err=True,
        )
        raise typer.Exit(1)
    if as_json:
        data: dict[str, Any] = answer.as_json()
        if others:
            data["followed"] = [
                {"config": str(p), "trace": None if t is None else t.as_json()} for p, t in followed
            ]
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    text = traceview.render_trace(answer)
    for path, other in followed:
        text += f"\n--- at the hub of {path} ---\n"
        text += (
            traceview.render_trace(other)
            if other is not None
            else f"its store holds no message {msg_id}: the document did not reach that hub\n"
        )
    typer.echo(text, nl=False)
