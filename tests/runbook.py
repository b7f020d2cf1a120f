"""docs/operations.md's runbooks, step by step, as an operator on a Debian server types them.

The commands come from the document itself: the fenced ``sh`` blocks of a section and the
inline code of its prose that starts with a command (``hubctl``, ``spoke``, ``sudo``,
``systemctl``, ``sqlite3``, ``rsync``, ``du``, ``cp``, ``journalctl``), split at ``&&``.
When the document changes, the walk changes with it.

They run literally in the documented layout (``/etc/govxchg``, ``/var/lib/govxchg``,
``/run/hubd``, ``/opt/govxchg``) inside a private mount namespace: ``/etc``, ``/var``,
``/run`` and ``/usr/local`` are overlays whose upper layers live on a tmpfs of the
namespace, ``/opt`` is a tmpfs. Nothing reaches the machine's own folders. The namespace
is held by a sleeping ``unshare`` process; every command enters it with ``nsenter``. (A
Python installed under ``/root``, as pyenv does, is made reachable for the service users
in the namespace only.) Commands run as root from an operator's folder of the test, unless
the document says ``cd`` or the test gives a runbook its folder.

What cannot run in a test is mapped, and only this (``Operator.mapped``; each step's line
in the walk's summary says which mapping it took):

- ``apt-get install``: skipped; the machine has the packages (README, .ci/run).
- ``useradd`` and ``usermod`` run as written, in the namespace's ``/etc``; ``usermod -aG
  G NAME`` first adds the operator NAME there.
- ``sudo -u USER CMD``: ``setpriv --reuid USER --regid USER --clear-groups --reset-env
  CMD``; ``sudo CMD``: CMD (the test is root).
- ``cp -r . /opt/govxchg``: this checkout's entries (its ``.venv`` too) bind-mounted there;
  ``make setup``: skipped, that ``.venv`` is set up.
- "collect the organisations' ORG.pub.json": each organisation's server is this one: the
  spoke's user of ``config/systemd/spoke@.service`` (``govxchg-spoke``) is added, runs
  ``spoke keygen --org ORG --out /etc/govxchg/ORG``, the ``ORG.pub.json`` is copied to
  ``/etc/govxchg/orgs/``, and ``/etc/govxchg/spoke-ORG.toml`` is written from
  ``config/spoke.example.toml`` (``spoke_toml``). jl.cc's agent runs as that unit says.
- "then edit ...": the test's edits (``Operator.edit_after``, ``edit_topology``): the documented
  paths, free loopback ports for the embedded broker and the metrics listener, the admin
  socket in ``/run/hubd``, two delivery attempts half a second apart (dead letters come
  quickly), JSON logs; a topology of four organisations.
- ``systemctl`` on ``hubd``: the unit file as installed in ``/etc/systemd/system``:
  ``start``/``enable --now`` make ``StateDirectory`` and ``RuntimeDirectory`` (owner and
  mode as the unit says) and run ``ExecStart`` as ``User``/``Group`` with ``UMask`` in
  ``WorkingDirectory`` and ``NOTIFY_SOCKET``, waiting for ``READY=1``; ``reload`` runs
  ``ExecReload`` as ``User`` with ``$MAINPID`` and waits for ``directory.reloaded`` (a
  ``directory.reload_failed`` fails the step); ``stop`` sends ``KillSignal`` and waits;
  ``status`` fails unless it runs; ``daemon-reload`` does nothing. A ``Type=simple`` unit
  (the spoke's) is only started.
- "copy its .spoke/ledger/checkpoint.ckpt": jl.cc's, into the folder the command runs in,
  before a ``--witness checkpoint.ckpt``.
- ``journalctl -u hubd -o cat``: ``cat`` of the hub's captured stdout.
- ``/backup/``: a folder of the test (``/backup`` does not exist to mount over).
- Placeholders (``ORG``, ``MSG_ID``, ``KID``, ``DIR``, ``DATE``, ``<kid>``, ``--config
  ...``) are given per runbook by the test; a command the prose offers as an alternative
  (``(or `CMD` ...``) is not run.

A step that fails for a defect another change is fixing (``KNOWN_DEFECTS``: issue 13) is
recorded with its output, a workaround gets the walk past it, and the test xfails naming
them; any other failure fails the test at once, naming the step, the command, the folder
it ran in, the exit code and the output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runtime.ports import free_port

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "operations.md"
COMMANDS = ("hubctl", "spoke", "sudo", "systemctl", "sqlite3", "rsync", "du", "cp", "journalctl")
SERVICE = "hubd"
HUB_TOML = "/etc/govxchg/hub.toml"
SPOKE_USER = "govxchg-spoke"  # config/systemd/spoke@.service's User=
# The organisations of the test's topology (the edit of /etc/govxchg/topology.toml).
ORGS = ("cn.gov", "jl.gov", "jl.cc", "jl.jl")

# Where each runbook is in the document: a heading (its section up to the next heading of
# the same or a higher level) or a bold paragraph title (up to the next one).
BLOCK_ONLY = {"install"}  # runbooks whose steps are their fenced blocks alone
RUNBOOKS = {
    "install": "## Installing on a Debian server",
    "rotation": "### Routine rotation",
    "dead letters": "**Dead letters are piling up.**",
    "revocation": "**A key was compromised.**",
    "disk": "**The disk is filling.**",
    "backup and restore": "**Backing up and restoring from backup.**",
}


@dataclass(frozen=True)
class Step:
    runbook: str
    number: int
    text: str  # the command as the document gives it, comment included
    alternative: bool = False

    @property
    def command(self) -> str:
        return strip_comment(self.text)

    def __str__(self) -> str:
        return f"runbook {self.runbook!r}, step {self.number}: {self.text}"


class RunbookStepError(AssertionError):
    """A step failed: names the step, the command that ran and its output."""


# ------------------------------------------------------------------ reading the document


def strip_comment(line: str) -> str:
    """The command without its trailing ``# ...`` (a ``#`` after blanks, outside quotes)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


