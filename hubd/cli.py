"""The ``hubd`` (daemon) and ``hubctl`` (operator) commands."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from hubd import brokerconf, route
from hubd.audit import verify_store_chain
from hubd.config import load_config
from hubd.directory import (
    build_and_sign,
    hub_key_paths,
    init_hub_key,
    load_topology,
    read_directory,
)
from hubd.hub import Hub
from schemas.clock import ms_to_text
from schemas.display import table
from schemas.errors import ConfigError, XchgError
from schemas.keys import HubPublicKey
from schemas.runtime import configure as configure_logs
from schemas.runtime import run_loop

hubd_app = typer.Typer(
    name="hubd",
    help="The hub daemon: the provincial office's document exchange.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
hubctl_app = typer.Typer(
    name="hubctl",
    help="Operate the hub: keys, directory, audit, and what-if routing (route).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="The hub's own keys.", no_args_is_help=True)
audit_app = typer.Typer(help="The append-only audit ledger.", no_args_is_help=True)
directory_app = typer.Typer(help="Build, sign and inspect the directory.", no_args_is_help=True)
hubctl_app.add_typer(keys_app, name="keys")
hubctl_app.add_typer(directory_app, name="directory")
hubctl_app.add_typer(audit_app, name="audit")

DEFAULT_HUB_KEYS = Path("certs/hub")


def _now() -> int:
    return time.time_ns() // 1_000_000


def _fail(command: str, exc: BaseException) -> typer.Exit:
    typer.echo(f"{command}: {exc}", err=True)
    return typer.Exit(2)


@hubd_app.callback()
def _hubd() -> None:
    """The hub daemon: the provincial office's document exchange."""


@hubd_app.command()
def run(
    config: Annotated[Path, typer.Option(help="Hub configuration file")] = Path("config/hub.toml"),
) -> None:
    """Run the hub daemon until SIGTERM (drains, then exits 0)."""
    try:
        settings = load_config(config)
    except ConfigError as exc:
        raise _fail("hubd run", exc) from exc
    configure_logs(settings.logging.format, settings.logging.level)
    try:
        run_loop(Hub(settings).run())
    except ConfigError as exc:
        raise _fail("hubd run", exc) from exc
    except XchgError as exc:
        typer.echo(f"hubd run: {exc}", err=True)
        raise typer.Exit(1) from exc


@keys_app.command("init")
def keys_init(
    out: Annotated[Path, typer.Option(help="Folder for hub.sign.key and hub.pub.json")] = (
        DEFAULT_HUB_KEYS
    ),
    valid_days: Annotated[int, typer.Option(help="Validity of the hub key in days")] = 1825,
    force: Annotated[bool, typer.Option(help="Replace an existing hub key")] = False,
) -> None:
    """Make the hub's signing key (it signs the directory and receipts)."""
    try:
        public = init_hub_key(out, now=_now(), valid_days=valid_days, overwrite=force)
    except (OSError, ValueError) as exc:
        raise _fail("hubctl keys init", exc) from exc
    paths = hub_key_paths(out)
    typer.echo(f"hub signing key {paths.secret} (private, 0600)  kid {public.kid}")
    typer.echo(f"public key      {paths.public}  (pin it in every spoke's configuration)")


@directory_app.command("build")
def directory_build(
    topology: Annotated[Path, typer.Option(help="Topology file")] = Path("config/topology.toml"),
    keys: Annotated[Path, typer.Option(help="Folder searched for ORG.pub.json files")] = Path(
        "certs/orgs"
    ),
    hub_key: Annotated[Path, typer.Option(help="The hub's private signing key")] = (
        DEFAULT_HUB_KEYS / "hub.sign.key"
    ),
    out: Annotated[Path, typer.Option(help="Where to write the signed directory")] = (
        DEFAULT_HUB_KEYS / "directory.bin"
    ),
    valid_days: Annotated[int, typer.Option(help="Days until the directory expires")] = 30,
    version: Annotated[int | None, typer.Option(help="Version (default: previous + 1)")] = None,
    revoke: Annotated[list[str] | None, typer.Option(help="Key id to revoke (repeatable)")] = None,
) -> None:
    """Sign a directory from the topology and the organisations' public keys."""
    try:
        verified = build_and_sign(
            topology_path=topology,
            keys_dir=keys,
            hub_key_path=hub_key,
            out=out,
            now=_now(),
            valid_days=valid_days,
            version=version,
            revoke=revoke or [],
        )
    except (OSError, ValueError, XchgError) as exc:
        raise _fail("hubctl directory build", exc) from exc
    d = verified.directory
    typer.echo(
        f"directory v{d.version}: {len(d.orgs)} organisations, {len(d.channels)} channels, "
        f"{len(d.groups)} groups, {len(d.revoked)} revoked keys; expires {ms_to_text(d.expires_at)}"
    )
    typer.echo(f"written to {out} ({len(verified.frame)} bytes)")


