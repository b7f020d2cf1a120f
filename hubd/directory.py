"""The hub operator's side of the directory: hub keys, building, signing, reading back."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from schemas.clock import DAY_MS
from schemas.directory import KeyEntry, VerifiedDirectory, sign_directory, verify_directory
from schemas.errors import ConfigError, XchgError
from schemas.ids import check_key_id
from schemas.keys import HubPublicKey, PublicKeys, SigningKey, dump_secret_key
from schemas.localfs import (
    PUBLIC_MODE,
    atomic_write,
    load_signing_key,
    make_private_dir,
    write_private,
)
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
    if valid_days < 1:
        raise ValueError(f"--valid-days must be at least 1, not {valid_days}")
    if paths.secret.exists() and not overwrite:
        raise FileExistsError(
            f"{paths.secret} exists; every spoke pins the hub key, so replacing it cuts them "
            "all off. Pass --force only if you mean to re-provision every spoke"
        )
    make_private_dir(out)
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

    The version is one above the directory already at ``out``, whose revocations carry
    over. Refuses, with what to do: an ``out`` that does not verify (its revocations would
    be lost), a version that is not above the previous one (spokes would refuse it as a
    rollback), and a revoked key id that names no key.
    """
    if valid_days < 1:
        raise ValueError(f"--valid-days must be at least 1, not {valid_days}")
    topology = load_topology(topology_path)
    _, hub_key = load_signing_key(hub_key_path)
    hub_public_path = hub_key_paths(hub_key_path.parent).public
    if not hub_public_path.exists():
        raise ValueError(
            f"{hub_public_path} is missing; it must sit beside --hub-key ({hub_key_path}) "
            "as 'hubctl keys init' wrote it"
        )
    hub_public = HubPublicKey.load(hub_public_path.read_bytes(), source=str(hub_public_path))
    if not keys_dir.is_dir():
        raise ValueError(f"the keys folder {keys_dir} does not exist (see --keys)")
    public_keys = load_public_keys(keys_dir)
    previous = _previous(out, hub_key)
    previous_version = 0 if previous is None else previous.version
    if version is not None and version <= previous_version:
        raise ValueError(
            f"--version {version} is not above version {previous_version} in {out}; spokes "
            "that saw it would refuse the new directory as a rollback"
        )
    known = {k.sign_kid for sets in public_keys.values() for k in sets}
    known |= {k.enc_kid for sets in public_keys.values() for k in sets}
    if previous is not None:
        known |= {k.kid for o in previous.directory.orgs for k in (*o.sign_keys, *o.enc_keys)}
    for kid in revoke:
        check_key_id(kid)
        if kid not in known:
            raise ValueError(
                f"--revoke {kid}: no organisation key has this id (in {keys_dir} or {out}); "
                "check the kid with 'hubctl directory show'"
            )
    revoked = sorted({*(previous.directory.revoked if previous else ()), *revoke})
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
    directory = build_directory(topology, public_keys, plan)
    frame = sign_directory(directory, hub_key)
    atomic_write(out, frame, mode=PUBLIC_MODE)
    return verify_directory(frame, hub_key.public, now=now)


def _previous(out: Path, hub_key: SigningKey) -> VerifiedDirectory | None:
    if not out.exists():
        return None
    try:
        return verify_directory(out.read_bytes(), hub_key.public, now=None)
    except XchgError as exc:
        raise ValueError(
            f"{out} exists but does not verify with hub key {hub_key.kid} ({exc}); its "
            "version and revocations cannot be carried over. Move it aside and pass "
            "--version above the last version spokes have seen, re-entering every --revoke"
        ) from exc
