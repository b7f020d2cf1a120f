"""``hubctl keys``: the hub's own key, and every organisation's keys over time.

- ``hubctl keys init``: the hub's signing key.
- ``hubctl keys list [ORG]``: every key of the directory with its window and its state now
  (current, overlap, not yet valid, closed, revoked, with the operator's reason).
- ``hubctl keys revoke KID --reason TEXT``: record the revocation and sign the next
  directory; the hub refuses the key once it has reloaded (``systemctl reload hubd``).

Rotation needs no command of its own: put the organisation's new public key file beside
the old one and run ``hubctl directory build`` (``--overlap`` says how long the old key
stays valid). :func:`report_build` prints what a build changed, for both commands.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from hubd.config import CONFIG_HELP, find_config, load_config
from hubd.provision import sources
from hubd.provision.directory import (
    Built,
    awaiting_lines,
    hub_key_paths,
    init_hub_key,
    revoke_key,
)
from hubd.provision.revocations import Revocation, load_register, reasons, register_path
from runtime.clock import now_ms
from runtime.files import denied_sentence
from runtime.startup import refusal
from schemas.clock import duration_text, ms_to_text
from schemas.directory import verify_directory
from schemas.display import table
from schemas.errors import ConfigError, XchgError
from schemas.expiry import KeyRow, KeyState, key_rows
from schemas.ids import check_org_id

INSTALL_STEP = "docs/operations.md, Installing on a Debian server"

ConfigOption = Annotated[Path | None, typer.Option(help=CONFIG_HELP)]
TopologyOption = Annotated[
    Path | None, typer.Option(help="Topology file (default: hub.topology in the config)")
]
OrgKeysOption = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        help="Folder searched for ORG.pub.json files (default: hub.org_keys in the config)",
    ),
]
HubKeyOption = Annotated[
    Path | None,
    typer.Option(help="The hub's private signing key (default: hub.key in the config)"),
]

keys_app = typer.Typer(
    help="The hub's own key and the organisations' keys: list, revoke.", no_args_is_help=True
)


def fail(command: str, exc: BaseException) -> typer.Exit:
    """:func:`runtime.startup.refusal`, a permission problem said with the install step."""
    if isinstance(exc, PermissionError):
        exc = ValueError(denied_sentence(exc, see=INSTALL_STEP))
    return refusal(command, exc)


@dataclass(frozen=True, slots=True)
class HubFiles:
    """What 'directory build' and 'keys revoke' read and write."""

    topology: Path
    org_keys: Path
    hub_key: Path
    directory: Path


def hub_files(
    command: str,
    config: Path | None,
    *,
    topology: Path | None,
    org_keys: Path | None,
    hub_key: Path | None,
    directory: Path | None,
) -> HubFiles:
    """The options given; the rest from the hub's configuration (found when not given)."""
    if config is None and topology and org_keys and hub_key and directory:
        return HubFiles(topology, org_keys, hub_key, directory)  # every one given
    try:
        hub = load_config(find_config(config)).hub
    except ConfigError as exc:
        raise fail(command, exc) from exc
    return HubFiles(
        topology or hub.topology,
        org_keys or hub.org_keys,
        hub_key or hub.key,
        directory or hub.directory,
    )


def report_build(built: Built, out: Path) -> None:
    """What ``hubctl directory build`` (and ``keys revoke``) did, in the operator's words."""
    d = built.verified.directory
    typer.echo(
        f"directory v{d.version}: {len(d.orgs)} organisations, {len(d.channels)} channels, "
        f"{len(d.groups)} groups, {len(d.revoked)} revoked keys; expires {ms_to_text(d.expires_at)}"
    )
    for line in built.imports:
        typer.echo(f"  {line}")
    for change in built.changes:
        if built.previous_version:  # the first directory adds everything: say nothing
            typer.echo(f"  {change.sentence()}")
    for kid in built.newly_revoked:
        owner = d.key_owner(kid)
        whose = f" ({owner[0]})" if owner is not None else ""
        typer.echo(f"  key {kid}{whose}: revoked")
    typer.echo(f"written to {out} ({len(built.verified.frame)} bytes)")
    for line in awaiting_lines(d.awaiting_own_keys()):
        typer.echo(line)
    if built.changes or built.newly_revoked or built.imports:
        typer.echo(
            "Publish it: systemctl reload hubd (SIGHUP). Running spokes take it at once; "
            "check with 'hubctl keys list' and the hub's directory.reloaded log line."
        )


@keys_app.command("init")
def keys_init(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for hub.sign.key and hub.pub.json (default: the folder of hub.key in "
            "the config)"
        ),
    ] = None,
    valid_days: Annotated[int, typer.Option(help="Validity of the hub key in days")] = 1825,
    force: Annotated[bool, typer.Option(help="Replace an existing hub key")] = False,
    config: ConfigOption = None,
) -> None:
    """Make the hub's signing key (it signs the directory and receipts). Run it as the
    hub's user: the key file is 0600 and only its owner can read it."""
    if out is None:
        key = hub_files(
            "hubctl keys init", config, topology=None, org_keys=None, hub_key=None, directory=None
        ).hub_key
        if key != hub_key_paths(key.parent).secret:
            wrong = ValueError(
                f"the config names the hub key {key}, but this command writes hub.sign.key; "
                "give --out FOLDER and set key = FOLDER/hub.sign.key in its [hub] section"
            )
            raise fail("hubctl keys init", wrong)
        out = key.parent
    try:
        public = init_hub_key(out, now=now_ms(), valid_days=valid_days, overwrite=force)
    except PermissionError as exc:
        denied = ValueError(denied_sentence(exc, folder=out, see=INSTALL_STEP))
        raise fail("hubctl keys init", denied) from exc
    except (OSError, ValueError) as exc:
        raise fail("hubctl keys init", exc) from exc
    paths = hub_key_paths(out)
    typer.echo(f"hub signing key {paths.secret} (private, 0600)  kid {public.kid}")
    typer.echo(f"public key      {paths.public}  (pin it in every spoke's configuration)")


