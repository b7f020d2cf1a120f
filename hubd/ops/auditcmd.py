"""``hubctl audit``: verify the ledger, prove a message, check evidence, declare a restore.

- ``verify``: chain, tree, signed checkpoints, stored nodes and witnesses' checkpoints
  (:mod:`hubd.ops.ledgeraudit`); exit 0 intact (or every loss declared), 1 tampering, 2 the
  question cannot be asked.
- ``prove MSG_ID``: an evidence file of one message (:mod:`hubd.ops.ledgerprove`).
- ``check-evidence FILE``: verify one offline (:func:`schemas.evidence.verify`).
- ``restored --reason``: after restoring the store from a backup, with the hub stopped.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from hubd.config import CONFIG_HELP, Ledger, find_config, load_config
from hubd.ops.ledgeraudit import WitnessFileError, read_witness, verify_store_ledger
from hubd.ops.ledgerprove import declare_restored_offline, prove_from_store
from hubd.provision import sources
from hubd.store.lock import HubLock, LockHeldError
from runtime.clock import now_ms
from runtime.startup import one_line
from runtime.startup import refusal as _fail
from schemas import evidence
from schemas.clock import ms_to_text
from schemas.directory import Directory, verify_directory
from schemas.errors import ConfigError, XchgError
from schemas.ids import msg_id_text, parse_msg_id
from schemas.keys import HubPublicKey, KeyKind, key_id

audit_app = typer.Typer(help="The append-only audit ledger.", no_args_is_help=True)

ConfigOption = Annotated[Path | None, typer.Option(help=CONFIG_HELP)]
StoreOption = Annotated[
    str | None, typer.Option(help="Store URL (default: the one --config names)")
]
HubKeyOption = Annotated[
    Path | None,
    typer.Option(help="The hub's public key file, hub.pub.json (default: from --config)"),
]


@dataclass(frozen=True, slots=True)
class HubKeys:
    """The hub's signing keys as this machine trusts them, and where they came from."""

    keys: dict[str, bytes]  # kid -> public
    directory: Directory | None
    why_none: str  # when ``keys`` is empty: why (said with the problems it causes)


def _pinned(path: Path) -> HubPublicKey:
    return HubPublicKey.load(path.read_bytes(), source=str(path))


def hub_keys(config: Path | None, hub_key: Path | None) -> HubKeys:
    """--hub-key; else the configuration's hub key and the directory's ``hub_keys``."""
    keys: dict[str, bytes] = {}
    if hub_key is not None:
        try:
            pinned = _pinned(hub_key)
        except (OSError, ValueError, XchgError) as exc:
            return HubKeys({}, None, f"cannot read --hub-key {hub_key}: {exc}")
        keys[pinned.kid] = pinned.public
    try:
        where = sources.resolve(config, None, None)
    except sources.RouteError as exc:
        return HubKeys(keys, None, f"{exc}; give --config or --hub-key")
    try:
        verified = verify_directory(
            where.directory.read_bytes(), where.hub_public, now=None, whole_file=True
        )
    except (OSError, ValueError, XchgError):
        verified = None
    if not keys:
        keys[key_id(KeyKind.SIGN, where.hub_public)] = where.hub_public
    directory = None if verified is None else verified.directory
    if directory is not None:
        keys.update(
            {k.kid: k.public for k in directory.hub_keys if not directory.is_revoked(k.kid)}
        )
    return HubKeys(keys, directory, "")


def _interval(config: Path | None, store: str | None) -> int | None:
    """The hub's checkpoint interval (ms) if it signs checkpoints; the default for a bare
    --store (a copy or a backup of a hub with the default settings)."""
    try:
        ledger = load_config(find_config(config)).ledger
    except ConfigError:
        if store is None:
            return None
        ledger = Ledger()
    return round(ledger.checkpoint_interval * 1000) if ledger.checkpoints else None


def _store_url(command: str, config: Path | None, store: str | None) -> str:
    if store:
        return store
    try:
        return load_config(find_config(config)).store_url()
    except ConfigError as exc:
        raise _fail(command, exc) from exc


