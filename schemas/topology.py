"""The topology: channels and organisations as the operator writes them (config/topology.toml).

Pure: :func:`parse_topology` takes the TOML text and the name of the file it came from;
every problem becomes a :class:`ConfigError` line naming the file, the key path and the
problem (unknown parent, cycle, duplicate id, undefined channel, clearance above every
provisioned channel's ceiling, bad id, ...). :func:`build_directory` turns a topology and
the organisations' public keys into a :class:`Directory` for the hub to sign.

A hub of a federation also lists its neighbour hubs (``[[hubs]]``: its members and its
upstream, docs/operations.md "Joining a province to the national exchange"); what their
signed directories bring is imported by ``hubctl directory build``
(hubd/provision/federation.py) and handed to :func:`build_directory` in the plan.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from schemas.directory import (
    ChannelEntry,
    Directory,
    GroupEntry,
    HubEntry,
    KeyEntry,
    OrgEntry,
    OrgLevel,
    within,
)
from schemas.errors import ConfigError
from schemas.ids import ChannelId, GroupId, HubId, OrgId
from schemas.keys import PublicKeys
from schemas.labels import Classification
from schemas.rules import Mode, parse_settings

ParsedClassification = Annotated[Classification, BeforeValidator(Classification.parse)]
Text = Annotated[str, Field(min_length=1, max_length=200)]


class _ConfigModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_M = TypeVar("_M", bound=BaseModel)


class HubSection(_ConfigModel):
    id: HubId
    name_zh: Text = "电子公文交换中心"
    name_en: Text = "Document exchange hub"


class ChannelConfig(_ConfigModel):
    id: ChannelId
    name: Text
    ceiling: ParsedClassification


class OrgConfig(_ConfigModel):
    id: OrgId
    name_zh: Text
    name_en: Text
    level: OrgLevel
    parent: OrgId | None = None
    code: Annotated[str, Field(pattern=r"^[0-9]{6}$")] | None = None
    clearance: ParsedClassification
    channels: tuple[ChannelId, ...]
    directive_to: tuple[OrgId, ...] = ()
    congress_of: OrgId | None = None  # a congress: the people's government of its level


class GroupConfig(_ConfigModel):
    id: GroupId
    name_zh: Text
    name_en: Text
    members: tuple[OrgId, ...]


class HubLinkConfig(_ConfigModel):
    """A neighbour hub of the federation: a member of this hub, or its upstream."""

    id: HubId  # the other hub's id: its topology's [hub] id
    name_zh: Text
    name_en: Text
    role: Literal["member", "upstream"]  # a remote hub is learnt from a directory, not written
    # member: the ids it serves (each and every id below it); upstream: none (it serves
    # everyone this hub and its members do not)
    prefixes: tuple[OrgId, ...] = ()
    channels: tuple[ChannelId, ...]  # the link's channels, channels of this topology
    key: Text  # its hub.pub.json as 'hubctl keys init' wrote it, relative to the topology file
    # its signed directory, which the build imports (relative to the topology file); a
    # member's may be left out until it has one (the bootstrap: its organisations are not
    # listed yet), an upstream's never (this hub's own organisations name parents in it)
    directory: Text | None = None


class Topology(_ConfigModel):
    hub: HubSection
    channels: tuple[ChannelConfig, ...]
    orgs: tuple[OrgConfig, ...]
    groups: tuple[GroupConfig, ...] = ()
    rules: Mapping[str, Mode] = {}  # the document rules' settings (schemas.rules)
    hubs: tuple[HubLinkConfig, ...] = ()  # the neighbour hubs of a federation

    @property
    def upstream(self) -> HubLinkConfig | None:
        """The hub this hub is a member of, if it is one."""
        return next((h for h in self.hubs if h.role == "upstream"), None)

    def members(self) -> tuple[HubLinkConfig, ...]:
        return tuple(h for h in self.hubs if h.role == "member")

    def org(self, org_id: str) -> OrgConfig | None:
        return next((o for o in self.orgs if o.id == org_id), None)

    def channel(self, channel_id: str) -> ChannelConfig | None:
        return next((c for c in self.channels if c.id == channel_id), None)


def _path(loc: Sequence[int | str], doc: Mapping[str, Any]) -> str:
    """'orgs[3] (jl.cc).parent' from a pydantic location, naming the entry by its id."""
    out = ""
    node: Any = doc
    for raw in loc:
        part = int(raw) if isinstance(raw, str) and raw.isdigit() else raw
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                out += f" ({node['id']})"
        else:
            out += f".{part}" if out else part
            node = node.get(part) if isinstance(node, dict) else None
    return out


def parse_topology(text: str, *, source: str) -> Topology:
    """Parse and check a topology file's text. Raises ConfigError listing every problem.

    Each entry is validated on its own, so one bad entry does not hide the problems of
    the others, and cross-references are checked among the entries that are valid.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [("", f"not valid TOML: {exc}")]) from exc
    problems: list[tuple[str, str]] = [
        (key, f"unknown section; allowed: {', '.join(Topology.model_fields)}")
        for key in doc
        if key not in Topology.model_fields
    ]
    sections: dict[str, Any] = {}
    positions: dict[str, list[int]] = {}
    invalid_ids: set[str] = set()
    sections_of: tuple[tuple[str, type[BaseModel]], ...] = (
        ("channels", ChannelConfig),
        ("orgs", OrgConfig),
        ("groups", GroupConfig),
        ("hubs", HubLinkConfig),
    )
    for key, model in sections_of:
        raw = doc.get(key, [])
        if not isinstance(raw, list):
            problems.append((key, f"must be an array of tables ([[{key}]])"))
            raw = []
        entries = []
        positions[key] = []
        for i, item in enumerate(raw):
            entry = _validate(model, item, f"{key}[{i}]", doc, problems)
            if entry is not None:
                entries.append(entry)
                positions[key].append(i)
            elif isinstance(item, dict) and isinstance(item.get("id"), str):
                invalid_ids.add(item["id"])
        sections[key] = tuple(entries)
    raw_rules = doc.get("rules", {})
    if not isinstance(raw_rules, dict):
        problems.append(("rules", "must be a table ([rules]) of rule id = enforce | warn | off"))
        raw_rules = {}
    rules: dict[str, Mode] = {}
    for key, value in raw_rules.items():
        try:
            rules.update(parse_settings({key: value}, where="rules"))
        except ValueError as exc:
            problems.append((f"rules.{key}", str(exc).removeprefix(f"rules.{key}: ")))
    sections["rules"] = rules
    if "hub" not in doc:
        problems.append(("hub", "required section [hub] is missing"))
    hub = _validate(HubSection, doc.get("hub", {}), "hub", doc, problems)
    if hub is None:
        hub = HubSection(id="hub")  # placeholder so cross-references can still be checked
    topology = Topology(hub=hub, **sections)
    problems.extend(
        problem
        for problem in check_topology(topology, positions)
        if not any(repr(bad) in problem[1] for bad in invalid_ids)
    )
    if problems:
        raise ConfigError(source, problems)
    return topology


