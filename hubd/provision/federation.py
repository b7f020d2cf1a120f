"""Hubs under hubs, the operator's side: what ``hubctl directory build`` imports from the
signed directories of the neighbour hubs the topology lists (``[[hubs]]``).

A provincial hub (``jl.hub``) is a member of the national one (``cn.hub``); the national
hub has the provinces as members. Each builds its own directory from its own topology and
imports the rest from its neighbours (docs/wire-format.md section 7b):

- from a **member**, the organisations under its prefixes (also those of its own members),
  reached through it; its members become ``remote`` hubs here. A directory claiming an
  organisation of its own outside its prefixes is refused: a province cannot speak for
  organisations that are not under it;
- from the **upstream**, every organisation that is not this hub's (nor under one of its
  members' prefixes), reached through it; its other members become ``remote`` hubs here.
  Its entry for this hub must list this hub's current key and cover every organisation of
  the topology, or the upstream would refuse every document this hub sends.

Each imported directory is verified with the key its operator handed over, against the
version taken before (:mod:`hubd.provision.imports`), and must list the link's channels
with the ceilings they have here. An imported organisation keeps its own hub's entry
(names, parent, clearance, keys) but for ``channels``, the link's; the keys its directory
revokes are revoked here too. The upstream's expiry caps this hub's: what the province
lists of the country is never trusted longer than the country's directory says. A
member's expiry does not cap the upstream's (a member's is capped by the upstream's, and
capping both ways would pin every later directory to the first one's expiry); a member's
expired directory is refused at the upstream's next build instead.

Bootstrap (docs/operations.md, "Joining a province to the national exchange"): a member's
``directory`` may be left out until it has one; an upstream's may not, since the
organisations of a member name parents the upstream lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hubd.provision.imports import Seen, load_register, register_path, save_register
from schemas.clock import ms_to_text
from schemas.directory import (
    Directory,
    HubEntry,
    HubRole,
    KeyEntry,
    OrgEntry,
    VerifiedDirectory,
    verify_directory,
    within,
)
from schemas.errors import PeerError, Reason
from schemas.keys import HubPublicKey
from schemas.topology import HubLinkConfig, Topology

# What the operator does when a neighbour's directory does not verify, by its reason.
_REFUSED: dict[str, tuple[str, str]] = {
    Reason.DIR_BAD_SIGNATURE: (
        "签名无法用其枢纽公钥验证",
        (
            "check that [[hubs]] key is that hub's hub.pub.json and the file its signed directory, "
            "as its operator sent them"
        ),
    ),
    Reason.DIR_EXPIRED: (
        "目录已过期",
        "ask its operator for a fresh one ('hubctl directory build' there) and copy it in",
    ),
    Reason.DIR_NOT_YET_VALID: ("目录签发时间晚于本机时钟", "check this machine's clock"),
    Reason.DIR_ROLLBACK: (
        "目录版本低于此前已导入的版本",
        (
            "a directory older than one imported before is refused (see imports.json beside the "
            "directory): copy in its current directory"
        ),
    ),
    Reason.DIR_EQUIVOCATION: (
        "同一版本号的目录内容与此前导入的不同",
        (
            "the hub signed two different directories under one version: ask its operator why "
            "(its hub key may be compromised) and for a new version"
        ),
    ),
    Reason.DIR_INCONSISTENT: ("目录内容不一致", "its operator must correct it and build again"),
}
_UNREADABLE = (
    "无法解读该目录文件",
    "it is not a signed directory as 'hubctl directory build' writes it",
)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A ``[[hubs]]`` entry with its hub key and, once it has one, its verified directory."""

    link: HubLinkConfig
    key: HubPublicKey
    imported: VerifiedDirectory | None
    directory_path: Path | None

    @property
    def where(self) -> str:
        """Its directory as a build error names it: the file and the version."""
        version = "" if self.imported is None else f", version {self.imported.version}"
        return f"{self.link.id}'s directory ({self.directory_path}{version})"


@dataclass(frozen=True, slots=True)
class Federation:
    """What the neighbours bring to the next directory, and what the build says of it."""

    outside: tuple[OrgEntry, ...] = ()
    hubs: tuple[HubEntry, ...] = ()
    revoked: frozenset[str] = frozenset()
    upstream: Neighbour | None = None  # its directory's expiry caps this hub's
    lines: tuple[str, ...] = ()
    seen: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # the register after it
    changed: bool = False  # a directory not taken before: the register is written

    def cap(self, expires_at: int) -> tuple[int, str | None]:
        """``expires_at``, or the upstream directory's expiry if that is earlier, with the
        line the build prints when it is."""
        if self.upstream is None or self.upstream.imported is None:
            return expires_at, None
        source = self.upstream.imported.directory
        if source.expires_at >= expires_at:
            return expires_at, None
        return source.expires_at, (
            f"expires {ms_to_text(source.expires_at)}, capped at the expiry of "
            f"{source.hub_id}'s directory (version {source.version}): what it lists is not "
            f"trusted longer. Build again when {source.hub_id} publishes a fresh one"
        )

    def save(self, out: Path) -> None:
        """Record the directories taken, once the directory built from them is written."""
        if self.changed:
            save_register(register_path(out), self.seen)


