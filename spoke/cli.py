"""The ``spoke`` command."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from runtime.clock import now_ms
from runtime.files import atomic_write, denied_sentence
from runtime.startup import configure as configure_logs
from runtime.startup import guarded, run_loop
from runtime.startup import refusal as _fail
from schemas import evidence
from schemas.clock import ms_to_text
from schemas.directory import Directory, not_addressed_sentence
from schemas.dirtree import materialise, read_leaf, verify_root
from schemas.display import table
from schemas.errors import ConfigError, UsageError, XchgError
from schemas.ids import parse_msg_id
from schemas.keys import HubPublicKey
from schemas.ledger import CHECKPOINT_FRAME_LIMITS, read_checkpoint
from schemas.notes import check_text
from spoke import control
from spoke.agent import SpokeAgent
from spoke.config import CONFIG_HELP, SpokeConfig, find_config, load_config
from spoke.dirbook import held_directory, needed, root_size
from spoke.files import shown_name
from spoke.flowrequests import RequestRefusedError, report_status
from spoke.flows import answer_refusal
from spoke.handling import report_refusal
from spoke.intake import Refused, refused_line, send_drop
from spoke.keygen import generate_org_keys, rotate_org_keys
from spoke.keyring import KeySource, describe_held, own_key_sentence, own_key_warnings
from spoke.ledgeralarms import alarm_lines
from spoke.refusals import Refusal
from spoke.state import SpokeState
from spoke.tools import (
    declaration,
    declaration_toml,
    drop_name,
    files_table,
    flow_lines,
    own_keys_lines,
    rehearse,
    sending_line,
    status_table,
    waiting_drops,
)
from spoke.whereis import HEAD, whereabouts
from spoke.witness import WitnessFiles, verify

ConfigOption = Annotated[Path | None, typer.Option(help=CONFIG_HELP)]

app = typer.Typer(
    name="spoke",
    help="The agent each organisation runs: outbox and inbox folders, keys, status.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def keygen(
    org: Annotated[
        str | None,
        typer.Option(help="Organisation id, e.g. jl.cc (default: spoke.org in the config)"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the key files, created 0700 (default: the folder of spoke.sign_key "
            "in the config)"
        ),
    ] = None,
    valid_days: Annotated[int, typer.Option(help="Validity of the keys in days")] = 730,
    force: Annotated[
        bool, typer.Option(help="Replace existing keys (the old ones are lost)")
    ] = False,
    rotate: Annotated[
        bool,
        typer.Option(
            help="A new pair beside the existing one (for a key rotation): the agent keeps "
            "signing with the old key until the hub's directory lists the new one"
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Make the organisation's signing and encryption key pairs (private files mode 0600).
    Without --org or --out, they come from the spoke's configuration (as --config says)."""
    if org is None or out is None:
        spoke = _config(config, "spoke keygen").spoke
        org, out = org or spoke.org, out or spoke.sign_key.parent
    now = now_ms()
    try:
        if rotate and force:
            raise ValueError("--rotate keeps the old keys and --force discards them; pick one")
        if rotate:
            paths, public = rotate_org_keys(org, out, now=now, valid_days=valid_days)
        else:
            paths, public = generate_org_keys(
                org, out, now=now, valid_days=valid_days, overwrite=force
            )
    except PermissionError as exc:
        raise _fail("spoke keygen", denied_sentence(exc, folder=out)) from exc
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        raise _fail("spoke keygen", exc) from exc
    typer.echo(f"organisation   {org}")
    typer.echo(f"signing key    {paths.sign_key} (private, 0600)  kid {public.sign_kid}")
    typer.echo(f"encryption key {paths.enc_key} (private, 0600)  kid {public.enc_kid}")
    typer.echo(f"public keys    {paths.public}")
    typer.echo(f"valid          {ms_to_text(public.not_before)} .. {ms_to_text(public.not_after)}")
    typer.echo("Hand the public key file to the hub operator; keep the .key files on this server.")
    if rotate:
        typer.echo(
            "The running agent picks the new pair up by itself and keeps signing with the old "
            "key until the hub publishes a directory that lists the new one. Keep the old "
            ".key files: documents sealed for the old key may still arrive."
        )
    typer.echo(public.dump().decode(), nl=False)


