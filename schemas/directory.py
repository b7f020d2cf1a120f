"""The directory: a hub-signed, versioned, expiring trust registry (ARCHITECTURE section 5).

It lists every organisation (id, names, level, parent, clearance, channels, signing and
encryption keys with validity windows), the channels, revoked key ids and address groups.
Spokes pin the hub's directory key, refuse a version older than one they have seen, refuse
an expired directory, and look up every key through it.

Frame: canonical map ``{"v": 1, "kid": <hub kid>, "dir": <directory bytes>, "sig": <64>}``
with ``sig = Ed25519(hub, "xchg/v1/dir\\0" || dir)``; verified before ``dir`` is decoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Final, Literal, Self, cast

from pydantic import Field

from schemas import codec
from schemas.clock import ms_to_text
from schemas.errors import DirectoryError, Reason, SchemaError, SignatureError, UsageError
from schemas.ids import ChannelId, GroupId, HubId, KeyId, OrgId
from schemas.keys import DOMAIN_DIRECTORY, KeyKind, SigningKey, key_id, verify_signature
from schemas.labels import Classification
from schemas.model import MAX_WIRE_INT, Version1, WireClassification, WireModel

Millis = Annotated[int, Field(ge=0, le=MAX_WIRE_INT)]
PublicKey = Annotated[bytes, Field(min_length=32, max_length=32)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
GROUP_PREFIX = "@"
RuleKey = Annotated[str, Field(pattern=r"^[a-z][a-z_]{0,47}$")]
RuleMode = Literal["enforce", "warn", "off"]


class OrgLevel(StrEnum):
    """The level of an organisation in the government hierarchy."""

    NATIONAL = "national"
    PROVINCE = "province"
    PREFECTURE = "prefecture"
    COUNTY = "county"
    DEPARTMENT = "department"
    # A people's congress or its standing committee (人大及其常委会): outside the
    # government tree (no parent), linked by ``congress_of`` to the government of its level.
    CONGRESS = "congress"

    @property
    def zh(self) -> str:
        return {
            "national": "国家级",
            "province": "省级",
            "prefecture": "地市级",
            "county": "县级",
            "department": "省直部门",
            "congress": "人大及其常委会",
        }[self.value]

    @property
    def is_government(self) -> bool:
        """A people's government (人民政府) of some rank, not a department or a congress."""
        return self in (
            OrgLevel.NATIONAL,
            OrgLevel.PROVINCE,
            OrgLevel.PREFECTURE,
            OrgLevel.COUNTY,
        )


class KeyEntry(WireModel):
    kid: KeyId
    public: PublicKey
    not_before: Millis
    not_after: Millis


class ChannelEntry(WireModel):
    id: ChannelId
    name: ShortText
    ceiling: WireClassification


class OrgEntry(WireModel):
    id: OrgId
    name_zh: ShortText
    name_en: ShortText
    level: Annotated[OrgLevel, Field(strict=False)]  # the wire carries the value
    parent: OrgId | None
    code: Annotated[str, Field(pattern=r"^[0-9]{6}$")] | None  # 行政区划代码
    clearance: WireClassification
    channels: tuple[ChannelId, ...]
    sign_keys: tuple[KeyEntry, ...]
    enc_keys: tuple[KeyEntry, ...]
    directive_to: tuple[OrgId, ...]  # extra organisations it may send directive documents to
    # A congress (level congress): the people's government of its level, which submits
    # 议案 to it and reports to it; None for every other organisation. Absent in a
    # directory from before it was added, which had no congress (like Directory.rules).
    congress_of: OrgId | None = None
    # Federation: the neighbour hub (schemas.directory.HubEntry, an upstream or a member)
    # through which this organisation is reached; absent for the hub's own organisations,
    # so a directory without federation is byte for byte what it was before.
    via: HubId | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any], *, what: str) -> Self:
        if "via" in data and data["via"] is None:
            raise SchemaError(
                Reason.SCHEMA_INVALID, f"{what}: via: an own organisation leaves the key out"
            )
        return super().from_wire(data, what=what)

    def to_wire(self) -> dict[str, Any]:
        return _without_via(super().to_wire())


def _without_via(wire: dict[str, Any]) -> dict[str, Any]:
    if wire.get("via", 0) is None:
        del wire["via"]
    return wire


