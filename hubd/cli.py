"""The ``hubd`` (daemon) and ``hubctl`` (operator) commands."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from hubd.admin import client as adminclient
from hubd.admin.protocol import HubRefusedError, Op, ProtocolError
from hubd.admin.server import Peer
from hubd.config import CONFIG_HELP, HubConfig, find_config, load_config
from hubd.config import Delivery as DeliveryConfig
from hubd.daemon import Hub
from hubd.engine.trustwatch import warnings_for
from hubd.ops import cases as opscases
from hubd.ops import contact as opscontact
from hubd.ops import find as opsfind
from hubd.ops import overdue as opsoverdue
from hubd.ops import query as opsquery
from hubd.ops import replicas as opsreplicas
from hubd.ops import route
from hubd.ops import view as opsview
from hubd.ops import waiting as opswaiting
from hubd.ops.auditcmd import audit_app
from hubd.ops.redeliver import Target, redeliver_offline
from hubd.ops.tracecmd import trace_command
from hubd.ops.waiting import timers as waiting_timers
from hubd.provision import sources
from hubd.provision.commands import broker_config, directory_app
from hubd.provision.keys import keys_app
from hubd.store.lock import HubLock, LockHeldError
from runtime.clock import now_ms
from runtime.startup import configure as configure_logs
from runtime.startup import guarded, run_loop
from runtime.startup import refusal as _fail
from schemas.clock import ms_to_text, parse_moment
from schemas.directory import verify_directory
from schemas.errors import ConfigError, XchgError
from schemas.ids import check_org_id, parse_msg_id

hubd_app = typer.Typer(
    name="hubd",
    help="The hub daemon: the provincial office's document exchange.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
hubctl_app = typer.Typer(
    name="hubctl",
    help="Operate the hub: status, find, trace, queue, dead letters and redeliver; keys, "
    "directory, audit, and what-if routing (route).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
hubctl_app.add_typer(keys_app, name="keys")
hubctl_app.add_typer(directory_app, name="directory")
hubctl_app.add_typer(audit_app, name="audit")
hubctl_app.command("broker-config")(broker_config)
hubctl_app.command("trace")(trace_command)

T = TypeVar("T")
ConfigOption = Annotated[Path | None, typer.Option(help=CONFIG_HELP)]


@hubd_app.callback()
def _hubd() -> None:
    """The hub daemon: the provincial office's document exchange."""


@hubd_app.command()
def run(config: ConfigOption = None) -> None:
    """Run the hub daemon until SIGTERM (drains, then exits 0). A failure is one line on
    stderr, one hub.failed event and an exit code (docs/operations.md, "Exit codes")."""
    configure_logs()  # first: a configuration that fails to load is a JSON event too
    settings = load_config(find_config(config))
    configure_logs(settings.logging.format, settings.logging.level)
    run_loop(Hub(settings).run())


SocketOption = Annotated[
    Path | None,
    typer.Option(help="The hub's admin socket (default: the one --config names)"),
]


def _admin_socket(settings: HubConfig, socket: Path | None) -> Path | None:
    return socket if socket is not None else settings.admin_socket()


@directory_app.command("publish")
def directory_publish(
    config: ConfigOption = None,
    socket: SocketOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON")] = False,
) -> None:
    """Make the running hub re-read, re-verify and republish its directory file (what
    'systemctl reload hubd' does) and say which version it serves now. Exit 1: the hub
    refused the file (it keeps the old one); 2: no hub to ask."""
    _reload_directory("hubctl directory publish", config, socket, as_json=as_json)


@hubctl_app.command("reload")
def reload_command(
    config: ConfigOption = None,
    socket: SocketOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON")] = False,
) -> None:
    """Ask the running hub over its admin socket to reload its directory file, as SIGHUP
    does, and wait for the answer: the version it now serves (exit 0), or why it refused
    the file and keeps serving the old one (exit 1); 2: no hub to ask. The unit's
    ExecReload, so 'systemctl reload hubd' fails when the reload fails."""
    _reload_directory("hubctl reload", config, socket, as_json=as_json)