def federate(
    topology: Topology, topology_path: Path, *, hub_kid: str, out: Path, now: int
) -> Federation:
    """Read, verify and import every neighbour of ``topology`` (module docstring).

    ``hub_kid``: this hub's current key, which its neighbours must list. ValueError, in
    both languages, names the hub, the file and what to do.
    """
    if not topology.hubs:
        return Federation()
    base = topology_path.parent
    seen = load_register(register_path(out))
    neighbours = [_neighbour(link, base, topology, seen, now) for link in topology.hubs]
    outside: list[OrgEntry] = []
    hubs: list[HubEntry] = []
    revoked: set[str] = set()
    lines: list[str] = []
    for neighbour in neighbours:
        link, imported = neighbour.link, neighbour.imported
        if imported is None:
            hubs.append(_entry_of(link, (_key_entry(neighbour.key),)))
            lines.append(f"no directory from {link.id} yet: its organisations are not listed")
            continue
        if link.role == "member":
            orgs, remote = _from_member(neighbour, imported.directory, topology, hub_kid)
        else:
            orgs, remote = _from_upstream(neighbour, imported.directory, topology, hub_kid)
        hubs += [_entry_of(link, imported.directory.hub_keys), *remote]
        outside += orgs
        kids = {k.kid for o in orgs for k in (*o.sign_keys, *o.enc_keys)}
        kids |= {k.kid for h in remote for k in h.keys}
        kids |= {k.kid for k in imported.directory.hub_keys}
        revoked |= kids.intersection(imported.directory.revoked)
        lines.append(
            f"imported {len(orgs)} organisations from {link.id} "
            f"(directory version {imported.version})"
        )
    _check_references(topology, outside, neighbours)
    taken = {n.link.id: (n.imported.version, n.imported.digest) for n in neighbours if n.imported}
    return Federation(
        outside=tuple(outside),
        hubs=tuple(hubs),
        revoked=frozenset(revoked),
        upstream=next((n for n in neighbours if n.link.role == "upstream"), None),
        lines=tuple(lines),
        seen={**seen, **taken},
        changed=any(seen.get(hub) != entry for hub, entry in taken.items()),
    )


def _refusal(hub: str, zh: str, en: str) -> ValueError:
    """A build refused over a neighbour: Chinese, then English with what to do."""
    return ValueError(
        f"未能导入 {hub} 的目录：{zh}，本次未生成目录 / {en}; the directory was not built"
    )


def _neighbour(
    link: HubLinkConfig, base: Path, topology: Topology, seen: Seen, now: int
) -> Neighbour:
    """Its hub key and its directory, verified (rollback and equivocation against the
    register, expiry at ``now``), for this hub's ``hub_id`` and the link's channels."""
    key_path = base / link.key
    try:
        key = HubPublicKey.load(key_path.read_bytes(), source=str(key_path))
    except OSError as exc:
        raise _refusal(
            link.id,
            "读不到其枢纽公钥文件",
            f"the hub key of {link.id} ({key_path}, [[hubs]] key): {exc.strerror}; ask its "
            "operator for the hub.pub.json 'hubctl keys init' wrote there",
        ) from exc
    except ValueError as exc:
        raise _refusal(
            link.id,
            "其枢纽公钥文件无效",
            f"{exc}; ask its operator for the hub.pub.json 'hubctl keys init' wrote there",
        ) from exc
    if link.directory is None:
        return Neighbour(link, key, None, None)
    path = base / link.directory
    try:
        frame = path.read_bytes()
    except OSError as exc:
        later = " (or, for a member without one yet, leave directory out)"
        raise _refusal(
            link.id,
            "读不到其目录文件",
            f"{link.id}'s directory ({path}, [[hubs]] directory): {exc.strerror}; copy in the "
            f"signed directory its operator sent{later if link.role == 'member' else ''}",
        ) from exc
    try:
        verified = verify_directory(
            frame, key.public, now=now, last_seen=seen.get(link.id), whole_file=True
        )
    except PeerError as exc:  # not signed, not verified, not decoded: the file is refused
        zh, todo = _REFUSED.get(exc.reason, _UNREADABLE)
        raise _refusal(
            link.id, zh, f"{link.id}'s directory ({path}): {exc.message}; {todo}"
        ) from exc
    neighbour = Neighbour(link, key, verified, path)
    directory = verified.directory
    if directory.hub_id != link.id:
        raise _refusal(
            link.id,
            f"该目录属于 {directory.hub_id}",
            f"{neighbour.where} is the directory of {directory.hub_id}, not of {link.id}: copy "
            f"in {link.id}'s own, or correct the [[hubs]] entry",
        )
    for channel in link.channels:
        ours = topology.channel(channel)
        theirs = directory.channel(channel)
        if ours is None or (theirs is not None and theirs.ceiling == ours.ceiling):
            continue
        listed = "does not list it" if theirs is None else f"carries up to {theirs.ceiling}"
        raise _refusal(
            link.id,
            f"链路通道 {channel} 的密级上限两边不一致",
            f"the link to {link.id} is on channel {channel}, whose ceiling here is "
            f"{ours.ceiling}, but {neighbour.where} {listed}: the two operators must agree on "
            "each channel of the link and its ceiling",
        )
    return neighbour


