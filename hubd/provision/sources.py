"""Where the hub's signed directory, the key that verifies it and the store are.

``hubctl route``, ``hubctl keys`` and ``hubctl audit`` resolve their options the same way:
explicit paths first, then the hub's configuration (config/hub.toml by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hubd.config import load_config
from hubd.provision.directory import hub_key_paths, read_directory
from runtime.files import load_signing_key
from schemas.directory import Directory
from schemas.errors import ConfigError, XchgError
from schemas.keys import HubPublicKey

DEFAULT_CONFIG = Path("config/hub.toml")
DEFAULT_HUB_KEYS = Path("certs/hub")


class RouteError(XchgError, ValueError):
    """The question cannot be asked: a file, an option or an address is wrong (exit 2)."""


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the directory, the key that verifies it and the store are."""

    directory: Path
    hub_public: bytes
    store_url: str | None  # None: no store known (no configuration)


def resolve(config: Path | None, directory: Path | None, hub_pub: Path | None) -> Sources:
    """Resolve the options: explicit paths first, then the hub's configuration.

    Without --config, config/hub.toml is read if it exists, unless --directory says which
    directory to use (then no store is known, and a 批复's reference stays unchecked).
    """
    if config is None and directory is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    settings = None
    if config is not None:
        try:
            settings = load_config(config)
        except ConfigError as exc:
            raise RouteError(str(exc)) from exc
    if directory is None:
        directory = (
            settings.hub.directory if settings is not None else DEFAULT_HUB_KEYS / "directory.bin"
        )
    try:
        public = _hub_public(hub_pub, settings.hub.key if settings is not None else None)
    except (OSError, ValueError, XchgError) as exc:
        raise RouteError(f"cannot read the hub's public key: {exc}; give --hub-pub") from exc
    return Sources(directory, public, None if settings is None else settings.store_url())


def _hub_public(hub_pub: Path | None, hub_key: Path | None) -> bytes:
    """--hub-pub; else hub.pub.json beside the hub's key; else the hub's own signing key."""
    if hub_pub is None and hub_key is not None:
        beside = hub_key_paths(hub_key.parent).public
        if not beside.is_file():
            return load_signing_key(hub_key)[1].public
        hub_pub = beside
    path = hub_pub if hub_pub is not None else DEFAULT_HUB_KEYS / "hub.pub.json"
    return HubPublicKey.load(path.read_bytes(), source=str(path)).public


def load_directory(where: Sources, *, now: int) -> Directory:
    try:
        return read_directory(where.directory, where.hub_public, now=now).directory
    except OSError as exc:
        raise RouteError(
            f"cannot read the directory {where.directory}: {exc.strerror}; give --directory "
            "or --config"
        ) from exc
    except (ValueError, XchgError) as exc:  # forged, expired, not a directory
        raise RouteError(f"the directory {where.directory} cannot be used: {exc}") from exc
