"""The directory as a Merkle tree: a small signed root every spoke takes, signed changes
between versions, and entries with inclusion proofs fetched on demand (docs/wire-format.md,
section 7a). Pure: no I/O.

The full directory (:class:`~schemas.directory.Directory`) stays the hub operator's
artefact: ``hubctl directory build`` signs it as before. What travels to spokes is derived
from it, deterministically:

- **entries**: one leaf per organisation and one per page of at most
  :data:`GROUP_PAGE` members of each group, sorted by their key (an organisation's id;
  ``@<group>#<page>`` for a group page), hashed as RFC 9162 leaves over
  ``"xchg/v1/dirent\\0" || leaf`` (the prefix keeps them apart from ledger leaves);
- **the root** (:class:`DirRoot`): version, times, the hub's keys, the channels, the
  revoked key ids, the rules, the counts, the tree's root and the SHA-256 of the full
  directory's bytes. A pure function of the full directory, so one version has one root
  whoever derives it, and the rollback and equivocation checks keep their meaning;
- **a change** (:class:`DirDelta`): the keys whose leaves differ between the previous
  version and this one, so a spoke that follows the versions knows which entries it holds
  are stale without fetching anything else; at most :data:`DELTA_MAX` keys, otherwise
  none is published and a spoke revalidates what it holds;
- **answers** to a spoke's request for some keys (:func:`answer` / :func:`read_answer`):
  each entry found with its inclusion proof, each key absent with its two neighbours (the
  leaves are sorted, so a missing key is proven missing).
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from pydantic import Field

from schemas import codec
from schemas.directory import (
    GROUP_PREFIX,
    ChannelEntry,
    Directory,
    GroupEntry,
    HubEntry,
    KeyEntry,
    Millis,
    OrgEntry,
    RuleKey,
    RuleMode,
    ShortText,
    check_fresh,
    check_sequence,
)
from schemas.errors import DirectoryError, PeerError, Reason, SchemaError
from schemas.ids import GroupId, HubId, KeyId, OrgId, check_org_id
from schemas.keys import KeyKind, SigningKey, key_id, verify_signature
from schemas.merkle import HASH_SIZE, WholeTree, leaf_hash
from schemas.merkle import verify_inclusion as _verify_inclusion
from schemas.model import MAX_WIRE_INT, Version1, WireModel

DOMAIN_DIR_ROOT: Final = b"xchg/v1/dirroot\x00"
DOMAIN_DIR_DELTA: Final = b"xchg/v1/dirdelta\x00"
DOMAIN_DIR_LEAF: Final = b"xchg/v1/dirent\x00"

GROUP_PAGE: Final = 2048  # members per group page leaf
DELTA_MAX: Final = 4096  # keys a published change may name; more: spokes revalidate
ASK_MAX: Final = 64  # keys one request may ask for

# A root is small: its size grows only with the hub's keys, the channels, the rules and the
# revoked key ids (20,000 of them fit).
ROOT_FRAME_LIMITS = codec.Limits("directory root frame", 512 << 10, 256, 512 << 10, 16, 16, 2)
ROOT_LIMITS = codec.Limits("directory root", 512 << 10, 4096, 1024, 20_000, 4096, 5)  # hubs: 5
DELTA_FRAME_LIMITS = codec.Limits("directory change frame", 512 << 10, 256, 512 << 10, 16, 16, 2)
DELTA_LIMITS = codec.Limits("directory change", 512 << 10, 128, 64, DELTA_MAX, 16, 2)
PUBLISHED_LIMITS = codec.Limits("directory publication", 1100 << 10, 64, 512 << 10, 4, 4, 1)
ENTRY_LIMITS = codec.Limits("directory entry", 256 << 10, 4096, 1024, GROUP_PAGE, 64, 5)
ASK_LIMITS = codec.Limits("directory request", 8 << 10, 128, 16, ASK_MAX, 1, 1)
ANSWER_LIMITS = codec.Limits("directory answer", 700 << 10, 256, 512 << 10, ASK_MAX * 2, 16, 5)

_PAGE_KEY = re.compile(r"^@(?P<group>[^#]{1,64})#(?P<page>0|[1-9][0-9]{0,5})$")

Digest = Annotated[bytes, Field(min_length=HASH_SIZE, max_length=HASH_SIZE)]
Count = Annotated[int, Field(ge=0, le=MAX_WIRE_INT)]


# ------------------------------------------------------------------ records


class DirRoot(WireModel):
    """What every spoke holds of a directory version: small, whatever the directory's size."""

    v: Version1
    hub_id: HubId
    version: Annotated[int, Field(ge=1, le=MAX_WIRE_INT)]
    issued_at: Millis
    expires_at: Millis
    hub_keys: tuple[KeyEntry, ...]
    channels: tuple[ChannelEntry, ...]
    revoked: tuple[KeyId, ...]
    rules: dict[RuleKey, RuleMode]
    orgs: Count  # organisations listed
    groups: Count  # groups listed (each one or more leaves)
    size: Count  # leaves in the tree
    tree: Digest  # RFC 9162 root over the leaves
    full: Digest  # SHA-256 of the full directory's signed bytes (``dir``)
    # Federation: the other hubs (their keys sign receipts a spoke may be forwarded); absent
    # when there are none, so a root without federation is what it was before.
    hubs: tuple[HubEntry, ...] = ()

    @classmethod
    def from_wire(cls, data: dict[str, Any], *, what: str) -> DirRoot:
        if "hubs" in data and not data["hubs"]:
            raise SchemaError(
                Reason.SCHEMA_INVALID, f"{what}: hubs: a root without hubs leaves the key out"
            )
        return super().from_wire(data, what=what)

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        if not self.hubs:
            del wire["hubs"]
        return wire

    def channel(self, channel_id: str) -> ChannelEntry | None:
        return next((c for c in self.channels if c.id == channel_id), None)

    def check_consistent(self) -> None:
        problems: list[str] = []
        if self.expires_at <= self.issued_at:
            problems.append("expires_at is not after issued_at")
        if len({c.id for c in self.channels}) != len(self.channels):
            problems.append("channel ids repeat")
        problems += [
            f"hub key {k.kid} does not match its public key"
            for k in (*self.hub_keys, *(k for h in self.hubs for k in h.keys))
            if key_id(KeyKind.SIGN, k.public) != k.kid
        ]
        if self.size < self.orgs + self.groups:
            problems.append(f"{self.size} leaves cannot hold {self.orgs} organisations")
        if problems:
            raise DirectoryError(
                Reason.DIR_INCONSISTENT,
                f"directory root version {self.version}: {'; '.join(problems)}",
            )