@directory_app.command("show")
def directory_show(
    path: Annotated[Path, typer.Argument(help="A signed directory file")] = (
        DEFAULT_HUB_KEYS / "directory.bin"
    ),
    hub_pub: Annotated[Path, typer.Option(help="The hub's public key file")] = (
        DEFAULT_HUB_KEYS / "hub.pub.json"
    ),
) -> None:
    """Verify a signed directory and print its organisations as a table."""
    try:
        pinned = HubPublicKey.load(hub_pub.read_bytes(), source=str(hub_pub))
        verified = read_directory(path, pinned.public, now=_now())
    except (OSError, ValueError, XchgError) as exc:
        raise _fail("hubctl directory show", exc) from exc
    d = verified.directory
    typer.echo(
        f"directory v{d.version} (hub {d.hub_id}), issued {ms_to_text(d.issued_at)}, "
        f"expires {ms_to_text(d.expires_at)}"
    )
    rows = [
        (org.id, org.level.value, str(org.clearance), ",".join(org.channels), org.name_zh)
        for org in d.orgs
    ]
    typer.echo(table(("id", "level", "clearance", "channels", "name"), rows))
    typer.echo("groups: " + ", ".join(f"@{g.id} ({len(g.members)})" for g in d.groups))


@audit_app.command("verify")
def audit_verify(
    config: Annotated[Path, typer.Option(help="Hub configuration file")] = Path("config/hub.toml"),
    store: Annotated[str | None, typer.Option(help="Store URL (default: from --config)")] = None,
) -> None:
    """Walk the audit ledger and report any edited, inserted or deleted row (exit 1 if so)."""
    try:
        url = store or load_config(config).store_url()
        checked, problems = asyncio.run(verify_store_chain(url))
    except (ConfigError, XchgError) as exc:
        raise _fail("hubctl audit verify", exc) from exc
    for problem in problems:
        typer.echo(f"row {problem.seq}: {problem.problem}")
    if problems:
        typer.echo(f"audit ledger: {checked} rows checked, {len(problems)} problems", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit ledger: {checked} rows checked, the chain is intact")


@hubctl_app.command("broker-config")
def broker_config(
    out: Annotated[Path, typer.Option(help="Folder to write into (one sub-folder per broker)")],
    topology: Annotated[Path, typer.Option(help="Topology file")] = Path("config/topology.toml"),
    host: Annotated[
        list[str] | None,
        typer.Option(
            help="Where clients reach a broker: HOST[:PORT] for every channel, or "
            "CHANNEL=HOST[:PORT] (repeatable). Goes into the server certificate"
        ),
    ] = None,
    channel: Annotated[
        list[str] | None, typer.Option(help="Only these channels (default: every channel)")
    ] = None,
    shared: Annotated[
        bool, typer.Option(help="One broker for all the channels instead of one per channel")
    ] = False,
    install: Annotated[
        Path | None,
        typer.Option(help="Where the broker/ folder will live on the broker host (conf paths)"),
    ] = None,
    days: Annotated[int, typer.Option(help="Certificate validity in days")] = 825,
    broker_user: Annotated[
        str, typer.Option(help="The broker's system user (given the server key when run as root)")
    ] = "mosquitto",
    renew: Annotated[
        bool, typer.Option(help="Re-issue every certificate (the CA is kept)")
    ] = False,
) -> None:
    """Write Mosquitto 2.x configuration, ACL, CA and certificates from the topology."""
    try:
        topo = load_topology(topology)
        chosen = tuple(channel or [c.id for c in topo.channels])
        groups = [chosen] if shared else [(c,) for c in chosen]
        for group in groups:
            name = "shared" if shared else group[0]
            listener = brokerconf.listener_for(host or [], name, group)
            issued = brokerconf.write_broker(
                topo,
                group,
                out,
                listener,
                name=name,
                days=days,
                install=install,
                broker_user=broker_user or None,
                renew=renew,
            )
            typer.echo(
                f"{issued.folder}: broker for {', '.join(group)} at {listener.host}:"
                f"{listener.port}; certificates issued for "
                f"{', '.join(issued.issued) or 'nobody (all kept)'}"
            )
    except (ConfigError, XchgError, ValueError, OSError) as exc:
        raise _fail("hubctl broker-config", exc) from exc
    typer.echo(
        "Copy each broker/ folder to its broker host, clients/<id>.pem|key and ca.pem to each "
        "organisation (and the hub); keep ca.key with the operator (docs/operations.md)."
    )


@hubctl_app.command("route")
def route_command(
    meta_file: Annotated[Path, typer.Argument(help="A drop's NAME.meta.toml or NAME.meta.json")],
    from_: Annotated[str, typer.Option("--from", help="The sending organisation (an org id)")],
    config: Annotated[
        Path | None,
        typer.Option(
            help="Hub configuration file: directory, hub key, store (default: config/hub.toml "
            "if it exists and --directory is not given)"
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
        where = route.sources(config, directory, hub_pub)
        verified = route.load_directory(where, now=_now())
        metadata = route.read_metadata(meta_file)
        answer = asyncio.run(
            route.route(
                metadata, from_, verified, where.store_url, auto_cc=auto_cc or metadata.auto_cc
            )
        )
    except route.RouteError as exc:
        raise _fail("hubctl route", exc) from exc
    if as_json:
        typer.echo(json.dumps(answer.as_json(), ensure_ascii=False, indent=2))
    else:
        typer.echo(answer.render(), nl=False)
    raise typer.Exit(0 if answer.report.accepted else 1)


def hubd_main() -> None:
    hubd_app(prog_name="hubd")


def hubctl_main() -> None:
    hubctl_app(prog_name="hubctl")
