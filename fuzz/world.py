"""The fuzz targets' exchange: fixed throwaway keys and the directory fuzz/capture.py signed.

The keys are derived from their owner's name (SHA-256 of a fixed phrase), so the capture
script and every target hold the same keys without a secret key file in the repository:
a target can sign the bytes it fuzzes and so reach the decoding that follows a valid
signature. No deployment trusts these keys; they exist for fuzzing only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hubd.engine.answers import unreadable_entry
from hubd.engine.dirdesk import Served, build
from schemas import transport
from schemas.directory import (
    Directory,
    KeyEntry,
    VerifiedDirectory,
    sign_directory,
    verify_directory,
)
from schemas.errors import PeerError
from schemas.keys import EncryptionKey, SigningKey
from schemas.labels import Classification
from schemas.receipts import ReceiptEntry

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixture"
CORPUS = HERE / "corpus"
TOPOLOGY = FIXTURE / "topology.toml"
DIRECTORY_FRAME = FIXTURE / "directory.bin"
SLOTS_MESSAGE = FIXTURE / "slots.bin"  # a v2 envelope and its slots, as sent up (capture.py)
HUB = "hub"  # the owner name of the hub's key (schemas.keys: an org id or "hub")
ORGS = ("cn.gov", "jl.gov", "jl.cc", "jl.cc.nongan", "jl.dept.health")
# County governments beside jl.cc.nongan in crowded_directory(): with jl.cc and
# jl.cc.nongan, more recipients than a header names (schemas.slots.INLINE_MAX).
COUNTIES = tuple(f"jl.cc.c{i:02d}" for i in range(18))
_SEED = b"govxchg fuzz fixture, not a secret: "


def signing_key(owner: str) -> SigningKey:
    return SigningKey(hashlib.sha256(_SEED + b"sign " + owner.encode()).digest())


def encryption_key(owner: str) -> EncryptionKey:
    return EncryptionKey(hashlib.sha256(_SEED + b"encrypt " + owner.encode()).digest())


def load_directory() -> VerifiedDirectory:
    """The captured directory, verified with the fixed hub key (its clock not judged)."""
    return verify_directory(DIRECTORY_FRAME.read_bytes(), signing_key(HUB).public, now=None)


def crowded_directory() -> Directory:
    """The captured directory with :data:`COUNTIES` added, copies of jl.cc.nongan holding
    keys derived from their names like every fixture key: enough organisations for an
    envelope whose recipients are in slots. Derived, not signed (``verify_envelope``
    takes the model); the same for every caller."""
    held = load_directory().directory
    model = next(o for o in held.orgs if o.id == "jl.cc.nongan")
    window = {
        "not_before": model.sign_keys[0].not_before,
        "not_after": model.sign_keys[0].not_after,
    }
    counties = tuple(
        model.model_copy(
            update={
                "id": org,
                "name_zh": f"第{i}县人民政府",
                "name_en": f"County {i} People's Government",
                "code": None,
                "sign_keys": (
                    KeyEntry(kid=signing_key(org).kid, public=signing_key(org).public, **window),
                ),
                "enc_keys": (
                    KeyEntry(
                        kid=encryption_key(org).kid, public=encryption_key(org).public, **window
                    ),
                ),
            }
        )
        for i, org in enumerate(COUNTIES)
    )
    return held.model_copy(update={"orgs": (*held.orgs, *counties)})


def load_slots() -> transport.EnvelopeMsg:
    """The envelope with slots capture.py sealed (jl.gov to jl.cc, the counties, and
    jl.cc.nongan in cc) as the spoke sends it up: frame, inline body, every slot."""
    message = transport.decode(SLOTS_MESSAGE.read_bytes())
    if not isinstance(message, transport.EnvelopeMsg) or message.slots is None:
        raise ValueError(f"{SLOTS_MESSAGE} is not an envelope message with slots")
    return message


def served() -> tuple[Served, Served]:
    """What the hub serves spokes of the captured directory (version 1: its root, tree and
    publication) and of the version after it (jl.cc renamed; its publication carries the
    signed change from version 1), derived by the hub's own ``dirdesk.build``. The root is
    a function of the directory, so every derivation gives the same bytes."""
    hub = signing_key(HUB)
    held = load_directory()
    first = build(held, hub, None)
    orgs = tuple(
        o.model_copy(update={"name_en": f"{o.name_en} (renamed)"}) if o.id == "jl.cc" else o
        for o in held.directory.orgs
    )
    changed = held.directory.model_copy(
        update={"version": 2, "issued_at": held.directory.issued_at + 1000, "orgs": orgs}
    )
    following = verify_directory(sign_directory(changed, hub), hub.public, now=None)
    return first, build(following, hub, first)


def now_of(directory: Directory) -> int:
    """A moment at which the captured directory is valid: one second after its issue."""
    return directory.issued_at + 1000


def refusal_receipt(exc: PeerError, data: bytes) -> ReceiptEntry:
    """The REJECTED entry the hub signs for bytes it could not authenticate (the hub's own
    function): a refusal that cannot become a receipt would stop the pass."""
    return unreadable_entry(exc, data, at=0, label=Classification.INTERNAL)