FENCE = re.compile(r"^[ \t]*```[a-z]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)


def _masked(text: str) -> str:
    """The text with fenced blocks blanked (same length): no heading is found in one."""
    return FENCE.sub(lambda m: " " * len(m.group(0)), text)


def _section(text: str, marker: str) -> str:
    start = text.index(marker)
    masked = _masked(text)
    if marker.startswith("#"):
        level = len(marker) - len(marker.lstrip("#"))
        found = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(masked, start + len(marker))
    else:
        found = re.compile(r"^\*\*|^#{1,3} ", re.MULTILINE).search(masked, start + len(marker))
    return text[start : found.start() if found else len(text)]


def _fenced_lines(block: str) -> list[str]:
    lines: list[str] = []
    for raw in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+", " ", raw).strip()
        if line:
            lines.append(line)
    return lines


def steps(runbook: str, text: str | None = None) -> list[Step]:
    """The runbook's commands in document order, fenced and inline."""
    body = _section(DOC.read_text() if text is None else text, RUNBOOKS[runbook])
    found: list[tuple[int, str, bool]] = []
    for fence in FENCE.finditer(body):
        if not re.match(r"[ \t]*```(sh)?\n", fence.group(0)):
            continue  # console transcripts, configuration files: not commands to type
        for offset, line in enumerate(_fenced_lines(fence.group(1))):
            found.append((fence.start() + offset, line, False))
    # The install section's prose explains its block (which command writes what, where the
    # configuration is found); its steps are the block. Elsewhere prose gives the steps.
    outside = "" if runbook in BLOCK_ONLY else _masked(body)
    for span in re.finditer(r"`([^`]+)`", outside):
        words = span.group(1).split()
        if len(words) > 1 and words[0] in COMMANDS:
            before = outside[max(0, span.start() - 4) : span.start()]
            found.append((span.start(), " ".join(words), before.endswith("(or ")))
    found.sort()
    result: list[Step] = []
    for _, line, alternative in found:
        for part in line.split(" && ") if not line.startswith("#") else [line]:
            result.append(Step(runbook, len(result) + 1, part.strip(), alternative))
    return result


# ------------------------------------------------------------------ editing TOML by line


def toml_set(text: str, table: str, key: str, value: str) -> str:
    """``key = value`` in ``[table]`` (replacing it, or a commented-out ``# key = ...``)."""
    lines = text.splitlines()
    header = f"[{table}]"
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == header)
    except StopIteration:
        return text.rstrip("\n") + f"\n\n{header}\n{key} = {value}\n"
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
        len(lines),
    )
    pattern = re.compile(rf"^#?\s*{re.escape(key)}\s*=")
    for i in range(start + 1, end):
        if pattern.match(lines[i]):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def toml_drop(text: str, table: str, key: str) -> str:
    lines = text.splitlines()
    inside = False
    kept = []
    for line in lines:
        if line.lstrip().startswith("["):
            inside = line.strip() == f"[{table}]"
        if inside and re.match(rf"^{re.escape(key)}\s*=", line):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def documented_settings(text: str | None = None) -> list[tuple[str, str, str]]:
    """(table, key, value) of every setting the install block's comment after the
    ``hub.toml`` copy says to set (``#   [hub] topology = "topology.toml", key = ...``)."""
    block = _section(DOC.read_text() if text is None else text, RUNBOOKS["install"])
    settings: list[tuple[str, str, str]] = []
    table, inside = "", False
    for line in block.splitlines():
        if "hub.toml" in line and "then edit it" in line:
            inside = True
            continue
        if not inside:
            continue
        if not line.lstrip().startswith("#"):
            break
        body = line.lstrip().lstrip("#").strip()
        if (head := re.match(r"\[(\w+)\]\s*", body)) is not None:
            table, body = head.group(1), body[head.end() :]
        if table and re.match(r"\w+\s*=", body):
            for key, value in re.findall(r'(\w+)\s*=\s*("[^"]*"|[^,\s]+)', body):
                settings.append((table, key, value))
    if not settings:
        raise RunbookStepError("the install block no longer says which hub.toml settings to set")
    return settings


