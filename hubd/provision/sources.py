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
from schemas.directory import Directory, VerifiedDirectory, verify_directory
from schemas.dirtree import check_servable
from schemas.errors import ConfigError, PeerError, XchgError
from schemas.keys import HubPublicKey, SigningKey


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


def load_served_directory(
    path: Path, hub_public: bytes, now: int, last: tuple[int, bytes] | None
) -> VerifiedDirectory:
    """The hub's signed directory as the running hub serves it (at start and at every
    reload): verified against its key, after ``last`` (version, digest) when it had one,
    and small enough for every spoke; a ConfigError saying what to do otherwise."""
    try:
        frame = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            str(path),
            [("", f"cannot read the directory: {exc.strerror}; run 'hubctl directory build'")],
        ) from exc
    try:
        verified = verify_directory(frame, hub_public, now=now, last_seen=last, whole_file=True)
        check_servable(verified.directory)  # what spokes take of it fits their limits
    except (PeerError, ValueError) as exc:
        raise ConfigError(
            str(path), [("", f"{exc}; run 'hubctl directory build' to sign a fresh one")]
        ) from exc
    return verified


def load_hub_key(path: Path) -> SigningKey:
    """The hub's signing key; a ConfigError naming ``hub.key`` and what to do otherwise."""
    try:
        return load_signing_key(path)[1]
    except FileNotFoundError as exc:
        why = f"{path} does not exist; create it with 'hubctl keys init' (docs/operations.md)"
        raise ConfigError("hub configuration", [("hub.key", why)]) from exc
    except PermissionError as exc:  # loose mode (read_private's sentence) or not ours
        why = (
            str(exc)
            if exc.filename is None
            else f"{path}: {exc.strerror}; the hub's user must own it (mode 0600)"
        )
        raise ConfigError("hub configuration", [("hub.key", why)]) from exc
    except (OSError, ValueError) as exc:
        why = str(exc) if isinstance(exc, ValueError) else f"{path}: {exc.strerror or exc}"
        raise ConfigError("hub configuration", [("hub.key", why)]) from exc
