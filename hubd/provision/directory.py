"""The hub operator's side of the directory: hub keys, building, signing, reading back."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hubd.provision.federation import federate
from hubd.provision.revocations import (
    Revocation,
    add_revocations,
    check_reason,
    load_register,
    reasons,
    register_path,
)
from runtime.files import (
    PUBLIC_MODE,
    atomic_write,
    load_signing_key,
    make_private_dir,
    write_private,
)
from schemas.clock import DAY_MS
from schemas.directory import KeyEntry, VerifiedDirectory, sign_directory, verify_directory
from schemas.dirtree import check_servable
from schemas.errors import ConfigError, XchgError
from schemas.ids import check_key_id
from schemas.keys import HubPublicKey, KeyKind, PublicKeys, SigningKey, dump_secret_key
from schemas.rotation import KeyChange, plan_key_windows
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
        if not _named_for(path.name, keys.org):
            # A file of one organisation under another's name: with organisations brought
            # on one at a time, the one it names would silently await keys while the one it
            # holds took a second key.
            raise ValueError(
                f"{path} holds the keys of {keys.org}, not of the organisation its name says; "
                f"name it {keys.org}.pub.json (or {keys.org}.KID.pub.json as 'spoke keygen "
                "--rotate' writes it), or ask that organisation for its own file"
            )
        found[keys.org].append(keys)
    return dict(found)


def _named_for(name: str, org: str) -> bool:
    """``ORG.pub.json`` or ``ORG.<kid>.pub.json`` (as 'spoke keygen' writes them)."""
    return re.fullmatch(rf"{re.escape(org)}(\.[0-9a-f]{{16}})?\.pub\.json", name) is not None


def awaiting_lines(awaiting: tuple[str, ...]) -> list[str]:
    """What ``hubctl directory build``, ``directory show`` and ``status`` say of the
    organisations listed without keys, in both languages, with what to do."""
    if not awaiting:
        return []
    zh = (
        "  这些机关已列入目录，但尚无公钥：暂时不能向其发文，它们也不能发文。"
        "请在各机关服务器上运行 'spoke keygen --org 机关代码 --out 文件夹'，"
        "将生成的 机关代码.pub.json 放入 --keys 文件夹，再运行 'hubctl directory build' "
        "并重新加载枢纽。"
    )
    en = (
        "  They are listed without public keys: nobody can send to them and they cannot send "
        "yet. On each one's server run 'spoke keygen --org ORG --out DIR', put ORG.pub.json "
        "into the --keys folder, then run 'hubctl directory build' again and reload the hub."
    )
    return [f"awaiting keys 尚待提交密钥 ({len(awaiting)}): {', '.join(awaiting)}", zh, en]


def read_directory(path: Path, hub_public: bytes, *, now: int) -> VerifiedDirectory:
    return verify_directory(path.read_bytes(), hub_public, now=now, whole_file=True)


DEFAULT_OVERLAP_MS = 7 * DAY_MS


@dataclass(frozen=True, slots=True)
class Built:
    """A directory signed and written, and what changed since the one before it."""

    verified: VerifiedDirectory
    changes: tuple[KeyChange, ...]  # every key's change but the unchanged ones
    newly_revoked: tuple[str, ...]  # key ids the previous directory did not revoke
    previous_version: int
    # what the neighbour hubs brought (hubd.provision.federation), one line each
    imports: tuple[str, ...] = ()


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
    overlap_ms: int = DEFAULT_OVERLAP_MS,
) -> Built:
    """Build the directory from the topology and public keys, sign it, write it to ``out``.

    The version is one above the directory already at ``out``, whose key windows and
    revocations carry over; a new key of an organisation rotates it in, closing its
    older keys after ``overlap_ms`` (:mod:`schemas.rotation`). Every key of the
    revocation register beside ``out`` is revoked too. Refuses, with what to do: an
    ``out`` that does not verify (its revocations would be lost), a version that is not
    above the previous one (spokes would refuse it as a rollback), and a revoked key id
    that names no key.

    A topology with neighbour hubs (``[[hubs]]``) imports from their signed directories
    what :mod:`hubd.provision.federation` says, refusing the build when one does not
    verify or its claims do not hold; their register (``imports.json`` beside ``out``) is
    written only once the directory is.
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
    for kid in revoke:
        check_key_id(kid)
        if _owner(kid, public_keys, previous) is None:
            raise ValueError(
                f"--revoke {kid}: no organisation key has this id (in {keys_dir} or {out}); "
                "check the kid with 'hubctl keys list'"
            )
    federation = federate(topology, topology_path, hub_kid=hub_key.kid, out=out, now=now)
    register = register_path(out)
    _record(register, revoke, public_keys, previous, now=now, reason=None)
    before = set(previous.directory.revoked) if previous else set()
    revoked = sorted(
        {*before, *revoke, *(r.kid for r in load_register(register)), *federation.revoked}
    )
    windows = plan_key_windows(
        public_keys,
        None if previous is None else previous.directory,
        now=now,
        overlap_ms=overlap_ms,
    )
    expires_at, capped = federation.cap(now + valid_days * DAY_MS)
    plan = DirectoryPlan(
        version=version if version is not None else previous_version + 1,
        issued_at=now,
        expires_at=expires_at,
        hub_keys=(
            KeyEntry(
                kid=hub_key.kid,
                public=hub_key.public,
                not_before=hub_public.not_before,
                not_after=hub_public.not_after,
            ),
        ),
        revoked=revoked,
        windows=windows.windows,
        outside=federation.outside,
        hubs=federation.hubs,
    )
    directory = build_directory(topology, public_keys, plan)
    try:
        check_servable(directory)  # what spokes take of it (wire format 7a) fits their limits
    except ValueError as exc:
        raise ConfigError(str(out), [("", f"{exc}; the directory was not written")]) from exc
    frame = sign_directory(directory, hub_key)
    atomic_write(out, frame, mode=PUBLIC_MODE)
    federation.save(out)
    return Built(
        verify_directory(frame, hub_key.public, now=now, whole_file=True),
        windows.notable,
        tuple(k for k in revoked if k not in before),
        previous_version,
        (*federation.lines, *([capped] if capped else [])),
    )


