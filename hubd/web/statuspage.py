"""The status page: a read-only view of the running hub for people who would rather look.

Served on the metrics listener (:mod:`hubd.web.server`) unless ``[metrics] status_page
= false``: ``GET /`` (or ``/status``) is the page, ``/status.css``, ``/status.js`` and
``/favicon.svg`` its files (from ``hubd/web/static``, read once at start: no CDN, no external
font, nothing inline, so ``Content-Security-Policy: default-src 'self'`` holds), and
``/status.json`` the data the page polls every 2 s (:func:`hubd.web.statusview.build_snapshot`).

The page answers only requests addressed to an IP address or ``localhost``: a web page in
the operator's browser cannot then read it through DNS rebinding (a name of its own that
resolves to 127.0.0.1). The snapshot is built at most once per :data:`REFRESH_MS` however
many browsers poll, and the store is asked for dead letters under a time limit, so the page
never loads the hub. A sampler task keeps the recent flow (:mod:`hubd.web.flow`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from importlib import resources
from typing import Protocol

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from hubd.core.states import DeliveryState
from hubd.ops import query as opsquery
from hubd.store import tables as t
from hubd.web.flow import FlowHistory
from hubd.web.metrics import HubMetrics, HubView, build_version, readiness
from hubd.web.server import Request, Response
from hubd.web.statusview import DeadLetters, build_snapshot
from schemas.errors import ConfigError, XchgError

log = structlog.get_logger("hubd.status")

# path -> (file in hubd/web/static, Content-Type)
PAGE_FILES = {
    "/": ("status.html", "text/html; charset=utf-8"),
    "/status": ("status.html", "text/html; charset=utf-8"),
    "/status.css": ("status.css", "text/css; charset=utf-8"),
    "/status.js": ("status.js", "text/javascript; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
DATA_PATH = "/status.json"
PATHS = frozenset([*PAGE_FILES, DATA_PATH])
REFRESH_MS = 1000  # one snapshot serves every request within this long
DEAD_SHOWN = 8  # the most recent dead letters on the page (hubctl dead lists them all)
STORE_TIMEOUT = 3.0  # seconds for the dead-letter queries; then the page says so


class StatusHub(HubView, Protocol):
    """What the page reads of the running hub, beyond what /metrics reads."""

    @property
    def metrics(self) -> HubMetrics: ...


def load_files() -> dict[str, bytes]:
    """The page's files from the installed package; ConfigError if one is missing."""
    folder = resources.files("hubd.web") / "static"
    files = {}
    for name in sorted({name for name, _ in PAGE_FILES.values()}):
        try:
            files[name] = (folder / name).read_bytes()
        except OSError as exc:
            problem = (
                f"the status page's file hubd/web/static/{name} cannot be read "
                f"({exc.strerror or exc}); reinstall govxchg, or set "
                "[metrics] status_page = false to run without the page"
            )
            raise ConfigError("hub installation", [("metrics.status_page", problem)]) from exc
    return files


def browser_host_allowed(host: str | None) -> bool:
    """Whether a request's Host is an IP address or localhost (with or without a port).

    A name that resolves to loopback only through someone's DNS is refused: that is how a
    web page would reach this listener from the operator's browser (DNS rebinding). A
    request without Host comes from no browser, so it is answered."""
    if host is None:
        return True
    name = host.strip()
    if name.startswith("["):  # [::1]:9464
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:  # 127.0.0.1:9464, localhost:9464
        name = name.partition(":")[0]
    if name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def flow_totals(hub: StatusHub) -> dict[str, int]:
    """The running totals the flow history samples (counters since the hub started)."""
    ingest = hub.ingest
    counts = ingest.counts if ingest is not None else {}
    return {
        "accepted": counts.get("accepted", 0),
        "rejected": counts.get("rejected", 0),
        "quarantined": counts.get("quarantined", 0),
        "delivered": hub.metrics.delivered,
    }


