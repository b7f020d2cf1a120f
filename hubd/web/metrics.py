"""What the hub tells Prometheus (``/metrics``) and a readiness probe (``/healthz``).

Everything but one histogram is read at scrape time from the live hub: the ingest's and
the dispatcher's counters, the deliveries held in memory, presence, the directory. The
message path pays for nothing but counters it keeps anyway and one histogram observation
per DELIVERED. The metrics live in a registry of their own, never prometheus_client's
global one, so nothing else in the process (or a second hub in a test) can leak into it.

Labels come only from closed sets (outcomes, precedences, classifications, presence
states) and from the channels and organisation ids of the verified directory: never a
title, never a value a peer chose (a presence message for an organisation that is not in
the directory adds no series). The series per organisation (``govxchg_spoke_up``,
``govxchg_spoke_presence_known``) are there only while ``[metrics] per_organisation``
says so ("auto": below :data:`PER_ORG_AUTO` organisations): with a national directory
they would be tens of thousands per scrape, and the aggregates per channel say what an
alert needs. docs/operations.md, "Metrics and health", lists every metric.
"""

from __future__ import annotations

import importlib.metadata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hubd.engine.checkpoints import Checkpointer
from hubd.engine.deadlines import DeadlineDesk
from hubd.engine.diskwatch import DiskWatch
from hubd.engine.dispatch import Dispatcher
from hubd.engine.intake import Ingest
from hubd.engine.ledgerdesk import LedgerDesk
from hubd.engine.replicas import Replicas
from hubd.store.db import Store
from runtime.link import Link
from schemas.directory import Directory
from schemas.labels import Classification, Precedence

# Accepted -> DELIVERED: a spoke on the same LAN answers in milliseconds; one that was
# offline for a while, or a large document, in minutes. Beyond 5 min is +Inf.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
OUTCOMES = ("accepted", "rejected", "quarantined")  # the keys of Ingest.counts
PRESENCE = ("online", "offline", "unseen", "unknown")  # PresenceBook.state's words
PER_ORG_AUTO = 1000  # "auto": series per organisation below this many organisations
PerOrganisation = Literal["auto"] | bool


def build_version() -> str:
    try:
        return importlib.metadata.version("govxchg")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


class HubView(Protocol):
    """What the metrics and the readiness check read from the running hub."""

    @property
    def current_directory(self) -> Directory | None: ...

    @property
    def ingest(self) -> Ingest | None: ...

    @property
    def dispatcher(self) -> Dispatcher | None: ...

    @property
    def store(self) -> Store | None: ...

    @property
    def draining(self) -> bool: ...

    @property
    def disk(self) -> DiskWatch | None: ...

    @property
    def checkpoints(self) -> Checkpointer | None: ...

    @property
    def ledger_desk(self) -> LedgerDesk | None: ...

    @property
    def replicas(self) -> Replicas | None: ...

    @property
    def deadlines(self) -> DeadlineDesk | None: ...

    def broker_links(self) -> list[Link]: ...

    def uplink_links(self) -> list[Link]: ...


