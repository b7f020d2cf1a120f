"""The hub's configuration file (config/hub.toml), loaded into pydantic models.

Relative paths are resolved against the folder of the configuration file, so a unit file
can start ``hubd run --config /etc/govxchg/hub.toml`` from any working directory. Without
``--config`` a command finds the file itself (:func:`find_config`).
Every problem is a ConfigError naming the file, the key path and what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from runtime.brokers import BrokerURL, overlapping
from runtime.configpath import HUB
from runtime.files import read_config
from schemas.ids import ChannelId

Seconds = Annotated[float, Field(gt=0)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> object:
    """``"30d"``, ``"12h"``, ``"15m"``, ``"10s"``, ``"500ms"`` or a number of seconds."""
    if not isinstance(value, str):
        return value  # a number: pydantic checks it as seconds
    match = _DURATION.fullmatch(value)
    if match is None:
        raise ValueError(
            f'{value!r} is not a duration; write a number and a unit, such as "30d", '
            '"12h", "15m", "10s" or "500ms", or a number of seconds'
        )
    return float(match[1]) * _UNIT_SECONDS[match[2]]


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def parse_size(value: object) -> object:
    """``"2GiB"``, ``"500MB"``, ``"0"`` or a number of bytes (pydantic checks the number)."""
    if not isinstance(value, str):
        return value
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ValueError(
            f'{value!r} is not a size; write a number and a unit, such as "2GiB", "500MB" '
            'or "0", or a number of bytes'
        )
    return int(float(match[1]) * _UNITS[match[2]])


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HubFiles(_Section):
    topology: Path = Path("topology.toml")
    directory: Path = Path("../certs/hub/directory.bin")
    key: Path = Path("../certs/hub/hub.sign.key")
    # the organisations' ORG.pub.json files 'hubctl directory build' and 'keys revoke' read
    org_keys: Path = Path("../certs/orgs")
    state_dir: Path = Path("../state")
    store: str = ""  # default: SQLite in state_dir

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if not value:
            return value
        if not value.startswith(("sqlite+aiosqlite:///", "postgresql+asyncpg://")):
            raise ValueError(
                "store must be a sqlite+aiosqlite:///PATH or postgresql+asyncpg://... URL"
            )
        if value.startswith("sqlite") and value.split(":///", 1)[1] in {"", ":memory:"}:
            raise ValueError(
                "an in-memory SQLite store loses every document on restart; give a file path"
            )
        return value


EMBEDDED_PORT = 11883  # the embedded broker's default port


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"listen must be HOST:PORT, not {value!r}")
    return value


class EmbeddedBroker(_Section):
    enabled: bool = True
    # Loopback by default (amqtt would bind 0.0.0.0), and not MQTT's 1883: Debian's
    # mosquitto package takes that port on the same machine.
    listen: str = f"127.0.0.1:{EMBEDDED_PORT}"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if _host_port(value).rpartition(":")[2].lstrip("0") == "":
            raise ValueError(
                f"listen {value!r} has port 0, a port chosen at random that no spoke can be "
                f"told; give a port, e.g. 127.0.0.1:{EMBEDDED_PORT}"
            )
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class Metrics(_Section):
    """``/metrics`` (Prometheus), ``/healthz`` (readiness) and the status page (``/``),
    served by the hub itself."""

    listen: str = "127.0.0.1:9464"  # loopback by default; "" turns all of them off
    status_page: bool = True  # GET / and /status.json on the same listener; false: 404
    # govxchg_spoke_up and govxchg_spoke_presence_known, a series per organisation and
    # channel: "auto" while the directory lists fewer than hubd.web.metrics.PER_ORG_AUTO
    # organisations (1,000), true or false always. Aggregates per channel are always there.
    per_organisation: Literal["auto"] | bool = "auto"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return value if not value else _host_port(value)

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].removeprefix("[").removesuffix("]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class Delivery(_Section):
    retry_initial: Seconds = 10.0  # first resend after this long without DELIVERED
    retry_max: Seconds = 300.0  # backoff ceiling
    max_attempts: Annotated[int, Field(ge=1)] = 30  # then DEAD
    publish_window: Annotated[int, Field(ge=1, le=10_000)] = 256  # unacknowledged publishes
    max_skew: Seconds = 300.0  # created_at must be this close to the hub's clock


class Admin(_Section):
    """The local admin socket hubctl talks to (hubd.admin.server)."""

    enabled: bool = True
    socket: Path | None = None  # default: hubd.sock in the state folder

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: Path | None) -> Path | None:
        # sun_path holds 108 bytes with the closing NUL; the resolved path is checked again
        # when the hub binds it (hubd.admin.server), this catches a long literal early.
        if value is not None and len(str(value).encode()) > 107:
            raise ValueError(
                f"{str(value)!r} is {len(str(value).encode())} bytes; a unix socket path may "
                "have at most 107: choose a shorter path, such as /run/hubd/hubd.sock"
            )
        return value


class Retention(_Section):
    """How long the hub keeps the content of finished messages (hubd.engine.retention)."""

    enabled: bool = True
    # Every delivery DELIVERED, SIGNED_FOR or EXPIRED: content removed this long after the
    # last of them ended.
    delivered_after: Duration = 30 * 86400.0
    # A message with a dead letter (DEAD) keeps its content longer: an operator may still
    # redeliver it (hubctl redeliver), and a purged one cannot be.
    dead_after: Duration = 90 * 86400.0
    interval: Duration = 3600.0  # how often the purge looks for work
    batch: Annotated[int, Field(ge=1, le=10_000)] = 500  # messages per transaction

    @model_validator(mode="after")
    def _dead_keep_longer(self) -> Retention:
        if self.dead_after < self.delivered_after:
            raise ValueError(
                f"dead_after ({self.dead_after:g} s) is shorter than delivered_after "
                f"({self.delivered_after:g} s); a dead letter an operator may redeliver must "
                "keep its content at least as long as a delivered message"
            )
        return self


class Lifecycle(_Section):
    drain_timeout: Seconds = 10.0  # SIGTERM: finish in-flight work within this bound
    watchdog: bool = True  # send WATCHDOG=1 when systemd asks for it


class Deadlines(_Section):
    """Reminders (催办) of the deadlines a document's terms set, and the emergency alarm
    (hubd.engine.deadlines; docs/operations.md, "Deadlines, reminders and emergencies")."""

    enabled: bool = True
    remind_before: Duration = 86400.0  # the first reminder (at most half the time given)
    repeat_every: Duration = 86400.0  # while overdue, again this often ...
    emergency_repeat: Duration = 300.0  # ... a 应急 at 特提: this often
    max_overdue: Annotated[int, Field(ge=0, le=1000)] = 10  # at most this many repeats
    look_every: Seconds = 30.0  # a new document's deadlines are looked at within this long
    # run when an emergency notice's sign_by passes unacknowledged, with a JSON description
    # on its standard input: the program and its arguments, e.g. ["/usr/local/bin/sms-alert"]
    emergency_command: tuple[Annotated[str, Field(min_length=1)], ...] = ()


class Expiry(_Section):
    """How far ahead the hub warns of keys, certificates and the directory expiring."""

    warn_days: Annotated[float, Field(gt=0)] = 14.0  # organisation and hub keys, certificates
    directory_warn_days: Annotated[float, Field(gt=0)] = 7.0  # the directory (re-signed often)
    # extra certificate files or folders to watch (e.g. what 'hubctl broker-config' wrote);
    # the brokers' ca and cert of [channels.X] are always watched
    certificates: tuple[Path, ...] = ()
    check_every: Seconds = 3600.0  # how often the running hub looks; it warns once a day


class Disk(_Section):
    """The disk watermark (hubd.engine.diskwatch): below it, new messages are refused."""

    min_free: Annotated[int, BeforeValidator(parse_size), Field(ge=0)] = 2 * 2**30  # bytes
    min_free_percent: Annotated[float, Field(ge=0, le=90)] = 5.0  # of the file system
    check_every: Seconds = 2.0  # how often the free space is read


class Ledger(_Section):
    """Signed checkpoints of the audit ledger's Merkle tree (hubd.engine.checkpoints)."""

    checkpoints: bool = True  # false: sign and publish none on a timer (proofs still sign one)
    # A checkpoint is signed when the tree grew and this long passed since the last one ...
    checkpoint_interval: Duration = 10.0
    # ... or this many entries were added since it, whichever comes first.
    checkpoint_entries: Annotated[int, Field(ge=1)] = 1000