@audit_app.command("verify")
def audit_verify(
    config: ConfigOption = None,
    store: StoreOption = None,
    hub_key: HubKeyOption = None,
    witness: Annotated[
        list[Path] | None,
        typer.Option(
            help="A checkpoint a spoke holds (.spoke/ledger/checkpoint.ckpt) or an evidence "
            "file; the store must agree with it (repeatable)"
        ),
    ] = None,
) -> None:
    """Check the audit ledger: its hash chain, its Merkle tree against every signed
    checkpoint and the stored nodes, and checkpoints spokes hold (--witness). Exit 0:
    intact; 1: one line per problem (the first bad entry, or the missing range); 2: the
    check cannot be made."""
    command = "hubctl audit verify"
    url = _store_url(command, config, store)
    try:
        witnesses = [read_witness(path) for path in witness or []]
    except WitnessFileError as exc:
        raise _fail(command, exc) from exc
    trusted = hub_keys(config, hub_key)
    try:
        report = asyncio.run(
            verify_store_ledger(url, trusted.keys, witnesses, interval_ms=_interval(config, store))
        )
    except XchgError as exc:
        raise _fail(command, exc) from exc
    for problem in report.problems:
        typer.echo(problem)
    for line in report.explained:
        typer.echo(f"explained: {line}")
    if report.problems and not trusted.keys:
        typer.echo(
            f"{command}: 无法核验签名：请指定枢纽公钥（--hub-key 或 --config） / no hub key to "
            f"check signatures with: {one_line(trusted.why_none)}",
            err=True,
        )
    checked = (
        f"{report.entries} rows checked, {report.checkpoints} signed checkpoints and "
        f"{report.witnesses} witness checkpoints compared"
    )
    if report.problems:
        typer.echo(
            f"audit ledger: 账本校验发现问题，请勿依赖，并告知安全保密负责人 / {checked}, "
            f"{len(report.problems)} problems: do not rely on it; tell your security officer",
            err=True,
        )
        raise typer.Exit(1)
    lost = f"; {len(report.explained)} losses declared by a restore" if report.explained else ""
    typer.echo(f"audit ledger: 账本完整 / {checked}; the chain is intact and the tree agrees{lost}")


