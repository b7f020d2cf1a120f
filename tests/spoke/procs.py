"""Real spoke agents for end-to-end tests: ``python -m spoke run`` as child processes.

``SpokeProcess`` writes what an installer would into a folder (the organisation's key
files, the pinned ``hub.pub.json``, a ``spoke.toml`` with small ``[limits]``), starts the
agent, stops it with SIGTERM or kill -9, and reads what it left: its JSON log, the
folders an integrator sees (``outbox/ inbox/ sent/ failed/ signfor/``) and ``.spoke/``.
``Exchange`` is one hub (embedded broker or Mosquitto) with spokes for some organisations
of the Jilin topology. Every wait polls with a generous bound; nothing sleeps to
synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from runtime.clock import now_ms
from runtime.files import write_private
from schemas.clock import DAY_MS
from schemas.directory import Directory
from schemas.keys import HubPublicKey, dump_secret_key
from spoke import control
from tests.hubproc import HubProcess, Mosquitto, live_directory
from tests.world import World

T = TypeVar("T")
Json = dict[str, Any]

# Small limits so that a test sees a drop taken within a fraction of a second, and an
# unanswered envelope sent again within seconds.
FAST_LIMITS: Mapping[str, float] = {
    "stable_for": 0.2,
    "stable_for_unordered": 1.0,
    "rescan_every": 0.5,
    "resend_every": 2.0,
    "receipt_flush": 0.02,
}
FAST_HUB = "[delivery]\nretry_initial = 1.0\nretry_max = 4.0\n"
WITHIN = 60.0  # the bound of one wait; a wait that is not broken takes about a second


async def eventually(
    check: Callable[[], T | None], what: str, *, within: float = WITHIN, every: float = 0.05
) -> T:
    """Poll ``check`` until it returns something true; AssertionError naming ``what``."""
    try:
        async with asyncio.timeout(within):
            while True:  # polling other processes' files, bounded above
                result = check()
                if result:
                    return result
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"gave up after {within:.0f} s waiting for {what}") from None


def toml_meta(fields: Mapping[str, object]) -> str:
    """A NAME.meta.toml; keys and values quoted as JSON (valid TOML for str, list, bool)."""
    return "".join(
        f"{json.dumps(k, ensure_ascii=False)} = {json.dumps(v, ensure_ascii=False)}\n"
        for k, v in fields.items()
    )


def write_raw(path: bytes, data: bytes) -> None:
    """A new file under a name given as bytes (not necessarily UTF-8: a GBK name from a
    Windows share, say)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inbox_problems(folder: Path) -> list[str]:
    """What is wrong with one inbox/<msg_id>/ folder: [] if it is complete and intact."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return [f"{folder.name}: no meta.json"]
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    problems = []
    if meta.get("msg_id") != folder.name:
        problems.append(f"{folder.name}: meta.json names msg_id {meta.get('msg_id')}")
    listed = {"meta.json"}
    for entry in meta["files"]:
        path = folder / entry["name"]
        listed.add(entry["name"])
        if not path.is_file():
            problems.append(f"{folder.name}: {entry['name']} is missing")
        elif path.stat().st_size != entry["size"] or sha256(path) != entry["sha256"]:
            problems.append(f"{folder.name}: {entry['name']} does not match its SHA-256")
    extra = sorted({p.name for p in folder.iterdir()} - listed)
    if extra:
        problems.append(f"{folder.name}: files meta.json does not list: {extra}")
    return problems


@dataclass
class LogTail:
    """The events a JSON log gains after ``offset``; :meth:`count` reads only what is new."""

    path: Path
    offset: int
    counts: dict[str, int] = field(default_factory=dict)
    _partial: bytes = b""

    def poll(self) -> list[Json]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict) and "event" in value:
                    out.append(value)
                    self.counts[value["event"]] = self.counts.get(value["event"], 0) + 1
        return out

    def count(self, *events: str) -> int:
        self.poll()
        return sum(self.counts.get(e, 0) for e in events)


@dataclass
class SpokeProcess:
    """One organisation's spoke agent as a child process, installed in ``folder``."""

    folder: Path
    org: str
    world: World
    port: int  # where the hub's broker listens, for every channel
    channels: tuple[str, ...]
    limits: Mapping[str, float] = field(default_factory=lambda: dict(FAST_LIMITS))
    process: subprocess.Popen[bytes] | None = None
    _log_mark: int = 0  # where this run's log lines begin
    # what runs after the interpreter, and its extra environment: tests.timewarp runs the
    # same agent on a test clock
    launcher: tuple[str, ...] = ("-m", "spoke", "run")
    env: Mapping[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ install

    @property
    def config(self) -> Path:
        return self.folder / "spoke.toml"

    @property
    def root(self) -> Path:
        return self.folder / "root"

    @property
    def log(self) -> Path:
        return self.folder / "spoke.log"

    def folder_of(self, name: str) -> Path:
        return self.root / name

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def sent(self) -> Path:
        return self.root / "sent"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def signfor(self) -> Path:
        return self.root / "signfor"

    @property
    def work(self) -> Path:
        return self.root / ".spoke"

    def write(self, **replace: str | float) -> Path:
        """Key files, the pinned hub key and spoke.toml; ``replace`` overrides [spoke]
        settings (paths, key_warn_days)."""
        keys = self.folder / "keys"
        sign_key, enc_key = keys / f"{self.org}.sign.key", keys / f"{self.org}.enc.key"
        if not sign_key.exists():
            org_keys = self.world.keys[self.org]
            write_private(sign_key, dump_secret_key(self.org, org_keys.signing))
            write_private(enc_key, dump_secret_key(self.org, org_keys.encryption))
        hub_pub = self.folder / "hub.pub.json"
        now = now_ms()
        pinned = HubPublicKey(self.world.hub_key.public, now - DAY_MS, now + 365 * DAY_MS)
        hub_pub.write_bytes(pinned.dump())
        paths = {
            "root": str(self.root),
            "sign_key": str(sign_key),
            "enc_key": str(enc_key),
            "hub_key": str(hub_pub),
            **replace,
        }
        lines = ["[spoke]", f'org = "{self.org}"']
        lines += [f"{key} = {json.dumps(value)}" for key, value in paths.items()]
        lines += ["", "[limits]"]
        lines += [f"{key} = {value}" for key, value in self.limits.items()]
        lines += ["", "[logging]", 'format = "json"', 'level = "info"']
        for channel in self.channels:
            lines += ["", f"[channels.{channel}]", f'url = "mqtt://127.0.0.1:{self.port}"']
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.config

    # ------------------------------------------------------------------ running

    def start(self) -> SpokeProcess:
        if not self.config.exists():
            self.write()
        self._log_mark = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(  # noqa: S603 - our own agent
                [sys.executable, *self.launcher, "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        """Teardown: kill whatever still runs."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)

    async def started(self, *, directory: bool = True) -> SpokeProcess:
        """Start and wait until every channel is connected (and a directory is held)."""
        self.start()
        await self.wait_connected(directory=directory)
        return self

    async def wait_connected(self, *, directory: bool = True) -> None:
        def ready() -> bool:
            self._check_alive()
            events = self.events(this_run=True)
            connected = {e.get("channel") for e in events if e["event"] == "spoke.connected"}
            held = any(
                (e["event"] == "spoke.starting" and e.get("directory_version") is not None)
                or e["event"] in ("directory.updated", "directory.in_use")
                for e in events
            )
            return connected >= set(self.channels) and (held or not directory)

        await eventually(ready, f"{self.org} to connect on {', '.join(self.channels)}")

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"the spoke of {self.org} exited with {self.process.returncode}; see {self.log}"
            )

    # ------------------------------------------------------------------ its log

    def events(self, *, this_run: bool = False) -> list[Json]:
        """The agent's JSON log lines (of every run, or of the current one)."""
        if not self.log.exists():
            return []
        with self.log.open("rb") as handle:
            if this_run:
                handle.seek(self._log_mark)
            text = handle.read().decode("utf-8", errors="replace")
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict) and "event" in value:
                    out.append(value)
        return out

    def tail(self) -> LogTail:
        """Follow the current run's log, cheaply (for kill triggers polled often)."""
        return LogTail(self.log, self._log_mark)

    def logged(self, event: str, *, this_run: bool = False, **fields: object) -> list[Json]:
        return [
            e
            for e in self.events(this_run=this_run)
            if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_logged(
        self, event: str, *, this_run: bool = False, within: float = WITHIN, **fields: object
    ) -> Json:
        def found() -> Json | None:
            hits = self.logged(event, this_run=this_run, **fields)
            return hits[0] if hits else None

        return await eventually(found, f"{self.org} to log {event} {fields or ''}", within=within)

    # ------------------------------------------------------------------ drops

    def drop(
        self,
        name: str,
        content: bytes | Mapping[str, bytes],
        meta: Mapping[str, object],
    ) -> None:
        """``name`` (a file, or a folder of files) into the outbox, then NAME.meta.toml last."""
        target = self.outbox / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.mkdir()
            for file_name, data in content.items():
                (target / file_name).write_bytes(data)
        (self.outbox / f"{name}.meta.toml").write_text(toml_meta(meta), encoding="utf-8")

    # ------------------------------------------------------------------ sent/ and failed/

    def statuses(self) -> dict[str, Json]:
        """Each sent/<msg_id>/status.json by the drop's name (several sends of one name: the
        last read wins; :meth:`sent_folders` counts them)."""
        return {s["name"]: s for s in self.status_files()}

    def status_files(self) -> list[Json]:
        out = []
        for path in sorted(self.sent.glob("*/status.json")):
            with contextlib.suppress(FileNotFoundError):
                out.append(json.loads(path.read_text(encoding="utf-8")))
        return out

    def sent_folders(self) -> list[Path]:
        return sorted(p for p in self.sent.iterdir() if p.is_dir()) if self.sent.exists() else []

    def status(self, name: str) -> Json | None:
        return self.statuses().get(name)

    def recipient_status(self, name: str, recipient: str) -> str | None:
        status = self.status(name)
        if status is None:
            return None
        return str(status["recipients"].get(recipient, {}).get("status"))

    async def wait_status(
        self, name: str, recipient: str, wanted: str = "DELIVERED", *, within: float = WITHIN
    ) -> Json:
        def reached() -> Json | None:
            self._check_alive()
            status = self.status(name)
            if status is None:
                return None
            got = status["recipients"].get(recipient, {}).get("status")
            return status if got == wanted else None

        return await eventually(
            reached, f"{self.org}'s '{name}' to reach {wanted} from {recipient}", within=within
        )

    def failure_names(self) -> list[str]:
        """The drops in failed/ (their error and metadata files left out)."""
        if not self.failed.exists():
            return []
        skip = (".error.txt", ".error.json", ".meta.toml", ".meta.json")
        return sorted(p.name for p in self.failed.iterdir() if not p.name.endswith(skip))

    def failure(self, name: str) -> tuple[str, Json] | None:
        """(NAME.error.txt, NAME.error.json) of a drop in failed/, or None."""
        txt, js = self.failed / f"{name}.error.txt", self.failed / f"{name}.error.json"
        if not (txt.exists() and js.exists()):
            return None
        return txt.read_text(encoding="utf-8"), json.loads(js.read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ inbox/

    def inbox_entries(self) -> list[str]:
        return sorted(p.name for p in self.inbox.iterdir()) if self.inbox.exists() else []

    def received(self) -> dict[str, Json]:
        """msg_id -> meta.json of every complete inbox folder (dot-named staging left out)."""
        out = {}
        for name in self.inbox_entries():
            meta = self.inbox / name / "meta.json"
            if not name.startswith(".") and meta.is_file():
                out[name] = json.loads(meta.read_text(encoding="utf-8"))
        return out

    def received_titled(self, title: str) -> list[Json]:
        return [m for m in self.received().values() if m["title"] == title]

    async def wait_received(self, title: str, *, within: float = WITHIN) -> Json:
        def arrived() -> Json | None:
            self._check_alive()
            found = self.received_titled(title)
            return found[0] if found else None

        return await eventually(arrived, f"'{title}' in the inbox of {self.org}", within=within)

    # ------------------------------------------------------------------ .spoke/state.db

    def state_rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Read the agent's state database (read-only; safe while the agent runs: WAL)."""
        db = sqlite3.connect(f"file:{self.work / 'state.db'}?mode=ro", uri=True)
        try:
            return [tuple(r) for r in db.execute(sql).fetchall()]
        finally:
            db.close()

    async def hold_entries(self, *addresses: str) -> None:
        """Have the running agent fetch the directory entries a document to ``addresses``
        needs (as ``spoke send`` does), so that it can seal one while the hub is away."""
        rid = control.submit(self.work, "directory", {"addresses": list(addresses)}, timeout=30)
        answer = await asyncio.to_thread(control.wait_answer, self.work, rid, timeout=30)
        assert answer is not None
        assert answer.get("ok"), answer

    # ------------------------------------------------------------------ the spoke command

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``spoke ARGS... --config spoke.toml``, as an operator types it."""
        return spoke_command(*args, "--config", str(self.config))


def spoke_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "spoke", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Exchange:
    """One hub and the spokes of some organisations, all in ``folder``."""

    folder: Path
    world: World
    broker_kind: str  # "embedded" or "mosquitto"
    directory: Directory
    hub_toml: str = FAST_HUB
    broker: Mosquitto | None = None
    hub: HubProcess | None = None
    spokes: dict[str, SpokeProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.broker_kind == "mosquitto":
            self.broker = Mosquitto(self.folder / "mosquitto").start()
        self.hub = HubProcess(
            self.folder / "hub",
            self.world.hub_key,
            self.directory,
            broker_port=None if self.broker is None else self.broker.port,
            extra_toml=self.hub_toml,
        )

    @property
    def port(self) -> int:
        assert self.hub is not None
        return self.hub.port

    def start_hub(self) -> HubProcess:
        assert self.hub is not None
        return self.hub.start()

    def spoke(self, org: str, **limits: float) -> SpokeProcess:
        """The spoke of ``org`` (made once, not started), on every channel it is on."""
        if org not in self.spokes:
            entry = self.directory.org(org)
            assert entry is not None, org
            self.spokes[org] = SpokeProcess(
                self.folder / org,
                org,
                self.world,
                self.port,
                tuple(entry.channels),
                {**FAST_LIMITS, **limits},
            )
        return self.spokes[org]

    async def running(self, *orgs: str) -> list[SpokeProcess]:
        """Start the spokes of ``orgs`` together and wait until each is connected."""
        spokes = [self.spoke(org).start() for org in orgs]
        for spoke in spokes:
            await spoke.wait_connected()
        return spokes

    def close(self) -> None:
        for spoke in self.spokes.values():
            spoke.stop()
        if self.hub is not None:
            self.hub.stop()
        if self.broker is not None:
            self.broker.stop()


def make_exchange(
    folder: Path,
    world: World,
    broker_kind: str = "embedded",
    *,
    hub_toml: str = FAST_HUB,
    directory: Directory | None = None,
    start_hub: bool = True,
) -> Exchange:
    exchange = Exchange(
        folder, world, broker_kind, directory or live_directory(world), hub_toml=hub_toml
    )
    if start_hub:
        try:
            exchange.start_hub()
        except BaseException:
            exchange.close()
            raise
    return exchange
