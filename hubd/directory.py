"""The hub operator's side of the directory: hub keys, building, signing, reading back."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from schemas.clock import DAY_MS
from schemas.directory import KeyEntry, VerifiedDirectory, sign_directory, verify_directory
from schemas.errors import ConfigError, DirectoryError
from schemas.keys import HubPublicKey, PublicKeys, SigningKey, dump_secret_key
from schemas.localfs import PUBLIC_MODE, atomic_write, load_signing_key, write_private
from schemas.topology import DirectoryPlan, Topology, build_directory, parse_topology

HUB_OWNER = "hub"


@dataclass(frozen=True, slots=True)
class HubKeyFiles:
    secret: Path
    public: Path


def hub_key_paths(out: Path) -> HubKeyFiles:
    return HubKeyFiles(out / "hub.sign.key", out / "hub.pub.json")


def init_hub_key(out: Path, *, now: int, valid_days: int, overwrite: bool) -> HubPublicKey:
    """Write ``hub.sign.key`` (0600) and ``hub.pub.json`` (spokes pin it) into ``out``."""
    paths = hub_key_paths(out)
    if paths.secret.exists() and not overwrite:
        raise FileExistsError(
            f"{paths.secret} exists; every spoke pins the hub key, so replacing it cuts them "
            "all off. Pass --force only if you mean to re-provision every spoke"
        )
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    key = SigningKey.generate()
    write_private(paths.secret, dump_secret_key(HUB_OWNER, key), overwrite=overwrite)
    public = HubPublicKey(key.public, now, now + valid_days * DAY_MS)
    atomic_write(paths.public, public.dump(), mode=PUBLIC_MODE)
    return public


def load_topology(path: Path) -> Topology:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read it: {exc.strerror}")]) from exc
    return parse_topology(text, source=str(path))


def load_public_keys(folder: Path) -> dict[str, list[PublicKeys]]:
    """Every ``*.pub.json`` under ``folder`` (several per organisation during rotation)."""
    found: dict[str, list[PublicKeys]] = defaultdict(list)
    for path in sorted(folder.rglob("*.pub.json")):
        if path.name == "hub.pub.json":
            continue
        keys = PublicKeys.load(path.read_bytes(), source=str(path))
        found[keys.org].append(keys)
    return dict(found)


def read_directory(path: Path, hub_public: bytes, *, now: int) -> VerifiedDirectory:
    return verify_directory(path.read_bytes(), hub_public, now=now)


def build_and_sign(
    *,
    topology_path: Path,
    keys_dir: Path,
    hub_key_path: Path,
    out: Path,
    now: int,
    valid_days: int,
    version: int | None,
    revoke: list[str],
) -> VerifiedDirectory:
    """Build the directory from the topology and public keys, sign it, write it to ``out``.

    The version is one above the directory already at ``out`` (whose revocations carry
    over), unless given.
    """
    topology = load_topology(topology_path)
    _, hub_key = load_signing_key(hub_key_path)
    hub_public = HubPublicKey.load(
        hub_key_paths(hub_key_path.parent).public.read_bytes(), source=str(hub_key_path.parent)
    )
    previous_version, revoked = 0, list(revoke)
    if out.exists():
        try:
            previous = verify_directory(out.read_bytes(), hub_key.public, now=None)
        except DirectoryError:
            previous = None
        if previous is not None:
            previous_version = previous.version
            revoked = sorted({*previous.directory.revoked, *revoke})
    plan = DirectoryPlan(
        version=version if version is not None else previous_version + 1,
        issued_at=now,
        expires_at=now + valid_days * DAY_MS,
        hub_keys=(
            KeyEntry(
                kid=hub_key.kid,
                public=hub_key.public,
                not_before=hub_public.not_before,
                not_after=hub_public.not_after,
            ),
        ),
        revoked=revoked,
    )
    directory = build_directory(topology, load_public_keys(keys_dir), plan)
    frame = sign_directory(directory, hub_key)
    atomic_write(out, frame, mode=PUBLIC_MODE)
    return verify_directory(frame, hub_key.public, now=now)