def _reload_directory(
    command: str, config: Path | None, socket: Path | None, *, as_json: bool
) -> None:
    """The running hub's reload (its SIGHUP path) over the admin socket, and its answer."""
    try:
        settings = load_config(find_config(config))
        path = socket if socket is not None else settings.admin_socket()
    except ConfigError as exc:
        raise _fail(command, exc) from exc
    if path is None:
        raise _fail(command, ValueError("the admin socket is turned off ([admin] enabled)"))
    try:
        answer = adminclient.ask(path, Op.DIRECTORY_PUBLISH)
    except HubRefusedError as exc:
        if as_json:
            typer.echo(json.dumps({"published": False, "code": exc.code, "message": exc.message}))
        typer.echo(f"{command}: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    except adminclient.HubNotRunningError as exc:
        hint = f"{exc}; a stopped hub reads the directory file when it starts"
        raise _fail(command, ValueError(hint)) from exc
    except (adminclient.HubUnreachableError, ProtocolError) as exc:
        raise _fail(command, exc) from exc
    if as_json:
        typer.echo(json.dumps({"published": True, **answer}, indent=2))
        return
    previous = answer.get("previous")
    was = (
        ""
        if previous is None
        else (" (unchanged)" if previous == answer["version"] else f" (was v{previous})")
    )
    typer.echo(
        f"the hub now serves directory v{answer['version']}{was}, {answer['orgs']} "
        f"organisations, expiring {ms_to_text(int(answer['expires_at']))}; it is republished "
        f"(retained) on {', '.join(answer['channels'])}"
    )


@hubctl_app.command("route")
def route_command(
    meta_file: Annotated[Path, typer.Argument(help="A drop's NAME.meta.toml or NAME.meta.json")],
    from_: Annotated[str, typer.Option("--from", help="The sending organisation (an org id)")],
    config: Annotated[
        Path | None,
        typer.Option(
            help=f"{CONFIG_HELP}: directory, hub key, store. With --directory and no --config, "
            "only the hub key comes from it, and no store is read"
        ),
    ] = None,
    directory: Annotated[
        Path | None, typer.Option(help="Signed directory (default: the one --config names)")
    ] = None,
    hub_pub: Annotated[
        Path | None,
        typer.Option(help="The hub's public key (default: beside the key --config names)"),
    ] = None,
    auto_cc: Annotated[
        bool, typer.Option("--auto-cc", help="Copy skipped organs, as 'spoke send --auto-cc'")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """What the hub would do with a document: per recipient the direction, the channel and
    why, and each rule's verdict. Nothing is sent. Exit 0: accepted; 1: refused."""
    try:
        where = sources.resolve(config, directory, hub_pub)
        verified = sources.load_directory(where, now=now_ms())
        metadata = route.read_metadata(meta_file)
        answer = asyncio.run(
            route.route(
                metadata, from_, verified, where.store_url, auto_cc=auto_cc or metadata.auto_cc
            )
        )
    except sources.RouteError as exc:
        raise _fail("hubctl route", exc) from exc
    if as_json:
        typer.echo(json.dumps(answer.as_json(), ensure_ascii=False, indent=2))
    else:
        typer.echo(answer.render(), nl=False)
    raise typer.Exit(0 if answer.report.accepted else 1)


# ---------------------------------------------------------------------- operator questions
# Each reads the store directly, read-only (the hub may be running or stopped); the
# questions and answers are hubd.ops.query's, so an admin socket can serve them later.

StoreOption = Annotated[
    str | None, typer.Option(help="Store URL (default: the one --config names)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the answer as JSON")]
LimitOption = Annotated[int, typer.Option(min=1, help="Show at most this many deliveries")]
OrgArgument = Annotated[
    str | None, typer.Argument(help="Only deliveries to this organisation (an org id)")
]


def _ask(url: str, question: Callable[[opsquery.Reader], Awaitable[T]]) -> T:
    """Open the store at ``url`` read-only, ask, close. Raises StoreError."""

    async def run() -> T:
        async with opsquery.reading(url) as read:
            return await question(read)

    return asyncio.run(run())


def _answer(as_json: bool, data: dict[str, object], text: str) -> None:
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        typer.echo(text, nl=False)


def _org(command: str, org: str | None) -> str | None:
    """ORG checked before it reaches a query; exit 2 naming the value otherwise."""
    if org is None:
        return None
    try:
        return check_org_id(org, what="organisation")
    except ValueError as exc:
        raise _fail(command, ValueError(f"{exc}; give an org id such as jl.cc")) from exc


def _served_directory(
    config: Path, settings: HubConfig, hub_pub: Path | None
) -> opsquery.DirectoryInfo:
    """The directory the configuration names, verified but read even when expired."""
    path = settings.hub.directory
    try:
        where = sources.resolve(config, None, hub_pub)
        frame = where.directory.read_bytes()
        verified = verify_directory(frame, where.hub_public, now=None, whole_file=True)
    except sources.RouteError as exc:
        return opsquery.DirectoryInfo(str(path), None, str(exc))
    except OSError as exc:
        return opsquery.DirectoryInfo(str(path), None, f"cannot read it: {exc.strerror}")
    except (ValueError, XchgError) as exc:
        return opsquery.DirectoryInfo(str(path), None, f"it does not verify: {exc}")
    return opsquery.DirectoryInfo(str(path), verified.directory)


PRESENCE_TIMEOUT = 5.0  # seconds: presence is read from memory; a hub this slow is reported


def _hub_presence(
    path: Path | None,
) -> tuple[opscontact.Presence | None, opscontact.HubContact]:
    """Presence from the running hub, or None and why the hub did not give it."""
    if path is None:
        return None, opscontact.HubContact(None, False, "the admin socket is turned off")
    try:
        answer = adminclient.ask(path, Op.PRESENCE, timeout=PRESENCE_TIMEOUT)
        presence = opscontact.presence_answered(answer)
        brokers = opscontact.brokers_answered(answer)
    except (adminclient.HubNotRunningError, adminclient.HubUnreachableError) as exc:
        return None, opscontact.HubContact(str(path), False, str(exc))
    except (HubRefusedError, ProtocolError) as exc:
        return None, opscontact.HubContact(str(path), False, f"it answered: {exc}")
    except (KeyError, TypeError, ValueError) as exc:
        return None, opscontact.HubContact(str(path), False, f"its answer is malformed ({exc!r})")
    return presence, opscontact.HubContact(str(path), True, brokers=brokers)


@hubctl_app.command("status")
def status_command(
    config: ConfigOption = None,
    store: StoreOption = None,
    hub_pub: Annotated[
        Path | None,
        typer.Option(help="The hub's public key (default: beside the key --config names)"),
    ] = None,
    socket: SocketOption = None,
    as_json: JsonOption = False,
) -> None:
    """The hub at a glance: deliveries pending per recipient and precedence, the oldest,
    dead letters, store size, the directory's version and expiry, every spoke and (from the
    running hub) whether it is online, and warnings of keys, certificates and the directory
    expiring (the config's expiry section). With the hub down, the store alone, and it says so."""
    try:
        config = find_config(config)
        settings = load_config(config)
    except ConfigError as exc:
        raise _fail("hubctl status", exc) from exc
    url = store or settings.store_url()
    directory = _served_directory(config, settings, hub_pub)
    presence, contact = _hub_presence(_admin_socket(settings, socket))
    now = now_ms()

    expiring, unchecked = warnings_for(settings, directory.directory, now=now)
    warnings = opsquery.Warnings(expiring, tuple(unchecked))

    async def question(read: opsquery.Reader) -> opsquery.Status:
        size = await opsquery.store_size(read, url, settings.spool_dir())
        replicas = opsreplicas.replica_status(
            await read.sync(opsreplicas.read_leases),
            directory=directory.directory,
            enabled=settings.replicas.enabled,
            lease_ms=round(settings.replicas.lease * 1000),
        )
        return await opsquery.status(
            read,
            now=now,
            store=size,
            directory=directory,
            presence=presence,
            hub=contact,
            warnings=warnings,
            replicas=replicas,
        )

    try:
        answer = _ask(url, question)
    except XchgError as exc:
        raise _fail("hubctl status", exc) from exc
    _answer(as_json, answer.as_json(), opsview.render_status(answer))


@hubctl_app.command("find")
def find_command(
    from_: Annotated[
        str | None, typer.Option("--from", help="Sent by this organisation (an org id)")
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="Routed to this organisation")] = None,
    doc_number: Annotated[
        str | None,
        typer.Option(help="发文字号, exactly as in the metadata (documents below 秘密 only)"),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Received at or after: 2026-11-25T17:52:20Z, 2026-11-26T01:52:20+08:00, "
            "2026-11-25, 36h (ago) or milliseconds"
        ),
    ] = None,
    until: Annotated[str | None, typer.Option(help="Received before (as --since)")] = None,
    config: ConfigOption = None,
    store: StoreOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many messages")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Find messages without their msg_id: by sender, recipient, 发文字号 and the time the hub
    received them; each with its recipients' states. Never a title or a number is printed.
    Exit 0 (also when none is found); 2: the question cannot be asked."""
    command = "hubctl find"
    now = now_ms()
    try:
        search = opsfind.Search(
            sender=_org(command, from_),
            recipient=_org(command, to),
            doc_number=None if doc_number is None else doc_number.strip(),
            since=None if since is None else parse_moment(since, now=now, what="--since"),
            until=None if until is None else parse_moment(until, now=now, what="--until"),
        )
    except ValueError as exc:
        raise _fail(command, exc) from exc
    try:
        url = store or load_config(find_config(config)).store_url()
        answer = _ask(url, lambda read: opsfind.find(read, search, now=now, limit=limit))
    except (ConfigError, XchgError) as exc:
        raise _fail(command, exc) from exc
    _answer(as_json, answer.as_json(), opsview.render_find(answer))


@hubctl_app.command("queue")
def queue_command(
    org: OrgArgument = None,
    config: ConfigOption = None,
    store: StoreOption = None,
    socket: SocketOption = None,
    limit: LimitOption = 200,
    as_json: JsonOption = False,
) -> None:
    """Deliveries pending (not yet sent, or sent and not yet confirmed), in the order the
    hub sends them: precedence first, then age; each with why it waits (recipient offline
    since when, the next attempt's window, giving up) and when it expires."""
    recipient = _org("hubctl queue", org)
    try:
        settings = load_config(find_config(config))
    except ConfigError as exc:
        if store is None:
            raise _fail("hubctl queue", exc) from exc
        settings = None  # --store alone: the default [delivery] policy, presence unknown
    url = store or (settings.store_url() if settings is not None else "")
    if settings is None:
        presence, contact = None, opscontact.HubContact(None, False, "no configuration to find it")
        timers = waiting_timers(DeliveryConfig())
    else:
        presence, contact = _hub_presence(_admin_socket(settings, socket))
        timers = waiting_timers(settings.delivery)
    now = now_ms()
    try:
        listing = _ask(
            url, lambda read: opsquery.queue(read, now=now, recipient=recipient, limit=limit)
        )
    except XchgError as exc:
        raise _fail("hubctl queue", exc) from exc
    problem = contact.problem or "the admin socket is turned off"
    answer = opswaiting.explain(listing, presence=presence, hub_problem=problem, timers=timers)
    _answer(as_json, answer.as_json(), opsview.render_queue(answer))


@hubctl_app.command("dead")
def dead_command(
    org: OrgArgument = None,
    config: ConfigOption = None,
    store: StoreOption = None,
    limit: LimitOption = 200,
    as_json: JsonOption = False,
) -> None:
    """Dead letters: deliveries given up after max_attempts (DEAD) or expired before the
    recipient confirmed (EXPIRED), with the reason and the attempts; the most recent first."""
    recipient = _org("hubctl dead", org)
    try:
        url = store or load_config(find_config(config)).store_url()
        answer = _ask(
            url, lambda read: opsquery.dead(read, now=now_ms(), recipient=recipient, limit=limit)
        )
    except (ConfigError, XchgError) as exc:
        raise _fail("hubctl dead", exc) from exc
    _answer(as_json, answer.as_json(), opsview.render_dead(answer))


@hubctl_app.command("overdue")
def overdue_command(
    org: Annotated[
        str | None, typer.Argument(help="Only what this organisation owes or is owed")
    ] = None,
    config: ConfigOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recipients past a deadline (签收, 受理, 办结) not meeting it, with the reminders sent."""
    whom = _org("hubctl overdue", org)
    try:
        url = store or load_config(find_config(config)).store_url()
        answer = _ask(url, lambda read: opsoverdue.overdue(read, now=now_ms(), org=whom))
    except (ConfigError, XchgError) as exc:
        raise _fail("hubctl overdue", exc) from exc
    _answer(as_json, answer.as_json(), opsoverdue.render_overdue(answer))


@hubctl_app.command("cases")
def cases_command(
    number: Annotated[
        str | None, typer.Argument(help="One case's history: its number (信访件编号)")
    ] = None,
    only_open: Annotated[bool, typer.Option("--open", help="Only cases not yet handled")] = False,
    config: ConfigOption = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Petition cases (信访件): who holds each, its reports, what is overdue; or one's history."""
    try:
        url = store or load_config(find_config(config)).store_url()
        found = _ask(url, lambda read: opscases.cases(read, number=opscases.checked(number)))
    except (ConfigError, XchgError) as exc:
        raise _fail("hubctl cases", exc) from exc
    now = now_ms()
    if number is None:
        data = {"at": now, "cases": [c.as_json(now) for c in found if c.open or not only_open]}
        _answer(as_json, data, opscases.render_cases(found, now, only_open=only_open))
    elif not found:
        raise _fail("hubctl cases", ValueError(f"the hub holds no petition with case {number}"))
    else:
        _answer(as_json, found[0].as_json(now), opscases.render_case(found[0], now))


@hubctl_app.command("redeliver")
def redeliver_command(
    msg_id: Annotated[
        str | None, typer.Argument(help="The message to redeliver: 32 lowercase hex digits")
    ] = None,
    dead: Annotated[
        bool, typer.Option("--dead", help="Every dead letter instead (1000 at a time)")
    ] = False,
    to: Annotated[
        str | None, typer.Option("--to", help="Only the delivery to this organisation")
    ] = None,
    config: ConfigOption = None,
    store: StoreOption = None,
    socket: SocketOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move dead letters (DEAD) back to PENDING: the running hub publishes them at once;
    with the hub stopped, the change is written to its store and its next start delivers
    them. EXPIRED and purged messages are refused, with the reason. Exit 1: something asked
    for was refused; 2: the question cannot be asked."""
    command = "hubctl redeliver"
    if (msg_id is None) == (not dead):
        raise _fail(command, ValueError("give a MSG_ID or --dead (every dead letter), not both"))
    try:
        wanted = None if msg_id is None else parse_msg_id(msg_id)
    except ValueError as exc:
        raise _fail(command, ValueError(f"{exc}; copy it from 'hubctl dead'")) from exc
    recipient = _org(command, to)
    try:
        settings = load_config(find_config(config))
    except ConfigError as exc:
        raise _fail(command, exc) from exc
    path = _admin_socket(settings, socket)
    answer: dict[str, object] | None = None
    hub_down = "the admin socket is turned off"
    if path is not None:
        try:
            answer = adminclient.ask(path, Op.REDELIVER, msg_id=msg_id, dead=dead, to=recipient)
        except adminclient.HubNotRunningError as exc:
            hub_down = str(exc)
        except HubRefusedError as exc:
            typer.echo(f"{command}: the hub refused: {exc.message}", err=True)
            raise typer.Exit(1) from exc
        except (adminclient.HubUnreachableError, ProtocolError) as exc:
            raise _fail(command, ValueError(f"{exc}; nothing was changed")) from exc
    url = store or settings.store_url()
    if answer is None:
        me = Peer(os.getpid(), os.getuid(), os.getgid()).as_json()
        try:
            outcome = asyncio.run(
                redeliver_offline(
                    url,
                    HubLock(settings.lock_file()),
                    Target(wanted, recipient),
                    now=now_ms(),
                    requested_by=me,
                    shared=settings.replicas.enabled,
                )
            )
        except LockHeldError as exc:
            hint = (
                f"{hub_down}, but {exc}: it may be starting; nothing was changed, ask again "
                "in a moment"
            )
            raise _fail(command, ValueError(hint)) from exc
        except XchgError as exc:
            raise _fail(command, exc) from exc
        answer = {**outcome.as_json(), "hub_down": hub_down}
    if as_json:
        typer.echo(json.dumps(answer, ensure_ascii=False, indent=2))
    else:
        typer.echo(opsview.render_redelivery(answer, store=opsquery.safe_url(url)), nl=False)
    raise typer.Exit(1 if answer.get("refused") else 0)


def hubd_main() -> None:
    guarded("hubd", "hub.failed", hubd_app)


def hubctl_main() -> None:
    guarded("hubctl", "hubctl.failed", hubctl_app)