class HubRole(StrEnum):
    """What another hub of the federation is to the hub whose directory lists it."""

    UPSTREAM = "upstream"  # this hub is its member: it reaches everyone this hub does not serve
    MEMBER = "member"  # a member of this hub, serving the organisations under its prefixes
    REMOTE = "remote"  # elsewhere in the federation, reached through ``via``; listed for its keys


class HubEntry(WireModel):
    """Another hub of the federation (docs/architecture.md, "Hubs under hubs")."""

    id: HubId
    name_zh: ShortText
    name_en: ShortText
    role: Annotated[HubRole, Field(strict=False)]
    # The organisations it serves: each prefix and every id below it (``jl`` serves
    # ``jl.gov`` and ``jl.cc.nongan``). Empty for an upstream, which serves everyone else.
    prefixes: tuple[OrgId, ...]
    # A neighbour's link: the channels it is connected to this hub on. A remote hub: none.
    channels: tuple[ChannelId, ...]
    # Its hub keys (the membership key): they sign its directory and its receipts.
    keys: tuple[KeyEntry, ...]
    via: HubId | None  # a remote hub: the neighbour it is reached through; else None

    def serves(self, org_id: str) -> bool:
        """Whether ``org_id`` lies under one of its prefixes."""
        return any(within(org_id, prefix) for prefix in self.prefixes)


def within(org_id: str, prefix: str) -> bool:
    """``org_id`` is ``prefix`` or an id below it (``jl.cc`` is within ``jl``, ``jlx`` is not)."""
    return org_id == prefix or org_id.startswith(prefix + ".")


class GroupEntry(WireModel):
    id: GroupId
    name_zh: ShortText
    name_en: ShortText
    members: tuple[OrgId, ...]