class Replicas(_Section):
    """Several hubd processes on one PostgreSQL store, active-active (docs/operations.md,
    "Hub replicas"; docs/architecture.md, "Replicas and leases")."""

    enabled: bool = False
    # The replica's name in logs and 'hubctl status' (default: the host name); a run adds
    # its pid and a random tail, so a restarted replica never inherits its predecessor's leases.
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")] | None = None
    # How long a lease lasts without renewal (a dead replica's organisations are taken
    # over within about lease + renew) and how often it is renewed.
    lease: Seconds = 3.0
    renew: Seconds = 1.0
    # A replica that does not reach a channel's broker another replica reaches gives its
    # organisations to the others once that has lasted this long. Longer than the spread
    # in which replicas notice a broker shared by all go (the MQTT keepalive: up to 45 s)
    # and come back (their reconnection backoff: up to 45 s), so that such an outage
    # moves nothing (hubd.core.leases.REACH_HOLD_MS).
    reach_hold: Seconds = 60.0

    @model_validator(mode="after")
    def _renew_within_lease(self) -> Replicas:
        if self.lease < 2 * self.renew:
            raise ValueError(
                f"lease ({self.lease:g} s) must last at least two renewals (renew = "
                f"{self.renew:g} s), or one slow round loses it: lengthen lease or shorten renew"
            )
        return self