class StatusPage:
    """The page's routes for :class:`hubd.web.server.MetricsServer`, and its sampler."""

    def __init__(self, hub: StatusHub, *, clock: Callable[[], int]) -> None:
        self._hub, self._clock = hub, clock
        self._files = load_files()
        self.paths = PATHS
        self.served = (
            b"this endpoint serves GET /metrics, GET /healthz and the status page at GET /\n"
        )
        self.flow = FlowHistory()
        self.started_at = clock()
        self._version = build_version()
        self._cache: tuple[int, bytes] | None = None  # (built at, /status.json body)
        self._building = asyncio.Lock()

    async def answer(self, request: Request) -> Response:
        """The answer to a GET or HEAD of one of :attr:`paths`."""
        if not browser_host_allowed(request.host):
            shown = (request.host or "")[:100]
            return Response(
                403,
                (
                    f"the status page answers only requests addressed to an IP address or "
                    f"localhost, not Host {shown!r} (a defence against DNS rebinding); open "
                    "http://127.0.0.1:PORT/ on the hub, or the local end of your SSH tunnel\n"
                ).encode(),
            )
        if request.path == DATA_PATH:
            return Response(200, await self.snapshot_json(), "application/json")
        name, content_type = PAGE_FILES[request.path]
        return Response(200, self._files[name], content_type)

    # ------------------------------------------------------------------ the data

    async def snapshot_json(self) -> bytes:
        """``/status.json``: built at most once per :data:`REFRESH_MS`, one build at a time."""
        async with self._building:
            now = self._clock()
            if self._cache is not None and 0 <= now - self._cache[0] < REFRESH_MS:
                return self._cache[1]
            snapshot = await self.snapshot(now)
            body = json.dumps(snapshot, ensure_ascii=False, separators=(",", ":")).encode()
            self._cache = (now, body + b"\n")
            return self._cache[1]

    async def snapshot(self, now: int) -> dict[str, object]:
        hub = self._hub
        dispatcher = hub.dispatcher
        state = readiness(hub)
        return build_snapshot(
            at=now,
            started_at=self.started_at,
            version=self._version,
            directory=hub.current_directory,
            presence=(lambda _c, _o: ("unknown", None))
            if dispatcher is None
            else dispatcher.spokes.state,
            pending=() if dispatcher is None else dispatcher.pending(),
            readiness=state.report,
            ready=state.ready,
            flow=self.flow.as_json(now, flow_totals(hub)),
            dead=await self.dead_letters(now),
        )

    async def dead_letters(self, now: int) -> DeadLetters:
        """DEAD and EXPIRED deliveries from the store: counts and the most recent few."""
        store = self._hub.store
        if store is None or store.closed:
            return DeadLetters(0, 0, (), "the store is not open (the hub is starting or stopping)")
        d = t.deliveries
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                counted = await store.read(
                    select(d.c.state, func.count())
                    .where(d.c.state.in_(opsquery.GONE))
                    .group_by(d.c.state)
                )
                recent = await opsquery.dead(store.read, now=now, limit=DEAD_SHOWN)
        except TimeoutError:
            problem = f"the store did not answer within {STORE_TIMEOUT:.0f} s"
        except (SQLAlchemyError, XchgError, OSError) as exc:
            problem = f"the store could not be read: {exc}"
        else:
            counts = {str(state): int(count) for state, count in counted}
            return DeadLetters(
                counts.get(DeliveryState.DEAD.value, 0),
                counts.get(DeliveryState.EXPIRED.value, 0),
                recent.items,
            )
        log.warning("status.store_unreadable", error=problem)
        return DeadLetters(0, 0, (), problem)

    # ------------------------------------------------------------------ the flow

    async def sample_flow(self) -> None:
        """Run until cancelled: close a flow bucket at every multiple of the step.

        It runs in the hub's task group, so a fault here is logged (``status.flow_failed``)
        and sampling goes on: the page must never stop the hub."""
        step = self.flow.step_ms
        self.flow.start(self._clock(), flow_totals(self._hub))
        while True:
            now = self._clock()
            await asyncio.sleep((step - now % step) / 1000)  # the next 10 s boundary
            try:
                self.flow.sample(self._clock(), flow_totals(self._hub))
            except Exception:
                log.exception("status.flow_failed")


class PageOff:
    """The page's paths while ``[metrics] status_page = false``: 404 saying so."""

    paths = PATHS
    served = (
        b"this endpoint serves GET /metrics and GET /healthz; the status page is turned off "
        b"([metrics] status_page = false)\n"
    )

    async def answer(self, request: Request) -> Response:  # noqa: ARG002 - same for every path
        return Response(404, b"not found; " + self.served)