def revoke_key(
    kid: str,
    *,
    reason: str,
    topology_path: Path,
    keys_dir: Path,
    hub_key_path: Path,
    out: Path,
    now: int,
    valid_days: int,
) -> tuple[Revocation, Built]:
    """Record ``kid`` in the revocation register with ``reason``, then build the next
    directory (which lists it as revoked). The register is written first: if the build
    fails, the next build still revokes the key."""
    check_key_id(kid)
    text = check_reason(reason)
    _, hub_key = load_signing_key(hub_key_path)
    previous = _previous(out, hub_key)
    public_keys = load_public_keys(keys_dir) if keys_dir.is_dir() else {}
    if _owner(kid, public_keys, previous) is None:
        raise ValueError(
            f"{kid}: no organisation key has this id (in {keys_dir} or {out}); check the kid "
            "with 'hubctl keys list'"
        )
    register = register_path(out)
    recorded = _record(register, [kid], public_keys, previous, now=now, reason=text)
    entry = recorded[0] if recorded else reasons(load_register(register))[kid]
    built = build_and_sign(
        topology_path=topology_path,
        keys_dir=keys_dir,
        hub_key_path=hub_key_path,
        out=out,
        now=now,
        valid_days=valid_days,
        version=None,
        revoke=[],
    )
    return entry, built


def _owner(
    kid: str, public_keys: dict[str, list[PublicKeys]], previous: VerifiedDirectory | None
) -> tuple[str, str] | None:
    """(owner, "signing" | "encryption") of an organisation key, from the files or the
    previous directory; None if no organisation has it."""
    for org, sets in public_keys.items():
        for keys in sets:
            if kid == keys.sign_kid:
                return org, "signing"
            if kid == keys.enc_kid:
                return org, "encryption"
    if previous is not None:
        found = previous.directory.key_owner(kid)
        if found is not None and found[0] != previous.directory.hub_id:
            return found[0], "signing" if found[1] is KeyKind.SIGN else "encryption"
    return None


def _record(
    register: Path,
    kids: list[str],
    public_keys: dict[str, list[PublicKeys]],
    previous: VerifiedDirectory | None,
    *,
    now: int,
    reason: str | None,
) -> tuple[Revocation, ...]:
    entries = []
    for kid in kids:
        owner = _owner(kid, public_keys, previous)
        if owner is not None:
            entries.append(Revocation(kid, owner[0], owner[1], reason, now))
    return add_revocations(register, entries)


def _previous(out: Path, hub_key: SigningKey) -> VerifiedDirectory | None:
    if not out.exists():
        return None
    try:
        return verify_directory(out.read_bytes(), hub_key.public, now=None, whole_file=True)
    except XchgError as exc:
        raise ValueError(
            f"{out} exists but does not verify with hub key {hub_key.kid} ({exc}); its "
            "version and revocations cannot be carried over. Move it aside and pass "
            "--version above the last version spokes have seen, re-entering every --revoke"
        ) from exc
