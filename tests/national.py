"""A directory at national scale, built in-process from the Jilin one (no keys generated).

Each of the nine prefectures gets a hundred counties and the counties towns below them,
until the directory lists ``orgs`` organisations; every new one is a copy of a county
(its keys included), so building 10,000 takes well under a second. For the status page's
and /metrics' scale tests and bench/statuspage.py, never for signing.
"""

from __future__ import annotations

from schemas.directory import Directory, OrgEntry, OrgLevel

COUNTIES_PER_PREFECTURE = 100


def national_directory(base: Directory, orgs: int) -> Directory:
    """``base`` with counties and towns added below its prefectures, ``orgs`` in all."""
    prefectures = [o for o in base.orgs if o.level is OrgLevel.PREFECTURE]
    county = next(o for o in base.orgs if o.level is OrgLevel.COUNTY)
    added: list[OrgEntry] = []
    room = orgs - len(base.orgs)
    counties = [f"{p.id}.x{j:03d}" for j in range(COUNTIES_PER_PREFECTURE) for p in prefectures][
        : max(room, 0)
    ]
    parents = {c: c.rpartition(".")[0] for c in counties}
    towns = 0
    while len(counties) + towns < room:
        below = counties[towns % len(counties)]
        parents[f"{below}.t{towns // len(counties):03d}"] = below
        towns += 1
    for org_id, parent in parents.items():
        added.append(
            county.model_copy(
                update={"id": org_id, "parent": parent, "name_en": org_id, "code": None}
            )
        )
    return Directory.model_construct(**{**dict(base), "orgs": (*base.orgs, *added)})