class Directory(WireModel):
    v: Version1
    hub_id: HubId
    version: Annotated[int, Field(ge=1, le=MAX_WIRE_INT)]
    issued_at: Millis
    expires_at: Millis
    hub_keys: tuple[KeyEntry, ...]
    channels: tuple[ChannelEntry, ...]
    orgs: tuple[OrgEntry, ...]
    revoked: tuple[KeyId, ...]
    groups: tuple[GroupEntry, ...]
    # The document rules' settings (schemas.rules), signed so that every spoke checks a
    # drop exactly as the hub will: rule id -> enforce | warn | off (absent: the rule's default).
    rules: dict[RuleKey, RuleMode] = Field(default_factory=dict)
    # Federation: the other hubs (absent when there are none: a directory of a hub that is
    # no member and has none is byte for byte what it was before federation).
    hubs: tuple[HubEntry, ...] = ()

    @classmethod
    def from_wire(cls, data: dict[str, Any], *, what: str) -> Self:
        if "hubs" in data and not data["hubs"]:
            raise SchemaError(
                Reason.SCHEMA_INVALID, f"{what}: hubs: a directory without hubs leaves the key out"
            )
        return super().from_wire(data, what=what)

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        if not self.hubs:
            del wire["hubs"]
        wire["orgs"] = tuple(_without_via(cast("dict[str, Any]", o)) for o in wire["orgs"])
        return wire

    # ---- lookups (computed once per directory) ----

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy whose lookups are rebuilt (they are cached per instance)."""
        copy = super().model_copy(update=update, deep=deep)
        for cache in (
            "_orgs",
            "_channels",
            "_groups",
            "_revoked",
            "_ancestry",
            "_rule_modes",
            "_hubs",
        ):
            copy.__dict__.pop(cache, None)
        return copy

    @cached_property
    def _orgs(self) -> dict[str, OrgEntry]:
        return {o.id: o for o in self.orgs}

    @cached_property
    def _channels(self) -> dict[str, ChannelEntry]:
        return {c.id: c for c in self.channels}

    @cached_property
    def _groups(self) -> dict[str, GroupEntry]:
        return {g.id: g for g in self.groups}

    @cached_property
    def _revoked(self) -> frozenset[str]:
        return frozenset(self.revoked)

    @cached_property
    def _ancestry(self) -> dict[str, tuple[str, ...]]:
        return {}  # filled by ancestors(): the rules ask it for every recipient of every message

    @cached_property
    def _rule_modes(self) -> dict[str, object]:
        return {}  # schemas.rules.settings_of keeps its parsed settings here

    @cached_property
    def _hubs(self) -> dict[str, HubEntry]:
        return {h.id: h for h in self.hubs}

    def org(self, org_id: str) -> OrgEntry | None:
        return self._orgs.get(org_id)

    def hub(self, hub_id: str) -> HubEntry | None:
        """Another hub of the federation this directory lists (not this hub itself)."""
        return self._hubs.get(hub_id)

    @property
    def upstream(self) -> HubEntry | None:
        """The hub this hub is a member of, if it is one."""
        return next((h for h in self.hubs if h.role is HubRole.UPSTREAM), None)

    def is_hub(self, hub_id: str) -> bool:
        """This hub or another of the federation: who may sign a hub's receipts."""
        return hub_id == self.hub_id or hub_id in self._hubs

    def has_topic(self, name: str) -> bool:
        """Whether ``name`` owns topics on this hub's brokers: an organisation of its own, or
        a member hub (whose link reads and writes them). An outside organisation has none:
        its documents come through the hub it is reached through."""
        org = self._orgs.get(name)
        if org is not None:
            return org.via is None
        hub = self._hubs.get(name)
        return hub is not None and hub.role is HubRole.MEMBER

    def endpoints(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(id, channels) of everyone that connects to this hub's brokers: its own
        organisations, then its member hubs (each the spoke of the organisations behind it)."""
        ours = tuple((o.id, o.channels) for o in self.orgs if o.via is None)
        return ours + tuple((h.id, h.channels) for h in self.hubs if h.role is HubRole.MEMBER)

    def relaying(self, name: str) -> bool:
        """Whether ``name`` is a neighbour hub (an upstream or a member): what comes from it
        is relayed, signed by others."""
        hub = self._hubs.get(name)
        return hub is not None and hub.role is not HubRole.REMOTE

    def behind(self, hub_id: str, org_id: str) -> bool:
        """Whether ``org_id`` is reached through hub ``hub_id``: the neighbour it is listed
        ``via``, or a remote hub whose prefixes cover it (what a hub's refusal speaks for)."""
        org, hub = self._orgs.get(org_id), self._hubs.get(hub_id)
        if org is None or hub is None:
            return False
        return org.via == hub_id or (hub.role is HubRole.REMOTE and hub.serves(org_id))

    def carries(self, org_id: str, relayed_by: str | None) -> bool:
        """Whether this hub carries a document on to ``org_id`` when ``relayed_by`` (a
        neighbour hub; None: a spoke of its own) brought it: not to an organisation behind
        that hub, and not to one it does not know when the hub above brought it (that one
        is another province's, newer than this directory; refusing would refuse the whole
        document). One it does not know from a member or a spoke is refused as unknown."""
        if relayed_by is None:
            return True
        org = self._orgs.get(org_id)
        if org is None:
            hub = self._hubs.get(relayed_by)
            return hub is None or hub.role is not HubRole.UPSTREAM
        return (org.via or org_id) != relayed_by

    def next_hop(self, org_id: str) -> str:
        """Where a document to ``org_id`` goes from this hub: the organisation's own spoke,
        or the neighbour hub it is reached through."""
        org = self._orgs.get(org_id)
        return org_id if org is None or org.via is None else org.via

    def awaiting_keys(self) -> tuple[str, ...]:
        """Organisations listed before their keys came (a province brings them on one at a
        time): in the tree and in their groups, and nobody can send to them or hear from
        them yet (a group send leaves them out and says so: :meth:`not_addressed`)."""
        return tuple(o.id for o in self.orgs if not o.sign_keys and not o.enc_keys)

    def awaiting_own_keys(self) -> tuple[str, ...]:
        """Those of :meth:`awaiting_keys` that are this hub's own (an organisation reached
        through another hub awaits keys from that hub's operator, not this one's)."""
        return tuple(o for o in self.awaiting_keys() if self._orgs[o].via is None)

    @cached_property
    def _awaiting(self) -> frozenset[str]:
        return frozenset(self.awaiting_keys())

    def channel(self, channel_id: str) -> ChannelEntry | None:
        return self._channels.get(channel_id)

    def ceiling(self, channel_id: str) -> Classification:
        """The highest label ``channel_id`` carries (TOP_SECRET for a channel not listed):
        what an answer about bytes that came on it is labelled when it may say nothing of
        their own label."""
        channel = self._channels.get(channel_id)
        return Classification.TOP_SECRET if channel is None else channel.ceiling

    def group(self, group_id: str) -> GroupEntry | None:
        return self._groups.get(group_id)

    def is_revoked(self, kid: str) -> bool:
        return kid in self._revoked

    def key_owner(self, kid: str) -> tuple[str, KeyKind] | None:
        """(owner, kind) of the key ``kid`` lists: an organisation's or the hub's."""
        for key in self.hub_keys:
            if key.kid == kid:
                return self.hub_id, KeyKind.SIGN
        for hub in self.hubs:
            if any(k.kid == kid for k in hub.keys):
                return hub.id, KeyKind.SIGN
        for org in self.orgs:
            for kind, keys in ((KeyKind.SIGN, org.sign_keys), (KeyKind.ENCRYPT, org.enc_keys)):
                if any(k.kid == kid for k in keys):
                    return org.id, kind
        return None

    def signing_key_entry(self, org_id: str, kid: str) -> KeyEntry:
        """The key ``org_id`` signs with under ``kid``; refuses unknown and revoked keys.

        The validity window is checked separately (:meth:`check_key_window`) because it is
        judged at the signed creation time, known only after the signature verifies.
        """
        if org_id == self.hub_id:
            keys: Iterable[KeyEntry] = self.hub_keys
        elif (hub := self._hubs.get(org_id)) is not None:
            keys = hub.keys
        else:
            org = self.org(org_id)
            if org is None:
                raise SignatureError(
                    Reason.SIG_UNKNOWN_SENDER,
                    f"{org_id!r} is not in directory version {self.version}; "
                    "the hub operator must add it and publish a new directory",
                )
            keys = org.sign_keys
        if self.is_revoked(kid):
            raise SignatureError(
                Reason.SIG_KEY_REVOKED,
                f"key {kid} (used by {org_id}) is revoked in directory version {self.version}; "
                "messages signed with it are refused. The owner must sign with a new key",
            )
        for key in keys:
            if key.kid == kid:
                return key
        raise SignatureError(
            Reason.SIG_UNKNOWN_KEY,
            f"{org_id} has no signing key {kid!r:.40} in directory version {self.version}",
        )

    @staticmethod
    def check_key_window(key: KeyEntry, owner: str, at: int) -> None:
        """Refuse a key used outside [not_before, not_after), naming the key and its window."""
        if key.not_before <= at < key.not_after:
            return  # every envelope and receipt passes here: no sentence built for nothing
        window = f"from {ms_to_text(key.not_before)} until {ms_to_text(key.not_after)}"
        if at < key.not_before:
            raise SignatureError(
                Reason.SIG_KEY_NOT_YET_VALID,
                f"key {key.kid} of {owner} is valid {window}, but was used at "
                f"{ms_to_text(at, precise=True)}, before its window opened; check the "
                "signer's clock",
            )
        if at >= key.not_after:
            raise SignatureError(
                Reason.SIG_KEY_EXPIRED,
                f"key {key.kid} of {owner} was valid {window} and was used at "
                f"{ms_to_text(at, precise=True)}, after its window closed (rotated out or "
                "expired); the owner must sign with its current key",
            )

    def signing_key(self, org_id: str, kid: str, at: int) -> bytes:
        """The public key ``org_id`` signs with under ``kid``, if it may sign at ``at``."""
        key = self.signing_key_entry(org_id, kid)
        self.check_key_window(key, org_id, at)
        return key.public

    def encryption_key(self, org_id: str, at: int) -> KeyEntry:
        """The newest encryption key of ``org_id`` usable at ``at`` (for sealing to it)."""
        org = self.org(org_id)
        if org is None:
            raise DirectoryError(
                Reason.DIR_INCONSISTENT, f"{org_id!r} is not in directory version {self.version}"
            )
        if not org.enc_keys and not org.sign_keys:
            raise DirectoryError(
                Reason.ENV_RECIPIENT_AWAITING_KEYS, awaiting_keys_sentence(org, self.version)
            )
        usable = [
            k
            for k in org.enc_keys
            if k.not_before <= at < k.not_after and not self.is_revoked(k.kid)
        ]
        if not usable:
            raise DirectoryError(
                Reason.DIR_INCONSISTENT,
                f"{org_id} has no valid, unrevoked encryption key in directory version "
                f"{self.version}; ask the hub operator to publish its new key",
            )
        return max(usable, key=lambda k: k.not_before)

    def expand(self, addresses: Iterable[str]) -> tuple[str, ...]:
        """Expand ``@group`` addresses to the members that can receive (those awaiting keys
        are left out: :meth:`not_addressed` names them); keep order, drop repeats. An
        organisation named on its own is kept, whatever its keys (the gating refuses it
        with a sentence that says why).

        Raises ValueError naming an unknown organisation or group.
        """
        out: dict[str, None] = {}
        for address in addresses:
            if address.startswith(GROUP_PREFIX):
                group = self._group_of(address)
                out.update(dict.fromkeys(m for m in group.members if m not in self._awaiting))
            elif self.org(address) is None:
                raise ValueError(f"unknown organisation {address!r} (directory v{self.version})")
            else:
                out[address] = None
        return tuple(out)

    def _group_of(self, address: str) -> GroupEntry:
        group = self.group(address[len(GROUP_PREFIX) :])
        if group is None:
            known = ", ".join(GROUP_PREFIX + g.id for g in self.groups[:12])
            raise ValueError(f"unknown group {address!r}; groups include {known}")
        return group

    def not_addressed(self, addresses: Iterable[str], *, sender: str) -> tuple[NotAddressed, ...]:
        """The members of the groups among ``addresses`` that a send leaves out (awaiting
        keys), each once, under the first group that named it; not those also named on
        their own, nor the sender. ValueError names an unknown group."""
        listed = list(addresses)
        named = {a for a in listed if not a.startswith(GROUP_PREFIX)}
        out: dict[str, NotAddressed] = {}
        for address in listed:
            if not address.startswith(GROUP_PREFIX):
                continue
            group = self._group_of(address)
            for member in group.members:
                if member in self._awaiting and member != sender and member not in named:
                    out.setdefault(member, NotAddressed(member, group.id, AWAITING_KEYS))
        return tuple(out.values())

    def unreachable_groups(
        self, addresses: Iterable[str], *, sender: str
    ) -> tuple[GroupEntry, ...]:
        """The groups among ``addresses`` with members besides ``sender``, all of them
        awaiting keys: a send to such a group reaches nobody in it."""
        out: list[GroupEntry] = []
        for address in dict.fromkeys(addresses):
            if not address.startswith(GROUP_PREFIX):
                continue
            others = [m for m in self._group_of(address).members if m != sender]
            if others and all(m in self._awaiting for m in others):
                out.append(self._group_of(address))
        return tuple(out)

    def addressees(
        self, to: Iterable[str], cc: Iterable[str], *, sender: str
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(to, cc) as a sender seals them: groups expanded, the sender left out, and no
        one copied who is already a primary recipient. ValueError names an unknown address."""
        primary = tuple(a for a in self.expand(to) if a != sender)
        copied = tuple(a for a in self.expand(cc) if a != sender and a not in primary)
        return primary, copied

    def _has_cycle(self, org_id: str) -> bool:
        seen = {org_id}
        org = self.org(org_id)
        while org is not None and org.parent is not None:
            if org.parent in seen:
                return org.parent == org_id
            seen.add(org.parent)
            org = self.org(org.parent)
        return False

    def ancestors(self, org_id: str) -> tuple[str, ...]:
        """Parent, grandparent, ... of ``org_id`` (nearest first)."""
        known = self._ancestry.get(org_id)
        if known is None:
            known = self._ancestry[org_id] = self._walk_up(org_id)
        return known

    def _walk_up(self, org_id: str) -> tuple[str, ...]:
        chain: list[str] = []
        org = self.org(org_id)
        while org is not None and org.parent is not None and org.parent not in chain:
            chain.append(org.parent)
            org = self.org(org.parent)
        return tuple(chain)

    def check_consistent(self) -> None:
        """Refuse a directory whose references do not resolve (DIR_INCONSISTENT)."""
        problems: list[str] = []
        if self.expires_at <= self.issued_at:
            problems.append("expires_at is not after issued_at")
        if len(self._orgs) != len(self.orgs):
            problems.append("duplicate organisation ids")
        if len(self._channels) != len(self.channels):
            problems.append("duplicate channel ids")
        if self.hub_id in self._orgs:
            problems.append(f"hub_id {self.hub_id} is also an organisation id")
        for org in self.orgs:
            if org.parent is not None and org.parent not in self._orgs:
                problems.append(f"{org.id}: unknown parent {org.parent}")
            problems.extend(
                f"{org.id}: unknown channel {ch}" for ch in org.channels if ch not in self._channels
            )
            for kind, keys in ((KeyKind.SIGN, org.sign_keys), (KeyKind.ENCRYPT, org.enc_keys)):
                problems.extend(
                    f"{org.id}: kid {k.kid} does not name its key"
                    for k in keys
                    if key_id(kind, k.public) != k.kid
                )
        problems.extend(
            f"hub key {k.kid} does not name its key"
            for k in self.hub_keys
            if key_id(KeyKind.SIGN, k.public) != k.kid
        )
        for group in self.groups:
            problems.extend(
                f"group {group.id}: unknown member {m}"
                for m in group.members
                if m not in self._orgs
            )
        if len(self._groups) != len(self.groups):
            problems.append("duplicate group ids")
        kids = [k.kid for o in self.orgs for k in (*o.sign_keys, *o.enc_keys)]
        kids += [k.kid for k in self.hub_keys]
        kids += [k.kid for h in self.hubs for k in h.keys]
        problems.extend(federation_problems(self))
        if len(set(kids)) != len(kids):
            problems.append("a key id is listed twice")
        for org in self.orgs:
            problems.extend(
                f"{org.id}: directive_to names unknown {t}"
                for t in org.directive_to
                if t not in self._orgs
            )
            if self._has_cycle(org.id):
                problems.append(f"{org.id}: its parents form a cycle")
            problems.extend(_congress_problems(org, self._orgs))
            problems.extend(
                f"{org.id}: key {k.kid} has not_after before not_before"
                for k in (*org.sign_keys, *org.enc_keys)
                if k.not_after <= k.not_before
            )
        if problems:
            raise DirectoryError(
                Reason.DIR_INCONSISTENT,
                f"directory version {self.version} is inconsistent: " + "; ".join(problems[:5]),
            )


def federation_problems(directory: Directory) -> list[str]:
    """What is wrong with the hubs a directory lists and the organisations reached through
    them (docs/architecture.md, "Hubs under hubs"): every prefix claim is checked here, at
    every level, so a province cannot list organisations outside its prefixes."""
    hubs, problems = {h.id: h for h in directory.hubs}, []
    if len(hubs) != len(directory.hubs):
        problems.append("duplicate hub ids")
    neighbours = {h.id for h in directory.hubs if h.role is not HubRole.REMOTE}
    if sum(h.role is HubRole.UPSTREAM for h in directory.hubs) > 1:
        problems.append("more than one upstream hub")
    claimed = [(p, h.id) for h in directory.hubs for p in h.prefixes]
    for hub in directory.hubs:
        if hub.id == directory.hub_id or directory.org(hub.id) is not None:
            problems.append(f"hub {hub.id} is also this hub's id or an organisation id")
        problems.extend(
            f"hub {hub.id}: unknown channel {ch}"
            for ch in hub.channels
            if directory.channel(ch) is None
        )
        problems.extend(
            f"hub {hub.id}: kid {k.kid} does not name its key"
            for k in hub.keys
            if key_id(KeyKind.SIGN, k.public) != k.kid
        )
        if hub.role is HubRole.UPSTREAM and hub.prefixes:
            problems.append(f"hub {hub.id}: an upstream serves everyone else; it claims no prefix")
        if hub.role is not HubRole.UPSTREAM and not hub.prefixes:
            problems.append(f"hub {hub.id}: a {hub.role} hub claims at least one prefix")
        if hub.role is HubRole.REMOTE:
            if hub.via not in neighbours:
                problems.append(f"hub {hub.id}: a remote hub is reached via a neighbour hub")
            if hub.channels:
                problems.append(f"hub {hub.id}: a remote hub has no link to this hub")
        elif hub.via is not None:
            problems.append(f"hub {hub.id}: a {hub.role} hub is a neighbour; via is for remote")
    for prefix, owner in claimed:
        problems.extend(
            f"hub {owner}'s prefix {prefix} overlaps hub {other}'s {theirs}"
            for theirs, other in claimed
            if other != owner and within(prefix, theirs) and not _nested(owner, other, hubs)
        )
    for org in directory.orgs:
        claimer = next((h for p, h in claimed if within(org.id, p)), None)
        through = hubs.get(org.via) if org.via is not None else None
        reached = None if claimer is None else hubs[claimer].via or claimer
        if org.via is None:
            if claimer is not None:
                problems.append(f"{org.id}: listed as this hub's own, but hub {claimer} claims it")
            continue
        if through is None or org.via not in neighbours:
            problems.append(f"{org.id}: via {org.via} names no neighbour hub")
            continue
        if through.role is HubRole.MEMBER and not through.serves(org.id):
            problems.append(
                f"{org.id}: outside the prefixes of its hub {through.id} "
                f"({', '.join(through.prefixes)})"
            )
        if claimer is not None and reached != through.id:
            problems.append(f"{org.id}: reached via {through.id}, but hub {claimer} claims it")
        problems.extend(
            f"{org.id}: channel {ch} is not on the link to {through.id}"
            for ch in org.channels
            if ch not in through.channels
        )
    return problems


def _nested(inner: str, outer: str, hubs: Mapping[str, HubEntry]) -> bool:
    """A remote hub's prefix may lie within the prefix of a hub reached through the same
    neighbour: a province's own member (``yb.hub``, ``jl.yb``) within the province
    (``jl.hub``, ``jl``), as the national hub lists both, or as another province lists
    them through the national hub. Either way every id under them goes the same way."""
    hub, other = hubs[inner], hubs[outer]
    return hub.role is HubRole.REMOTE and hub.via == (other.via or other.id)


def _congress_problems(org: OrgEntry, orgs: Mapping[str, OrgEntry]) -> list[str]:
    """A congress stands outside the government tree, linked to one government of its level."""
    problems = []
    parent = orgs.get(org.parent) if org.parent is not None else None
    if org.level is not OrgLevel.CONGRESS:
        if parent is not None and parent.level is OrgLevel.CONGRESS:
            problems.append(f"{org.id}: its parent {org.parent} is a congress")
        if org.congress_of is not None:
            problems.append(f"{org.id}: congress_of is set, but it is not a congress")
        return problems
    if org.parent is not None:
        problems.append(f"{org.id}: a congress has no parent (it has {org.parent})")
    government = orgs.get(org.congress_of) if org.congress_of is not None else None
    if org.congress_of is None:
        problems.append(f"{org.id}: a congress names the government of its level (congress_of)")
    elif government is None:
        problems.append(f"{org.id}: congress_of names unknown {org.congress_of}")
    elif not government.level.is_government:
        problems.append(f"{org.id}: congress_of names {org.congress_of}, which is no government")
    return problems


def delivery_channel(
    directory: Directory, sender: OrgEntry, recipient: OrgEntry, label: Classification
) -> ChannelEntry | None:
    """The lowest-ceiling channel both ends are provisioned on whose ceiling admits ``label``."""
    shared = [
        channel
        for name in sender.channels
        if name in recipient.channels and (channel := directory.channel(name)) is not None
    ]
    admitting = [c for c in shared if c.ceiling >= label]
    return min(admitting, key=lambda c: c.ceiling.rank, default=None)


@dataclass(frozen=True, slots=True)
class VerifiedDirectory:
    """A directory whose signature, freshness and consistency have been checked."""

    directory: Directory
    frame: bytes
    digest: bytes  # SHA-256 of the exact directory bytes (equal versions must be equal)

    @property
    def version(self) -> int:
        return self.directory.version


def sign_directory(directory: Directory, key: SigningKey) -> bytes:
    """Encode and sign ``directory`` with the hub's directory key; returns the frame."""
    directory.check_consistent()
    body = codec.encode(directory.to_wire())
    if len(body) > codec.DIRECTORY_FILE_LIMITS.max_size:
        raise UsageError(f"the directory is {len(body)} bytes; the limit is 256 MiB")
    sig = key.sign(DOMAIN_DIRECTORY, body)
    return codec.encode({"v": 1, "kid": key.kid, "dir": body, "sig": sig})


def verify_directory(
    frame: bytes,
    pinned_key: bytes,
    *,
    now: int | None,
    last_seen: tuple[int, bytes] | None = None,
    whole_file: bool = False,
) -> VerifiedDirectory:
    """Verify a directory frame against the pinned hub key (``whole_file``: the hub's own
    file, within the larger limits of a national directory; else as it travels whole).

    ``last_seen`` is the (version, digest) the caller accepted before; a lower version is
    a rollback and the same version with other bytes is equivocation. Both are refused,
    as are a bad signature, an expired directory and one issued in the future.
    """
    try:
        outer = codec.decode_frame(
            frame,
            codec.DIRECTORY_FILE_FRAME_LIMITS if whole_file else codec.DIRECTORY_FRAME_LIMITS,
            {"kid": str, "dir": bytes, "sig": bytes},
        )
    except SchemaError as exc:
        raise DirectoryError(exc.reason, exc.message) from exc
    body, sig, kid = outer["dir"], outer["sig"], outer["kid"]
    pinned_kid = key_id(KeyKind.SIGN, pinned_key)
    if kid != pinned_kid:
        raise DirectoryError(
            Reason.DIR_BAD_SIGNATURE,
            f"directory is signed by key {kid[:16]!r}, not by the pinned hub key {pinned_kid}; "
            "refusing it (if the hub key was replaced, re-pin the new hub.pub.json)",
        )
    if not verify_signature(pinned_key, DOMAIN_DIRECTORY, body, sig):
        raise DirectoryError(
            Reason.DIR_BAD_SIGNATURE,
            f"directory signature does not verify with the pinned hub key {pinned_kid} "
            f"(the frame names key {kid[:16]!r}); refusing it",
        )
    directory = Directory.from_wire(
        codec.decode_map(
            body, codec.DIRECTORY_FILE_LIMITS if whole_file else codec.DIRECTORY_LIMITS
        ),
        what="directory",
    )
    digest = hashlib.sha256(body).digest()
    check_sequence(directory.version, digest, last_seen)
    if now is not None:
        check_fresh(directory.version, directory.issued_at, directory.expires_at, now)
    directory.check_consistent()
    return VerifiedDirectory(directory, frame, digest)


def check_sequence(version: int, digest: bytes, last_seen: tuple[int, bytes] | None) -> None:
    """Against the (version, digest) accepted before: a lower version is a rollback, the
    same version with other bytes equivocation (a directory or its root alike)."""
    if last_seen is None:
        return
    last_version, last_digest = last_seen
    if version < last_version:
        raise DirectoryError(
            Reason.DIR_ROLLBACK,
            f"directory version {version} is older than version {last_version} "
            "already seen; refusing the rollback",
        )
    if version == last_version and digest != last_digest:
        raise DirectoryError(
            Reason.DIR_EQUIVOCATION,
            f"directory version {version} differs from the version "
            f"{last_version} already seen with the same number; refusing it",
        )


def check_fresh(version: int, issued_at: int, expires_at: int, now: int) -> None:
    """Expired, or issued in the future beyond the clock skew tolerated: refused."""
    if now >= expires_at:
        raise DirectoryError(
            Reason.DIR_EXPIRED,
            f"directory version {version} expired at {expires_at} ms "
            f"(now {now} ms); the hub must publish a fresh one",
        )
    if now < issued_at - DIRECTORY_CLOCK_SKEW_MS:
        raise DirectoryError(
            Reason.DIR_NOT_YET_VALID,
            f"directory version {version} is issued at {issued_at} ms, "
            f"after now ({now} ms); check this machine's clock",
        )


DIRECTORY_CLOCK_SKEW_MS = 5 * 60 * 1000


AWAITING_KEYS: Final = "awaiting_keys"  # why a group member was not addressed


@dataclass(frozen=True, slots=True)
class NotAddressed:
    """A member of an addressed group that a document does not go to, and why."""

    org: str
    group: str  # the group that named it (without the @)
    reason: str  # AWAITING_KEYS

    def as_json(self) -> dict[str, str]:
        return {"org": self.org, "group": GROUP_PREFIX + self.group, "reason": self.reason}


def not_addressed_sentence(left_out: Iterable[NotAddressed], version: int) -> str:
    """One line, Chinese then English, naming the group members a send leaves out."""
    shown = [f"{n.org}（{GROUP_PREFIX}{n.group}）" for n in left_out]
    shown_en = [f"{n.org} (of {GROUP_PREFIX}{n.group})" for n in left_out]
    return (
        f"未发送给：{'、'.join(shown)}，其在第 {version} 版交换目录中尚待提交密钥，请另行送达 / "
        f"not addressed: {', '.join(shown_en)}: awaiting keys in directory version {version}; "
        "deliver it to them another way"
    )


def awaiting_keys_sentence(org: OrgEntry, version: int) -> str:
    """Why nothing can be sent to ``org`` yet, in both languages, and what to do."""
    return (
        f"收文机关 {org.id}（{org.name_zh}）在第 {version} 版交换目录中尚待提交密钥，暂不能收文；"
        "请另行送达，或请枢纽运维人员在收到其公钥后重新签发目录 / "
        f"recipient {org.id} ({org.name_en}) is awaiting keys in directory version {version}: "
        "it cannot receive documents yet; deliver it another way, or ask the hub operator to "
        "sign a new directory once its public keys are in"
    )
