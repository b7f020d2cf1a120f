"""A directory at national scale, built in-process from the Jilin one (no keys generated).

Each of the nine prefectures gets a hundred counties and the counties towns below them,
until the directory lists ``orgs`` organisations; every new one is a copy of a county
with public keys of its own made up from its id (no private key exists for them: nobody
can send as them or open what is sent to them), so building 10,000 takes about a second
and the directory is consistent enough to sign and serve. For the status page's and
/metrics' scale tests and bench/statuspage.py.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hubd.core.states import DeliveryState
from hubd.engine.presencebook import PresenceBook
from schemas.directory import Directory, KeyEntry, OrgEntry, OrgLevel
from schemas.keys import KeyKind, key_id
from schemas.labels import Classification, Precedence
from tests.world import NOW

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
        keys = {kind: _made_up(county.sign_keys[0], kind, org_id) for kind in KeyKind}
        added.append(
            county.model_copy(
                update={
                    "id": org_id,
                    "parent": parent,
                    "name_en": org_id,
                    "code": None,
                    "sign_keys": (keys[KeyKind.SIGN],),
                    "enc_keys": (keys[KeyKind.ENCRYPT],),
                }
            )
        )
    return Directory.model_construct(**{**dict(base), "orgs": (*base.orgs, *added)})


def _made_up(like: KeyEntry, kind: KeyKind, org_id: str) -> KeyEntry:
    """A public key nobody holds the private half of, with the window of ``like``."""
    public = hashlib.sha256(f"{kind.value} {org_id}".encode()).digest()
    return like.model_copy(update={"kid": key_id(kind, public), "public": public})


@dataclass
class PageHub:
    """The parts of a running hub the status page and /metrics read; no store, no broker
    (tests/ops/test_status_scale.py, bench/statuspage.py)."""

    current_directory: Directory | None
    dispatcher: Any  # hubd.engine.dispatch.Dispatcher, or a test's stand-in
    metrics: Any = None
    ingest: None = None
    store: None = None
    draining: bool = False
    disk: None = None
    checkpoints: None = None
    ledger_desk: None = None
    replicas: None = None
    deadlines: None = None

    def broker_links(self) -> list[Any]:
        return []

    def uplink_links(self) -> list[Any]:
        return []


@dataclass(frozen=True)
class Waiting:
    """A delivery still awaited, as the status page reads it (the dispatcher's Job)."""

    msg_id: bytes
    recipient: str
    channel: str
    precedence: Precedence
    state: DeliveryState
    accepted_at: int


@dataclass
class PageDispatcher:
    """What the page and /metrics read of the dispatcher: presence and the waiting jobs."""

    spokes: PresenceBook
    jobs: list[Waiting] = field(default_factory=list)
    retries: int = 0
    expired: int = 0
    dead: int = 0

    def pending(self) -> list[Waiting]:
        return list(self.jobs)

    def pending_by_label(self) -> Counter[tuple[Precedence, Classification]]:
        return Counter((job.precedence, Classification.INTERNAL) for job in self.jobs)


class Clock:
    """A hand-moved clock (milliseconds), starting at the tests' NOW."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now