class DirDelta(WireModel):
    """The keys whose entries differ between version ``prior`` and ``version``."""

    v: Version1
    version: Annotated[int, Field(ge=2, le=MAX_WIRE_INT)]
    prior: Annotated[int, Field(ge=1, le=MAX_WIRE_INT)]
    prior_root: Digest  # SHA-256 of the prior root's signed bytes
    root: Digest  # SHA-256 of this version's root's signed bytes: the change is of that root
    changed: Annotated[tuple[str, ...], Field(max_length=DELTA_MAX)]


class GroupPage(WireModel):
    """One page of a group's members (a group of any size is several leaves)."""

    id: GroupId
    name_zh: ShortText
    name_en: ShortText
    page: Annotated[int, Field(ge=0, le=999_999)]
    pages: Annotated[int, Field(ge=1, le=1_000_000)]
    members: Annotated[tuple[OrgId, ...], Field(max_length=GROUP_PAGE)]


Entry = OrgEntry | GroupPage


def page_key(group_id: str, page: int = 0) -> str:
    return f"{GROUP_PREFIX}{group_id}#{page}"


def entry_key(entry: Entry) -> str:
    return entry.id if isinstance(entry, OrgEntry) else page_key(entry.id, entry.page)


def check_key(key: object) -> str:
    """A key a spoke may ask for: an organisation id or ``@<group>#<page>``."""
    if not isinstance(key, str):
        raise ValueError(f"a directory key must be text, not {type(key).__name__}")
    found = _PAGE_KEY.fullmatch(key)
    if found:
        check_org_id(found["group"], what="group id")
        return key
    return check_org_id(key, what="directory key")


def leaf_bytes(entry: Entry) -> bytes:
    if isinstance(entry, OrgEntry):
        return codec.encode({"kind": "org", "org": entry.to_wire()})
    return codec.encode({"kind": "group", "group": entry.to_wire()})