def _from_member(
    neighbour: Neighbour, directory: Directory, topology: Topology, hub_kid: str
) -> tuple[list[OrgEntry], list[HubEntry]]:
    """The organisations under a member's prefixes, reached through it, and its own
    members (and theirs) as remote hubs."""
    link = neighbour.link
    prefixes = ", ".join(link.prefixes)
    _check_link_entry(neighbour, directory.upstream, topology, hub_kid, above=True)
    orgs: list[OrgEntry] = []
    for org in directory.orgs:
        if any(within(org.id, p) for p in link.prefixes):
            orgs.append(_outside(org, link))
        elif org.via is None:
            raise _refusal(
                link.id,
                f"它将前缀（{prefixes}）之外的 {org.id} 列为本级机关",
                f"a province cannot claim organisations outside its prefix: {neighbour.where} "
                f"lists {org.id} as its own, outside its prefixes {prefixes}; its operator must "
                "remove it from its [[orgs]], or the prefixes of [[hubs]] "
                f"{link.id} here must cover it",
            )
    remote: list[HubEntry] = []
    its_upstream = directory.upstream.id if directory.upstream is not None else None
    for hub in directory.hubs:
        if hub.role is HubRole.UPSTREAM or (hub.role is HubRole.REMOTE and hub.via == its_upstream):
            continue  # this hub, and the hubs reached through it
        outside = [p for p in hub.prefixes if not any(within(p, q) for q in link.prefixes)]
        if outside:
            raise _refusal(
                link.id,
                f"其下级枢纽 {hub.id} 的前缀超出其前缀（{prefixes}）",
                f"{neighbour.where} lists hub {hub.id} under it with prefixes "
                f"{', '.join(outside)}, outside its own ({prefixes}): its operator must "
                "correct them",
            )
        remote.append(
            hub.model_copy(update={"role": HubRole.REMOTE, "channels": (), "via": link.id})
        )
    return orgs, remote


def _from_upstream(
    neighbour: Neighbour, directory: Directory, topology: Topology, hub_kid: str
) -> tuple[list[OrgEntry], list[HubEntry]]:
    """Every organisation of the upstream's directory that is not this hub's, reached
    through it, and its other members (and theirs) as remote hubs."""
    link = neighbour.link
    me = topology.hub.id
    for org in topology.orgs:
        listed = directory.org(org.id)
        if listed is not None and listed.via != me:
            where = "as its own" if listed.via is None else f"reached via {listed.via}"
            raise _refusal(
                link.id,
                f"本拓扑的机关 {org.id} 在上级目录中不属于本枢纽",
                f"{org.id} is an organisation of this topology, but {neighbour.where} lists it "
                f"{where}: remove it from [[orgs]] here (the upstream's directory brings it), "
                "or have the upstream's operator list it under this hub",
            )
    _check_link_entry(neighbour, directory.hub(me), topology, hub_kid, above=False)
    ours = {o.id for o in topology.orgs}
    served = [p for h in topology.members() for p in h.prefixes]
    orgs = [
        _outside(org, link)
        for org in directory.orgs
        if org.id not in ours and org.via != me and not any(within(org.id, p) for p in served)
    ]
    neighbours = {h.id for h in topology.hubs}
    remote = [
        hub.model_copy(update={"role": HubRole.REMOTE, "channels": (), "via": link.id})
        for hub in directory.hubs
        if hub.role is not HubRole.UPSTREAM
        and me not in (hub.id, hub.via)
        and hub.id not in neighbours
    ]
    return orgs, remote


