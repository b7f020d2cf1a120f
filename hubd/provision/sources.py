"""Where the hub's signed directory, the key that verifies it and the store are.

``hubctl route``, ``hubctl keys`` and ``hubctl audit`` resolve their options the same way:
explicit paths first, then the hub's configuration (found as hubd.config.find_config says).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hubd.config import find_config, load_config
from hubd.provision.directory import hub_key_paths, read_directory
from runtime.configpath import HUB
from runtime.files import load_signing_key
from schemas.directory import Directory
from schemas.errors import ConfigError, XchgError
from schemas.keys import HubPublicKey


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

    Without --config the configuration is found as every command finds it
    (hubd.config.find_config). With --directory and no --config, the configuration found
    (if any) gives only the hub's key, and no store is known (a 批复's reference stays
    unchecked); without --directory, a configuration must be found.
    """
    named = config is not None or directory is None  # the configuration says it all
    try:
        path = find_config(config) if named else HUB.find_optional(None)
        settings = None if path is None else load_config(path)
    except ConfigError as exc:
        raise RouteError(str(exc)) from exc
    if directory is None and settings is not None:
        directory = settings.hub.directory
    assert directory is not None  # noqa: S101 - find_config raised otherwise
    try:
        public = _hub_public(hub_pub, settings.hub.key if settings is not None else None)
    except (OSError, ValueError, XchgError) as exc:
        raise RouteError(f"cannot read the hub's public key: {exc}; give --hub-pub") from exc
    store = settings.store_url() if settings is not None and named else None
    return Sources(directory, public, store)


def _hub_public(hub_pub: Path | None, hub_key: Path | None) -> bytes:
    """--hub-pub; else hub.pub.json beside the hub's key; else the hub's own signing key."""
    if hub_pub is None and hub_key is not None:
        beside = hub_key_paths(hub_key.parent).public
        if not beside.is_file():
            return load_signing_key(hub_key)[1].public
        hub_pub = beside
    if hub_pub is None:
        raise ValueError("no hub configuration was found to name it (see --config)")
    return HubPublicKey.load(hub_pub.read_bytes(), source=str(hub_pub)).public


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
