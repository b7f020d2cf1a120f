"""``spoke keygen``: an organisation's signing and encryption key pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.files import PUBLIC_MODE, atomic_write, make_private_dir, write_private
from schemas.clock import DAY_MS
from schemas.ids import check_org_id
from schemas.keys import EncryptionKey, PublicKeys, SigningKey, dump_secret_key
from spoke.keyring import rotated_paths


@dataclass(frozen=True, slots=True)
class KeyFiles:
    sign_key: Path
    enc_key: Path
    public: Path


def key_paths(org: str, out: Path) -> KeyFiles:
    check_org_id(org)
    return KeyFiles(out / f"{org}.sign.key", out / f"{org}.enc.key", out / f"{org}.pub.json")


def generate_org_keys(
    org: str, out: Path, *, now: int, valid_days: int, overwrite: bool = False
) -> tuple[KeyFiles, PublicKeys]:
    """Write ``ORG.sign.key`` and ``ORG.enc.key`` (0600) and ``ORG.pub.json`` into ``out``."""
    paths = key_paths(org, out)
    if valid_days < 1:
        raise ValueError(f"--valid-days must be at least 1, not {valid_days}")
    if not overwrite:
        taken = [p for p in (paths.sign_key, paths.enc_key) if p.exists()]
        if taken:
            raise FileExistsError(
                f"{taken[0]} exists; keys are not replaced silently. Rotate with --rotate "
                "(a new pair beside the old one), or pass --force if you really mean to "
                "discard the old keys"
            )
    make_private_dir(out)
    signing, encryption = SigningKey.generate(), EncryptionKey.generate()
    write_private(paths.sign_key, dump_secret_key(org, signing), overwrite=overwrite)
    write_private(paths.enc_key, dump_secret_key(org, encryption), overwrite=overwrite)
    public = PublicKeys(
        org=org,
        sign_public=signing.public,
        enc_public=encryption.public,
        not_before=now,
        not_after=now + valid_days * DAY_MS,
    )
    atomic_write(paths.public, public.dump(), mode=PUBLIC_MODE)
    return paths, public


def rotate_org_keys(
    org: str, out: Path, *, now: int, valid_days: int
) -> tuple[KeyFiles, PublicKeys]:
    """A new pair beside the organisation's keys in ``out``, named by its key ids, so the
    old pair stays usable until the hub publishes a directory listing the new one."""
    current = key_paths(org, out)
    if valid_days < 1:
        raise ValueError(f"--valid-days must be at least 1, not {valid_days}")
    if not current.sign_key.exists() and not any(out.glob(f"{org}.sign.*.key")):
        raise FileNotFoundError(
            f"{out} holds no keys of {org} to rotate; run 'spoke keygen --org {org} --out "
            f"{out}' (without --rotate) for the first pair"
        )
    signing, encryption = SigningKey.generate(), EncryptionKey.generate()
    sign_path, enc_path, pub_path = rotated_paths(org, out, signing.kid, encryption.kid)
    write_private(sign_path, dump_secret_key(org, signing))
    write_private(enc_path, dump_secret_key(org, encryption))
    public = PublicKeys(
        org=org,
        sign_public=signing.public,
        enc_public=encryption.public,
        not_before=now,
        not_after=now + valid_days * DAY_MS,
    )
    atomic_write(pub_path, public.dump(), mode=PUBLIC_MODE)
    return KeyFiles(sign_path, enc_path, pub_path), public
