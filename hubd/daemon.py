"""The hub daemon: wires the store, the brokers, ingest, dispatch and receipts together.

Lifecycle (STYLE.md, "Async lifecycle"): one TaskGroup, named tasks. SIGTERM (or SIGINT)
stops the intake, lets the ingest queue drain, finishes in-flight publishes, flushes state
and receipts, then disconnects and closes the store, all within ``drain_timeout``; the
process exits 0. SIGHUP re-reads and re-verifies the directory and republishes it.
With NOTIFY_SOCKET set it tells systemd READY=1 and, if asked, WATCHDOG=1. Unless
``[metrics] listen`` is "", it serves ``/metrics`` and ``/healthz`` (:mod:`hubd.web.metrics`)
from before the store opens until after it closes, so readiness is visible throughout, and
beside them the status page (:mod:`hubd.web.statuspage`) unless ``[metrics] status_page`` is false.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack

import structlog

from hubd.admin.ops import HubAdmin
from hubd.admin.server import AdminServer
from hubd.config import HubConfig
from hubd.core.states import DeliveryState
from hubd.engine import replicas
from hubd.engine.broker import EmbeddedBroker
from hubd.engine.brokerplan import BrokerPlan, plan_brokers
from hubd.engine.brokerwatch import BrokerWatch
from hubd.engine.checkpoints import RESTORED_HINT, Checkpointer, LedgerCheckError, Policy
from hubd.engine.deadlines import DeadlineDesk
from hubd.engine.dirdesk import DirectoryDesk
from hubd.engine.diskwatch import DiskWatch
from hubd.engine.dispatch import Dispatcher
from hubd.engine.hopstream import HopStreams
from hubd.engine.intake import Ingest, with_parts
from hubd.engine.issuer import ReceiptIssuer
from hubd.engine.jobrows import load_jobs
from hubd.engine.jobs import DispatchSettings
from hubd.engine.ledgerdesk import LedgerDesk
from hubd.engine.retention import Retention
from hubd.engine.sdnotify import Notifier
from hubd.engine.trustwatch import TrustWatch, horizons_of
from hubd.engine.uplink import Uplink, uplink_changed, uplink_for
from hubd.provision.sources import load_hub_key, load_served_directory
from hubd.store import tables as t
from hubd.store.audit import AuditEvent
from hubd.store.db import Store
from hubd.store.ledger import LedgerGapError
from hubd.store.lock import hold_state_lock
from hubd.store.sharedspool import spool_for
from hubd.store.spool import BodySpool
from hubd.store.writes import AppendAudit
from hubd.web.metrics import HubMetrics, readiness
from hubd.web.server import MetricsServer
from hubd.web.statuspage import PageOff, StatusPage
from runtime.clock import now_ms
from runtime.link import Link, LinkMaker
from runtime.mqtt import BrokerLink, mqtt_client_id, tls_context
from runtime.startup import one_line
from runtime.tasks import cancel_and_wait
from schemas import topics
from schemas.directory import Directory, VerifiedDirectory
from schemas.envelope import VerifiedEnvelope
from schemas.errors import ConfigError, PeerError, XchgError
from schemas.keys import SigningKey

log = structlog.get_logger("hubd")
REPLICAS_WITH_HUBS = (
    "联邦枢纽暂不支持多副本 / a hub of a federation (its directory lists other hubs) runs as "
    "one process for now: each replica would keep its own numbering with the other hubs; "
    "run it without [replicas]"
)


class Hub:
    def __init__(
        self,
        config: HubConfig,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], int] = now_ms,
        link_maker: LinkMaker = BrokerLink,
    ) -> None:
        """``link_maker`` makes each broker link (tests pass ``FakeBroker.link``)."""
        self.config = config
        self.notifier = notifier or Notifier()
        self.clock = clock
        self._link_maker = link_maker
        self.stop_event = asyncio.Event()
        self._key: SigningKey | None = None
        self._verified: VerifiedDirectory | None = None
        self._links: dict[str, Link] = {}
        self.dispatcher: Dispatcher | None = None
        self.ingest: Ingest | None = None
        self.issuer: ReceiptIssuer | None = None
        self.deadlines: DeadlineDesk | None = None  # reminders (催办), the emergency alarm
        self.store: Store | None = None
        self.checkpoints: Checkpointer | None = None
        self.ledger_desk: LedgerDesk | None = None
        self.dirdesk = DirectoryDesk(self.send_in_order)
        self.metrics = HubMetrics(self, per_organisation=config.metrics.per_organisation)
        self.trust = TrustWatch(config, clock)
        self._audits: set[asyncio.Task[None]] = set()
        self._reloading = asyncio.Lock()
        self._reloads: set[asyncio.Task[ConfigError | None]] = set()
        self.status_page: StatusPage | None = None
        self.disk: DiskWatch | None = None
        self.watch: BrokerWatch | None = None
        self.replicas: replicas.Replicas | None = None  # [replicas] enabled: this one's part
        self.uplink: Uplink | None = None  # a member of a higher hub: the link to it

    # ---------------------------------------------------------------- what /metrics reads

    @property
    def current_directory(self) -> Directory | None:
        return None if self._verified is None else self._verified.directory

    @property
    def draining(self) -> bool:
        return self.stop_event.is_set()

    def broker_links(self) -> list[Link]:
        """Each broker connection once (channels on one broker share it)."""
        return list(dict.fromkeys(self._links.values()))

    def uplink_links(self) -> list[Link]:
        """A member hub's connections to the hub above it, one per channel."""
        return [] if self.uplink is None else list(self.uplink.links.values())

    # ---------------------------------------------------------------- directory

    def _load_directory(self) -> VerifiedDirectory:
        assert self._key is not None  # noqa: S101 - loaded first
        last = None if self._verified is None else (self._verified.version, self._verified.digest)
        return load_served_directory(
            self.config.hub.directory, self._key.public, self.clock(), last
        )

    def _load_key(self) -> SigningKey:
        return load_hub_key(self.config.hub.key)

    def _served(self) -> VerifiedDirectory:
        assert self._verified is not None  # noqa: S101 - loaded before serving
        return self._verified

    def org_name(self, org: str) -> str:
        return entry.name_zh if (entry := self.directory().org(org)) else org

    def directory(self) -> Directory:
        assert self._verified is not None  # noqa: S101 - loaded before serving
        return self._verified.directory

    def _reload_soon(self) -> None:
        """SIGHUP: reload in a task (a national directory takes seconds to verify)."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> ConfigError | None:
        """SIGHUP (and ``hubctl directory publish``): re-read and re-verify the directory
        in a worker thread, one reload at a time; keep the old one if the new is bad.
        Returns why it was refused, or None."""
        async with self._reloading:
            return await self._reload()

    async def _reload(self) -> ConfigError | None:
        try:
            verified = await asyncio.to_thread(self._load_directory)
        except ConfigError as exc:  # expected: one event with the reason, no traceback
            cause = exc.__cause__
            kept = None if self._verified is None else self._verified.version
            reason = cause.reason.value if isinstance(cause, PeerError) else "directory.unreadable"
            log.error(
                "directory.reload_failed",
                reason=reason,
                error=f"新目录文件被拒绝，继续使用 v{kept} / {one_line(str(exc))}; "
                f"the hub keeps serving v{kept}",
                kept_version=kept,
            )
            return exc
        previous, self._verified = self._verified, verified
        log.info("directory.reloaded", version=verified.version, orgs=len(verified.directory.orgs))
        asyncio.get_running_loop().create_task(self._serve_directory(verified))
        if previous is not None:
            self._audit(self.trust.reloaded(previous, verified))
            if (why := uplink_changed(previous.directory, verified.directory)) is not None:
                log.warning("uplink.restart_needed", error=why)  # the uplink is made at start
        self.trust.warn(verified.directory, when="reload")
        return None

    def _audit(self, events: list[AuditEvent]) -> None:
        """Append ``events`` to the audit ledger in the background (from a signal handler)."""
        if self.store is None:
            return
        store = self.store

        async def write() -> None:
            try:
                await store.submit(AppendAudit(events))
            except XchgError as exc:
                log.error(
                    "audit.write_failed", events=[e.event for e in events], error=one_line(str(exc))
                )

        task = asyncio.get_running_loop().create_task(write())
        self._audits.add(task)
        task.add_done_callback(self._audits.discard)

    async def _serve_directory(self, verified: VerifiedDirectory) -> None:
        """A reloaded directory: derive its root and change, then publish on every link."""
        await self.dirdesk.serve(verified)
        for link in self.broker_links():
            await self._publish_directory(link)

    async def _publish_directory(self, link: Link) -> None:
        """The root and its change (what spokes take), and the whole directory while it fits
        spokes of earlier releases, retained on each channel of ``link``."""
        served = self.dirdesk.served
        if served is None or self._verified is None or served.version != self._verified.version:
            return  # being derived: _serve_directory publishes it when it is ready
        for channel in link.channels:  # never over a newer one of this hub's key (reload it)
            if self.watch is None or not self.watch.holds_newer(channel):
                if served.legacy is not None:
                    await link.publish(topics.directory(channel), served.legacy, retain=True)
                await link.publish(topics.dirroot(channel), served.publication, retain=True)

    async def _on_connected(self, link: Link) -> None:
        """A (re)connected broker gets the retained directory and latest checkpoint again
        (an in-process or restarted broker may have lost them); then, for the life of the
        connection, the watch keeps presence known (BrokerWatch.connection)."""
        assert self.watch is not None  # noqa: S101 - made before the links
        if self.replicas is not None:  # reaching a broker: take a share now, not next round
            self.replicas.keeper.poke()
        life = asyncio.ensure_future(self.watch.connection(link))
        try:
            await self._publish_directory(link)
            checkpoint = None if self.checkpoints is None else self.checkpoints.message
            if checkpoint is not None:
                for channel in link.channels:
                    await link.publish(topics.ledger(channel), checkpoint, retain=True)
            await life
        finally:
            life.cancel()

    def _republish_directory(self, channel: str, frame: bytes) -> None:
        link = self._links.get(channel)
        served = self.dirdesk.served
        if link is not None and served is not None and served.legacy == frame:
            link.enqueue(topics.directory(channel), frame, retain=True)

    def _publish_checkpoint(self, payload: bytes) -> None:
        """A new checkpoint, retained on every channel's ledger topic (not waited for: a
        connection that is down gets it from :meth:`_on_connected`)."""
        for channel, link in self._links.items():
            link.enqueue(topics.ledger(channel), payload, retain=True)

    # ---------------------------------------------------------------- sending

    def send_in_order(self, channel: str, org: str, payload: bytes) -> asyncio.Future[bool]:
        """Hand ``payload`` to the connection now (in call order); the future is the ack."""
        if self.uplink is not None and org == self.uplink.upstream:
            return self.uplink.send(channel, payload)  # to the hub above, on its broker
        link = self._links.get(channel)
        if link is None:
            unsent: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            unsent.set_result(False)
            return unsent
        return link.enqueue(topics.down(channel, org), payload)

    def _set_reading(self, reading: bool) -> None:  # noqa: FBT001 - a switch
        """The ingest's backlog is full (False) or drained enough (True)."""
        for link in self.broker_links():
            link.set_reading(reading)

    # ---------------------------------------------------------------- running

    def stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> None:
        config = self.config
        self._key = self.dirdesk.key = self._load_key()
        self._verified = self._load_directory()
        await self.dirdesk.serve(self._verified)  # its root, before any link connects
        directory = self.directory()
        if config.replicas.enabled and directory.hubs:
            raise ConfigError("hub configuration", [("replicas", REPLICAS_WITH_HUBS)])
        channels = [c.id for c in directory.channels]
        plans = plan_brokers(config, channels)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        try:
            await self._serve(plans)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    async def _serve(self, plans: list[BrokerPlan]) -> None:
        config = self.config
        assert self._key is not None  # noqa: S101
        # 0750: the store holds documents and the admin socket lives here by default
        config.hub.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        async with AsyncExitStack() as stack:
            # first: one hub per folder (a hubctl writing a stopped hub's store waits)
            stack.callback((await hold_state_lock(config.lock_file())).release)
            if config.metrics.enabled:  # first: /healthz says 503 while the rest starts
                if config.metrics.status_page:
                    self.status_page = StatusPage(
                        self, clock=self.clock, horizons=horizons_of(config)
                    )
                await stack.enter_async_context(
                    MetricsServer(
                        config.metrics.host,
                        config.metrics.port,
                        metrics=self.metrics.exposition,
                        health=lambda: readiness(self),
                        pages=self.status_page or PageOff(),
                    )
                )
            if any(p.name == "embedded" for p in plans):
                await stack.enter_async_context(
                    EmbeddedBroker(config.broker.host, config.broker.port)
                )
                log.info("broker.embedded_started", listen=config.broker.listen)
            store = self.store = await self._open_store(stack, plans)
            ledger = config.ledger
            checkpoints = self.checkpoints = Checkpointer(
                store,
                self._key,
                self.directory().hub_id,
                Policy(
                    ledger.checkpoints,
                    int(ledger.checkpoint_interval * 1000),
                    ledger.checkpoint_entries,
                ),
                self.clock,
                self._publish_checkpoint,
            )
            await checkpoints.check()  # before the hub writes a single entry
            assert self._verified is not None  # noqa: S101 - loaded in run()
            await store.submit(AppendAudit(self.trust.loaded(self._verified)))
            self.trust.warn(self.directory(), when="start")
            spool = spool_for(
                shared=config.replicas.enabled,  # replicas: the spool is the store
                folder=config.spool_dir(),
                engine=store.engine,
                verify=self._spooled_envelope,
            )
            issuer = ReceiptIssuer(
                self.directory().hub_id, self._key, store, self.send_in_order, self.clock
            )
            settings = DispatchSettings(
                retry_initial=config.delivery.retry_initial,
                retry_max=config.delivery.retry_max,
                max_attempts=config.delivery.max_attempts,
                window=config.delivery.publish_window,
            )
            dispatcher = Dispatcher(
                store,
                self.send_in_order,
                settings,
                issuer.outcome,
                latency=self.metrics.observe_latency,
                clock=self.clock,
                outcomes=issuer,
            )
            ingest = Ingest(
                directory=self.directory,
                store=store,
                spool=spool,
                dispatcher=dispatcher,
                issuer=issuer,
                send=self.send_in_order,
                clock=self.clock,
                max_skew_ms=int(config.delivery.max_skew * 1000),
            )
            dispatcher.hop = issuer.hop = lambda org: self.directory().next_hop(org)
            streams = HopStreams(store, self.send_in_order, self.clock)
            await streams.load()  # where this hub stands in its neighbour hubs' receipts
            ingest.use_streams(streams)
            self.uplink = uplink_for(
                self.directory(),
                config.upstream,
                link_maker=self._link_maker,
                deliver=ingest.on_relayed,
                dispatcher=dispatcher,
                streams=streams,
                window=config.delivery.publish_window,
            )
            self.dispatcher, self.ingest, self.issuer = dispatcher, ingest, issuer
            self._wire_replicas()
            desk = LedgerDesk(store, checkpoints, self.directory, self.send_in_order, self.clock)
            ingest.ledger, ingest.dirdesk, self.ledger_desk = desk, self.dirdesk, desk
            ingest.on_backlog = self._set_reading
            disk = self.disk = DiskWatch(
                [config.hub.state_dir, *([] if spool.shared else [config.spool_dir()])],
                min_free=config.disk.min_free,
                min_free_percent=config.disk.min_free_percent,
                every=config.disk.check_every,
            )
            disk.check()  # before the first message: a hub started on a full disk says so
            ingest.disk_low = disk.refuse
            reloaded = await self._reload_jobs(store, dispatcher)
            admin_socket = config.admin_socket()
            if admin_socket is not None:  # once there is something to answer with
                await stack.enter_async_context(AdminServer(admin_socket, HubAdmin(self).answer))
            await self._recover_spool(spool)
            hub_id = self.directory().hub_id
            self._make_links(plans, ingest, hub_id)
            log.info(
                "hub.starting",
                hub=hub_id,
                directory_version=self.directory().version,
                brokers=[p.name for p in plans],
                store=store._safe_url,  # noqa: SLF001 - the password-free form for the log
                reloaded_deliveries=reloaded,
            )
            await checkpoints.start()  # published once the links connect (_on_connected)
            await self._run_tasks(ingest, dispatcher, issuer)
            if ingest.turned_away:
                log.info("hub.intake_stopped", turned_away=ingest.turned_away)
            log.info(
                "hub.stopped",
                accepted=ingest.counts["accepted"],
                rejected=ingest.counts["rejected"],
                quarantined=ingest.counts["quarantined"],
                published=dispatcher.published,
            )

    async def _open_store(self, stack: AsyncExitStack, plans: list[BrokerPlan]) -> Store:
        """The store, and for a replica its leases (joined before anything is written)."""
        replicated = self.config.replicas.enabled
        if replicated and any(p.name == "embedded" for p in plans):
            raise ConfigError("hub configuration", [("replicas.enabled", replicas.ON_EMBEDDED)])
        try:
            store = await stack.enter_async_context(
                Store(self.config.store_url(), shared=replicated)
            )
        except LedgerGapError as exc:
            raise LedgerCheckError(f"{exc}; {RESTORED_HINT}") from exc
        if replicated:
            self.replicas = await replicas.join(
                stack, self.config.replicas, store, self.broker_links
            )
        return store

    def _replica_tag(self) -> tuple[str, ...]:
        """Replicas connect to one broker each under a client id of their own (the same id
        would take the other's connection over): the replica's name, else the host's."""
        if not self.config.replicas.enabled:
            return ()
        return (self.config.replicas.name or socket.gethostname(),)

    def _wire_replicas(self) -> None:
        """A replica acts as owner only of what its leases hold (hubd.engine.replicas)."""
        if self.replicas is None:
            return
        assert self.dispatcher is not None  # noqa: S101 - made first
        assert self.ingest is not None  # noqa: S101
        assert self.checkpoints is not None  # noqa: S101
        self.replicas.dispatcher = self.dispatcher
        self.dispatcher.owns = self.ingest.owns = self.replicas.owns
        self.ingest.handover = self.replicas.handover()
        self.replicas.on_gain = self.ingest.gained
        self.checkpoints.leading = self.replicas.leading

    def _make_links(self, plans: list[BrokerPlan], ingest: Ingest, hub_id: str) -> None:
        """One broker link per plan (channels on one broker share it), behind the watch."""
        key = self._key
        assert key is not None  # noqa: S101 - loaded first
        config = self.config
        assert self.dispatcher is not None  # noqa: S101 - made before the links
        self.watch = BrokerWatch(
            self.dispatcher.spokes,
            [ch for plan in plans for ch in plan.channels],
            served=self._served,
            hub_public=lambda: key.public,
            republish=self._republish_directory,
        )
        for plan in plans:
            link = self._link_maker(
                plan.name,
                plan.host,
                plan.port,
                plan.channels,
                subscriptions=[t for ch in plan.channels for t in topics.hub_subscriptions(ch)],
                client_id=mqtt_client_id("hubd", hub_id, plan.client_tag, *self._replica_tag()),
                sink=self.watch.sink(ingest.on_message),
                on_connected=self._on_connected,
                window=config.delivery.publish_window,
                tls=tls_context(plan.ca, plan.cert, plan.key) if plan.tls else None,
                failover=plan.failover,
            )
            for channel in plan.channels:
                self._links[channel] = link

    async def _run_tasks(
        self, ingest: Ingest, dispatcher: Dispatcher, issuer: ReceiptIssuer
    ) -> None:
        links_stop, work_stop = asyncio.Event(), asyncio.Event()
        links = self.broker_links()
        async with asyncio.TaskGroup() as tasks:
            for link in (*links, *self.uplink_links()):
                tasks.create_task(link.run(links_stop), name=f"hubd.link.{link.name}")
            issuer_task = tasks.create_task(issuer.run(work_stop), name="hubd.receipts")
            core = tasks.create_task(self._core(ingest, dispatcher), name="hubd.core")
            watchdog = tasks.create_task(self._watchdog(), name="hubd.watchdog")
            if self.config.retention.enabled and self.store is not None:
                retention = Retention(self.store, self.config.retention, self.clock)
                retention.leading = None if self.replicas is None else self.replicas.leading
                tasks.create_task(retention.run(self.stop_event), name="hubd.retention")
            if self.config.deadlines.enabled and self.store is not None:
                config, hurry = self.config.deadlines, dispatcher.hurry
                desk = DeadlineDesk(self.store, issuer, config, self.clock, hurry=hurry)
                self.deadlines, desk.names = desk, self.org_name
                self.deadlines.leading = None if self.replicas is None else self.replicas.leading
                tasks.create_task(self.deadlines.run(self.stop_event), name="hubd.deadlines")
            if self.disk is not None:
                tasks.create_task(self.disk.run(self.stop_event), name="hubd.disk")
            if self.replicas is not None:
                tasks.create_task(self.replicas.run(self.stop_event), name="hubd.replicas")
            if self.checkpoints is not None:
                checkpoints = self.checkpoints.run(self.stop_event)
                tasks.create_task(checkpoints, name="hubd.checkpoints")
            expiry = tasks.create_task(
                self.trust.run(lambda: self.current_directory), name="hubd.expiry"
            )
            flow = None
            if self.status_page is not None:
                flow = tasks.create_task(self.status_page.sample_flow(), name="hubd.status.flow")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.gather(*(link.connected.wait() for link in links))
            self.notifier.ready(f"serving directory v{self.directory().version}")
            log.info(
                "hub.ready", connected=[link.name for link in links if link.connected.is_set()]
            )
            await self.stop_event.wait()
            log.info("hub.draining", timeout_s=self.config.lifecycle.drain_timeout)
            self.notifier.stopping()
            try:
                async with asyncio.timeout(self.config.lifecycle.drain_timeout):
                    await core
                    work_stop.set()
                    await issuer_task
            except TimeoutError:
                log.warning("hub.drain_timeout", timeout_s=self.config.lifecycle.drain_timeout)
                await cancel_and_wait((core, issuer_task))
            work_stop.set()
            await cancel_and_wait(t for t in (watchdog, expiry, flow) if t is not None)
            if self.uplink is not None:  # the hub above parks what is for this one
                await self.uplink.goodbye()
            links_stop.set()

    async def _core(self, ingest: Ingest, dispatcher: Dispatcher) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(ingest.run(self.stop_event), name="hubd.ingest")
            tasks.create_task(dispatcher.run(self.stop_event), name="hubd.dispatch")

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None or not self.config.lifecycle.watchdog:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # ---------------------------------------------------------------- recovery

    async def _reload_jobs(self, store: Store, dispatcher: Dispatcher) -> int:
        awaited = [DeliveryState.PENDING.value, DeliveryState.SENT.value]
        jobs = await load_jobs(store.read, t.deliveries.c.state.in_(awaited))
        for job in jobs:
            dispatcher.add(job)
        return len(jobs)

    def _spooled_envelope(self, frame: bytes, org: str, slots: bytes | None) -> VerifiedEnvelope:
        return with_parts(frame, self.directory(), org, slots)  # org: a neighbour hub, too

    async def _recover_spool(self, spool: BodySpool) -> None:
        """Adopt the transfers the last run left in the spool folder. The store's spool
        (replicas) adopts a transfer when its sender goes on (StoreSpool.find): another
        live replica may be receiving it, and re-hashing every one at start is wasted."""
        if spool.shared:
            return
        for channel, org, frame, slots in await spool.partial():
            try:
                envelope = self._spooled_envelope(frame, org, slots)
            except XchgError as exc:
                log.warning("spool.discarded", error=str(exc))
                continue
            transfer = await spool.adopt(envelope, channel=channel, org=org)
            log.info(
                "spool.resumed", msg_id=envelope.header.msg_id_text, received=transfer.received
            )