@app.command()
def run(
    config: ConfigOption = None,
) -> None:
    """Run the spoke agent (outbox -> hub -> inbox) until SIGTERM. A failure is one line on
    stderr, one spoke.failed event and an exit code (docs/operations.md, "Exit codes")."""
    configure_logs()  # first: a configuration that fails to load is a JSON event too
    settings = load_config(find_config(config))
    configure_logs(settings.logging.format, settings.logging.level)
    try:
        agent = SpokeAgent(settings)
    except (OSError, ValueError) as exc:  # its keys, pinned hub key, folders
        raise ConfigError(str(config), [("", str(exc))]) from exc
    run_loop(agent.run())


@app.command()
def send(
    files: Annotated[list[Path], typer.Argument(help="The document and its attachments")],
    to: Annotated[str, typer.Option(help="主送: organisations or @groups, comma-separated")],
    classification: Annotated[str, typer.Option(help="密级, e.g. 内部 or 机密★1年")],
    type_: Annotated[str, typer.Option("--type", help="文种, e.g. 通知 or REPORT")],
    title: Annotated[str, typer.Option(help="标题")],
    config: ConfigOption = None,
    cc: Annotated[str, typer.Option(help="抄送: comma-separated")] = "",
    precedence: Annotated[str, typer.Option(help="紧急程度: 平件 加急 特急 特提")] = "ROUTINE",
    doc_number: Annotated[str | None, typer.Option(help="发文字号")] = None,
    signatory: Annotated[str | None, typer.Option(help="签发人")] = None,
    in_reply_to: Annotated[
        str | None, typer.Option(help="回复文件: the msg_id this answers (a 批复's 请示)")
    ] = None,
    auto_cc: Annotated[
        bool,
        typer.Option(
            "--auto-cc",
            help="自动抄送: copy every organ a skip-level document skips, going up or down",
        ),
    ] = False,
    resend: Annotated[
        bool,
        typer.Option(
            "--resend",
            help="重发: send it even though the same document (or 发文字号) went out within "
            "limits.duplicate_window of the config",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the route and each rule's verdict; send nothing "
            "(exit 0: it would be accepted, 1: refused)",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: JSON")] = False,
    name: Annotated[
        str | None, typer.Option(help="The drop's name (default: first file's)")
    ] = None,
) -> None:
    """Send a document: writes it into the outbox as a drop, exactly as an integrator would."""
    settings = _config(config, "spoke send")
    meta: dict[str, object] = {
        "to": to,
        "cc": cc,
        "classification": classification,
        "precedence": precedence,
        "doc_type": type_,
        "title": title,
    }
    if doc_number:
        meta["doc_number"] = doc_number
    if signatory:
        meta["signatory"] = signatory
    if in_reply_to:
        meta["in_reply_to"] = in_reply_to
    if auto_cc:
        meta["auto_cc"] = True
    if resend:
        meta["resend"] = True
    if dry_run:
        _dry_run(settings, files, meta, name=name, as_json=as_json)
        return
    now = now_ms()
    try:
        held = _entries_for(settings, meta, timeout=ENTRIES_WAIT)
        directory = _cached_directory(settings, now=now) if held else None
        placed = send_drop(settings, files, meta, name=name, directory=directory, now=now)
    except (OSError, ValueError) as exc:
        raise _fail("spoke send", exc) from exc
    if isinstance(placed, Refused):
        typer.echo(f"spoke send: {refused_line(placed, settings.folder('failed'))}", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"queued as the drop '{placed.name}' in {settings.folder('outbox')}; the agent sends it"
        + (
            ""
            if placed.checked
            else " (not checked here: no valid directory yet)"
            if held
            else "（本机未持有收文机关的目录条目，交换程序未能取得，发送前由其检查）"
            " (not checked here: the directory entries of its recipients are not held "
            "here and the agent did not fetch them; it checks the drop before sending)"
        )
    )
    if placed.not_addressed and directory is not None:  # the sender must know who is left out
        typer.echo(not_addressed_sentence(placed.not_addressed, directory.version))
    where = "" if config is None else f" --config {config}"
    typer.echo(f"follow it with: spoke status{where} '{placed.name}'")


def _dry_run(
    settings: SpokeConfig,
    files: list[Path],
    meta: dict[str, object],
    *,
    name: str | None,
    as_json: bool,
) -> None:
    """What the agent and the hub would make of the drop; exit 0 accepted, 1 refused."""
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise _fail("spoke send", ValueError(f"{', '.join(missing)} is not a file"))
    if not _entries_for(settings, meta, timeout=ENTRIES_WAIT):
        raise _fail(
            "spoke send",
            ValueError(
                "this spoke does not hold the directory entries of these recipients and the "
                f"agent did not fetch them within {ENTRIES_WAIT:g} s: start it ('spoke run') "
                "and try again"
            ),
        )
    directory = _directory(settings, "spoke send")
    meta_name = f"{drop_name(files, name)}.meta.json"
    now = now_ms()
    outcome = rehearse(meta, meta_name=meta_name, org=settings.org, directory=directory, now=now)
    if isinstance(outcome, Refusal):
        if as_json:
            typer.echo(json.dumps({"accepted": False, "refusal": outcome.as_json()}, **_JSON))
        else:
            typer.echo(f"交换程序会拒收（{outcome.rule}），未发送任何内容。")
            typer.echo(f"The spoke would refuse it ({outcome.rule}). Nothing is sent.")
            typer.echo(f"原因：{outcome.message_zh}\nWhy: {outcome.message}")
            typer.echo(f"处理办法：{outcome.hint_zh}\nWhat to do: {outcome.hint}")
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(outcome.as_json(), **_JSON))
    else:
        typer.echo(outcome.render(), nl=False)
    raise typer.Exit(0 if outcome.accepted else 1)


_JSON: dict[str, Any] = {"ensure_ascii": False, "indent": 2}
ENTRIES_WAIT = 20.0  # seconds for the agent to fetch a drop's directory entries


@app.command()
def status(
    config: ConfigOption = None,
    msg_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[MSG_ID|NAME]",
            help="Where one document is: its msg_id (32 hex digits: status.json, "
            "NAME.error.json, the log) or its drop's file name",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="How many recent sends")] = 20,
) -> None:
    """Recent sends and their receipts, as a table; with a msg_id or a drop's name, where
    that document is (outbox, being sealed, sent, failed, received)."""
    config = _find(config, "spoke status")
    settings = _config(config, "spoke status")
    state = SpokeState(settings.work / "state.db")
    try:
        if msg_id is None:
            for line in alarm_lines(state.alarms(open_only=True), str(config)):
                typer.echo(line)
            typer.echo(
                sending_line(
                    state.sending(),
                    waiting=waiting_drops(settings),
                    kept=state.directory_version(),
                )
            )
            for line in own_keys_lines(state.own_keys()):
                typer.echo(line)
            typer.echo(_ledger_line(settings, state))
            typer.echo(status_table(state, msg_id=None, limit=limit))
            return
        found = whereabouts(settings, state, msg_id)
        if not found:
            raise _fail("spoke status", LookupError(NOTHING_KNOWN.format(query=shown_name(msg_id))))
        typer.echo(table(HEAD, found))
        sent = [row for row in found if row[2].startswith("sent/")]
        if len(sent) == 1:
            typer.echo("\n" + files_table(state.notes(parse_msg_id(sent[0][0]))))
        for line in flow_lines(state, msg_id):
            typer.echo(line)
    finally:
        state.close()