class Upstream(_Section):
    """This hub as a member of a higher hub (docs/operations.md, "Joining a province to the
    national exchange"): the upstream's broker for each channel of the link. The upstream's
    id and the link's channels are the directory's (the topology's ``[[hubs]]`` entry of
    role ``upstream``); a channel the link has and this section lacks is not connected."""

    channels: dict[ChannelId, BrokerURL] = {}
    # How often the uplink says hello while connected: the upstream sends again what this
    # hub lacks of its numbered receipts, and says what it lacks of this hub's.
    hello_every: Seconds = 30.0


class Logging(_Section):
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a terminal
    level: Literal["debug", "info", "warning", "error"] = "info"


class HubConfig(_Section):
    hub: HubFiles = HubFiles()
    broker: EmbeddedBroker = EmbeddedBroker()
    channels: dict[ChannelId, BrokerURL] = {}
    delivery: Delivery = Delivery()
    lifecycle: Lifecycle = Lifecycle()
    logging: Logging = Logging()
    metrics: Metrics = Metrics()
    admin: Admin = Admin()
    retention: Retention = Retention()
    deadlines: Deadlines = Deadlines()
    disk: Disk = Disk()
    expiry: Expiry = Expiry()
    ledger: Ledger = Ledger()
    replicas: Replicas = Replicas()
    upstream: Upstream = Upstream()

    @field_validator("channels")
    @classmethod
    def _one_node_list_per_broker(cls, value: dict[str, BrokerURL]) -> dict[str, BrokerURL]:
        # Channels on one broker share one connection (hubd.engine.brokerplan), which
        # follows one node list: a node in two different lists would be connected twice.
        problems = overlapping(value)
        if problems:
            raise ValueError("; ".join(problem for _, problem in problems))
        return value

    @model_validator(mode="after")
    def _replicas_share_a_store_and_brokers(self) -> HubConfig:
        if not self.replicas.enabled:
            return self
        if not self.hub.store.startswith("postgresql"):
            raise ValueError(
                "副本须共用一个 PostgreSQL 存储 / [replicas] enabled needs hub.store to be a "
                f"PostgreSQL URL shared by every replica (it is {self.hub.store or 'SQLite'!r}): "
                'set hub.store = "postgresql+asyncpg://..."'
            )
        if not self.channels:
            raise ValueError(
                "副本须共用外部代理 / [replicas] enabled needs every channel on an external "
                "broker (each replica would run its own embedded broker): list them under "
                "[channels]"
            )
        if self.upstream.channels:
            raise ValueError(
                "作为上级枢纽成员的枢纽暂不支持多副本运行 / [replicas] enabled with [upstream]: "
                "a member hub runs as one process for now (each replica would open its own "
                "uplink under the hub's id, and the hub above would hear two): run the member "
                "hub without [replicas]"
            )
        return self

    def store_url(self) -> str:
        if self.hub.store:
            return self.hub.store
        return f"sqlite+aiosqlite:///{self.hub.state_dir / 'hub.db'}"

    def spool_dir(self) -> Path:
        return self.hub.state_dir / "spool"

    def admin_socket(self) -> Path | None:
        """Where the admin socket is (None: turned off)."""
        if not self.admin.enabled:
            return None
        return self.admin.socket or self.hub.state_dir / "hubd.sock"

    def lock_file(self) -> Path:
        """Held by the running hub: one hub per state folder (hubd.store.lock)."""
        return self.hub.state_dir / "hubd.lock"

    def broker_for(self, channel: str) -> BrokerURL | None:
        """The external broker of ``channel``; None when it uses the embedded broker."""
        return self.channels.get(channel)


