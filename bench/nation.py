"""A national topology of N organisations and its directory, built as ``hubctl directory build``
builds one (schemas.topology.build_directory, then sign_directory), only generated.

The tree: the national government, 31 provinces, ~330 prefectures, ~2,800 counties (fewer,
in proportion, when N is small), and departments under every government to reach N. One
channel (govnet, INTERNAL) for everyone. Key pairs are generated only for the organisations
that will sign or open something (the simulated spokes and the one whose key rotates);
every other organisation gets random 32-byte public keys: the directory never checks that
a key is a curve point, every key id must still be unique (check_consistent), and
generating 100,000 key pairs would cost about 10 s of the run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from schemas.clock import DAY_MS
from schemas.directory import Directory, KeyEntry, OrgLevel, sign_directory
from schemas.errors import UsageError
from schemas.keys import EncryptionKey, KeyKind, PublicKeys, SigningKey, key_id
from schemas.labels import Classification
from schemas.topology import (
    ChannelConfig,
    DirectoryPlan,
    HubSection,
    OrgConfig,
    Topology,
    build_directory,
)

CHANNEL = "govnet"
FULL_TREE = (31, 330, 2800)  # provinces, prefectures, counties of the country


def shape(orgs: int) -> tuple[int, int, int, int]:
    """(provinces, prefectures, counties, departments) for ``orgs`` organisations in all."""
    governments = 1 + sum(FULL_TREE)
    if orgs < 4:
        raise ValueError(f"--orgs must be at least 4 (one of each level), not {orgs}")
    if orgs >= 2 * governments:
        counts = FULL_TREE
    else:  # a small nation: about half governments, half departments
        scale = orgs / (2 * governments)
        counts = (
            max(1, round(FULL_TREE[0] * scale)),
            max(1, round(FULL_TREE[1] * scale)),
            max(1, round(FULL_TREE[2] * scale)),
        )
    return (*counts, orgs - 1 - sum(counts))


def _org(
    oid: str, zh: str, en: str, level: OrgLevel, parent: str | None, code: str | None
) -> OrgConfig:
    return OrgConfig(
        id=oid,
        name_zh=zh,
        name_en=en,
        level=level,
        parent=parent,
        code=code,
        clearance=Classification.INTERNAL,
        channels=(CHANNEL,),
    )


def national_topology(orgs: int) -> Topology:
    """The tree of ``orgs`` organisations (ids like ``cn.p07.c03.x05.d12``)."""
    provinces, prefectures, counties, departments = shape(orgs)
    out = [_org("cn", "国务院", "State Council", OrgLevel.NATIONAL, None, None)]
    levels: list[list[OrgConfig]] = [[out[0]]]
    plan = (
        (provinces, OrgLevel.PROVINCE, "p", "省", "Province"),
        (prefectures, OrgLevel.PREFECTURE, "c", "市", "Prefecture"),
        (counties, OrgLevel.COUNTY, "x", "县", "County"),
    )
    place = {"cn": ("", "")}  # id -> (Chinese place name, English number) of a government
    for depth, (count, level, letter, zh, en) in enumerate(plan):
        parents, row = levels[-1], []
        for i in range(count):
            parent = parents[i % len(parents)]
            n = i // len(parents) + 1
            oid = f"{parent.id}.{letter}{n:02d}"
            zh_place = f"{place[parent.id][0]}第{n}{zh}"
            en_number = f"{place[parent.id][1]}-{n:02d}".lstrip("-")
            place[oid] = (zh_place, en_number)
            code = f"{(i * 7919 + depth) % 900000 + 100000}"  # six digits, like 220100
            row.append(
                _org(
                    oid,
                    f"{zh_place}人民政府",
                    f"{en} {en_number} Government",
                    level,
                    parent.id,
                    code,
                )
            )
        levels.append(row)
        out.extend(row)
    governments = [o for row in levels for o in row]
    for i in range(departments):
        parent = governments[i % len(governments)]
        n = i // len(governments) + 1
        zh_place, en_number = place[parent.id]
        out.append(
            _org(
                f"{parent.id}.d{n:02d}",
                f"{zh_place or '国务院'}第{n}局",
                f"Bureau {n} of {parent.name_en.removesuffix(' Government')}",
                OrgLevel.DEPARTMENT,
                parent.id,
                None,
            )
        )
    return Topology(
        hub=HubSection(id="cn.hub"),
        channels=(
            ChannelConfig(
                id=CHANNEL, name="政务专网 government network", ceiling=Classification.INTERNAL
            ),
        ),
        orgs=tuple(out),
    )


@dataclass
class Nation:
    """A generated exchange: its topology, the key pairs that will be used, its directory."""

    topology: Topology
    hub_key: SigningKey
    keys: dict[str, tuple[SigningKey, EncryptionKey]]  # only the organisations that act
    spokes: list[str]  # the organisations whose spokes the bench simulates
    directory: Directory
    seconds: dict[str, float] = field(default_factory=dict)  # what generation cost, by step

    def sign(self, directory: Directory | None = None) -> bytes:
        """The signed frame (UsageError above the 8 MiB limit, as hubctl refuses it)."""
        return sign_directory(directory or self.directory, self.hub_key)

    def rotated(self, org: str, *, now: int) -> Directory:
        """The next directory version, in which ``org`` signs with a new key (its old one
        revoked), as after 'spoke keygen --rotate' and 'hubctl directory build'."""
        new = SigningKey.generate()
        self.keys[org] = (new, self.keys[org][1])
        entry = self.directory.org(org)
        assert entry is not None
        old = entry.sign_keys[0]
        fresh = KeyEntry(
            kid=new.kid, public=new.public, not_before=now - 60_000, not_after=old.not_after
        )
        orgs = tuple(
            o.model_copy(update={"sign_keys": (fresh,)}) if o.id == org else o
            for o in self.directory.orgs
        )
        self.directory = self.directory.model_copy(
            update={
                "version": self.directory.version + 1,
                "issued_at": now - 1_000,
                "orgs": orgs,
                "revoked": (*self.directory.revoked, old.kid),
            }
        )
        return self.directory


def make_nation(orgs: int, spokes: int, *, now: int) -> Nation:
    """A nation of ``orgs`` organisations, ``spokes`` of them (spread over every level) with
    key pairs; random public keys for the rest."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    topology = national_topology(orgs)
    seconds["topology"] = time.perf_counter() - t0
    chosen = spread([o.id for o in topology.orgs], spokes)
    t0 = time.perf_counter()
    keys = {o: (SigningKey.generate(), EncryptionKey.generate()) for o in chosen}
    window = (now - DAY_MS, now + 30 * DAY_MS)
    public = {
        o.id: [
            PublicKeys(
                o.id,
                keys[o.id][0].public if o.id in keys else os.urandom(32),
                keys[o.id][1].public if o.id in keys else os.urandom(32),
                *window,
            )
        ]
        for o in topology.orgs
    }
    seconds["keys"] = time.perf_counter() - t0
    hub_key = SigningKey.generate()
    t0 = time.perf_counter()
    plan = DirectoryPlan(
        version=1,
        issued_at=now - 60_000,
        expires_at=now + DAY_MS,
        hub_keys=(
            KeyEntry(
                kid=key_id(KeyKind.SIGN, hub_key.public),
                public=hub_key.public,
                not_before=window[0],
                not_after=window[1],
            ),
        ),
    )
    directory = build_directory(topology, public, plan)
    seconds["build"] = time.perf_counter() - t0
    return Nation(topology, hub_key, keys, chosen, directory, seconds)


def spread(ids: list[str], count: int) -> list[str]:
    """``count`` of ``ids`` spread evenly over the list (so over every level of the tree)."""
    if count > len(ids):
        raise ValueError(f"--spokes {count} is more than --orgs {len(ids)}; lower it")
    step = len(ids) / count
    return [ids[int(i * step)] for i in range(count)]


def try_sign(nation: Nation) -> tuple[bytes | None, str, float]:
    """(frame, refusal, seconds): the frame, or None and hubctl's refusal sentence."""
    t0 = time.perf_counter()
    try:
        frame = nation.sign()
    except UsageError as exc:
        return None, str(exc), time.perf_counter() - t0
    return frame, "", time.perf_counter() - t0
