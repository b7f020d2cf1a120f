"""A ready-made exchange for tests: the Jilin topology, fresh keys for everyone, a directory."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from schemas import codec
from schemas.clock import DAY_MS
from schemas.directory import Directory, KeyEntry, sign_directory
from schemas.dirtree import ROOT_FRAME_LIMITS, DirectoryTree, derive_root, publication, sign_root
from schemas.keys import EncryptionKey, PublicKeys, SigningKey
from schemas.labels import Classification, DocType, Precedence
from schemas.seal import Draft, Sealed, file_entry, seal_bytes
from schemas.topology import DirectoryPlan, Topology, build_directory, parse_topology
from spoke.state import SpokeState

REPO = Path(__file__).resolve().parent.parent
TOPOLOGY_PATH = REPO / "config" / "topology.toml"
NOW = 1_795_000_000_000  # a fixed "now" (2026-11-18) so tests never read the clock


@dataclass
class OrgKeys:
    signing: SigningKey
    encryption: EncryptionKey


@dataclass
class World:
    topology: Topology
    hub_key: SigningKey
    keys: dict[str, OrgKeys]
    directory: Directory
    now: int = NOW
    revoked: list[str] = field(default_factory=list)

    def rebuild(self, *, version: int, revoked: Sequence[str] = (), **plan: int) -> Directory:
        """A new directory version from the same topology and keys."""
        return _directory(self.topology, self.hub_key, self.keys, version, revoked, **plan)

    def crowded(self, counties: int) -> World:
        """This world with ``counties`` more county governments under jl.cc, on govnet,
        each with keys of its own: a directory of thousands of organisations without
        thousands of spokes (``@channel.govnet`` and ``@counties`` grow with it)."""
        model = self.topology.org("jl.cc.nongan")
        assert model is not None
        extra = tuple(
            model.model_copy(
                update={
                    "id": f"jl.cc.c{i:04d}",
                    "name_zh": f"第{i}县人民政府",
                    "name_en": f"County {i} People's Government",
                    "code": None,
                }
            )
            for i in range(counties)
        )
        topology = self.topology.model_copy(update={"orgs": (*self.topology.orgs, *extra)})
        keys = {
            **self.keys,
            **{o.id: OrgKeys(SigningKey.generate(), EncryptionKey.generate()) for o in extra},
        }
        directory = _directory(topology, self.hub_key, keys, 1)
        return World(topology, self.hub_key, keys, directory, self.now, list(self.revoked))

    def signed_directory(self, directory: Directory | None = None) -> bytes:
        return sign_directory(directory or self.directory, self.hub_key)

    def draft(
        self,
        sender: str = "jl.gov",
        to: Sequence[str] = ("jl.cc",),
        *,
        cc: Sequence[str] = (),
        classification: Classification = Classification.INTERNAL,
        contents: Sequence[bytes] = (b"document body",),
        **extra: object,
    ) -> tuple[Draft, list[bytes]]:
        files = [file_entry(f"file{i}.txt", "text/plain", c) for i, c in enumerate(contents)]
        draft = Draft(
            sender=sender,
            to=tuple(to),
            cc=tuple(cc),
            classification=classification,
            precedence=extra.pop("precedence", Precedence.ROUTINE),  # type: ignore[arg-type]
            doc_type=extra.pop("doc_type", DocType.NOTICE),  # type: ignore[arg-type]
            title=str(extra.pop("title", "关于做好冬季供暖工作的通知")),
            created_at=int(extra.pop("created_at", self.now)),  # type: ignore[call-overload]
            files=files,
            **extra,  # type: ignore[arg-type]
        )
        return draft, list(contents)

    def seal(
        self, sender: str = "jl.gov", to: Sequence[str] = ("jl.cc",), **kw: object
    ) -> tuple[Sealed, bytes]:
        draft, contents = self.draft(sender, to, **kw)  # type: ignore[arg-type]
        return seal_bytes(draft, self.keys[sender].signing, self.directory, contents)


def _directory(
    topology: Topology,
    hub_key: SigningKey,
    keys: dict[str, OrgKeys],
    version: int,
    revoked: Sequence[str] = (),
    *,
    issued_at: int = NOW - DAY_MS,
    expires_at: int = NOW + 30 * DAY_MS,
    not_before: int = NOW - 10 * DAY_MS,
    not_after: int = NOW + 365 * DAY_MS,
) -> Directory:
    public = {
        org: [
            PublicKeys(
                org=org,
                sign_public=k.signing.public,
                enc_public=k.encryption.public,
                not_before=not_before,
                not_after=not_after,
            )
        ]
        for org, k in keys.items()
    }
    plan = DirectoryPlan(
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        hub_keys=(
            KeyEntry(
                kid=hub_key.kid, public=hub_key.public, not_before=not_before, not_after=not_after
            ),
        ),
        revoked=tuple(revoked),
    )
    return build_directory(topology, public, plan)


def published_root(directory: Directory, hub_key: SigningKey) -> tuple[bytes, bytes, DirectoryTree]:
    """(root frame, SHA-256 of its signed bytes, tree) of ``directory``, as hubd derives
    them (hubd.engine.dirdesk): what spokes take of it."""
    whole = sign_directory(directory, hub_key)
    body = codec.decode_map(whole, codec.DIRECTORY_FILE_FRAME_LIMITS)["dir"]
    tree = DirectoryTree.of(directory)
    frame = sign_root(derive_root(directory, hashlib.sha256(body).digest(), tree), hub_key)
    signed = codec.decode_map(frame, ROOT_FRAME_LIMITS)["root"]
    return frame, hashlib.sha256(signed).digest(), tree


def root_publication(directory: Directory, hub_key: SigningKey) -> bytes:
    """The retained dirroot message of ``directory`` (no change with it)."""
    return publication(published_root(directory, hub_key)[0], None)


def seed_held(state: SpokeState, directory: Directory, hub_key: SigningKey) -> None:
    """Give a spoke's state the root of ``directory`` and every entry, as if its agent had
    fetched them all."""
    frame, digest, tree = published_root(directory, hub_key)
    state.save_dir_root(directory.version, digest, frame, None, [])
    state.save_dir_entries(list(zip(tree.keys, tree.leaves, strict=True)), directory.version, [])


def make_world() -> World:
    topology = parse_topology(TOPOLOGY_PATH.read_text(encoding="utf-8"), source=str(TOPOLOGY_PATH))
    keys = {o.id: OrgKeys(SigningKey.generate(), EncryptionKey.generate()) for o in topology.orgs}
    hub_key = SigningKey.generate()
    return World(topology, hub_key, keys, _directory(topology, hub_key, keys, 1))
