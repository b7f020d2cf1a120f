"""The hub's monitoring endpoint: ``GET /metrics``, ``GET /healthz`` and the status page
(:mod:`hubd.web.statuspage`, unless ``[metrics] status_page = false``) over HTTP/1.1.

A small server on the hub's own event loop (``asyncio.start_server``) rather than
prometheus_client's threaded one: it reads the hub's state without locks and shares the
hub's lifecycle. One request per connection (``Connection: close``). The request head is
capped at :data:`MAX_HEAD` bytes and must arrive within :data:`READ_TIMEOUT` seconds, the
answer must be taken within :data:`WRITE_TIMEOUT`, and at most :data:`MAX_CLIENTS`
connections are served at once, so a slow or hostile client cannot hold the endpoint (or
the hub's memory). Bound to loopback by default (``[metrics] listen``); it has no TLS and
no authentication of its own. Read-only: GET and HEAD, nothing else. Every answer carries
strict headers (:data:`STRICT_HEADERS`): a browser runs nothing but the page's own files.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from hubd.web.clients import Clients
from hubd.web.metrics import Readiness
from schemas.errors import ConfigError

log = structlog.get_logger("hubd.metrics")

MAX_HEAD = 8192  # bytes of request line and headers together
MAX_HEADER_LINES = 64
READ_TIMEOUT = 5.0  # seconds for the whole request head
WRITE_TIMEOUT = 10.0  # seconds for the client to take the answer
MAX_CLIENTS = 16  # connections served at once; more are closed unanswered

REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
TEXT = "text/plain; charset=utf-8"
SERVED = b"this endpoint serves GET /metrics and GET /healthz\n"
METHODS = ("GET", "HEAD")
# The page is same-origin files only (no inline script or style, no CDN), never framed,
# and nothing it loads is sniffed into another type or told where it came from.
STRICT_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, *, head: bool = False) -> bytes:
        """The whole answer; for HEAD the same head (Content-Length too) without the body."""
        lines = [
            f"HTTP/1.1 {self.status} {REASONS[self.status]}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in (*STRICT_HEADERS, *self.headers)),
        ]
        return "\r\n".join(lines).encode("ascii") + b"\r\n\r\n" + (b"" if head else self.body)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query
    host: str | None  # the Host header, None if absent


class Pages(Protocol):
    """More paths on the same listener (the status page)."""

    paths: frozenset[str]
    served: bytes  # what the listener serves, for the end of every error answer

    async def answer(self, request: Request) -> Response: ...


def parse_request(request_line: bytes, host: str | None, served: bytes) -> Request | Response:
    """The request, or the error answer to a request line that cannot be served."""
    try:
        method, target, version = request_line.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        return Response(400, b"not an HTTP request line; " + served)
    if not version.startswith("HTTP/1."):
        return Response(505, b"only HTTP/1.x is spoken here; " + served)
    if method not in METHODS:
        return Response(
            405,
            b"only GET and HEAD are allowed: this endpoint is read-only; " + served,
            headers=(("Allow", ", ".join(METHODS)),),
        )
    return Request(method, target.partition("?")[0], host)


def answer_monitoring(
    path: str, metrics: Callable[[], bytes], health: Callable[[], Readiness]
) -> Response | None:
    """``/metrics`` and ``/healthz``; None for any other path."""
    if path == "/metrics":
        return Response(200, metrics(), CONTENT_TYPE_LATEST)
    if path == "/healthz":
        state = health()
        body = json.dumps(state.report, ensure_ascii=False).encode() + b"\n"
        return Response(200 if state.ready else 503, body, "application/json")
    return None


class MetricsServer:
    """``async with MetricsServer(host, port, metrics=..., health=..., pages=...)``: serving
    until exit."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Callable[[], bytes],
        health: Callable[[], Readiness],
        pages: Pages | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._metrics, self._health, self._pages = metrics, health, pages
        self._served = SERVED if pages is None else pages.served
        self._server: asyncio.Server | None = None
        self._clients = Clients(MAX_CLIENTS, WRITE_TIMEOUT)

    async def __aenter__(self) -> MetricsServer:
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=MAX_HEAD, reuse_address=True
            )
        except OSError as exc:
            raise self._listen_error(exc) from exc
        log.info("metrics.listening", listen=f"{self.host}:{self.port}")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _listen_error(self, exc: OSError) -> ConfigError:
        where = f"{self.host}:{self.port}"
        if exc.errno == errno.EADDRINUSE:
            problem = (
                f"{where} is already in use, so the hub cannot serve /metrics and /healthz "
                'there. Choose a free port with [metrics] listen, or set [metrics] listen = "" '
                "to turn the endpoint off"
            )
        else:
            problem = (
                f"cannot listen on {where} for /metrics and /healthz: {exc.strerror or exc}. "
                'Give an address of this machine in [metrics] listen (default "127.0.0.1:9464"), '
                'or set it to "" to turn the endpoint off'
            )
        return ConfigError("hub configuration", [("metrics.listen", problem)])

    async def close(self) -> None:
        """Stop listening and end the connections still open. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await self._clients.close()
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._clients.serve(
            writer, lambda: self._reply(reader), accepting=self._server is not None
        )

    async def _reply(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                request = await self._read(reader)
        except TimeoutError:
            request = Response(408, b"the request did not arrive in time; " + self._served)
        if request is None:
            return None
        if isinstance(request, Request):
            response = await self._answer(request)
            return response.encode(head=request.method == "HEAD")
        return request.encode()

    async def _read(self, reader: asyncio.StreamReader) -> Request | Response | None:
        """Read the request head; None if the client closed before sending one."""
        request_line = b""
        host: str | None = None
        size = lines = 0
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                return Response(431, b"the request head is too large; " + self._served)
            except asyncio.IncompleteReadError:
                return None
            size, lines = size + len(line), lines + 1
            if size > MAX_HEAD or lines > MAX_HEADER_LINES:
                return Response(431, b"the request head is too large; " + self._served)
            line = line.rstrip(b"\r\n")
            if not request_line:
                request_line = line  # RFC 9112 2.2: empty lines before it are ignored
                continue
            if not line:
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"host":
                host = value.strip().decode("ascii", "replace")
        return parse_request(request_line, host, self._served)

    async def _answer(self, request: Request) -> Response:
        try:
            found = answer_monitoring(request.path, self._metrics, self._health)
            if found is not None:
                return found
            if self._pages is not None and request.path in self._pages.paths:
                return await self._pages.answer(request)
        except Exception:  # a fault in a collector must not end the hub: answer 500, log it
            log.exception("metrics.failed", path=request.path[:100])
            return Response(500, b"the hub could not build the answer; see metrics.failed\n")
        return Response(404, b"not found; " + self._served)