@audit_app.command("prove")
def audit_prove(
    msg_id: Annotated[str, typer.Argument(help="The message's msg_id: 32 lowercase hex digits")],
    out: Annotated[
        Path | None, typer.Option(help="Write the evidence file here (default: stdout)")
    ] = None,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Write the evidence of one message: its ledger entries with inclusion proofs in the
    latest signed checkpoint, the receipts that speak of it, the keys to check them and
    the witnesses' countersignatures (docs/wire-format.md 12.5). Exit 1: nothing to prove yet."""
    command = "hubctl audit prove"
    try:
        wanted = parse_msg_id(msg_id)
    except ValueError as exc:
        raise _fail(
            command, f"{exc}; copy it from a receipt, a log line or 'hubctl trace'"
        ) from exc
    url = _store_url(command, config, store)
    trusted = hub_keys(config, None)
    if not trusted.keys:
        raise _fail(command, f"no hub key to put in the evidence: {trusted.why_none}")
    try:
        proof = asyncio.run(
            prove_from_store(
                url,
                wanted,
                hub_keys=list(trusted.keys.items()),
                directory=trusted.directory,
                now=now_ms(),
            )
        )
    except XchgError as exc:
        raise _fail(command, exc) from exc
    for note in proof.notes[:-1] if proof.doc is None else proof.notes:
        typer.echo(f"{command}: {one_line(note)}", err=True)
    if proof.doc is None:
        last = proof.notes[-1] if proof.notes else "nothing to prove"
        if proof.entries:
            last = (
                f"no signed checkpoint covers the entries of {msg_id_text(wanted)} yet: they "
                "will be provable after the next checkpoint, within [ledger] checkpoint_interval"
            )
        typer.echo(f"{command}: 暂无可出具的证据 / {one_line(last)}", err=True)
        raise typer.Exit(1)
    text = evidence.dumps(proof.doc)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(command, f"cannot write {out}: {exc.strerror}") from exc
    typer.echo(
        f"{command}: {proof.proven} entries and {len(proof.doc['receipts'])} receipts of "
        f"{msg_id_text(wanted)}, proven in the checkpoint of size {proof.checkpoint_size}, "
        f"written to {out}",
        err=True,
    )


@audit_app.command("check-evidence")
def audit_check_evidence(
    file: Annotated[
        Path, typer.Argument(help="An evidence file (hubctl audit prove, spoke prove)")
    ],
    hub_key: HubKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Verify an evidence file offline against the hub key you trust (--hub-key, or the
    directory --config names). Exit 0: it holds; 1: what does not hold."""
    command = "hubctl audit check-evidence"
    trusted = hub_keys(config, hub_key)
    if not trusted.keys:
        raise _fail(command, f"no hub key to trust: {trusted.why_none}")
    try:
        doc = evidence.loads(file.read_bytes())
        report = evidence.verify(
            doc,
            trusted_hub_keys=list(trusted.keys.values()),
            trusted_keys=(
                None if trusted.directory is None else evidence.organisation_keys(trusted.directory)
            ),
        )
    except OSError as exc:
        raise _fail(command, f"cannot read {file}: {exc.strerror}") from exc
    except evidence.EvidenceError as exc:
        typer.echo(
            f"{command}: 证据文件无法使用，请向出具方索取完整的文件 / {file} is not a usable "
            f"evidence file: {one_line(exc.message)}",
            err=True,
        )
        raise typer.Exit(1) from exc
    c = report.checkpoint
    typer.echo(
        f"checkpoint: size {c.size}, signed at {ms_to_text(c.at)} by {c.checkpoint.hub_id} "
        f"(key {c.kid})"
    )
    for e in report.entries:
        typer.echo(f"  entry {e.seq}: {e.event} {e.org or '-'} at {ms_to_text(e.at)}")
    for r in report.receipts:
        recorded = "no ledger entry" if r.entry_seq is None else f"recorded by entry {r.entry_seq}"
        typer.echo(
            f"  receipt {r.status} for {r.recipient or 'the message'} from {r.issuer} at "
            f"{ms_to_text(r.at)}: {recorded}"
        )
    typer.echo(f"  cosigned by: {', '.join(report.cosigners) or 'no witness'}")
    for problem in report.problems:
        typer.echo(f"problem: {problem}")
    if report.problems:
        typer.echo(
            f"{command}: 证据不成立，请勿依赖 / {len(report.problems)} problems: do not rely on it",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(
        f"证据成立 / evidence of {msg_id_text(report.msg_id)} holds: "
        f"{len(report.entries)} entries and {len(report.receipts)} receipts in the hub's "
        "signed ledger"
    )


@audit_app.command("restored")
def audit_restored(
    reason: Annotated[str, typer.Option(help="Why the store was restored (goes into the ledger)")],
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """After restoring the store from a backup, with the hub stopped: append a signed-to-be
    ledger.restored entry stating how many entries the restored ledger has, so that spokes
    holding a later checkpoint accept the loss as declared instead of reporting a fork."""
    command = "hubctl audit restored"
    if not reason.strip():
        raise _fail(command, "--reason must say why (for example: disk failure, backup of DATE)")
    try:
        settings = load_config(find_config(config))
    except ConfigError as exc:
        raise _fail(command, exc) from exc
    url = store or settings.store_url()
    uid = os.getuid()
    try:
        user: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = None
    try:
        declared = asyncio.run(
            declare_restored_offline(
                url,
                HubLock(settings.lock_file()),
                reason=reason.strip(),
                now=now_ms(),
                requested_by={"uid": uid, "user": user},
            )
        )
    except LockHeldError as exc:
        hint = (
            f"枢纽正在运行，请先停止（systemctl stop hubd）再执行，未写入任何内容 / {exc}: stop "
            "the hub first (systemctl stop hubd), then run this again; nothing was written"
        )
        raise _fail(command, hint) from exc
    except XchgError as exc:
        raise _fail(command, exc) from exc
    k = declared.restored_size
    last = declared.detail["last_checkpoint"]
    since = "" if last is None else f" (its latest checkpoint: size {last['size']})"
    typer.echo(
        f"ledger.restored written as entry {declared.seq}: the restored ledger has {k} "
        f"entries{since}. Start the hub: its next checkpoint covers this entry. A spoke that "
        f"holds a checkpoint beyond size {k} then logs ledger.restored (the entries it saw "
        f"after {k} are lost) and follows the restored ledger; the others see nothing unusual"
    )