def edit_topology(text: str, keep: tuple[str, ...] = ORGS) -> str:
    """The topology with only the organisations in ``keep`` (the rest of it as it was)."""
    chunks = re.split(r"(?m)^(?=\[)", text)
    kept = []
    for chunk in chunks:
        if chunk.startswith("[[orgs]]"):
            found = re.search(r'(?m)^id = "([^"]+)"', chunk)
            if found is None or found.group(1) not in keep:
                continue
        kept.append(chunk)
    return "".join(kept)


# ------------------------------------------------------------------ the namespace


def private_folders(path: Path) -> list[Path]:
    """``path`` and the folders above it that others may not enter, outermost first
    (``/root`` left out: the namespace opens it anyway)."""
    chain = [path, *path.parents]
    return [
        folder
        for folder in reversed(chain)
        if folder != Path("/") and folder != Path("/root") and not folder.stat().st_mode & 0o001
    ]


def namespace_problem() -> str | None:
    """Why this machine cannot hold the walk (None: it can)."""
    if os.geteuid() != 0:
        return "the runbook walk needs root (mount namespaces, setpriv to the service user)"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot make a mount namespace here: {probe.stderr.strip()}"
    return None


@dataclass
class Namespace:
    """A private mount namespace with overlays over the documented folders."""

    root: Path
    holder: subprocess.Popen[str] | None = None

    def start(self) -> Namespace:
        layers = self.root / "layers"
        layers.mkdir()
        script = [
            "set -e",
            f"mount -t tmpfs -o mode=0755 tmpfs {layers}",
        ]
        folders = ["etc", "var", "run", "usr/local"]
        # A Python installed under root's home (pyenv) cannot run as the service user:
        # in the namespace only, /root is made traversable.
        under_root = Path(sys.executable).resolve().is_relative_to("/root")
        folders += ["root"] if under_root else []
        for folder in folders:
            name = folder.replace("/", "_")
            up, work = layers / name / "up", layers / name / "work"
            options = f"lowerdir=/{folder},upperdir={up},workdir={work}"
            script += [f"mkdir -p {up} {work}", f"mount -t overlay -o {options} none /{folder}"]
        script += ["chmod 0711 /root"] if under_root else []
        # The same for this checkout and the folders above it, where others may not enter
        # (a clone in ``mktemp -d``'s 0700 folder): the service user runs its .venv, whose
        # editable install names the checkout's own path.
        for n, private in enumerate(private_folders(REPO)):
            up, work = layers / f"checkout{n}" / "up", layers / f"checkout{n}" / "work"
            options = f"lowerdir={private},upperdir={up},workdir={work}"
            script += [
                f"mkdir -p {up} {work}",
                f"mount -t overlay -o {options} none {shlex.quote(str(private))}",
                f"chmod o+x {shlex.quote(str(private))}",
            ]
        script += ["mount -t tmpfs -o mode=0755 tmpfs /opt", "echo ready", "exec sleep infinity"]
        self.holder = subprocess.Popen(  # noqa: S603 - fixed command
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)],  # noqa: S607
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the mount namespace could not be made: {line}")
        return self

    def argv(self, command: str, cwd: str = "/", *, replace: bool = False) -> list[str]:
        """``command`` in the namespace; ``replace``: it takes the process over (a daemon)."""
        assert self.holder is not None
        command = f"exec {command}" if replace else command
        return [
            "nsenter",
            "-t",
            str(self.holder.pid),
            "-m",
            "--",
            "sh",
            "-c",
            f"cd {shlex.quote(cwd)} && {command}",
        ]

    def run(
        self,
        command: str,
        *,
        cwd: str = "/",
        env: dict[str, str] | None = None,
        timeout: float = 90,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - the document's commands, in the namespace
            self.argv(command, cwd),
            capture_output=True,
            text=True,
            env=env or base_env(),
            timeout=timeout,
            check=False,
        )

    def read(self, path: str) -> bytes:
        done = subprocess.run(  # noqa: S603
            self.argv(f"cat {shlex.quote(path)}"), capture_output=True, check=False
        )
        if done.returncode != 0:
            raise FileNotFoundError(f"{path} in the namespace: {done.stderr.decode()}")
        return done.stdout

    def write(self, path: str, data: str) -> None:
        done = subprocess.run(  # noqa: S603
            self.argv(f"cat > {shlex.quote(path)}"), input=data, text=True, check=False
        )
        assert done.returncode == 0, path

    def stop(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait()
            assert self.holder.stdout is not None
            self.holder.stdout.close()


def base_env() -> dict[str, str]:
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/root",
    }


