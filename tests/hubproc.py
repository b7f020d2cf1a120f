"""Real processes for integration tests: Mosquitto on a free port, and hubd itself.

``Mosquitto`` starts Debian's broker with its own configuration (never the machine's
default one). ``HubProcess`` writes a hub key, a signed directory and a hub.toml into a
folder, starts ``python -m hubd run`` with NOTIFY_SOCKET pointing at a real unix datagram
socket, and waits for READY=1, as systemd would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.clock import now_ms
from runtime.files import write_private
from runtime.ports import free_port
from schemas.clock import DAY_MS
from schemas.directory import Directory, sign_directory
from schemas.keys import SigningKey, dump_secret_key
from tests.world import World

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            if probe.connect_ex((host, port)) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")
        time.sleep(0.02)


def live_directory(
    world: World, *, version: int = 1, revoked: list[str] | None = None
) -> Directory:
    """The world's directory with windows around the real clock (hubd reads the clock)."""
    now = now_ms()
    return world.rebuild(
        version=version,
        revoked=revoked or [],
        issued_at=now - 60_000,
        expires_at=now + DAY_MS,
        not_before=now - DAY_MS,
        not_after=now + 30 * DAY_MS,
    )


def stop_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
        if process.poll() is None:
            process.kill()
            process.wait()


@dataclass
class Mosquitto:
    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    settings: tuple[str, ...] = ()  # more configuration lines (the benches' limits)

    def start(self) -> Mosquitto:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence false",
                    "set_tcp_nodelay true",  # PERF-NOTES: the broker side matters most
                    "max_queued_messages 200000",
                    "max_inflight_messages 1000",
                    "log_type error",
                    "log_type warning",
                    f"log_dest file {self.folder / 'mosquitto.log'}",
                    *self.settings,
                    "",
                ]
            )
        )
        with (self.folder / "stderr.log").open("ab") as errors:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=errors)  # noqa: S603
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@dataclass
class HubProcess:
    """hubd as a child process, configured in ``folder``."""

    folder: Path
    hub_key: SigningKey
    directory: Directory
    broker_port: int | None = None  # an external broker for every channel; None: embedded
    # with broker_port: every channel's urls = [...] (a node list) instead of its url
    broker_urls: tuple[str, ...] = ()
    # with broker_port: these channels on another port (another broker, or a proxy to it)
    channel_ports: dict[str, int] = field(default_factory=dict)
    store_url: str = ""
    extra_toml: str = ""
    embedded_port: int = field(default_factory=free_port)
    # /metrics and /healthz on a free loopback port, so hubs never meet on the default
    # 9464; None writes no [metrics] section (the hub's default applies).
    metrics_port: int | None = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    notify: socket.socket | None = None
    notifications: list[str] = field(default_factory=list)
    # what runs after the interpreter: tests.timewarp runs the same daemon on a test clock
    launcher: tuple[str, ...] = ("-m", "hubd", "run")

    @property
    def port(self) -> int:
        """Where spokes connect."""
        return self.broker_port if self.broker_port is not None else self.embedded_port

    @property
    def metrics_url(self) -> str:
        assert self.metrics_port is not None
        return f"http://127.0.0.1:{self.metrics_port}"

    def write(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = self.folder / "keys"
        if not (keys / "hub.sign.key").exists():
            write_private(keys / "hub.sign.key", dump_secret_key("hub", self.hub_key))
        (keys / "directory.bin").write_bytes(sign_directory(self.directory, self.hub_key))
        lines = [
            "[hub]",
            f'directory = "{keys / "directory.bin"}"',
            f'key = "{keys / "hub.sign.key"}"',
            f'state_dir = "{self.folder / "state"}"',
        ]
        if self.store_url:
            lines.append(f'store = "{self.store_url}"')
        lines += ["", "[broker]"]
        if self.broker_port is None:
            lines += ["enabled = true", f'listen = "127.0.0.1:{self.embedded_port}"']
        else:
            lines.append("enabled = false")
            url = f'url = "mqtt://127.0.0.1:{self.broker_port}"'
            if self.broker_urls:
                url = f"urls = {json.dumps(list(self.broker_urls))}"
            for channel in self.directory.channels:
                port = self.channel_ports.get(channel.id)
                here = url if port is None else f'url = "mqtt://127.0.0.1:{port}"'
                lines += ["", f"[channels.{channel.id}]", here]
        if self.metrics_port is not None:
            lines += ["", "[metrics]", f'listen = "127.0.0.1:{self.metrics_port}"']
        lines += ["", "[logging]", 'format = "json"', 'level = "info"', "", self.extra_toml, ""]
        config = self.folder / "hub.toml"
        config.write_text("\n".join(lines))
        return config

    def start(
        self, *, timeout: float = 20.0, env: dict[str, str] | None = None, ready: bool = True
    ) -> HubProcess:
        """Start hubd; wait for READY=1 unless ``ready`` is False."""
        config = self.write()
        sock_path = self.folder / "notify.sock"
        sock_path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(sock_path))
        self.notify.settimeout(0.2)
        environ = {**os.environ, "NOTIFY_SOCKET": str(sock_path), **(env or {})}
        with (self.folder / "hubd.log").open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(  # noqa: S603 - our own daemon
                [sys.executable, *self.launcher, "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environ,
            )
        if not ready:
            return self
        try:
            self.wait_notification("READY=1", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 15) -> str:
        """The last lines hubd wrote, for a failure message (CI keeps nothing else)."""
        try:
            text = (self.folder / "hubd.log").read_text(errors="replace")
        except OSError as exc:
            return f"({exc})"
        return "\n".join(text.splitlines()[-lines:])

    def wait_notification(self, prefix: str, timeout: float = 20.0) -> str:
        assert self.notify is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"hubd exited with {self.process.returncode}; the end of "
                    f"{self.folder / 'hubd.log'}:\n{self.log_tail()}"
                )
            try:
                data = self.notify.recv(4096).decode()
            except TimeoutError:
                continue
            self.notifications.append(data)
            if any(line.startswith(prefix) for line in data.splitlines()):
                return data
        raise TimeoutError(
            f"hubd sent no {prefix} within {timeout} s; see {self.folder / 'hubd.log'}"
        )

    def log_events(self) -> list[dict[str, object]]:
        events = []
        for line in (self.folder / "hubd.log").read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    events.append(value)
        return events

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._close_notify()
        return code

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self._close_notify()

    def hup(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def peak_rss_kib(self) -> int:
        """VmHWM of the running hub: its peak resident memory so far."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM in /proc status")

    def _close_notify(self) -> None:
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close_notify()
