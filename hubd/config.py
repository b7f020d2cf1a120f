"""The hub's configuration file (config/hub.toml), loaded into pydantic models.

Relative paths are resolved against the folder of the configuration file, so a unit file
can start ``hubd run --config /etc/govxchg/hub.toml`` from any working directory.
Every problem is a ConfigError naming the file, the key path and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.brokers import BrokerURL
from schemas.ids import ChannelId
from schemas.localfs import read_config

Seconds = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HubFiles(_Section):
    topology: Path = Path("topology.toml")
    directory: Path = Path("../certs/hub/directory.bin")
    key: Path = Path("../certs/hub/hub.sign.key")
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


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"listen must be HOST:PORT, not {value!r}")
    return value


class EmbeddedBroker(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:1883"  # loopback by default; amqtt would bind 0.0.0.0

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _host_port(value)

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


class Lifecycle(_Section):
    drain_timeout: Seconds = 10.0  # SIGTERM: finish in-flight work within this bound
    watchdog: bool = True  # send WATCHDOG=1 when systemd asks for it


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

    def store_url(self) -> str:
        if self.hub.store:
            return self.hub.store
        return f"sqlite+aiosqlite:///{self.hub.state_dir / 'hub.db'}"

    def spool_dir(self) -> Path:
        return self.hub.state_dir / "spool"

    def broker_for(self, channel: str) -> BrokerURL | None:
        """The external broker of ``channel``; None when it uses the embedded broker."""
        return self.channels.get(channel)


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
            "state_dir": at(config.hub.state_dir),
        }
    )
    channels = {
        name: b.model_copy(update={"ca": at(b.ca), "cert": at(b.cert), "key": at(b.key)})
        for name, b in config.channels.items()
    }
    return config.model_copy(update={"hub": hub, "channels": channels})