def _validate(
    model: type[_M],
    item: object,
    where: str,
    doc: Mapping[str, Any],
    problems: list[tuple[str, str]],
) -> _M | None:
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        for err in exc.errors():
            path = _path((*where.replace("]", "").split("["), *err["loc"]), doc)
            problems.append((path, _friendly(err, model)))
        return None


def _friendly(err: ErrorDetails, model: type[BaseModel]) -> str:
    """pydantic's error as a sentence for an operator."""
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] == "extra_forbidden":
        return f"unknown key; allowed keys: {', '.join(model.model_fields)}"
    message = err["msg"]
    return message.removeprefix("Value error, ")


def check_topology(
    topology: Topology, positions: Mapping[str, Sequence[int]] | None = None
) -> list[tuple[str, str]]:
    """Cross-references a schema cannot check. Returns (key path, problem) pairs.

    ``positions`` maps "channels"/"orgs"/"groups" to each entry's index in the file, when
    only some of the file's entries are being checked.
    """
    problems: list[tuple[str, str]] = []

    def at(section: str, i: int) -> int:
        return positions[section][i] if positions else i

    channels: dict[str, ChannelConfig] = {}
    for i, channel in enumerate(topology.channels):
        if channel.id in channels:
            problems.append(
                (
                    f"channels[{at('channels', i)}] ({channel.id}).id",
                    f"duplicate channel id {channel.id!r}",
                )
            )
        channels[channel.id] = channel
    orgs: dict[str, OrgConfig] = {}
    for i, org in enumerate(topology.orgs):
        if org.id in orgs:
            problems.append(
                (f"orgs[{at('orgs', i)}] ({org.id}).id", f"duplicate organisation id {org.id!r}")
            )
        if org.id == topology.hub.id:
            problems.append(
                (f"orgs[{at('orgs', i)}] ({org.id}).id", "the hub's id cannot name an organisation")
            )
        orgs[org.id] = org
    upstream = topology.upstream
    for i, org in enumerate(topology.orgs):
        where = f"orgs[{at('orgs', i)}] ({org.id})"
        # with an upstream, a parent may come from its directory (jl.gov's cn.gov): the
        # build checks that it does (hubd/provision/federation.py)
        if org.parent is not None and org.parent not in orgs and upstream is None:
            problems.append((f"{where}.parent", f"unknown parent {org.parent!r}"))
        for ch in org.channels:
            if ch not in channels:
                known = ", ".join(channels)
                problems.append(
                    (f"{where}.channels", f"undefined channel {ch!r} (defined: {known})")
                )
        problems.extend(
            (f"{where}.directive_to", f"unknown organisation {target!r}")
            for target in org.directive_to
            if target not in orgs
        )
        ceilings = [channels[ch].ceiling for ch in org.channels if ch in channels]
        if not org.channels:
            problems.append((f"{where}.channels", "provisioned on no channel; it could not talk"))
        elif ceilings and org.clearance > max(ceilings):
            shown = ", ".join(
                f"{ch}: {channels[ch].ceiling}" for ch in org.channels if ch in channels
            )
            problems.append(
                (
                    f"{where}.clearance",
                    (
                        f"clearance {org.clearance} is above the ceiling of every channel it "
                        f"is provisioned on ({shown}); provision a channel that carries "
                        f"{org.clearance.name} or lower the clearance"
                    ),
                )
            )
        cycle = _cycle_from(org.id, orgs)
        if cycle:
            problems.append((f"{where}.parent", f"parent cycle: {' -> '.join(cycle)}"))
        problems.extend(_congress_problems(org, where, orgs))
    for i, group in enumerate(topology.groups):
        problems.extend(
            (f"groups[{at('groups', i)}] ({group.id}).members", f"unknown organisation {member!r}")
            for member in group.members
            if member not in orgs
        )
    problems.extend(_hub_problems(topology, channels, orgs, at))
    return problems