NOTHING_KNOWN = (
    "本交换程序不知道“{query}”：请给出 msg_id（32 位十六进制，见 status.json、NAME.error.json 或"
    "日志）或投递的文件名 / nothing here is known as '{query}': give a msg_id (32 hex digits, "
    "from status.json, NAME.error.json or the log) or the file name of a drop"
)


@app.command()
def keys(
    config: ConfigOption = None,
) -> None:
    """The key pairs this spoke holds and what each is for now: which signs, which
    senders seal to, which are waiting for the directory, retired or revoked."""
    settings = _config(config, "spoke keys")
    source = KeySource(settings.org, settings.spoke.sign_key, settings.spoke.enc_key)
    try:
        keyring = source.load()
    except (OSError, ValueError) as exc:
        raise _fail("spoke keys", exc) from exc
    now = now_ms()
    directory = _cached_directory(settings)
    if directory is None:
        typer.echo("no directory cached yet: start the agent so that it receives one")
    else:
        typer.echo(f"directory v{directory.version}, expires {ms_to_text(directory.expires_at)}")
    typer.echo(table(("kind", "kid", "now"), describe_held(keyring, directory, settings.org, now)))
    if directory is not None:
        days = settings.spoke.key_warn_days
        for warning in own_key_warnings(directory, settings.org, now=now, days=days):
            label = "EXPIRED" if warning.expired else "warning"
            typer.echo(f"{label}: {own_key_sentence(warning, keyring, directory)}")
    for problem in source.problems:
        typer.echo(f"not loaded: {problem}", err=True)


