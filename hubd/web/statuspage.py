"""The status page: a read-only view of the running hub for people who would rather look.

Served on the metrics listener (:mod:`hubd.web.server`) unless ``[metrics] status_page
= false``: ``GET /`` (or ``/status``) is the page, ``/status.css``, ``/status.js`` and
``/favicon.svg`` its files (from ``hubd/web/static``, read once at start: no CDN, no external
font, nothing inline, so ``Content-Security-Policy: default-src 'self'`` holds),
``/status.json`` the summary the page polls every 2 s (:func:`hubd.web.statusview.build_snapshot`:
its size does not grow with the number of healthy organisations), and ``/status/orgs.json``
the organisation tree a page at a time (:mod:`hubd.web.statustree`), asked for only while
the operator has it open. Both carry a weak ETag: a page that sends it back in
``If-None-Match`` gets 304 and no body while nothing but the time has changed.

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
from collections import Counter
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from hubd.core.deadlines import Kind
from hubd.core.states import DeliveryState
from hubd.engine.deadlines import DeadlineDesk
from hubd.ops import query as opsquery
from hubd.store import tables as t
from hubd.web.flow import FlowHistory
from hubd.web.metrics import HubMetrics, HubView, build_version, readiness
from hubd.web.server import Request, Response
from hubd.web.statustree import PAGE_DEFAULT, PAGE_MAX, OrgTree
from hubd.web.statusview import DeadLetters, Facts, build_snapshot, etag
from schemas.directory import Directory
from schemas.errors import ConfigError, XchgError
from schemas.expiry import Horizons, Subject, directory_deadlines, judge
from schemas.ids import msg_id_text

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
TREE_PATH = "/status/orgs.json"
PATHS = frozenset([*PAGE_FILES, DATA_PATH, TREE_PATH])
REFRESH_MS = 1000  # one snapshot serves every request within this long
DEAD_SHOWN = 8  # the most recent dead letters on the page (hubctl dead lists them all)
OVERDUE_SHOWN = 8  # the longest overdue on the page (hubctl overdue lists them all)
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

    def __init__(
        self, hub: StatusHub, *, clock: Callable[[], int], horizons: Horizons | None = None
    ) -> None:
        self._hub, self._clock = hub, clock
        self._files = load_files()
        self.paths = PATHS
        self.served = (
            b"this endpoint serves GET /metrics, GET /healthz and the status page at GET /\n"
        )
        self.flow = FlowHistory()
        self.started_at = clock()
        self._version = build_version()
        self._cache: tuple[int, bytes, str] | None = None  # (built at, /status.json, ETag)
        self._facts: Facts | None = None  # what the last summary was built from
        self._building = asyncio.Lock()
        self._horizons = horizons
        self._expiring: tuple[tuple[int, int], dict[str, int]] | None = None
        self._tree: OrgTree | None = None  # of the directory last asked about

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
            body, tag = await self.snapshot_json()
            return fresh_or_not(request, body, tag)
        if request.path == TREE_PATH:
            return await self.tree_page(request)
        name, content_type = PAGE_FILES[request.path]
        return Response(200, self._files[name], content_type)

    # ------------------------------------------------------------------ the data

    async def snapshot_json(self) -> tuple[bytes, str]:
        """``/status.json`` and its ETag: built at most once per :data:`REFRESH_MS`, one
        build at a time."""
        async with self._building:
            now = self._clock()
            if self._cache is not None and 0 <= now - self._cache[0] < REFRESH_MS:
                return self._cache[1], self._cache[2]
            self._facts = await self.facts(now)
            snapshot = self.summary(self._facts)
            body = json.dumps(snapshot, ensure_ascii=False, separators=(",", ":")).encode()
            self._cache = (now, body + b"\n", etag(snapshot))
            return self._cache[1], self._cache[2]

    async def facts(self, now: int) -> Facts:
        """What the hub knows, for the summary and the tree's pages: the dead letters as of
        ``now``, everything else (read without awaiting) as of the moment after."""
        dead = await self.dead_letters(now)
        at = max(self._clock(), now)
        hub = self._hub
        dispatcher = hub.dispatcher
        directory = hub.current_directory
        return Facts.gather(
            at=at,
            directory=directory,
            presence=(lambda _c, _o: ("unknown", None))
            if dispatcher is None
            else dispatcher.spokes.state,
            pending=() if dispatcher is None else dispatcher.pending(),
            dead=dead,
            expiring=self.expiring(directory, at),
        )

    def summary(self, facts: Facts) -> dict[str, object]:
        state = readiness(self._hub)
        snapshot = build_snapshot(
            facts,
            started_at=self.started_at,
            version=self._version,
            readiness=state.report,
            ready=state.ready,
            flow=self.flow.as_json(facts.at, flow_totals(self._hub)),
        )
        snapshot["overdue"] = overdue_json(self._hub.deadlines, facts.at)
        return snapshot

    def expiring(self, directory: Directory | None, now: int) -> Mapping[str, int]:
        """Organisation -> when its last signing or encryption key ends, for those within
        the expiry horizon ([expiry] warn_days) or past it; judged once a minute."""
        if directory is None:
            return {}
        key = (directory.version, now // 60_000)
        if self._expiring is None or self._expiring[0] != key:
            found: dict[str, int] = {}
            horizons = self._horizons or Horizons()
            for warning in judge(directory_deadlines(directory), now=now, horizons=horizons):
                d = warning.deadline
                if d.subject is Subject.KEY and d.org is not None and d.org != directory.hub_id:
                    found[d.org] = min(found.get(d.org, d.not_after), d.not_after)
            self._expiring = (key, found)
        return self._expiring[1]

    async def tree_page(self, request: Request) -> Response:
        """``/status/orgs.json?under=ORG&offset=N&limit=M``: one page of one level."""
        asked = tree_query(request.query)
        if isinstance(asked, Response):
            return asked
        under, offset, limit = asked
        await self.snapshot_json()  # the facts of this refresh (built once for all)
        facts, directory = self._facts, self._hub.current_directory
        if facts is None or directory is None or facts.directory is not directory:
            return Response(
                503,
                "集线器尚无目录。the hub has no directory yet; try again in a moment\n".encode(),
            )
        if self._tree is None or self._tree.directory is not directory:
            self._tree = OrgTree(directory)
        if under is not None and under not in self._tree:
            shown = under[:100]
            return Response(
                404,
                (
                    f"目录中没有机构 {shown}。organisation {shown!r} is not in directory "
                    f"v{directory.version}; 'hubctl find' looks an organisation up\n"
                ).encode(),
            )
        page = self._tree.page(facts, under, offset, limit)
        body = json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        return fresh_or_not(request, body, etag(page))

    async def dead_letters(self, now: int) -> DeadLetters:
        """DEAD and EXPIRED deliveries from the store: counts and the most recent few."""
        store = self._hub.store
        if store is None or store.closed:
            return DeadLetters(0, 0, (), "the store is not open (the hub is starting or stopping)")
        d = t.deliveries
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                counted = await store.read(
                    select(d.c.recipient, d.c.channel, d.c.state, func.count())
                    .where(d.c.state.in_(opsquery.GONE))
                    .group_by(d.c.recipient, d.c.channel, d.c.state)
                )
                recent = await opsquery.dead(store.read, now=now, limit=DEAD_SHOWN)
        except TimeoutError:
            problem = f"the store did not answer within {STORE_TIMEOUT:.0f} s"
        except (SQLAlchemyError, XchgError, OSError) as exc:
            problem = f"the store could not be read: {exc}"
        else:
            by_state: Counter[str] = Counter()
            by_org: Counter[str] = Counter()
            by_channel: Counter[str] = Counter()
            for recipient, channel, state, count in counted:
                by_state[str(state)] += int(count)
                by_org[str(recipient)] += int(count)
                by_channel[str(channel)] += int(count)
            return DeadLetters(
                by_state[DeliveryState.DEAD.value],
                by_state[DeliveryState.EXPIRED.value],
                recent.items,
                by_org=by_org,
                by_channel=by_channel,
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


def overdue_json(desk: DeadlineDesk | None, at: int) -> dict[str, object]:
    """Who is past a deadline (the deadline desk's last round): the emergencies left
    unacknowledged, each with who has not signed for it, and the longest overdue."""
    if desk is None:
        return {"known": False, "total": 0, "emergencies": [], "items": [], "more": 0}
    late = desk.late
    emergencies: dict[bytes, dict[str, Any]] = {}
    for item in late:
        if item.open.emergency and item.open.kind is Kind.SIGN:
            found = emergencies.setdefault(
                item.msg_id,
                {
                    "msg_id": msg_id_text(item.msg_id),
                    "sender": item.sender,
                    "sign_by": item.open.due_at,
                    "drill": item.drill,
                    "unacknowledged": [],
                },
            )
            found["unacknowledged"].append(item.recipient)
    shown = late[:OVERDUE_SHOWN]
    return {
        "known": True,
        "total": len(late),
        "emergencies": list(emergencies.values()),
        "items": [
            {
                "msg_id": msg_id_text(i.msg_id),
                "recipient": i.recipient,
                "sender": i.sender,
                "deadline": i.open.kind.value,
                "deadline_zh": i.open.kind.zh,
                "due_at": i.open.due_at,
                "late_ms": max(at - i.open.due_at, 0),
                "reminders": i.open.reminded,
                "drill": i.drill,
            }
            for i in shown
        ],
        "more": len(late) - len(shown),
    }


def fresh_or_not(request: Request, body: bytes, tag: str) -> Response:
    """200 with the body and its ETag, or 304 without a body when the client has it."""
    headers = (("ETag", tag),)
    if request.if_none_match is not None and tag in _tags(request.if_none_match):
        return Response(304, b"", "application/json", headers)
    return Response(200, body, "application/json", headers)


def _tags(header: str) -> list[str]:
    """The entity tags of an If-None-Match header, compared weakly (RFC 9110 13.1.2)."""
    return [f"W/{t.strip().removeprefix('W/')}" for t in header.split(",")][:16]


def tree_query(query: str) -> tuple[str | None, int, int] | Response:
    """(under, offset, limit) from ``/status/orgs.json``'s query, or the 400 saying what
    is wrong with it."""
    problem = None
    values: dict[str, str] = {}
    try:
        fields = parse_qs(query, max_num_fields=8, strict_parsing=bool(query))
    except ValueError:  # over 8 fields, or a field that is not name=value
        problem = "it takes at most under, offset and limit, each as name=value"
    else:
        values = {name: found[-1] for name, found in fields.items()}
        unknown = sorted(set(values) - {"under", "offset", "limit"})
        if unknown:
            problem = f"unknown parameter {unknown[0][:40]!r}; it takes under, offset and limit"
    for name, low, high in (("offset", 0, 10**9), ("limit", 1, PAGE_MAX)):
        text = values.get(name)
        if text is None or problem:
            continue
        if not (text.isascii() and text.isdigit() and len(text) <= 10 and low <= int(text) <= high):
            problem = f"{name} must be a whole number from {low} to {high}, not {text[:20]!r}"
    if problem:
        return Response(
            400,
            f"查询参数有误。the query is not valid: {problem} "
            "(e.g. /status/orgs.json?under=jl.cc&offset=0&limit=100)\n".encode(),
        )
    under = values.get("under") or None
    return under, int(values.get("offset", 0)), int(values.get("limit", PAGE_DEFAULT))