class HubCollector(Collector):
    """Builds every metric but the latency histogram from the hub's state, per scrape."""

    def __init__(self, view: HubView, *, per_organisation: PerOrganisation = "auto") -> None:
        self._view = view
        self._version = build_version()
        self._per_organisation = per_organisation

    def per_organisation(self, directory: Directory) -> bool:
        """Whether this scrape carries the series per organisation."""
        if self._per_organisation == "auto":
            return len(directory.orgs) < PER_ORG_AUTO
        return self._per_organisation

    def collect(self) -> Iterator[Metric]:
        yield from self._messages()
        yield from self._deliveries()
        yield from self._spokes()
        yield from self._directory()
        yield from self._disk()
        yield from self._ledger()
        yield from self._replicas()
        yield from self._deadlines()

    def _deadlines(self) -> Iterator[Metric]:
        desk = self._view.deadlines
        overdue = GaugeMetricFamily(
            "govxchg_overdue",
            "Recipients past a deadline of a document's terms and not meeting it, by deadline "
            "(sign_by 签收, accept_by 受理, done_by 办结), as of the deadline desk's last round; "
            "'hubctl overdue' lists them.",
            labels=["deadline"],
        )
        for kind, count in ({} if desk is None else desk.overdue).items():
            overdue.add_metric([kind.value], count)
        yield overdue
        yield GaugeMetricFamily(
            "govxchg_emergency_unacknowledged",
            "Recipients of 应急 notices at 特提 past their sign_by and not signed for "
            "(emergency.unacknowledged in the log); drills included.",
            value=0 if desk is None else desk.unacknowledged,
        )
        yield CounterMetricFamily(
            "govxchg_reminders",
            "Reminders (催办) sent to recipients since the hub started.",
            value=0 if desk is None else desk.reminded,
        )

    def _replicas(self) -> Iterator[Metric]:
        """Only on a replica ([replicas] enabled): a lone hub's scrape is unchanged."""
        replicas, ingest = self._view.replicas, self._view.ingest
        if replicas is None:
            return
        yield GaugeMetricFamily(
            "govxchg_replica_buckets",
            "Lease buckets this replica holds now (of 256): it takes in what their "
            "organisations send and delivers to them.",
            value=len(replicas.keeper.held),
        )
        yield GaugeMetricFamily(
            "govxchg_replica_leading",
            "1 while this replica holds bucket 0: it signs the ledger's checkpoints and purges.",
            value=1 if replicas.leading() else 0,
        )
        yield CounterMetricFamily(
            "govxchg_replica_left_to_owner",
            "Messages on up topics this replica read and left to the replica that owns "
            "their sender.",
            value=0 if ingest is None else ingest.not_ours,
        )
        yield CounterMetricFamily(
            "govxchg_replica_handed_over",
            "Deliveries this replica loaded from the store because another replica accepted "
            "the message, or because it gained the recipient's bucket.",
            value=replicas.handed_over,
        )

    def _ledger(self) -> Iterator[Metric]:
        store, checkpoints, desk = self._view.store, self._view.checkpoints, self._view.ledger_desk
        if store is not None and not store.closed:
            yield GaugeMetricFamily(
                "govxchg_ledger_entries",
                "Entries in the audit ledger (the size of its Merkle tree), committed.",
                value=store.ledger[0],
            )
        latest = None if checkpoints is None else checkpoints.latest
        if latest is not None:
            yield GaugeMetricFamily(
                "govxchg_ledger_checkpoint_size",
                "Entries covered by the latest signed ledger checkpoint.",
                value=latest.size,
            )
            yield GaugeMetricFamily(
                "govxchg_ledger_checkpoint_timestamp_seconds",
                "When the latest ledger checkpoint was signed (Unix time).",
                value=latest.at / 1000,
            )
        yield CounterMetricFamily(
            "govxchg_ledger_cosignatures",
            "Witnesses' countersignatures of checkpoints stored since the hub started.",
            value=0 if desk is None else desk.cosignatures,
        )

    def _disk(self) -> Iterator[Metric]:
        disk = self._view.disk
        free = GaugeMetricFamily(
            "govxchg_disk_free_bytes",
            "Free bytes (for the hub's user) of the file systems holding the store and the "
            "spool, as last read ([disk] check_every).",
            labels=["path"],
        )
        for space in [] if disk is None else disk.spaces:
            free.add_metric([str(space.path)], space.free)
        yield free
        yield GaugeMetricFamily(
            "govxchg_intake_open",
            "1 while the hub takes new messages; 0 below the disk watermark ([disk] min_free, "
            "min_free_percent), when new envelopes are REJECTED as retriable (hub.disk_low).",
            value=0 if disk is not None and disk.low is not None else 1,
        )

    def _messages(self) -> Iterator[Metric]:
        ingest = self._view.ingest
        counts = ingest.counts if ingest is not None else {}
        messages = CounterMetricFamily(
            "govxchg_messages",
            "Envelopes from spokes by outcome: accepted (stored, ACCEPTED sent), rejected "
            "(REJECTED sent, nothing stored), quarantined (above its channel's ceiling).",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            messages.add_metric([outcome], counts.get(outcome, 0))
        yield messages
        yield CounterMetricFamily(
            "govxchg_quarantines",
            "Messages quarantined: they arrived on a channel whose ceiling is below their "
            "label (a security event; also message.quarantined in the log).",
            value=counts.get("quarantined", 0),
        )

    def _deliveries(self) -> Iterator[Metric]:
        dispatcher = self._view.dispatcher
        held = dispatcher.pending_by_label() if dispatcher is not None else Counter()
        pending = GaugeMetricFamily(
            "govxchg_deliveries_pending",
            "Deliveries not yet confirmed by the recipient's DELIVERED: waiting for it to "
            "come online, queued, or sent and awaiting its receipt.",
            labels=["precedence", "classification"],
        )
        for precedence in Precedence:
            for label in Classification:
                pending.add_metric([precedence.name, label.name], held[(precedence, label)])
        yield pending
        for name, help_text, value in (
            (
                "govxchg_delivery_retries",
                "Deliveries published again because no DELIVERED came in time.",
                0 if dispatcher is None else dispatcher.retries,
            ),
            (
                "govxchg_deliveries_expired",
                "Deliveries whose expires_at passed before DELIVERED; the sender got EXPIRED.",
                0 if dispatcher is None else dispatcher.expired,
            ),
            (
                "govxchg_deliveries_dead",
                "Deliveries given up after [delivery] max_attempts; the sender got DEAD.",
                0 if dispatcher is None else dispatcher.dead,
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=value)

    def _spokes(self) -> Iterator[Metric]:
        directory, dispatcher = self._view.current_directory, self._view.dispatcher
        online = GaugeMetricFamily(
            "govxchg_spokes_online",
            "Organisations of the directory whose spoke is online on the channel.",
            labels=["channel"],
        )
        spokes = GaugeMetricFamily(
            "govxchg_spokes",
            "Organisations of the directory provisioned on the channel, by their spoke's "
            "presence there: online, offline, unseen (never heard of), unknown (the hub's "
            "link to the channel's broker is down).",
            labels=["channel", "state"],
        )
        stranded = GaugeMetricFamily(
            "govxchg_spokes_offline_waiting",
            "Organisations offline on the channel with deliveries waiting for them there.",
            labels=["channel"],
        )
        up = GaugeMetricFamily(
            "govxchg_spoke_up",
            "1 if the organisation's spoke is online on the channel (its presence), else 0; "
            "no series while its presence is unknown (the hub's link to the broker is down). "
            "Only with [metrics] per_organisation (auto: below 1,000 organisations).",
            labels=["org", "channel"],
        )
        known = GaugeMetricFamily(
            "govxchg_spoke_presence_known",
            "1 if the hub knows the spoke's presence on the channel, 0 while it does not "
            "(its link to that broker is down, or it is learning presence again). Only with "
            "[metrics] per_organisation (auto: below 1,000 organisations).",
            labels=["org", "channel"],
        )
        each = directory is not None and self.per_organisation(directory)
        if directory is not None:
            jobs = [] if dispatcher is None else dispatcher.pending()
            waiting = {(job.recipient, job.channel) for job in jobs}
            counts: dict[str, Counter[str]] = {c.id: Counter() for c in directory.channels}
            for org_id, channels in directory.endpoints():  # own orgs, member hubs
                for channel in channels:
                    state = (
                        "unknown"
                        if dispatcher is None
                        else dispatcher.spokes.state(channel, org_id)[0]
                    )
                    tally = counts.get(channel)
                    if tally is None:  # a channel the directory does not describe
                        tally = counts[channel] = Counter()
                    tally[state] += 1
                    tally["stranded"] += state == "offline" and (org_id, channel) in waiting
                    if each:
                        known.add_metric([org_id, channel], 0 if state == "unknown" else 1)
                        if state != "unknown":
                            up.add_metric([org_id, channel], 1 if state == "online" else 0)
            for channel_id, tally in counts.items():
                online.add_metric([channel_id], tally["online"])
                stranded.add_metric([channel_id], tally["stranded"])
                for word in PRESENCE:
                    spokes.add_metric([channel_id, word], tally[word])
        yield online
        yield spokes
        yield stranded
        if each:  # off: not even the family, so a query for it finds nothing, not zeros
            yield up
            yield known
        broker = GaugeMetricFamily(
            "govxchg_broker_up",
            "1 while the hub's connection to the channel's broker is up and subscribed, else 0.",
            labels=["channel"],
        )
        node = GaugeMetricFamily(
            "govxchg_broker_node",
            "1 for the broker node the hub's connection for the channel is on (scheme://host:"
            "port, one of its [channels.X] urls); no series while it is on none.",
            labels=["channel", "node"],
        )
        for link in self._view.broker_links():
            on = link.node if link.connected.is_set() else None
            for channel in link.channels:
                broker.add_metric([channel], 1 if link.connected.is_set() else 0)
                if on is not None:
                    node.add_metric([channel, on], 1)
        yield broker
        yield node
        uplink = GaugeMetricFamily(
            "govxchg_uplink_up",
            "A member hub: 1 while its connection to the hub above it (upstream) on the "
            "channel is up and subscribed, else 0; no series for a hub that is no member.",
            labels=["channel"],
        )
        for link in self._view.uplink_links():
            for channel in link.channels:
                uplink.add_metric([channel], 1 if link.connected.is_set() else 0)
        yield uplink

    def _directory(self) -> Iterator[Metric]:
        directory = self._view.current_directory
        if directory is not None:
            yield GaugeMetricFamily(
                "govxchg_directory_version",
                "Version of the signed directory the hub serves.",
                value=directory.version,
            )
            yield GaugeMetricFamily(
                "govxchg_directory_expires_timestamp_seconds",
                "When the served directory expires (Unix time); spokes refuse it after that.",
                value=directory.expires_at / 1000,
            )
        info = GaugeMetricFamily(
            "govxchg_build_info",
            "Always 1; the labels say which govxchg release runs as which hub.",
            labels=["version", "hub"],
        )
        info.add_metric([self._version, "" if directory is None else directory.hub_id], 1)
        yield info


class HubMetrics:
    """The hub's own registry: the live-state collector and the latency histogram."""

    def __init__(self, view: HubView, *, per_organisation: PerOrganisation = "auto") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._latency = Histogram(
            "govxchg_delivery_latency_seconds",
            "From the hub's acceptance of a message to the recipient's signed DELIVERED.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(HubCollector(view, per_organisation=per_organisation))
        # DELIVERED confirmations since start (the histogram's count, readable without
        # collecting it): the status page's "delivered" flow.
        self.delivered = 0

    def observe_latency(self, ms: int) -> None:
        """One DELIVERED, ``ms`` milliseconds after acceptance (the dispatcher's callback)."""
        self.delivered += 1
        self._latency.observe(max(ms, 0) / 1000)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, as of now."""
        return generate_latest(self.registry)


# ---------------------------------------------------------------------- readiness


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    report: dict[str, object]  # the JSON body of /healthz


def readiness(view: HubView) -> Readiness:
    """Ready when the hub serves: every broker link connected, the store writable, and
    not draining. Otherwise ``not_ready`` names each thing that is not, as sentences."""
    problems: list[str] = []
    if view.draining:
        problems.append("the hub is draining (SIGTERM): it takes no new messages")
    store = view.store
    if store is None:
        store_state = "not open"
        problems.append("the store is not open yet (the hub is starting)")
    elif store.closed:
        store_state = "closed"
        problems.append("the store is closed (the hub is stopping)")
    elif not store.writable:
        store_state = "not writable"
        problems.append("the store is not writable: its last commit failed (store.write_failed)")
    else:
        store_state = "writable"
    links = view.broker_links()
    if not links:
        problems.append("no broker connection is set up yet (the hub is starting)")
    problems.extend(
        f"broker {link.name} (channels {', '.join(link.channels)}) is not connected; "
        "the hub keeps trying (broker.unreachable in the log)"
        for link in links
        if not link.connected.is_set()
    )
    disk = view.disk
    if disk is not None and disk.low is not None:
        problems.append(f"new messages are refused (disk.low): {disk.low}")
    directory = view.current_directory
    report: dict[str, object] = {
        "status": "ok" if not problems else "unavailable",
        "directory_version": None if directory is None else directory.version,
        "brokers": {link.name: link.connected.is_set() for link in links},
        # the node each connection is on (of a [channels.X] urls list); null: on none
        "nodes": {link.name: link.node if link.connected.is_set() else None for link in links},
        "store": store_state,
    }
    if problems:
        report["not_ready"] = problems
    return Readiness(not problems, report)
