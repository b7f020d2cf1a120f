"""Which configuration file a command reads when ``--config`` is not given.

Like Mosquitto's or PostgreSQL's tools, ``hubd``, ``hubctl`` and ``spoke`` find their file
by themselves: ``$GOVXCHG_CONFIG`` (the spoke: ``$GOVXCHG_SPOKE_CONFIG``), then
``/etc/govxchg/hub.toml`` (``spoke.toml``), then ``./config/hub.toml`` (``spoke.toml``)
in the working folder: the first that exists. A variable that is set names the file as
``--config`` would: a missing file is then an error, never a silent fall-through to another
hub's configuration. Paths inside the file resolve against its folder (hubd.config,
spoke.config), so the working folder matters only for the last place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import ConfigError

SYSTEM_DIR = Path("/etc/govxchg")


class ConfigNotFoundError(ConfigError):
    """No configuration file in any of the places a command looks (exit 2)."""


@dataclass(frozen=True, slots=True)
class ConfigPlaces:
    """Where one kind of configuration file is looked for, in order."""

    what_zh: str  # 枢纽 / 交换端
    what: str  # hub / spoke
    env: str  # the variable that names the file
    name: str  # the file's name in /etc/govxchg and ./config

    @property
    def system(self) -> Path:
        return SYSTEM_DIR / self.name

    @property
    def local(self) -> Path:
        return Path("config") / self.name

    @property
    def help(self) -> str:
        """The ``--config`` option's help text: the places, in the order they are tried."""
        return (
            f"The {self.what}'s configuration file (default: ${self.env} if set, else "
            f"{self.system}, else ./{self.local}: the first that exists)"
        )

    def find(self, explicit: Path | None) -> Path:
        """``explicit`` if given; else the first place that has a file.

        Raises ConfigNotFoundError (one line, both languages) naming every place tried.
        """
        if explicit is not None:
            return explicit
        named = os.environ.get(self.env)
        if named:
            path = Path(named)
            if not path.is_file():
                missing = (
                    f"{self.env} 指向的{self.what_zh}配置文件不存在 / no such file; correct "
                    f"or unset {self.env}, or give --config FILE"
                )
                raise ConfigNotFoundError(f"${self.env}={named}", [("", missing)])
            return path
        for path in (self.system, self.local):
            if path.is_file():
                return path
        none = (
            f"未找到{self.what_zh}配置文件 / no {self.what} configuration file: ${self.env} is "
            f"not set, and neither {self.system} nor ./{self.local} (in {Path.cwd()}) exists; "
            f"give --config FILE, set {self.env}, or install it as {self.system} "
            "(docs/operations.md, Installing)"
        )
        raise ConfigNotFoundError("--config", [("", none)])

    def find_optional(self, explicit: Path | None) -> Path | None:
        """As :meth:`find`, but None where no place has a file (a variable that names a
        missing file is still an error)."""
        try:
            return self.find(explicit)
        except ConfigNotFoundError:
            if explicit is None and os.environ.get(self.env):
                raise
            return None


HUB = ConfigPlaces("枢纽", "hub", "GOVXCHG_CONFIG", "hub.toml")
SPOKE = ConfigPlaces("交换端", "spoke", "GOVXCHG_SPOKE_CONFIG", "spoke.toml")