def _check_link_entry(
    neighbour: Neighbour,
    entry: HubEntry | None,
    topology: Topology,
    hub_kid: str,
    *,
    above: bool,
) -> None:
    """The neighbour's entry for this hub (``above``: this hub is its upstream; else its
    member): there, with this hub's current key, on the link's channels, and (at an
    upstream) covering every organisation of the topology; else the neighbour would refuse
    what this hub signs or sends."""
    link, me = neighbour.link, topology.hub.id
    role = "upstream" if above else "member"
    who = f"the operator of {link.id}"
    covering = "" if above else ", prefixes covering its organisations"
    if entry is None or entry.id != me:
        raise _refusal(
            link.id,
            f"其目录未将本枢纽 {me} 列为{'上级' if above else '下级'}枢纽",
            f"{neighbour.where} does not list this hub {me} as its {role}: {who} must add it "
            f'to its [[hubs]] (id = "{me}", role = "{role}"{covering}, with this hub\'s '
            "hub.pub.json) and build again; until then it would refuse every document from here",
        )
    if hub_kid not in {k.kid for k in entry.keys}:
        listed = ", ".join(k.kid for k in entry.keys)
        raise _refusal(
            link.id,
            f"其目录未列出本枢纽的现行公钥 {hub_kid}",
            f"{neighbour.where} lists this hub {me} with key {listed}, not its current key "
            f"{hub_kid}: send {who} this hub's hub.pub.json to list; until then it would "
            "refuse every document and receipt this hub signs",
        )
    if set(entry.channels) != set(link.channels):
        raise _refusal(
            link.id,
            "两边登记的链路通道不一致",
            f"{neighbour.where} has the link to this hub on {', '.join(entry.channels)}, "
            f"[[hubs]] {link.id} here on {', '.join(link.channels)}: the two operators must "
            "list the same channels",
        )
    if above:
        return
    uncovered = [o.id for o in topology.orgs if not entry.serves(o.id)]
    if uncovered:
        raise _refusal(
            link.id,
            f"上级目录为本枢纽登记的前缀未覆盖 {uncovered[0]}",
            f"{neighbour.where} lists this hub {me} with prefixes "
            f"{', '.join(entry.prefixes)}, which do not cover {', '.join(uncovered[:5])}: "
            f"{who} must list a prefix covering them; until then every document to or from "
            "them would be refused there",
        )


def _check_references(
    topology: Topology, outside: Sequence[OrgEntry], neighbours: Sequence[Neighbour]
) -> None:
    """Every parent (and congress, and directive target) an organisation names resolves
    in the directory being built, said with the directory it should have come from."""
    known = {o.id for o in topology.orgs} | {o.id for o in outside}
    upstream = next((n for n in neighbours if n.link.role == "upstream"), None)
    for org in topology.orgs:
        if org.parent is not None and org.parent not in known and upstream is not None:
            raise _refusal(
                upstream.link.id,
                f"本拓扑的机关 {org.id} 的上级机关 {org.parent} 不在其中",
                f"{org.id}'s parent {org.parent} is not in {upstream.where}: have the "
                "upstream's operator list it, or correct the parent in [[orgs]] here",
            )
    via = {n.link.id: n for n in neighbours}
    for entry in outside:
        named = [entry.parent, entry.congress_of, *entry.directive_to]
        missing = next((m for m in named if m is not None and m not in known), None)
        if missing is not None and entry.via is not None:
            raise _refusal(
                entry.via,
                f"其机关 {entry.id} 引用的 {missing} 不在本目录中",
                f"{entry.id}, imported from {via[entry.via].where}, names {missing}, which is "
                "neither an organisation of this topology nor imported: the two operators "
                "must agree on which hub lists it",
            )


def _outside(org: OrgEntry, link: HubLinkConfig) -> OrgEntry:
    """An organisation reached through ``link``: its own hub's entry, on the link's channels."""
    return org.model_copy(update={"via": link.id, "channels": link.channels})


def _key_entry(key: HubPublicKey) -> KeyEntry:
    return KeyEntry(
        kid=key.kid, public=key.public, not_before=key.not_before, not_after=key.not_after
    )


def _entry_of(link: HubLinkConfig, keys: Sequence[KeyEntry]) -> HubEntry:
    """The neighbour itself: its names, role and prefixes from the topology, the link's
    channels, and its hub keys."""
    return HubEntry(
        id=link.id,
        name_zh=link.name_zh,
        name_en=link.name_en,
        role=HubRole(link.role),
        prefixes=link.prefixes,
        channels=link.channels,
        keys=tuple(keys),
        via=None,
    )