def _hub_problems(
    topology: Topology,
    channels: Mapping[str, ChannelConfig],
    orgs: Mapping[str, OrgConfig],
    at: Callable[[str, int], int],
) -> list[tuple[str, str]]:
    """The neighbour hubs (``[[hubs]]``): what every directory reader would refuse of the
    claims (docs/wire-format.md section 7b), said at the topology's key."""
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    upstreams = 0
    for i, link in enumerate(topology.hubs):
        where = f"hubs[{at('hubs', i)}] ({link.id})"
        if link.id in seen:
            problems.append((f"{where}.id", f"duplicate hub id {link.id!r}"))
        seen.add(link.id)
        if link.id == topology.hub.id:
            problems.append((f"{where}.id", "this hub's own id ([hub] id); give the other hub's"))
        elif link.id in orgs:
            problems.append(
                (f"{where}.id", f"{link.id!r} is also an organisation id; a hub's id is its own")
            )
        if link.role == "upstream":
            upstreams += 1
            if upstreams == 2:
                problems.append(
                    (f"{where}.role", "a second upstream; a hub is a member of one hub at most")
                )
        problems.extend(_link_problems(link, where, channels))
        problems.extend(
            (
                f"{where}.prefixes",
                (
                    f"organisation {org!r} of [[orgs]] lies within prefix {prefix!r}: a member "
                    "hub's organisations are its own (in its topology), not this hub's"
                ),
            )
            for prefix in link.prefixes
            for org in orgs
            if within(org, prefix)
        )
    members = [(i, h) for i, h in enumerate(topology.hubs) if h.role == "member"]
    for i, link in members:
        problems.extend(
            (
                f"hubs[{at('hubs', i)}] ({link.id}).prefixes",
                (
                    f"prefix {prefix!r} overlaps {other.id}'s prefix {theirs!r}: each id is "
                    "served by one hub"
                ),
            )
            for prefix in link.prefixes
            for j, other in members
            if j < i
            for theirs in other.prefixes
            if within(prefix, theirs) or within(theirs, prefix)
        )
    return problems


