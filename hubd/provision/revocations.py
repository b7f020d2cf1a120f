"""The hub operator's register of revoked keys: which key, whose, why and when.

The signed directory lists only revoked key ids (that is all a verifier needs). The
register, ``revocations.json`` beside the directory file (``certs/hub/`` by default),
keeps the rest for people: the owner, the kind of key, the operator's reason and the
time. ``hubctl directory build`` revokes every key the register names, so a revocation
survives a directory file that was moved aside; the hub reads the register to put the
reason into its ``key.revoked`` security event and audit entry.

Written only by ``hubctl`` (atomically, mode 0644: nothing in it is secret).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.files import PUBLIC_MODE, atomic_write
from schemas.ids import check_key_id, check_org_id

FORMAT = "govxchg-revocations/v1"
REGISTER_NAME = "revocations.json"
MAX_REGISTER_BYTES = 4 * 1024 * 1024  # thousands of revocations; more is not a register
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revoked key as the operator recorded it."""

    kid: str
    org: str  # the owner: an organisation id, or the hub's id
    kind: str  # "signing" or "encryption"
    reason: str | None  # None: revoked with 'hubctl directory build --revoke', no reason given
    revoked_at: int  # ms since the Unix epoch, when the operator revoked it


def register_path(directory_file: Path) -> Path:
    """Where the register of ``directory_file`` lives: beside it."""
    return directory_file.with_name(REGISTER_NAME)


def check_reason(reason: str) -> str:
    """The operator's reason, refused when empty, too long or not printable."""
    text = reason.strip()
    if not text:
        raise ValueError("--reason must say why the key is revoked, e.g. 'server stolen'")
    if len(text) > MAX_REASON:
        raise ValueError(f"--reason is {len(text)} characters; keep it under {MAX_REASON}")
    if not text.isprintable():
        raise ValueError("--reason must be one line of printable text")
    return text


def load_register(path: Path) -> tuple[Revocation, ...]:
    """Every revocation in the register at ``path``; () if there is none yet.

    ValueError names the file and what is wrong with it.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return ()
    if size > MAX_REGISTER_BYTES:
        raise ValueError(f"{path} is {size} bytes; a revocation register is at most 4 MiB")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"it is not a {FORMAT} file")
        entries = doc["revoked"]
        if not isinstance(entries, list):
            raise ValueError("'revoked' must be a list")
        return tuple(_entry(e) for e in entries)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"revocation register {path}: {exc}") from exc
    except RecursionError:  # '[[[[...': deeper than the JSON decoder goes
        raise ValueError(
            f"revocation register {path}: it is not a register: its JSON nests too deeply"
        ) from None


def _entry(raw: object) -> Revocation:
    if not isinstance(raw, dict):
        raise ValueError("each entry must be an object")
    reason = raw["reason"]
    kind = raw["kind"]
    if kind not in {"signing", "encryption"}:
        raise ValueError(f"kind must be signing or encryption, not {kind!r}")
    if reason is not None and not isinstance(reason, str):
        raise ValueError("reason must be text or null")
    at = raw["revoked_at"]
    if not isinstance(at, int) or isinstance(at, bool) or at < 0:
        raise ValueError(f"revoked_at must be milliseconds, not {at!r}")
    return Revocation(
        kid=check_key_id(raw["kid"]),
        org=check_org_id(raw["org"], what="owner"),
        kind=kind,
        reason=reason,
        revoked_at=at,
    )


def add_revocations(path: Path, new: Iterable[Revocation]) -> tuple[Revocation, ...]:
    """Add ``new`` to the register (a key already in it keeps its first entry); returns
    what was added."""
    existing = load_register(path)
    known = {r.kid for r in existing}
    added: list[Revocation] = []
    for revocation in new:
        if revocation.kid not in known:
            known.add(revocation.kid)
            added.append(revocation)
    if added:
        doc = {"format": FORMAT, "revoked": [asdict(r) for r in (*existing, *added)]}
        text = json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
        atomic_write(path, text.encode("utf-8"), mode=PUBLIC_MODE)
    return tuple(added)


def reasons(register: Iterable[Revocation]) -> dict[str, Revocation]:
    """The register by key id."""
    return {r.kid: r for r in register}