def entry_digest(leaf: bytes) -> bytes:
    return leaf_hash(DOMAIN_DIR_LEAF + leaf)


def read_leaf(leaf: bytes) -> Entry:
    """Decode one leaf within its limits (after its proof verified)."""
    outer = codec.decode_map(leaf, ENTRY_LIMITS)
    kind = outer.get("kind")
    if set(outer) == {"kind", "org"} and kind == "org" and isinstance(outer["org"], dict):
        return OrgEntry.from_wire(outer["org"], what="directory entry")
    if set(outer) == {"kind", "group"} and kind == "group" and isinstance(outer["group"], dict):
        return GroupPage.from_wire(outer["group"], what="directory entry")
    raise SchemaError(Reason.SCHEMA_INVALID, f"directory entry of kind {kind!r:.40}")


def group_pages(group: GroupEntry) -> list[GroupPage]:
    members = group.members
    pages = max(1, -(-len(members) // GROUP_PAGE))
    return [
        GroupPage(
            id=group.id,
            name_zh=group.name_zh,
            name_en=group.name_en,
            page=i,
            pages=pages,
            members=members[i * GROUP_PAGE : (i + 1) * GROUP_PAGE],
        )
        for i in range(pages)
    ]


# ------------------------------------------------------------------ the hub's side


@dataclass(slots=True)
class DirectoryTree:
    """A directory's leaves, sorted, and every perfect subtree's hash, for proofs."""

    keys: list[str]
    leaves: list[bytes]
    tree: WholeTree = field(repr=False)

    @classmethod
    def of(cls, directory: Directory) -> DirectoryTree:
        entries: list[Entry] = [*directory.orgs]
        for group in directory.groups:
            entries += group_pages(group)
        pairs = sorted((entry_key(e), leaf_bytes(e)) for e in entries)
        keys = [k for k, _ in pairs]
        leaves = [leaf for _, leaf in pairs]
        return cls(keys, leaves, WholeTree([entry_digest(leaf) for leaf in leaves]))

    @property
    def size(self) -> int:
        return len(self.leaves)

    def root_hash(self) -> bytes:
        return self.tree.root()

    def proof(self, index: int) -> list[bytes]:
        return self.tree.proof(index)

    def digests(self) -> dict[str, bytes]:
        return dict(zip(self.keys, self.tree.levels[0], strict=True))

    def changed_since(self, prior: DirectoryTree) -> list[str]:
        """Keys added, removed or different, in key order."""
        old, new = prior.digests(), self.digests()
        return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))

    def _item(self, index: int) -> dict[str, Any]:
        return {"i": index, "leaf": self.leaves[index], "path": self.proof(index)}

    def answer(self, keys: Iterable[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(found, absent) for the asked keys: entries with their proofs; for a missing
        key its neighbours (nil at either end) with theirs."""
        found: list[dict[str, Any]] = []
        absent: list[dict[str, Any]] = []
        for key in dict.fromkeys(keys):
            at = bisect.bisect_left(self.keys, key)
            if at < self.size and self.keys[at] == key:
                found.append(self._item(at))
                continue
            absent.append(
                {
                    "key": key,
                    "below": self._item(at - 1) if at > 0 else None,
                    "above": self._item(at) if at < self.size else None,
                }
            )
        return found, absent


def derive_root(directory: Directory, full_digest: bytes, tree: DirectoryTree) -> DirRoot:
    """The root of ``directory``, whose signed ``dir`` bytes hash to ``full_digest``
    (VerifiedDirectory.digest)."""
    return DirRoot(
        v=1,
        hub_id=directory.hub_id,
        version=directory.version,
        issued_at=directory.issued_at,
        expires_at=directory.expires_at,
        hub_keys=directory.hub_keys,
        channels=directory.channels,
        revoked=directory.revoked,
        rules=dict(directory.rules),
        orgs=len(directory.orgs),
        groups=len(directory.groups),
        size=tree.size,
        tree=tree.root_hash(),
        full=full_digest,
        hubs=directory.hubs,
    )


def check_servable(directory: Directory) -> None:
    """Can every spoke take what is derived from ``directory``: a root within its decode
    limits, every organisation's lists within an entry's? ValueError naming what and the
    limit otherwise (the hub refuses such a directory: no spoke could hold it)."""
    limit = ROOT_LIMITS.max_array
    if len(directory.revoked) > limit:
        raise ValueError(
            f"the directory revokes {len(directory.revoked)} key ids; a spoke takes at most "
            f"{limit} in the root: leave out revoked keys whose window has ended"
        )
    most = ENTRY_LIMITS.max_array
    for org in directory.orgs:
        for name in ("channels", "sign_keys", "enc_keys", "directive_to"):
            count = len(getattr(org, name))
            if count > most:
                raise ValueError(
                    f"organisation {org.id} lists {count} {name}; a directory entry holds at "
                    f"most {most}"
                )


def _sign(key: SigningKey, domain: bytes, field_name: str, body: bytes) -> bytes:
    return codec.encode({"v": 1, "kid": key.kid, field_name: body, "sig": key.sign(domain, body)})


def sign_root(root: DirRoot, key: SigningKey) -> bytes:
    root.check_consistent()
    return _sign(key, DOMAIN_DIR_ROOT, "root", codec.encode(root.to_wire()))


def sign_delta(delta: DirDelta, key: SigningKey) -> bytes:
    return _sign(key, DOMAIN_DIR_DELTA, "delta", codec.encode(delta.to_wire()))


def publication(root_frame: bytes, delta_frame: bytes | None) -> bytes:
    """The retained message on a channel's ``dirroot`` topic."""
    return codec.encode({"v": 1, "root": root_frame, "delta": delta_frame})


def encode_answer(
    version: int,
    root: bytes | None,
    found: Sequence[Mapping[str, Any]],
    absent: Sequence[Mapping[str, Any]],
    refusal: str | None = None,
    *,
    delta: bytes | None = None,
) -> bytes:
    """An answer; with ``root`` (the asker holds another version) the change published
    beside it too, so that the asker asks again only for what changed."""
    return codec.encode(
        {
            "v": 1,
            "version": version,
            "root": root,
            "delta": delta,
            "found": list(found),
            "absent": list(absent),
            "refusal": refusal,
        }
    )


def encode_ask(keys: Sequence[str]) -> bytes:
    return codec.encode(list(keys))


def read_ask(data: bytes) -> list[str]:
    """The keys of a request, each checked before it is looked up; ValueError otherwise."""
    try:
        value = codec.decode(data, ASK_LIMITS)
    except PeerError as exc:
        raise ValueError(f"a directory request does not decode: {exc}") from exc
    if not isinstance(value, tuple) or not value:
        raise ValueError("a directory request is a non-empty list of keys")
    return [check_key(k) for k in value]


# ------------------------------------------------------------------ the spoke's side


@dataclass(frozen=True, slots=True)
class VerifiedRoot:
    root: DirRoot
    frame: bytes
    digest: bytes  # SHA-256 of the root's signed bytes

    @property
    def version(self) -> int:
        return self.root.version


def _verified_body(
    frame: bytes, pinned_key: bytes, limits: codec.Limits, name: str, *, domain: bytes, what: str
) -> bytes:
    try:
        outer = codec.decode_frame(frame, limits, {"kid": str, name: bytes, "sig": bytes})
    except SchemaError as exc:
        raise DirectoryError(exc.reason, exc.message) from exc
    pinned_kid = key_id(KeyKind.SIGN, pinned_key)
    if not verify_signature(pinned_key, domain, outer[name], outer["sig"]):
        raise DirectoryError(
            Reason.DIR_BAD_SIGNATURE,
            f"{what} signature does not verify with the pinned hub key {pinned_kid} (the "
            f"frame names key {outer['kid'][:16]!r}); refusing it (if the hub key was "
            "replaced, re-pin the new hub.pub.json)",
        )
    body: bytes = outer[name]
    return body


def verify_root(
    frame: bytes,
    pinned_key: bytes,
    *,
    now: int | None,
    last_seen: tuple[int, bytes] | None = None,
) -> VerifiedRoot:
    """Verify a root frame as :func:`schemas.directory.verify_directory` verifies a full
    directory: pinned key first, then rollback, equivocation, freshness, consistency."""
    body = _verified_body(
        frame, pinned_key, ROOT_FRAME_LIMITS, "root", domain=DOMAIN_DIR_ROOT, what="directory root"
    )
    root = DirRoot.from_wire(codec.decode_map(body, ROOT_LIMITS), what="directory root")
    digest = hashlib.sha256(body).digest()
    check_sequence(root.version, digest, last_seen)
    if now is not None:
        check_fresh(root.version, root.issued_at, root.expires_at, now)
    root.check_consistent()
    return VerifiedRoot(root, frame, digest)


def verify_delta(frame: bytes, pinned_key: bytes, root: VerifiedRoot) -> DirDelta:
    """A change frame for ``root``'s version, signed with the pinned key."""
    body = _verified_body(
        frame,
        pinned_key,
        DELTA_FRAME_LIMITS,
        "delta",
        domain=DOMAIN_DIR_DELTA,
        what="directory change",
    )
    delta = DirDelta.from_wire(codec.decode_map(body, DELTA_LIMITS), what="directory change")
    if delta.version != root.version or delta.root != root.digest or delta.prior >= delta.version:
        raise DirectoryError(
            Reason.DIR_INCONSISTENT,
            f"directory change from version {delta.prior} to {delta.version} does not lead "
            f"to version {root.version}; refusing it",
        )
    return delta


def _is_v1(value: object) -> bool:
    """Version 1, as the signed frames and the models take it: an int (``true == 1``)."""
    return type(value) is int and value == 1


def read_publication(data: bytes) -> tuple[bytes, bytes | None]:
    """(root frame, change frame or None) of a retained ``dirroot`` message."""
    outer = codec.decode_map(data, PUBLISHED_LIMITS)
    root, delta = outer.get("root"), outer.get("delta")
    if (
        set(outer) != {"v", "root", "delta"}
        or not _is_v1(outer["v"])
        or type(root) is not bytes
        or (delta is not None and type(delta) is not bytes)
    ):
        raise SchemaError(
            Reason.SCHEMA_INVALID,
            f"directory publication has keys {sorted(outer)}, v {outer.get('v')!r:.20}",
        )
    return root, delta


@dataclass(frozen=True, slots=True)
class Answer:
    """What a verified answer proves: entries present, keys absent (at ``version``)."""

    version: int
    root: bytes | None  # the hub's root frame, when it holds another version than asked
    entries: dict[str, Entry]
    absent: frozenset[str]
    refusal: str | None


def _bad_proof(message: str) -> DirectoryError:
    return DirectoryError(Reason.DIR_BAD_PROOF, f"directory answer: {message}; refusing it")


def _proven(item: object, root: DirRoot) -> tuple[int, str, Entry]:
    if not isinstance(item, dict) or set(item) != {"i", "leaf", "path"}:
        raise _bad_proof("an entry is not {i, leaf, path}")
    index, leaf, path = item["i"], item["leaf"], item["path"]
    if (
        type(index) is not int
        or type(leaf) is not bytes
        or not isinstance(path, tuple)
        or not all(type(p) is bytes and len(p) == HASH_SIZE for p in path)
    ):
        raise _bad_proof("an entry's index, leaf or path has the wrong type")
    if not _verify_inclusion(index, root.size, entry_digest(leaf), path, root.tree):
        raise _bad_proof(f"entry {index} does not verify against version {root.version}'s tree")
    entry = read_leaf(leaf)
    return index, entry_key(entry), entry


_ANSWER_KEYS: Final = frozenset({"v", "version", "root", "delta", "found", "absent", "refusal"})


def read_answer(data: bytes) -> tuple[int, bytes | None, str | None, Any]:
    """(version, root frame or None, refusal or None, the unverified rest) of an answer;
    :func:`verify_answer` proves the rest against the root of that version."""
    outer = codec.decode_map(data, ANSWER_LIMITS)
    if set(outer) != _ANSWER_KEYS or not _is_v1(outer["v"]):
        raise SchemaError(
            Reason.SCHEMA_INVALID,
            f"directory answer has keys {sorted(outer)}, v {outer.get('v')!r:.20} "
            f"(want {sorted(_ANSWER_KEYS)}, v 1)",
        )
    version, root, refusal = outer["version"], outer["root"], outer["refusal"]
    if type(version) is not int or not (root is None or type(root) is bytes):
        raise SchemaError(Reason.SCHEMA_INVALID, "directory answer: version or root mistyped")
    if not (refusal is None or type(refusal) is str):
        raise SchemaError(Reason.SCHEMA_INVALID, "directory answer: refusal mistyped")
    if not (outer["delta"] is None or type(outer["delta"]) is bytes):
        raise SchemaError(Reason.SCHEMA_INVALID, "directory answer: delta mistyped")
    return version, root, refusal, outer


def verify_answer(data: bytes, root: VerifiedRoot, asked: Iterable[str]) -> Answer:
    """Check every entry of an answer against ``root`` and every absence against the two
    neighbours that bracket it; only keys that were asked for are taken."""
    version, root_frame, refusal, outer = read_answer(data)
    wanted = set(asked)
    entries: dict[str, Entry] = {}
    absent: set[str] = set()
    if version != root.version:  # the caller verifies the root it carries first
        return Answer(version, root_frame, {}, frozenset(), refusal)
    if not isinstance(outer["found"], tuple) or not isinstance(outer["absent"], tuple):
        raise _bad_proof("found and absent must be lists")
    for item in outer["found"]:
        _, key, entry = _proven(item, root.root)
        if key in wanted:
            entries[key] = entry
    for item in outer["absent"]:
        key = _absence(item, root.root)
        if key in wanted:
            absent.add(key)
    return Answer(version, root_frame, entries, frozenset(absent), refusal)


def _absence(item: object, root: DirRoot) -> str:
    if not isinstance(item, dict) or set(item) != {"key", "below", "above"}:
        raise _bad_proof("an absence is not {key, below, above}")
    key = item["key"]
    if type(key) is not str:
        raise _bad_proof("an absent key is not text")
    below = None if item["below"] is None else _proven(item["below"], root)
    above = None if item["above"] is None else _proven(item["above"], root)
    if below is None and above is None:
        if root.size == 0:
            return key
        raise _bad_proof(f"no neighbours are given for {key!r:.80}")
    proven = (
        (below is None or below[1] < key)
        and (above is None or key < above[1])
        and (below is not None or (above is not None and above[0] == 0))
        and (above is not None or (below is not None and below[0] == root.size - 1))
        and (below is None or above is None or above[0] == below[0] + 1)
    )
    if not proven:
        raise _bad_proof(f"the neighbours given for {key!r:.80} do not prove it absent")
    return key


# ------------------------------------------------------------------ entries -> Directory


def materialise(root: DirRoot, entries: Iterable[Entry]) -> Directory:
    """A :class:`Directory` holding the verified entries a spoke has (not necessarily all
    of them), for the code that judges and seals with one. Group pages are joined; a group
    whose pages are not all there is left out. Not checked for consistency as a whole: a
    part of a directory names parents and members it does not hold."""
    orgs: dict[str, OrgEntry] = {}
    pages: dict[str, dict[int, GroupPage]] = {}
    for entry in entries:
        if isinstance(entry, OrgEntry):
            orgs[entry.id] = entry
        else:
            pages.setdefault(entry.id, {})[entry.page] = entry
    groups = []
    for group_id, held in sorted(pages.items()):
        first = held.get(0)
        if first is None or len(held) != first.pages or set(held) != set(range(first.pages)):
            continue
        members = tuple(m for i in range(first.pages) for m in held[i].members)
        groups.append(
            GroupEntry(id=group_id, name_zh=first.name_zh, name_en=first.name_en, members=members)
        )
    return Directory.model_construct(
        v=1,
        hub_id=root.hub_id,
        version=root.version,
        issued_at=root.issued_at,
        expires_at=root.expires_at,
        hub_keys=root.hub_keys,
        channels=root.channels,
        orgs=tuple(orgs[k] for k in sorted(orgs)),
        revoked=root.revoked,
        groups=tuple(groups),
        rules=dict(root.rules),
        hubs=root.hubs,
    )


__all__ = [
    "ASK_MAX",
    "DELTA_MAX",
    "GROUP_PAGE",
    "Answer",
    "DirDelta",
    "DirRoot",
    "DirectoryTree",
    "Entry",
    "GroupPage",
    "VerifiedRoot",
    "check_key",
    "check_servable",
    "derive_root",
    "encode_answer",
    "encode_ask",
    "entry_key",
    "materialise",
    "page_key",
    "publication",
    "read_answer",
    "read_ask",
    "read_leaf",
    "read_publication",
    "sign_delta",
    "sign_root",
    "verify_answer",
    "verify_delta",
    "verify_root",
]