def _link_problems(
    link: HubLinkConfig, where: str, channels: Mapping[str, ChannelConfig]
) -> list[tuple[str, str]]:
    """One neighbour's own keys: its prefixes by its role, its channels, its directory."""
    problems: list[tuple[str, str]] = []
    if link.role == "upstream" and link.prefixes:
        problems.append(
            (
                f"{where}.prefixes",
                (
                    "an upstream serves everyone this hub and its members do not: it claims no "
                    "prefix; leave prefixes out"
                ),
            )
        )
    if link.role == "upstream" and link.directory is None:
        problems.append(
            (
                f"{where}.directory",
                (
                    "required for an upstream: its signed directory lists everyone outside this "
                    "hub (and the parents of its own organisations); ask its operator for it"
                ),
            )
        )
    if link.role == "member" and not link.prefixes:
        problems.append(
            (
                f"{where}.prefixes",
                'a member serves the ids under its prefixes: give at least one, e.g. ["jl"]',
            )
        )
    if not link.channels:
        problems.append((f"{where}.channels", "the link is on no channel; it could carry nothing"))
    problems.extend(
        (f"{where}.channels", f"undefined channel {ch!r} (defined: {', '.join(channels)})")
        for ch in link.channels
        if ch not in channels
    )
    return problems


def _congress_problems(
    org: OrgConfig, where: str, orgs: Mapping[str, OrgConfig]
) -> list[tuple[str, str]]:
    """A congress (人大及其常委会) stands outside the government tree: no parent, no
    children, and ``congress_of`` names the people's government of its level."""
    problems: list[tuple[str, str]] = []

    def add(key: str, problem: str) -> None:
        problems.append((f"{where}.{key}", problem))

    parent = orgs.get(org.parent) if org.parent is not None else None
    if org.level is not OrgLevel.CONGRESS:
        if parent is not None and parent.level is OrgLevel.CONGRESS:
            add(
                "parent",
                f"{org.parent!r} is a congress, which is in no government's reporting line; "
                "give a government or a department as parent",
            )
        if org.congress_of is not None:
            add(
                "congress_of",
                'only a congress (level = "congress") names the government of its level; '
                'remove congress_of or set level = "congress"',
            )
        return problems
    if org.parent is not None:
        add(
            "parent",
            "a congress is in no government's reporting line; leave parent out "
            "(congress_of links it to the government of its level)",
        )
    if org.congress_of is None:
        add(
            "congress_of",
            "a congress names the people's government of its level, which submits 议案 to "
            'it, e.g. congress_of = "jl.gov"',
        )
    elif org.congress_of not in orgs:
        add("congress_of", f"unknown organisation {org.congress_of!r}")
    elif not orgs[org.congress_of].level.is_government:
        level = orgs[org.congress_of].level
        add(
            "congress_of",
            f"{org.congress_of!r} is a {level.value} ({level.zh}), not a people's government "
            "(national, province, prefecture or county)",
        )
    return problems


def _cycle_from(start: str, orgs: Mapping[str, OrgConfig]) -> list[str]:
    seen = [start]
    node = orgs[start].parent
    while node is not None and node in orgs:
        if node == start:
            return [*seen, node]
        if node in seen:
            return []  # a cycle further up; reported for the orgs on it
        seen.append(node)
        node = orgs[node].parent
    return []