CONFIG_HELP = HUB.help  # the --config option's help: where the file is looked for


def find_config(explicit: Path | None) -> Path:
    """``--config``, else the first of $GOVXCHG_CONFIG, /etc/govxchg/hub.toml and
    ./config/hub.toml that exists (runtime.configpath); ConfigError naming them if none."""
    return HUB.find(explicit)


def load_config(path: Path) -> HubConfig:
    """Read, validate and resolve ``path``. Raises ConfigError listing every problem."""
    return resolve(read_config(path, HubConfig), path.parent)


def resolve(config: HubConfig, base: Path) -> HubConfig:
    """Make every relative path absolute against ``base``."""

    def at(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    store = config.hub.store
    if store.startswith("sqlite+aiosqlite:///"):
        path = Path(store.split(":///", 1)[1])
        store = f"sqlite+aiosqlite:///{at(path)}"
    hub = config.hub.model_copy(
        update={
            "store": store,
            "topology": at(config.hub.topology),
            "directory": at(config.hub.directory),
            "key": at(config.hub.key),
            "org_keys": at(config.hub.org_keys),
            "state_dir": at(config.hub.state_dir),
        }
    )
    channels = {
        name: b.model_copy(update={"ca": at(b.ca), "cert": at(b.cert), "key": at(b.key)})
        for name, b in config.channels.items()
    }
    upstream = config.upstream.model_copy(
        update={
            "channels": {
                name: b.model_copy(update={"ca": at(b.ca), "cert": at(b.cert), "key": at(b.key)})
                for name, b in config.upstream.channels.items()
            }
        }
    )
    admin = config.admin.model_copy(update={"socket": at(config.admin.socket)})
    expiry = config.expiry.model_copy(
        update={"certificates": tuple(at(p) for p in config.expiry.certificates)}
    )
    return config.model_copy(
        update={
            "hub": hub,
            "channels": channels,
            "admin": admin,
            "expiry": expiry,
            "upstream": upstream,
        }
    )
