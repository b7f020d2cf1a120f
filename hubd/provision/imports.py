"""The hub operator's register of the neighbours' directories it imported: per hub, the
version and the SHA-256 of the ``dir`` bytes of the last one a build took.

``imports.json`` beside the directory file (as ``revocations.json`` is): a neighbour's
directory older than the one imported before is a rollback, the same version with other
bytes equivocation; ``hubctl directory build`` refuses both (hubd/provision/federation.py),
as a spoke refuses them of its own hub. Written by ``hubctl`` only, atomically and only
when a build succeeded, so a refused build leaves it as it was. Nothing in it is secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from runtime.files import PUBLIC_MODE, atomic_write
from schemas.ids import check_org_id

FORMAT = "govxchg-imports/v1"
REGISTER_NAME = "imports.json"
MAX_REGISTER_BYTES = 1024 * 1024  # a line per neighbour hub: a handful, never thousands

Seen = Mapping[str, tuple[int, bytes]]  # hub id -> (version, SHA-256 of its dir bytes)


def register_path(directory_file: Path) -> Path:
    """Where the import register of ``directory_file`` lives: beside it."""
    return directory_file.with_name(REGISTER_NAME)


def load_register(path: Path) -> dict[str, tuple[int, bytes]]:
    """Every hub's last imported (version, digest); empty if there is no register yet.

    ValueError names the file and what is wrong with it.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return {}
    if size > MAX_REGISTER_BYTES:
        raise ValueError(f"{path} is {size} bytes; an import register is at most 1 MiB")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"it is not a {FORMAT} file")
        imported = doc["imported"]
        if not isinstance(imported, dict):
            raise ValueError("'imported' must be an object of hub id: {version, sha256}")
        return {check_org_id(hub, what="hub id"): _entry(hub, e) for hub, e in imported.items()}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"import register {path}: {exc}; restore it from a backup (without it an older "
            "directory of a neighbour would be taken again)"
        ) from exc
    except RecursionError:  # '[[[[...': deeper than the JSON decoder goes
        raise ValueError(f"import register {path}: its JSON nests too deeply") from None


def _entry(hub: str, raw: object) -> tuple[int, bytes]:
    if not isinstance(raw, dict):
        raise ValueError(f"{hub}: each entry must be an object")
    version, digest = raw["version"], raw["sha256"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{hub}: version must be a directory version, not {version!r:.40}")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"{hub}: sha256 must be 64 hex digits")
    return version, bytes.fromhex(digest)


def save_register(path: Path, seen: Seen) -> None:
    """Write the register (atomically: a crash leaves the old one or the new one)."""
    doc = {
        "format": FORMAT,
        "imported": {
            hub: {"version": version, "sha256": digest.hex()}
            for hub, (version, digest) in sorted(seen.items())
        },
    }
    text = json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    atomic_write(path, text.encode("utf-8"), mode=PUBLIC_MODE)