@keys_app.command("revoke")
def keys_revoke(
    kid: Annotated[str, typer.Argument(help="The key id (16 hex digits; see 'hubctl keys list')")],
    reason: Annotated[str, typer.Option(help="Why, for the audit ledger: 'server stolen'")],
    config: ConfigOption = None,
    topology: TopologyOption = None,
    keys: OrgKeysOption = None,
    hub_key: HubKeyOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="The signed directory to replace (default: hub.directory in the config)"),
    ] = None,
    valid_days: Annotated[int, typer.Option(help="Days until the directory expires")] = 30,
) -> None:
    """Revoke a compromised key: record why, and sign the next directory listing it as
    revoked. After 'systemctl reload hubd' the hub refuses everything it signs."""
    files = hub_files(
        "hubctl keys revoke",
        config,
        topology=topology,
        org_keys=keys,
        hub_key=hub_key,
        directory=out,
    )
    out = files.directory
    try:
        entry, built = revoke_key(
            kid,
            reason=reason,
            topology_path=files.topology,
            keys_dir=files.org_keys,
            hub_key_path=files.hub_key,
            out=out,
            now=now_ms(),
            valid_days=valid_days,
        )
    except (OSError, ValueError, XchgError) as exc:
        raise fail("hubctl keys revoke", exc) from exc
    typer.echo(
        f"revoked {entry.kind} key {entry.kid} of {entry.org}: {entry.reason} "
        f"(recorded in {register_path(out)})"
    )
    report_build(built, out)
    d = built.verified.directory
    org = d.org(entry.org)
    left = [] if org is None else (org.sign_keys if entry.kind == "signing" else org.enc_keys)
    now = now_ms()
    if not any(k.not_before <= now < k.not_after and not d.is_revoked(k.kid) for k in left):
        typer.echo(
            f"warning: {entry.org} has no other valid {entry.kind} key now: it cannot "
            + ("send" if entry.kind == "signing" else "receive")
            + f" until it runs 'spoke keygen --org {entry.org} --rotate' on its server, hands "
            "over the new public key file, and you run 'hubctl directory build' again",
            err=True,
        )


@keys_app.command("list")
def keys_list(
    org: Annotated[str | None, typer.Argument(help="Only this organisation's keys")] = None,
    config: ConfigOption = None,
    directory: Annotated[
        Path | None, typer.Option(help="Signed directory (default: the one --config names)")
    ] = None,
    hub_pub: Annotated[
        Path | None, typer.Option(help="The hub's public key (default: beside its key)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON")] = False,
) -> None:
    """Every key of the directory, its window and its state now: current (signs, or is
    sealed to), overlap (being rotated out), not yet valid, closed, revoked."""
    try:
        if org is not None:
            check_org_id(org, what="organisation")
        where = sources.resolve(config, directory, hub_pub)
        verified = verify_directory(
            where.directory.read_bytes(), where.hub_public, now=None, whole_file=True
        )
        register = reasons(load_register(register_path(where.directory)))
    except (OSError, ValueError, XchgError) as exc:
        raise fail("hubctl keys list", exc) from exc
    d = verified.directory
    now = now_ms()
    if org is not None and d.org(org) is None and org != d.hub_id:
        raise fail("hubctl keys list", ValueError(f"{org!r} is not in directory v{d.version}"))
    rows = key_rows(d, now=now, org=org)
    if as_json:
        out = []
        for row in rows:
            item = row.as_json()
            entry = register.get(row.key.kid)
            item["revocation_reason"] = None if entry is None else entry.reason
            out.append(item)
        typer.echo(
            json.dumps({"version": d.version, "at": now, "keys": out}, ensure_ascii=False, indent=2)
        )
        return
    typer.echo(
        f"directory v{d.version}, expires {ms_to_text(d.expires_at)}; as of {ms_to_text(now)}"
    )
    typer.echo(
        table(
            ("org", "kind", "kid", "valid from", "until", "state"),
            [
                (
                    row.org,
                    row.kind,
                    row.key.kid,
                    ms_to_text(row.key.not_before),
                    ms_to_text(row.key.not_after),
                    _state_text(row, now, register),
                )
                for row in rows
            ],
        )
    )


def _state_text(row: KeyRow, now: int, register: Mapping[str, Revocation]) -> str:
    match row.state:
        case KeyState.OVERLAP:
            return f"overlap: closes in {duration_text(row.key.not_after - now)}"
        case KeyState.NOT_YET:
            return f"not yet valid: opens in {duration_text(row.key.not_before - now)}"
        case KeyState.REVOKED:
            entry = register.get(row.key.kid)
            why = None if entry is None else entry.reason
            return "revoked" + (f": {why}" if why else "")
        case _:
            return row.state.value
