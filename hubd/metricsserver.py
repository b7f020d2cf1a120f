"""The hub's monitoring endpoint: ``GET /metrics`` and ``GET /healthz`` over HTTP/1.1.

A small server on the hub's own event loop (``asyncio.start_server``) rather than
prometheus_client's threaded one: it reads the hub's state without locks and shares the
hub's lifecycle. One request per connection (``Connection: close``). The request head is
capped at :data:`MAX_HEAD` bytes and must arrive within :data:`READ_TIMEOUT` seconds, the
answer must be taken within :data:`WRITE_TIMEOUT`, and at most :data:`MAX_CLIENTS`
connections are served at once, so a slow or hostile client cannot hold the endpoint (or
the hub's memory). Bound to loopback by default (``[metrics] listen``); it has no TLS and
no authentication of its own.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from hubd.metrics import Readiness
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


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status} {REASONS[self.status]}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return "\r\n".join(lines).encode("ascii") + b"\r\n\r\n" + self.body


def route(
    request_line: bytes, metrics: Callable[[], bytes], health: Callable[[], Readiness]
) -> Response:
    """The answer to one request line (the headers do not matter here)."""
    try:
        method, target, version = request_line.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        return Response(400, b"not an HTTP request line; " + SERVED)
    if not version.startswith("HTTP/1."):
        return Response(505, b"only HTTP/1.x is spoken here; " + SERVED)
    if method != "GET":
        return Response(405, b"only GET is allowed; " + SERVED, headers=(("Allow", "GET"),))
    path = target.partition("?")[0]
    if path == "/metrics":
        return Response(200, metrics(), CONTENT_TYPE_LATEST)
    if path == "/healthz":
        state = health()
        body = json.dumps(state.report, ensure_ascii=False).encode() + b"\n"
        return Response(200 if state.ready else 503, body, "application/json")
    return Response(404, b"not found; " + SERVED)


class MetricsServer:
    """``async with MetricsServer(host, port, metrics=..., health=...)``: serving until exit."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Callable[[], bytes],
        health: Callable[[], Readiness],
    ) -> None:
        self.host, self.port = host, port
        self._metrics, self._health = metrics, health
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[Any]] = set()

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
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._clients) >= MAX_CLIENTS or self._server is None:
            writer.close()
            return
        self._clients.add(task)
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    response = await self._read(reader)
            except TimeoutError:
                response = Response(408, b"the request did not arrive in time; " + SERVED)
            if response is None:
                return
            writer.write(response.encode())
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # the client went away or does not read: nothing to tell it
        finally:
            self._clients.discard(task)
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> Response | None:
        """Read the request head; None if the client closed before sending one."""
        request_line = b""
        size = lines = 0
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                return Response(431, b"the request head is too large; " + SERVED)
            except asyncio.IncompleteReadError:
                return None
            size, lines = size + len(line), lines + 1
            if size > MAX_HEAD or lines > MAX_HEADER_LINES:
                return Response(431, b"the request head is too large; " + SERVED)
            line = line.rstrip(b"\r\n")
            if not request_line:
                request_line = line  # RFC 9112 2.2: empty lines before it are ignored
                continue
            if not line:
                break
        try:
            return route(request_line, self._metrics, self._health)
        except Exception:  # a fault in a collector must not end the hub: answer 500, log it
            log.exception("metrics.failed")
            return Response(500, b"the hub could not build the answer; see metrics.failed\n")