@app.command("sign-for")
def sign_for(
    msg_id: Annotated[str, typer.Argument(help="The document's msg_id (its inbox folder name)")],
    config: ConfigOption = None,
) -> None:
    """签收: tell the sender a person or system has acknowledged the document."""
    settings = _config(config, "spoke sign-for")
    try:
        parse_msg_id(msg_id)
    except ValueError as exc:
        raise _fail("spoke sign-for", exc) from exc
    if not (settings.folder("inbox") / msg_id).is_dir():
        raise _fail("spoke sign-for", ValueError(f"{msg_id} is not in {settings.folder('inbox')}"))
    request = settings.folder("signfor") / msg_id
    atomic_write(request, b"", mode=0o644)
    typer.echo(f"sign-for requested ({request}); the agent sends SIGNED_FOR to the sender")


def _flow_msg_id(msg_id: str, command: str) -> bytes:
    try:
        return parse_msg_id(msg_id)
    except ValueError as exc:
        raise _fail(command, exc) from exc


def _flow_reason(reason: str | None, command: str, option: str = "--reason") -> str | None:
    if reason is None:
        return None
    try:
        return check_text(reason)
    except UsageError as exc:
        raise _fail(command, f"{option}: {exc} (flow.bad_note)") from exc


@app.command()
def recall(
    msg_id: Annotated[str, typer.Argument(help="The msg_id of a document this spoke sent")],
    reason: Annotated[
        str | None, typer.Option(help="Why (sealed: only the document's parties read it)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """撤回: ask the hub and the recipients to withdraw a document this spoke sent."""
    command = "spoke recall"
    settings = _config(config, command)
    _flow_msg_id(msg_id, command)
    text = _flow_reason(reason, command)
    if not (settings.folder("sent") / msg_id).is_dir():
        raise _fail(
            command,
            f"本机没有发出过 {msg_id}，只能撤回本单位发出并已受理的文件 / flow.not_sender: "
            f"{msg_id} is not in {settings.folder('sent')}: only a document this "
            "organisation sent and the hub accepted can be recalled",
        )
    request = settings.folder("recall") / msg_id
    atomic_write(request, (text or "").encode(), mode=0o644)
    typer.echo(
        f"recall requested ({request}); the agent sends it to the hub, and "
        f"sent/{msg_id}/status.json shows the answers"
    )


@app.command("recall-answer")
def recall_answer(
    msg_id: Annotated[str, typer.Argument(help="The recalled document's msg_id")],
    accept: Annotated[bool, typer.Option("--accept", help="Agree to the recall")] = False,
    refuse: Annotated[bool, typer.Option("--refuse", help="Keep the document")] = False,
    reason: Annotated[str | None, typer.Option(help="Why (sealed for the sender)")] = None,
    config: ConfigOption = None,
) -> None:
    """Answer the recall of a document already signed for: --accept or --refuse."""
    command = "spoke recall-answer"
    settings = _config(config, command)
    if accept == refuse:
        raise _fail(command, "give exactly one of --accept and --refuse")
    msg = _flow_msg_id(msg_id, command)
    text = _flow_reason(reason, command)
    state = SpokeState(settings.work / "state.db")
    try:
        recall = state.recall_received(msg)
    finally:
        state.close()
    try:  # judged as the agent judges it (spoke.flows)
        answer_refusal(msg, recall, accept=accept)
    except RequestRefusedError as refused:
        raise _fail(command, refused.line()) from None
    request = settings.folder("recall-answers") / f"{msg_id}.{'accept' if accept else 'refuse'}"
    atomic_write(request, (text or "").encode(), mode=0o644)
    typer.echo(f"answer requested ({request}); the agent tells the sender")


@app.command("return")
def return_(
    msg_id: Annotated[str, typer.Argument(help="The msg_id of a document in the inbox")],
    reason: Annotated[str, typer.Option(help="Why it is returned (required; sealed)")],
    config: ConfigOption = None,
) -> None:
    """退文: send a received document back to its sender, with the reason."""
    command = "spoke return"
    settings = _config(config, command)
    _flow_msg_id(msg_id, command)
    text = _flow_reason(reason, command)
    if not (settings.folder("inbox") / msg_id).is_dir():
        raise _fail(
            command,
            f"收件箱中没有 {msg_id} / flow.not_received: {msg_id} is not in "
            f"{settings.folder('inbox')}: only a document in the inbox can be returned",
        )
    request = settings.folder("return") / msg_id
    atomic_write(request, (text or "").encode(), mode=0o644)
    typer.echo(f"return requested ({request}); the agent moves it to sentback/{msg_id}/")


@app.command()
def report(
    msg_id: Annotated[str, typer.Argument(help="The msg_id of a document this spoke received")],
    status: Annotated[
        str,
        typer.Option(
            help="READ 已阅, HANDLING 办理中, DONE 办结; a petition: CASE_ACCEPTED 受理, "
            "CASE_DECLINED 不予受理 (any case, or the Chinese word)"
        ),
    ],
    comment: Annotated[
        str | None, typer.Option(help="A comment or the result (sealed for the sender)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """办理: tell the sender how this organisation handles a document it received."""
    command = "spoke report"
    settings = _config(config, command)
    msg = _flow_msg_id(msg_id, command)
    text = _flow_reason(comment, command, option="--comment")
    state = SpokeState(settings.work / "state.db")
    try:  # judged as the agent judges it (spoke.handling)
        said = report_status(status)
        report_refusal(settings, state, msg, said)
    except RequestRefusedError as refused:
        raise _fail(command, refused.line()) from None
    finally:
        state.close()
    request = settings.folder("reports") / f"{msg_id}.{said.value.lower()}"
    atomic_write(request, (text or "").encode(), mode=0o644)
    typer.echo(
        f"report requested ({request}: {said.zh} {said.value}); the agent tells the sender, "
        f"and inbox/{msg_id}/handling.json shows it"
    )


@app.command()
def declare(
    path: Annotated[Path, typer.Argument(help="A document, or a folder of files, as dropped")],
    as_json: Annotated[bool, typer.Option("--json", help="The files as a JSON list")] = False,
) -> None:
    """Print each file of a drop with its size and SHA-256, as the metadata declares them
    (文件): appended to NAME.meta.toml, it lets the spoke take the drop exactly when the
    copy is whole, whatever the tool that copies it."""
    try:
        files = declaration(path)
    except (OSError, ValueError) as exc:
        raise _fail("spoke declare", exc) from exc
    if as_json:
        typer.echo(json.dumps(files, **_JSON))
    else:
        typer.echo(declaration_toml(files), nl=False)


@app.command()
def directory(
    addresses: Annotated[
        list[str] | None,
        typer.Argument(help="organisations or @groups to look up (the agent fetches them)"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """The organisations and groups this spoke holds of the directory (docs/wire-format.md
    7a: a spoke holds what it has needed); with ADDRESSES, the running agent fetches those
    first (and their lines, a group's members)."""
    settings = _config(config, "spoke directory")
    if addresses and not _entries_for(settings, {"to": addresses}, timeout=ENTRIES_WAIT):
        typer.echo(
            "spoke directory: 运行中的交换程序未能取得这些目录条目，下面只列出本机已有的 / the "
            "running agent did not fetch these entries (is 'spoke run' running?); what this "
            "spoke holds follows",
            err=True,
        )
    d = _directory(settings, "spoke directory")
    held = len(d.orgs)
    typer.echo(
        f"交换目录第 {d.version} 版，本机持有其中 {held} 个机关的条目，其余在需要时取得 / "
        f"directory v{d.version}, expires {ms_to_text(d.expires_at)}; this spoke holds "
        f"{held} of its organisations (the agent fetches others when a document needs them)"
    )
    rows = [
        (o.id, o.name_zh, o.level.value, str(o.clearance), ",".join(o.channels)) for o in d.orgs
    ]
    typer.echo(table(("id", "name", "level", "clearance", "channels"), rows))
    typer.echo("")
    groups = [(f"@{g.id}", g.name_zh, str(len(g.members))) for g in d.groups]
    typer.echo(table(("group", "name", "members"), groups))


def _ledger_line(settings: SpokeConfig, state: SpokeState) -> str:
    """The witness in one line: the checkpoint held, and its alarms counted."""
    alarms = state.alarms()

    def count(kind: str) -> str:
        of_kind = [a for a in alarms if a.kind == kind]
        return f"{len(of_kind)} ({sum(1 for a in of_kind if a.cleared_at is None)} open)"

    counts = f"forks: {count('fork')}, restores: {count('restored')}, unproven: {count('unproven')}"
    frame = state.held_checkpoint() or WitnessFiles(settings.work / "ledger").load()
    if frame is None:
        return f"ledger: no checkpoint of the hub held yet; {counts}"
    try:
        held = read_checkpoint(frame)
    except XchgError:
        return f"ledger: the held checkpoint does not read; {counts}"
    return (
        f"ledger: the hub's checkpoint of size {held.size} signed {ms_to_text(held.at)} "
        f"verified; {counts}"
    )


# ---------------------------------------------------------------- the ledger: evidence

NO_AGENT = (
    "交换程序在 {timeout:g} 秒内未答复：请确认它正在运行（spoke run），若在运行则稍后用更长的 "
    "--timeout 重试 / the agent did not answer within {timeout:g} s: start it (spoke run) if "
    "it is not running; if it is, try again later with a longer --timeout"
)


def _ask_agent(
    settings: SpokeConfig, command: str, kind: str, args: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """A request to the running agent (spoke.control); exits 1 with one line if refused."""
    try:
        rid = control.submit(settings.work, kind, args, timeout=timeout)
        answer = control.wait_answer(settings.work, rid, timeout=timeout)
    except OSError as exc:
        raise _fail(command, exc) from exc
    if answer is None:
        typer.echo(f"{command}: {NO_AGENT.format(timeout=timeout)}", err=True)
        raise typer.Exit(1)
    if not answer.get("ok"):
        typer.echo(f"{command}: {answer.get('message')} ({answer.get('code')})", err=True)
        raise typer.Exit(1)
    return answer


@app.command()
def prove(
    msg_id: Annotated[str, typer.Argument(help="The message (32 hex digits)")],
    config: ConfigOption = None,
    out: Annotated[Path | None, typer.Option(help="Also write the evidence here")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the agent")] = 30.0,
) -> None:
    """证明: ask the hub (through the running agent) for the message's ledger entries and
    their proofs, and write an evidence file anyone can check offline."""
    settings = _config(config, "spoke prove")
    try:
        parse_msg_id(msg_id)
    except ValueError as exc:
        raise _fail("spoke prove", exc) from exc
    answer = _ask_agent(settings, "spoke prove", "prove", {"msg_id": msg_id}, timeout)
    path = Path(str(answer["path"]))
    typer.echo(str(path))
    if out is not None:
        try:
            atomic_write(out, path.read_bytes(), mode=0o644)
        except OSError as exc:
            raise _fail("spoke prove", exc) from exc
        typer.echo(str(out))
    typer.echo(
        f"{answer['entries']} ledger entries, {answer['receipts']} receipts, "
        f"checkpoint of size {answer['size']}"
    )
    problems = list(answer.get("problems") or [])
    for problem in problems:
        typer.echo(f"problem: {problem}")
    if problems:
        raise typer.Exit(1)


def _read_limited(path: Path, command: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(evidence.MAX_BYTES + 1)
    except OSError as exc:
        raise _fail(command, exc) from exc
    if len(data) > evidence.MAX_BYTES:
        raise _fail(command, ValueError(f"{path} is larger than {evidence.MAX_BYTES} bytes"))
    return data


@app.command("check-evidence")
def check_evidence(
    file: Annotated[
        Path, typer.Argument(help="An evidence file (spoke prove, hubctl audit prove)")
    ],
    config: ConfigOption = None,
) -> None:
    """Check an evidence file against the hub keys of this spoke's directory (exit 1 if
    anything does not hold)."""
    settings = _config(config, "spoke check-evidence")
    directory = _cached_directory(settings)
    if directory is None:
        raise _fail(
            "spoke check-evidence",
            ValueError("no directory yet: start the agent so that it receives one from the hub"),
        )
    try:
        doc = evidence.loads(_read_limited(file, "spoke check-evidence"))
        report = evidence.verify(
            doc,
            trusted_hub_keys=[k.public for k in directory.hub_keys],
            trusted_keys=evidence.organisation_keys(directory),
        )
    except XchgError as exc:
        typer.echo(
            f"spoke check-evidence: 证据文件不可用 / not a usable evidence file: {exc}", err=True
        )
        raise typer.Exit(1) from exc
    ckpt = report.checkpoint
    typer.echo(f"message     {report.msg_id.hex()}")
    typer.echo(
        f"checkpoint  hub {ckpt.checkpoint.hub_id}, size {ckpt.size}, signed {ms_to_text(ckpt.at)}"
        f" with key {ckpt.kid}"
    )
    rows = [(str(e.seq), ms_to_text(e.at), e.event, e.org or "-") for e in report.entries]
    typer.echo(table(("seq", "at", "ledger entry", "org"), rows))
    receipts = [
        (r.status.value, r.issuer, r.recipient or "-", ms_to_text(r.at), str(r.entry_seq or "-"))
        for r in report.receipts
    ]
    if receipts:
        typer.echo(table(("receipt", "signed by", "recipient", "at", "entry"), receipts))
    if report.cosigners:
        typer.echo(f"countersigned by {', '.join(report.cosigners)}")
    if report.ok:
        typer.echo("证据完整有效 / every proof holds")
        return
    for problem in report.problems:
        typer.echo(f"problem: {problem}")
    raise typer.Exit(1)


witness_app = typer.Typer(
    help="The spoke as a witness of the hub's ledger: check a checkpoint, clear a fork.",
    no_args_is_help=True,
)
app.add_typer(witness_app, name="witness")


@witness_app.command("check")
def witness_check(
    file: Annotated[Path, typer.Argument(help="A checkpoint frame (.ckpt) or an evidence file")],
    config: ConfigOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the agent")] = 30.0,
) -> None:
    """Does the hub show this checkpoint's history to everyone? Judged against the one
    this spoke holds (a fork is recorded as the agent records one)."""
    settings = _config(config, "spoke witness check")
    data = _read_limited(file, "spoke witness check")
    try:
        if data.lstrip()[:1] == b"{":
            frame = base64.b64decode(str(evidence.loads(data).get("checkpoint")), validate=True)
        elif len(data) <= CHECKPOINT_FRAME_LIMITS.max_size:
            frame = data
        else:
            raise ValueError(f"{file} is neither a checkpoint frame nor an evidence file")
        directory = _directory(settings, "spoke witness check")
        signed = verify(frame, directory)
    except (ValueError, XchgError) as exc:
        typer.echo(f"spoke witness check: 检查点无效 / not a valid checkpoint: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"checkpoint of size {signed.size}, signed {ms_to_text(signed.at)}: signature valid")
    args = {"frame": base64.b64encode(frame).decode()}
    answer = _ask_agent(settings, "spoke witness check", "witness-check", args, timeout)
    verdict = str(answer["verdict"])
    typer.echo(f"{verdict}: {answer.get('detail')}")
    if verdict == "fork":
        typer.echo(
            f"账本分叉，证据已保存在 {answer.get('folder')}，"
            "请告知枢纽运维人员和本单位安全保密负责人"
            f" / ledger fork, kept in {answer.get('folder')}: tell the hub operator and your "
            "security officer"
        )
    if verdict in {"fork", "refused", "unproven"}:
        raise typer.Exit(1)


@witness_app.command("reset")
def witness_reset(
    by: Annotated[str, typer.Option(help="Who decides (recorded in the log)")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the log)")],
    config: ConfigOption = None,
    accept_current: Annotated[
        bool,
        typer.Option(
            "--accept-current", help="Hold the hub's current checkpoint from now on (required)"
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the agent")] = 30.0,
) -> None:
    """After a ledger fork was settled with the hub operator and your security officer:
    clear the alarm and trust the hub's current checkpoint (the forks folder stays)."""
    settings = _config(config, "spoke witness reset")
    if not accept_current:
        raise _fail(
            "spoke witness reset",
            ValueError("say --accept-current: the spoke will hold the hub's current checkpoint"),
        )
    args = {"by": by, "why": reason}
    answer = _ask_agent(settings, "spoke witness reset", "witness-reset", args, timeout)
    size = answer.get("adopted_size")
    held = (
        f"holds the hub's checkpoint of size {size}"
        if size is not None
        else ("adopts the hub's next checkpoint")
    )
    typer.echo(f"账本告警已清除 / the ledger alarm is cleared; the spoke {held}")


def _cached_directory(settings: SpokeConfig, *, now: int | None = None) -> Directory | None:
    """The part of the directory the agent holds, its root verified against the pinned
    hub key; with ``now``, only if it has not expired (what the agent sends under). None
    if unusable."""
    if not (settings.work / "state.db").is_file():
        return None  # the agent has never run here
    try:
        pinned = HubPublicKey.load(
            settings.spoke.hub_key.read_bytes(), source=str(settings.spoke.hub_key)
        )
        state = SpokeState(settings.work / "state.db")
    except (OSError, ValueError, XchgError):
        return None
    try:
        return held_directory(state, pinned.public, now=now)
    finally:
        state.close()


def _directory(settings: SpokeConfig, command: str) -> Directory:
    """The part of the directory the agent holds, its root verified against the pinned hub
    key and not expired (as the agent judges it), or exit with what to do."""
    try:
        pinned = HubPublicKey.load(
            settings.spoke.hub_key.read_bytes(), source=str(settings.spoke.hub_key)
        )
        state = SpokeState(settings.work / "state.db")
        try:
            frame, leaves = state.dir_root(), state.dir_entries()
        finally:
            state.close()
        if frame is None:
            raise ValueError(
                "no directory yet: start the agent so that it receives one from the hub"
            )
        root = verify_root(frame, pinned.public, now=now_ms())
        return materialise(root.root, [read_leaf(leaf) for _, leaf, _ in leaves])
    except (OSError, ValueError, XchgError) as exc:
        raise _fail(command, exc) from exc


def _entries_for(settings: SpokeConfig, meta: dict[str, object], timeout: float) -> bool:
    """Have the running agent fetch the directory entries a drop to ``meta``'s addresses
    needs, if this spoke does not hold them (docs/wire-format.md 7a); False if some are
    still missing (no agent answered in ``timeout`` seconds, or it could not ask)."""
    addresses = [str(a) for key in ("to", "cc", "主送", "抄送") for a in _listed(meta.get(key))]
    if not (settings.work / "state.db").is_file():
        return False
    state = SpokeState(settings.work / "state.db")
    try:
        held = {k: read_leaf(v) for k, v, _ in state.dir_entries()}
        size = root_size(state.dir_root())
    except XchgError:
        held, size = {}, None
    finally:
        state.close()
    complete = size is not None and len(held) >= size
    if not needed(held, (), addresses, settings.org) or complete:
        return True  # everything held (or all of the directory: what is not held is not listed)
    if not control.agent_alive(settings.work):
        return False
    try:
        rid = control.submit(settings.work, "directory", {"addresses": addresses}, timeout=timeout)
        answer = control.wait_answer(settings.work, rid, timeout=timeout)
    except OSError:
        return False
    return bool(answer and answer.get("ok"))


def _listed(value: object) -> list[object]:
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, list | tuple) else []


def _find(path: Path | None, command: str) -> Path:
    """--config, else $GOVXCHG_SPOKE_CONFIG, /etc/govxchg/spoke.toml, ./config/spoke.toml."""
    try:
        return find_config(path)
    except ConfigError as exc:
        raise _fail(command, exc) from exc


def _config(path: Path | None, command: str) -> SpokeConfig:
    try:
        return load_config(find_config(path))
    except ConfigError as exc:
        raise _fail(command, exc) from exc


def main() -> None:
    guarded("spoke", "spoke.failed", app)


if __name__ == "__main__":
    main()
