"""The spoke's configuration file (``spoke run --config FILE``).

```toml
[spoke]
org = "jl.cc"
root = "/var/lib/govxchg-spoke/jl.cc"       # outbox/ inbox/ sent/ failed/ signfor/ .spoke/
sign_key = "/etc/govxchg/jl.cc/jl.cc.sign.key"
enc_key = "/etc/govxchg/jl.cc/jl.cc.enc.key"
hub_key = "/etc/govxchg/hub.pub.json"        # pinned at install

[channels.govnet]
url = "mqtt://hub.example:11883"             # or mqtts:// with ca, cert, key
# urls = ["mqtts://n1.example:8883", "mqtts://n2.example:8883"]   # a clustered broker's
#                                            # nodes, tried in this order (instead of url)
```

Relative paths resolve against the configuration file's folder. Without ``--config`` a
command reads ``$GOVXCHG_SPOKE_CONFIG`` if set, else ``/etc/govxchg/spoke.toml``, else
``./config/spoke.toml`` (:func:`find_config`); a server with several organisations keeps
one file each (``/etc/govxchg/spoke-ORG.toml``, as the unit ``spoke@ORG`` starts it) and
names it with ``--config`` or the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime.brokers import BrokerURL
from runtime.configpath import SPOKE
from runtime.files import read_config
from schemas.errors import ConfigError
from schemas.ids import ChannelId, OrgId

Seconds = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SpokeSection(_Section):
    org: OrgId
    root: Path
    sign_key: Path
    enc_key: Path
    hub_key: Path
    # Warn this many days before the organisation's last listed key of a kind ends.
    key_warn_days: Annotated[float, Field(gt=0, le=365)] = 14.0


class Limits(_Section):
    max_file_bytes: Annotated[int, Field(ge=1)] = 2 * 1024**3  # one file of a drop
    max_files: Annotated[int, Field(ge=1, le=1000)] = 100  # files in one drop
    metadata_wait: Seconds = 300.0  # a document without its NAME.meta.* after this: failed/
    stable_for: Seconds = 1.0  # a drop unchanged this long (metadata written last) is taken
    # ... and this long when the metadata file came before the document was complete
    stable_for_unordered: Seconds = 30.0
    # the same document (bytes and metadata, or 发文字号) within this window: failed/ as a
    # duplicate unless the metadata says resend = true; 0 turns the check off
    duplicate_window: Annotated[float, Field(ge=0)] = 30 * 86400.0
    rescan_every: Seconds = 5.0  # for file systems where inotify misses events
    resend_every: Seconds = 30.0  # an envelope without ACCEPTED/REJECTED is sent again
    receipt_flush: Seconds = 0.05  # DELIVERED receipts gathered this long share a signature


class Ledger(_Section):
    """The spoke as a witness of the hub's ledger (spoke.witness)."""

    cosign: bool = True  # countersign checkpoints verified consistent ...
    # ... at most once this often (0: every one): the hub keeps every countersignature, and
    # one per spoke per checkpoint (thousands a day) would outgrow what it proves
    cosign_every: Seconds = 3600.0
    answer_timeout: Seconds = 30.0  # how long a question to the hub (consistency, prove) waits


class Logging(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class SpokeConfig(_Section):
    spoke: SpokeSection
    channels: dict[ChannelId, BrokerURL]
    limits: Limits = Limits()
    ledger: Ledger = Ledger()
    logging: Logging = Logging()

    @property
    def org(self) -> str:
        return self.spoke.org

    def folder(self, name: str) -> Path:
        return self.spoke.root / name

    @property
    def work(self) -> Path:
        return self.spoke.root / ".spoke"


CONFIG_HELP = SPOKE.help  # the --config option's help: where the file is looked for


def find_config(explicit: Path | None) -> Path:
    """``--config``, else the first of $GOVXCHG_SPOKE_CONFIG, /etc/govxchg/spoke.toml and
    ./config/spoke.toml that exists (runtime.configpath); ConfigError naming them if none."""
    return SPOKE.find(explicit)


def load_config(path: Path) -> SpokeConfig:
    config = read_config(path, SpokeConfig)
    if not config.channels:
        raise ConfigError(
            str(path), [("channels", "give at least one [channels.NAME] with url or urls")]
        )
    base = path.parent

    def at(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    spoke = config.spoke.model_copy(
        update={k: at(getattr(config.spoke, k)) for k in ("root", "sign_key", "enc_key", "hub_key")}
    )
    channels = {
        name: b.model_copy(update={"ca": at(b.ca), "cert": at(b.cert), "key": at(b.key)})
        for name, b in config.channels.items()
    }
    return config.model_copy(update={"spoke": spoke, "channels": channels})