# ------------------------------------------------------------------ the unit


@dataclass
class Unit:
    """The parts of a systemd unit file the mapping of ``systemctl`` uses."""

    values: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Unit:
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith("#") and key.strip() not in values:
                values[key.strip()] = value.strip()
        return cls(values)

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)


def as_user(user: str, group: str, command: str, *, reset_env: bool = True) -> str:
    reset = " --reset-env" if reset_env else ""
    return f"setpriv --reuid={user} --regid={group} --clear-groups{reset} -- {command}"


def translate_sudo(command: str) -> str:
    """``sudo -u USER CMD`` and ``sudo CMD`` as the test runs them (it is root)."""
    found = re.match(r"^sudo -u (\S+) (.*)$", command)
    if found:
        return as_user(found.group(1), found.group(1), found.group(2))
    return re.sub(r"^sudo ", "", command)


@dataclass
class Service:
    """``systemctl`` for one unit, inside the namespace."""

    ns: Namespace
    folder: Path  # the test's own folder: the log, the notify socket
    name: str = SERVICE
    instance: str = ""  # spoke@jl.cc: name "spoke", instance "jl.cc" (%i in the unit)
    process: subprocess.Popen[bytes] | None = None
    log_offset: int = 0

    @property
    def unit_name(self) -> str:
        return f"{self.name}@{self.instance}" if self.instance else self.name

    @property
    def log(self) -> Path:
        return self.folder / f"{self.unit_name}.log"

    def unit(self) -> Unit:
        file = f"{self.name}@" if self.instance else self.name
        text = self.ns.read(f"/etc/systemd/system/{file}.service").decode()
        return Unit.parse(text.replace("%i", self.instance))

    def status(self) -> str:
        """``systemctl status``: whether it runs (a unit that is not running fails the step,
        as an operator reading the output would stop there)."""
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise RunbookStepError(f"{self.unit_name} is not running (exit {code})")
        return f"{self.unit_name} active (running), pid {self.process.pid}"

    def start(self, timeout: float = 30.0) -> str:
        if self.process is not None and self.process.poll() is None:
            return "already running"
        unit = self.unit()
        user, group = unit.get("User", "root"), unit.get("Group", unit.get("User", "root"))
        for key, base in (("StateDirectory", "/var/lib"), ("RuntimeDirectory", "/run")):
            if unit.get(key):
                path = f"{base}/{unit.get(key)}"
                mode = unit.get(f"{key}Mode", "0755")
                made = self.ns.run(f"install -d -o {user} -g {group} -m {mode} {path}")
                assert made.returncode == 0, made.stderr
        notify_path = self.folder / f"notify-{self.unit_name}.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify_path.chmod(0o666)
        notify.settimeout(0.2)
        workdir = unit.get("WorkingDirectory", "/")
        inner = f"umask {unit.get('UMask', '0022')}; exec {unit.get('ExecStart')}"
        command = as_user(user, group, f"sh -c {shlex.quote(inner)}", reset_env=False)
        env = {**base_env(), "HOME": workdir, "NOTIFY_SOCKET": str(notify_path)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - the unit's ExecStart
                self.ns.argv(command, workdir, replace=True),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if unit.get("Type", "simple") != "notify":  # started is all systemd waits for
            notify.close()
            return f"{self.unit_name} started as {user} (pid {self.process.pid})"
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RunbookStepError(
                        f"{self.name} exited with {self.process.returncode} before READY=1:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(TimeoutError):
                    if b"READY=1" in notify.recv(4096):
                        return f"{self.name} running as {user}, READY=1 (pid {self.process.pid})"
            raise RunbookStepError(
                f"{self.name} sent no READY=1 in {timeout} s:\n{self.log_tail()}"
            )
        finally:
            notify.close()

    def reload(self, timeout: float = 20.0) -> str:
        assert self.process is not None, "never started"
        assert self.process.poll() is None, "not running"
        unit = self.unit()
        user, group = unit.get("User", "root"), unit.get("Group", unit.get("User", "root"))
        self.log_offset = self.log.stat().st_size
        command = unit.get("ExecReload").replace("$MAINPID", str(self.process.pid))
        done = self.ns.run(as_user(user, group, command), cwd=unit.get("WorkingDirectory", "/"))
        if done.returncode != 0:
            raise RunbookStepError(
                f"ExecReload {command} exited {done.returncode}: {done.stdout}{done.stderr}"
            )
        event = self.wait_event({"directory.reloaded", "directory.reload_failed"}, timeout)
        if event["event"] == "directory.reload_failed":
            raise RunbookStepError(
                f"the hub refused the reload: {json.dumps(event, ensure_ascii=False)}"
            )
        return f"ExecReload ({command}): directory v{event.get('version')}"

    def stop(self, timeout: float = 30.0) -> str:
        if self.process is None or self.process.poll() is not None:
            return "not running"
        signame = self.unit().get("KillSignal", "SIGTERM")
        self.process.send_signal(getattr(signal, signame))
        code = self.process.wait(timeout)
        return f"{self.name} stopped ({signame}), exit {code}"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def events(self, since: int = 0) -> list[dict[str, object]]:
        found = []
        with self.log.open("rb") as log:
            log.seek(since)
            for line in log.read().decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    value = json.loads(line)
                    if isinstance(value, dict):
                        found.append(value)
        return found

    def wait_event(self, names: set[str], timeout: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(self.log_offset):
                if event.get("event") in names:
                    return event
            time.sleep(0.1)
        raise RunbookStepError(
            f"no {sorted(names)} in the hub's log within {timeout} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 15) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# ------------------------------------------------------------------ known defects


@dataclass(frozen=True)
class KnownDefect:
    """A step that fails today for a defect being fixed elsewhere (issue 13)."""

    pattern: str  # searched in the command as the document gives it
    why: str
    workaround: Callable[[str], list[str]]  # commands that get the walk past it

    def matches(self, step: Step) -> bool:
        return re.search(self.pattern, step.command) is not None


# Empty when every runbook step works as written; a defect found later is listed here with
# its issue while it is being fixed, so the walk goes on and the test xfails naming it.
KNOWN_DEFECTS: tuple[KnownDefect, ...] = ()


@dataclass
class Outcome:
    step: Step
    ran: list[str]
    note: str
    defect: str | None = None
    seconds: float = 0.0


@dataclass
class Walk:
    """Everything one walk did, for the failure message and the report."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def defects(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.defect]

    def defects_by_cause(self) -> str:
        """The known defects met, each with the steps it failed (the xfail reason)."""
        causes: dict[str, list[str]] = {}
        for o in self.defects:
            causes.setdefault(str(o.defect), []).append(f"{o.step.runbook} {o.step.number}")
        return "; ".join(f"{why} ({len(at)} steps: {', '.join(at)})" for why, at in causes.items())

    def summary(self) -> str:
        return "\n".join(
            f"- {o.step}\n    ran: {' ; '.join(o.ran) or '-'}  [{o.note}] {o.seconds:.1f} s"
            + (f"\n    KNOWN DEFECT: {o.defect}" if o.defect else "")
            for o in self.outcomes
        )


# ------------------------------------------------------------------ the operator


def spoke_config(org: str) -> str:
    """Where config/systemd/spoke@.service reads ORG's configuration."""
    return f"/etc/govxchg/spoke-{org}.toml"


def spoke_toml(org: str, port: int) -> str:
    """config/spoke.example.toml edited for ORG on this server, on the embedded broker."""
    text = (REPO / "config" / "spoke.example.toml").read_text().replace("jl.cc", org)
    text = toml_set(text, "channels.govnet", "url", f'"mqtt://127.0.0.1:{port}"')
    for key in ("ca", "cert", "key"):
        text = toml_drop(text, "channels.govnet", key)
    text = toml_set(text, "spoke", "root", f'"/var/lib/govxchg-spoke/{org}"')
    return toml_set(text, "logging", "format", '"json"')


@dataclass
class Operator:
    """Runs a runbook's steps in the namespace as the document gives them."""

    ns: Namespace
    hub: Service
    home: str  # the operator's working folder (outside the overlays, readable by all)
    backup: str
    broker_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    cwd: str = ""
    placeholders: dict[str, str | Callable[[], str]] = field(default_factory=dict)
    walk: Walk = field(default_factory=Walk)
    spokes: dict[str, Service] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cwd = self.cwd or self.home

    # -- the mappings: (pattern on the command, what the test does instead, its note)
    def mapped(self, step: Step) -> tuple[list[str], str] | None:
        command = step.command
        if step.text.startswith("#") and "ORG.pub.json" in step.text and "collect" in step.text:
            return self.collect_keys(), "mapped: each organisation's spoke keygen on this server"
        if command.startswith("#") or not command:
            return [], "comment"
        if re.search(r"\bapt-get install\b", command):
            return [], "mapped: skipped, the machine's packages (README, .ci/run)"
        if re.fullmatch(r"(sudo )?cp -r \. /opt/govxchg", command):
            # Each entry of the checkout bound into /opt/govxchg (0755 on the namespace's
            # tmpfs), not the checkout itself: a clone in a private folder (mktemp -d, 0700)
            # would make the mount's root one the service user may not enter.
            repo = shlex.quote(str(REPO))
            ran = (
                f"chmod 0755 /opt/govxchg && for e in {repo}/* {repo}/.venv; do "
                't=/opt/govxchg/$(basename "$e"); '
                'if [ -d "$e" ]; then mkdir -p "$t"; else touch "$t"; fi; '
                'mount --bind "$e" "$t" || exit 1; done'
            )
            self.must(ran, step)
            return [ran], "mapped: this checkout's entries bind-mounted"
        if re.fullmatch(r"(sudo )?make setup", command):
            return [], "mapped: skipped, this checkout's .venv is set up"
        if re.fullmatch(r"cd \S+", command):
            self.cwd = command.split()[1]
            return [], "cwd"
        found = re.fullmatch(r"(?:sudo )?systemctl (.*)", command)
        if found:
            return [], self.systemctl(found.group(1), step)
        found = re.fullmatch(r"(?:sudo )?usermod -aG \S+ (\S+)", command)
        if found:
            self.must(f"id {found.group(1)} || useradd {found.group(1)}", step)
        return None

    def collect_keys(self) -> list[str]:
        """Each organisation's server (this one): its spoke's user, keys and configuration."""
        user = f"useradd --system --home /var/lib/{SPOKE_USER} --shell /usr/sbin/nologin"
        ran = ["install -d -m 0755 /etc/govxchg/orgs", f"id {SPOKE_USER} || {user} {SPOKE_USER}"]
        self.must_all(ran)
        for org in ORGS:
            folder = f"/etc/govxchg/{org}"
            commands = [
                f"install -d -o {SPOKE_USER} -g {SPOKE_USER} -m 0700 {folder}",
                as_user(
                    SPOKE_USER,
                    SPOKE_USER,
                    f"/opt/govxchg/.venv/bin/spoke keygen --org {org} --out {folder}",
                ),
                f"cp {folder}/{org}.pub.json /etc/govxchg/orgs/",
            ]
            self.must_all(commands)
            self.ns.write(spoke_config(org), spoke_toml(org, self.broker_port))
            ran += commands
        return ran

    def edit_after(self, command: str) -> str:
        """The edits a ``# then edit`` comment asks for, on the file the command wrote."""
        target = command.rsplit(maxsplit=1)[-1]
        if target == "/etc/govxchg/topology.toml":
            self.ns.write(target, edit_topology(self.ns.read(target).decode()))
            return f"edited: only {', '.join(ORGS)}"
        if target == HUB_TOML:
            text = self.ns.read(target).decode()
            # What the install block's comment says to set, then what only a test changes.
            for table, key, value in (
                *documented_settings(),
                ("broker", "listen", f'"127.0.0.1:{self.broker_port}"'),
                ("metrics", "listen", f'"127.0.0.1:{self.metrics_port}"'),
                ("admin", "socket", '"/run/hubd/hubd.sock"'),
                ("delivery", "retry_initial", "0.5"),
                ("delivery", "max_attempts", "2"),
                ("logging", "format", '"json"'),
            ):
                text = toml_set(text, table, key, value)
            self.ns.write(target, text)
            return "edited: the documented settings; ports, 2 attempts, JSON logs"
        return f"no edit known for {target}"

    def systemctl(self, args: str, step: Step) -> str:
        words = args.split()
        try:
            if words == ["daemon-reload"]:
                return "mapped: nothing to do"
            if words[-1] != SERVICE:
                raise RunbookStepError(f"{step}: no mapping for systemctl {args}")
            if words[0] in ("start", "restart") or words[:2] == ["enable", "--now"]:
                if words[0] == "restart":
                    self.hub.stop()
                return "mapped: " + self.hub.start()
            if words[0] == "reload":
                return "mapped: " + self.hub.reload()
            if words[0] == "stop":
                return "mapped: " + self.hub.stop()
            if words[0] == "status":
                return "mapped: " + self.hub.status()
        except RunbookStepError as exc:
            raise RunbookStepError(f"{step}\n{exc}") from None
        raise RunbookStepError(f"{step}: no mapping for systemctl {args}")

    def must(self, command: str, step: Step | None = None) -> subprocess.CompletedProcess[str]:
        done = self.ns.run(command, cwd=self.cwd)
        if done.returncode != 0:
            raise RunbookStepError(
                f"{step or 'a mapped step'}\n  ran: {command}\n  exit {done.returncode}\n"
                f"{done.stdout}{done.stderr}"
            )
        return done

    def must_all(self, commands: list[str]) -> None:
        for command in commands:
            self.must(command)

    def command_for(self, step: Step) -> str:
        command = step.command
        for name, value in self.placeholders.items():
            word = rf"(?<![\w.]){name}(?!\w)" if name.isalpha() else re.escape(name)
            if re.search(word, command):
                text = value if isinstance(value, str) else value()
                command = re.sub(word, text.replace("\\", "\\\\"), command)
        command = command.replace("/backup/", f"{self.backup}/")
        command = command.replace("journalctl -u hubd -o cat", f"cat {self.hub.log}")
        return translate_sudo(command)

    def do(self, step: Step) -> Outcome:
        """Run one step; a failure raises RunbookStepError naming it, unless a known defect."""
        started = time.monotonic()
        outcome = self._do(step)
        outcome.seconds = time.monotonic() - started
        return outcome

    def _do(self, step: Step) -> Outcome:
        if "--witness checkpoint.ckpt" in step.command:
            # "copy its .spoke/ledger/checkpoint.ckpt" (a spoke's, here jl.cc's) first
            self.must(f"cp /var/lib/govxchg-spoke/jl.cc/.spoke/ledger/checkpoint.ckpt {self.cwd}/")
        if step.alternative:
            outcome = Outcome(step, [], "an alternative the prose offers: not run")
        elif (mapped := self.mapped(step)) is not None:
            outcome = Outcome(step, *mapped)
        else:
            command = self.command_for(step)
            done = self.ns.run(command, cwd=self.cwd)
            outcome = Outcome(step, [command], f"exit {done.returncode}")
            if done.returncode != 0:
                outcome = self.known_defect(step, command, done)
            elif "then edit" in step.text:
                outcome.note += "; " + self.edit_after(step.command)
        self.walk.outcomes.append(outcome)
        return outcome

    def known_defect(
        self, step: Step, command: str, done: subprocess.CompletedProcess[str]
    ) -> Outcome:
        output = (done.stdout + done.stderr).strip()
        for defect in KNOWN_DEFECTS:
            if defect.matches(step):
                ran = [command]
                for fallback in defect.workaround(command):
                    self.must(fallback, step)
                    ran.append(fallback)
                first = output.splitlines()[-1] if output else "(no output)"
                return Outcome(step, ran, f"exit {done.returncode}: {first}", defect.why)
        raise RunbookStepError(
            f"{step}\n  ran: {command}\n  in: {self.cwd}\n  exit {done.returncode}\n{output}"
        )

    # -- the organisations' servers (the same machine in the test)
    def start_spoke(self, org: str) -> None:
        """ORG's agent as config/systemd/spoke@.service runs it, the hub's key pinned."""
        self.must_all(
            [
                f"cp {REPO}/config/systemd/spoke@.service /etc/systemd/system/",
                "cp /etc/govxchg/hub/hub.pub.json /etc/govxchg/hub.pub.json",
            ]
        )
        spoke = Service(self.ns, self.hub.folder, "spoke", org)
        spoke.start()
        self.spokes[org] = spoke

    def stop_spokes(self) -> None:
        for spoke in self.spokes.values():
            try:
                spoke.stop(timeout=15)
            except subprocess.TimeoutExpired:
                spoke.kill()


def make_root() -> Path:
    """The test's folder, traversable by the service user (its home, the notify socket)."""
    root = Path(tempfile.mkdtemp(prefix="govxchg-runbook-"))
    root.chmod(0o711)
    for name in ("home", "backup"):
        (root / name).mkdir(mode=0o777)
        (root / name).chmod(0o777)
    return root
