"""The replicas part of ``hubctl status``: which hub replicas share the store, which
organisations each owns, and how old their leases are (issue 15; docs/architecture.md,
"Replicas and leases").

Read with :func:`hubd.store.leases.read_ownership` on hubctl's own read-only connection,
every time by the database's clock. A lone hub (SQLite, or PostgreSQL without
``[replicas] enabled``) has nothing to show: :func:`replica_status` answers None, and the
status is what it was before replicas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, inspect, select

from hubd.core.leases import BUCKETS, ChannelReach, bucket_of, outreached
from hubd.store import tables as t
from hubd.store.leases import FOREVER, LeaseRow, Ownership, ReplicaRow, read_ownership
from schemas.clock import duration_text
from schemas.directory import Directory
from schemas.display import table

SHOWN_ORGS = 5  # organisations named in the warning's text (--json lists them all)


# ------------------------------------------------------------------ the question


@dataclass(frozen=True, slots=True)
class StoredLeases:
    """The lease tables as read: who owns what, and since when each unowned bucket has
    been unowned (ms by the database's clock; None: never held since the rows were made)."""

    ownership: Ownership
    unowned_for_ms: Mapping[int, int | None]


def read_leases(conn: Connection) -> StoredLeases | None:
    """The lease tables on any connection (``Reader.sync``, ``Store.read_sync``); None
    for a store made before hubd had replicas (migration 0007), which has none."""
    if not inspect(conn).has_table(t.hub_leases.name):
        return None
    own = read_ownership(conn)
    unowned = set(own.unowned)
    lt = t.hub_leases
    since: dict[int, int | None] = {}
    for bucket, token, expires_at in conn.execute(select(lt.c.bucket, lt.c.token, lt.c.expires_at)):
        if bucket in unowned:  # released (expires_at = then) or run out: unowned since then
            since[int(bucket)] = max(own.now - int(expires_at), 0) if token else None
    return StoredLeases(own, since)


def replica_status(
    stored: StoredLeases | None,
    *,
    directory: Directory | None,
    enabled: bool,
    lease_ms: int,
) -> ReplicaStatus | None:
    """What status shows of the replicas, or None for a lone hub: no lease rows, the one
    holder of a SQLite store (leases that never expire), or a store whose replicas have
    all gone while this configuration runs no replicas (their rows mean nothing to it).
    ``lease_ms``: the configuration's lease, used when no row shows the replicas' own."""
    if stored is None:
        return None
    own = stored.ownership
    held = [x for x in own.leases if x.holder is not None]
    if not own.leases and not own.replicas:
        return None
    if held and {x.holder for x in held} == {held[0].holder} and _forever(held):
        return None
    if not enabled and not held and not any(r.live for r in own.replicas):
        return None
    spans = [  # a lease's length as the replicas run: expiry - renewal, expiry - heartbeat
        *(length for x in held if (length := _lease_of(x)) is not None),
        *(
            r.expires_at - r.seen_at
            for r in own.replicas
            if r.expires_at - r.seen_at < FOREVER // 2
        ),
    ]
    buckets = len(own.leases) or BUCKETS  # rows are seeded before a replica joins
    orgs: dict[str | None, list[str]] = {}
    holder_of = {x.bucket: x.holder for x in own.leases}
    for org in () if directory is None else directory.orgs:
        orgs.setdefault(holder_of.get(bucket_of(org.id, buckets)), []).append(org.id)
    return ReplicaStatus(
        ownership=own,
        lease_ms=max(spans) if spans else lease_ms,
        orgs={holder: tuple(ids) for holder, ids in orgs.items()},
        unowned_for_ms=stored.unowned_for_ms,
        directory_known=directory is not None,
    )


def _forever(held: Sequence[LeaseRow]) -> bool:
    return all(x.expires_in_ms is None for x in held)


def _lease_of(x: LeaseRow) -> int | None:
    """How long ``x`` lasts from its renewal; None for a lease without end."""
    if x.renewed_ago_ms is None or x.expires_in_ms is None:
        return None
    return x.renewed_ago_ms + x.expires_in_ms


# ------------------------------------------------------------------ the answer


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """The replicas, who owns which buckets and organisations, and the leases' ages."""

    ownership: Ownership
    lease_ms: int  # as the replicas run (from their rows), else the configuration's
    orgs: Mapping[str | None, tuple[str, ...]]  # holder (None: unowned) -> the directory's orgs
    unowned_for_ms: Mapping[int, int | None]  # unowned bucket -> for how long (None: never held)
    directory_known: bool = True

    @property
    def held(self) -> tuple[LeaseRow, ...]:
        return tuple(x for x in self.ownership.leases if x.holder is not None)

    @property
    def stranded(self) -> tuple[int, ...]:
        """Buckets unowned for longer than a lease: no replica is taking them over."""
        return tuple(
            b
            for b in self.ownership.unowned
            if (ago := self.unowned_for_ms.get(b)) is None or ago > self.lease_ms
        )

    @property
    def stranded_orgs(self) -> tuple[str, ...]:
        buckets = len(self.ownership.leases) or BUCKETS
        stranded = set(self.stranded)
        return tuple(o for o in self.orgs.get(None, ()) if bucket_of(o, buckets) in stranded)

    @property
    def oldest_renewal_ms(self) -> int | None:
        ages = [x.renewed_ago_ms for x in self.held if x.renewed_ago_ms is not None]
        return max(ages) if ages else None

    @property
    def soonest_expiry_ms(self) -> int | None:
        left = [x.expires_in_ms for x in self.held if x.expires_in_ms is not None]
        return min(left) if left else None

    def warning(self) -> str | None:
        """Bilingual, for an operator to act on: buckets nobody is taking over."""
        stranded = self.stranded
        if not stranded:
            return None
        orgs = self.stranded_orgs
        named = ", ".join(orgs[:SHOWN_ORGS]) + (" ..." if len(orgs) > SHOWN_ORGS else "")
        zh_orgs = f"其中 {len(orgs)} 个机构（{named}）" if orgs else "其中的机构"
        en_orgs = f"the {len(orgs)} organisation(s) in them ({named})" if orgs else "them"
        live = sum(r.live for r in self.ownership.replicas)
        lease = span(self.lease_ms)
        return (
            f"{len(stranded)} 个桶无人持有已超过一个租期（{lease}），{zh_orgs}发来的文件无人接收；"
            f"请再启动一个副本，或检查上面列出的副本 / {len(stranded)} bucket(s) have had no "
            f"owner for longer than a lease ({lease}): nothing sent by {en_orgs} is taken in "
            f"({live} replica(s) live); start another replica, or check the replicas listed above"
        )

    def reach_warning(self) -> str | None:
        """Bilingual: live replicas that miss a channel's broker another reaches, so hand
        their organisations to the others (hubd.core.leases.sharing), and what to check."""
        live = [r for r in self.ownership.replicas if r.live]
        reach = {r.id: r.reach for r in live if r.reach is not None}
        short = [(r.id, m) for r in live if (m := outreached(r.id, reach.keys(), reach))]
        if not short:
            return None
        zh = "；".join(f"副本 {rid} 连不上频道 {', '.join(sorted(m))} 的代理" for rid, m in short)
        en = "; ".join(
            f"replica {rid} does not reach the broker of channel(s) {', '.join(sorted(m))}"
            for rid, m in short
        )
        return (
            f"{zh}，其他副本能连上，因此它（[replicas] reach_hold 之后）把所属机构交给其他副本，"
            f"直到连接恢复；请检查该副本所在主机到这些代理的网络和证书 / {en}, which other "
            "replicas reach, so it hands its organisations to them (after [replicas] "
            "reach_hold) until it does again; check the network and certificates from its "
            "host to those brokers"
        )

    def as_json(self) -> dict[str, Any]:
        own = self.ownership
        unowned = own.unowned
        return {
            "at": own.now,
            "lease_ms": self.lease_ms,
            "buckets": len(own.leases),
            "live": sum(r.live for r in own.replicas),
            "replicas": [self._replica_json(r) for r in own.replicas],
            "unowned": {
                "buckets": list(unowned),
                "organisations": list(self.orgs.get(None, ())) if self.directory_known else None,
                "stranded_buckets": list(self.stranded),
                "stranded_organisations": list(self.stranded_orgs),
            },
            "oldest_renewal_ms": self.oldest_renewal_ms,
            "soonest_expiry_ms": self.soonest_expiry_ms,
            "leases": [
                {
                    "bucket": x.bucket,
                    "holder": x.holder,
                    "token": x.token,
                    "held_for_ms": x.held_for_ms,
                    "renewed_ago_ms": x.renewed_ago_ms,
                    "expires_in_ms": x.expires_in_ms,
                    "unowned_for_ms": self.unowned_for_ms.get(x.bucket),
                }
                for x in own.leases
            ],
            "warning": self.warning(),
            "reach_warning": self.reach_warning(),
        }

    def _replica_json(self, r: ReplicaRow) -> dict[str, Any]:
        return {
            "id": r.id,
            "host": r.host,
            "pid": r.pid,
            "live": r.live,
            "started_at": r.started_at,
            "seen_at": r.seen_at,
            "seen_ago_ms": self.ownership.now - r.seen_at,
            "expires_at": r.expires_at,
            "buckets": r.buckets,
            "reach": None
            if r.reach is None
            else {"configured": sorted(r.reach.configured), "reached": sorted(r.reach.reached)},
            "organisations": list(self.orgs.get(r.id, ())) if self.directory_known else None,
        }


# ------------------------------------------------------------------ as text


def span(ms: int) -> str:
    """A lease-sized span: 412 ms, 2.9s, 4m12s."""
    ms = max(ms, 0)
    if ms < 1_000:
        return f"{ms} ms"
    return f"{ms / 1000:.1f}s" if ms < 60_000 else duration_text(ms)


def reach_text(reach: ChannelReach | None) -> str:
    """A replica's channels as status shows them: those it reaches, then those it misses."""
    if reach is None:
        return "-"
    shown = ", ".join(sorted(reach.reached)) or "(none)"
    if reach.missing:
        shown += f" (not {', '.join(sorted(reach.missing))})"
    return shown


def render_replicas(r: ReplicaStatus | None) -> list[str]:
    """The lines of status's replicas part; none for a lone hub."""
    if r is None:
        return []
    own = r.ownership
    live = sum(x.live for x in own.replicas)
    gone = len(own.replicas) - live
    unowned = len(own.unowned)
    ages = []
    if r.oldest_renewal_ms is not None:
        ages.append(f"oldest renewal {span(r.oldest_renewal_ms)} ago")
    if r.soonest_expiry_ms is not None:
        ages.append(f"soonest expiry in {span(r.soonest_expiry_ms)}")
    head = (
        f"replicas: {live} live"
        + (f", {gone} not live" if gone else "")
        + f"; {len(own.leases)} buckets, {len(own.leases) - unowned} held, {unowned} unowned"
        + f" (lease {span(r.lease_ms)}, by the database's clock)"
        + (f"; {', '.join(ages)}" if ages else "")
    )

    def orgs(holder: str | None) -> str:
        return str(len(r.orgs.get(holder, ()))) if r.directory_known else "-"

    rows = [
        (
            x.id,
            x.host,
            str(x.pid),
            "live" if x.live else "not live",
            str(x.buckets),
            orgs(x.id),
            f"{span(own.now - x.seen_at)} ago",
            reach_text(x.reach),
        )
        for x in own.replicas
    ]
    if unowned:
        rows.append(("(unowned)", "-", "-", "-", str(unowned), orgs(None), "-", "-"))
    header = (
        "replica",
        "host",
        "pid",
        "state",
        "buckets",
        "organisations",
        "last seen",
        "channels reached",
    )
    lines = ["", head, table(header, rows)]
    lines += [f"WARNING {w}" for w in (r.warning(), r.reach_warning()) if w is not None]
    return lines