def standard_groups(topology: Topology) -> list[GroupEntry]:
    """Address groups derived from the tree, then the topology's own groups."""
    groups: list[GroupEntry] = []

    def add(gid: str, zh: str, en: str, members: Sequence[str]) -> None:
        if members:
            groups.append(GroupEntry(id=gid, name_zh=zh, name_en=en, members=tuple(members)))

    by_level = {level: [o.id for o in topology.orgs if o.level is level] for level in OrgLevel}
    add(
        "prefectures",
        "各市（州）人民政府",
        "all prefecture governments",
        by_level[OrgLevel.PREFECTURE],
    )
    add("counties", "各县（市、区）人民政府", "all county governments", by_level[OrgLevel.COUNTY])
    add(
        "departments", "省政府各厅委办", "all provincial departments", by_level[OrgLevel.DEPARTMENT]
    )
    for pref in topology.orgs:
        if pref.level is OrgLevel.PREFECTURE:
            counties = [
                o.id for o in topology.orgs if o.parent == pref.id and o.level is OrgLevel.COUNTY
            ]
            add(
                f"counties.{pref.id}",
                f"{pref.name_zh}所辖各县（市、区）",
                f"the counties of {pref.name_en}",
                counties,
            )
    for ch in topology.channels:
        add(
            f"channel.{ch.id}",
            f"{ch.name}全体成员",
            f"everyone on channel {ch.id}",
            [o.id for o in topology.orgs if ch.id in o.channels],
        )
    taken = {g.id for g in groups}
    for g in topology.groups:
        if g.id in taken:
            raise ConfigError("topology", [(f"groups ({g.id})", "clashes with a standard group")])
        groups.append(GroupEntry(id=g.id, name_zh=g.name_zh, name_en=g.name_en, members=g.members))
    return groups


@dataclass(frozen=True, slots=True)
class DirectoryPlan:
    """Everything :func:`build_directory` needs besides the topology."""

    version: int
    issued_at: int
    expires_at: int
    hub_keys: Sequence[KeyEntry]
    revoked: Sequence[str] = ()
    # kid -> (not_before, not_after) where the window is not the key file's own: the
    # windows carried over and rotated by schemas.rotation.plan_key_windows
    windows: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # Federation (hubd/provision/federation.py): the organisations reached through a
    # neighbour hub, listed after the topology's own, and the other hubs.
    outside: Sequence[OrgEntry] = ()
    hubs: Sequence[HubEntry] = ()


def _key_entry(kid: str, public: bytes, keys: PublicKeys, plan: DirectoryPlan) -> KeyEntry:
    not_before, not_after = plan.windows.get(kid, (keys.not_before, keys.not_after))
    return KeyEntry(kid=kid, public=public, not_before=not_before, not_after=not_after)


def build_directory(
    topology: Topology,
    public_keys: Mapping[str, Sequence[PublicKeys]],
    plan: DirectoryPlan,
) -> Directory:
    """The directory for ``topology`` with each organisation's keys (several during rotation).

    An organisation without a key file yet is listed without keys, awaiting them
    (:meth:`Directory.awaiting_keys`): the tree and the groups stay whole (it is a member by
    the topology), documents to it are refused with a sentence saying so, and a group send
    goes to the members with keys and tells the sender who was left out, until a later
    directory has them.

    The organisations and hubs a federation brings (``plan.outside``, ``plan.hubs``) are
    listed as they come; the address groups stay those of the topology's own organisations.
    """
    orgs = []
    for org in topology.orgs:
        found = public_keys.get(org.id, ())
        sets = list({k.sign_kid: k for k in found}.values())  # a file found twice
        orgs.append(
            OrgEntry(
                id=org.id,
                name_zh=org.name_zh,
                name_en=org.name_en,
                level=org.level,
                parent=org.parent,
                code=org.code,
                clearance=org.clearance,
                channels=org.channels,
                sign_keys=tuple(_key_entry(k.sign_kid, k.sign_public, k, plan) for k in sets),
                enc_keys=tuple(_key_entry(k.enc_kid, k.enc_public, k, plan) for k in sets),
                directive_to=org.directive_to,
                congress_of=org.congress_of,
            )
        )
    directory = Directory(
        v=1,
        hub_id=topology.hub.id,
        version=plan.version,
        issued_at=plan.issued_at,
        expires_at=plan.expires_at,
        hub_keys=tuple(plan.hub_keys),
        channels=tuple(
            ChannelEntry(id=c.id, name=c.name, ceiling=c.ceiling) for c in topology.channels
        ),
        orgs=(*orgs, *plan.outside),
        revoked=tuple(plan.revoked),
        groups=tuple(
            GroupEntry(
                id=g.id,
                name_zh=g.name_zh,
                name_en=g.name_en,
                members=g.members,
            )
            for g in standard_groups(topology)
        ),
        rules={rule: mode.value for rule, mode in topology.rules.items()},
        hubs=tuple(plan.hubs),
    )
    directory.check_consistent()
    return directory
