"""The hub's monitoring endpoint: ``GET /metrics``, ``GET /healthz`` and the status page
(:mod:`hubd.web.statuspage`, unless ``[metrics] status_page = false``) over HTTP/1.1.

A small server on the hub's own event loop (``asyncio.start_server``) rather than
prometheus_client's threaded one: it reads the hub's state without locks and shares the
hub's lifecycle. h11 reads the request and writes the answer (framing, the request line,
header syntax, Host, Content-Length and Transfer-Encoding rules); this module adds the
guards of a listener that must not be held by a slow or hostile client:

- one request per connection (``Connection: close``): a pipelined or keep-alive second
  request is never read, and a request's body is never read either;
- the request head (request line and header fields) is capped at :data:`MAX_HEAD` bytes
  and :data:`MAX_HEADERS` fields (431), and must arrive whole within :data:`READ_TIMEOUT`
  seconds however slowly it trickles (408); a header folded over lines is refused (400);
- only HTTP/1.x (505), only GET and HEAD (405): the endpoint is read-only;
- the answer must be taken within :data:`WRITE_TIMEOUT`, and at most :data:`MAX_CLIENTS`
  connections are served at once (more are closed unanswered);
- the connection is closed lingering (:data:`LINGER`), so that a client still sending
  when it is refused gets its answer rather than a reset.

Bound to loopback by default (``[metrics] listen``); it has no TLS and no authentication of
its own. Every answer carries strict headers (:data:`STRICT_HEADERS`): a browser runs
nothing but the page's own files.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import h11
import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from hubd.web.clients import Clients
from hubd.web.metrics import Readiness
from schemas.errors import ConfigError

log = structlog.get_logger("hubd.metrics")

MAX_HEAD = 8192  # bytes of request line and header fields together
MAX_HEADERS = 64  # header fields in one request
READ_TIMEOUT = 5.0  # seconds for the whole request head
WRITE_TIMEOUT = 10.0  # seconds for the client to take the answer
MAX_CLIENTS = 16  # connections served at once; more are closed unanswered
LINGER = 2.0  # seconds to drop what a client still sends after its answer (hubd.web.clients)

REASONS = {
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
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


def says(zh: str, en: str, served: bytes) -> bytes:
    """An error answer's body: what was wrong in Chinese and English, then what is served."""
    return f"{zh} {en}; ".encode() + served


def too_large(served: bytes) -> Response:
    return Response(
        431,
        says(
            f"请求头过大（上限 {MAX_HEAD} 字节、{MAX_HEADERS} 个字段）。",
            f"the request head is too large (at most {MAX_HEAD} bytes and {MAX_HEADERS} "
            "header fields)",
            served,
        ),
    )


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query
    host: str | None  # the Host header, None if absent (HTTP/1.0)
    query: str = ""  # after the "?", as sent (h11 checked it is ASCII without spaces)
    if_none_match: str | None = None  # the If-None-Match header: the ETag the client has


class Pages(Protocol):
    """More paths on the same listener (the status page)."""

    paths: frozenset[str]
    served: bytes  # what the listener serves, for the end of every error answer

    async def answer(self, request: Request) -> Response: ...


Receive = Callable[[int], Awaitable[bytes]]  # at most n bytes; b"" once the client closed


async def receive_head(
    conn: h11.Connection, receive: Receive, served: bytes
) -> tuple[h11.Request, bytes] | Response | None:
    """The request h11 read and its head as it arrived, or the error answer to what arrived
    instead; None if the client closed without sending a byte.

    No more than ``MAX_HEAD + 1`` bytes are ever taken from ``receive``: h11 refuses a head
    still incomplete past :data:`MAX_HEAD` (its ``max_incomplete_event_size``), and a
    complete one is measured here, so the cap holds however the bytes are split."""
    received = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return refusal(exc, served)
        if event is h11.NEED_DATA:
            if len(received) > MAX_HEAD:
                return too_large(served)
            chunk = await receive(MAX_HEAD + 1 - len(received))
            received += chunk
            conn.receive_data(chunk)  # b"": the client closed
        elif isinstance(event, h11.Request):
            return event, bytes(received[: len(received) - len(conn.trailing_data[0])])
        else:  # ConnectionClosed: nothing was sent
            return None


def refusal(exc: h11.RemoteProtocolError, served: bytes) -> Response:
    """The answer to bytes h11 refused to read as a request (its reason, quoted safely)."""
    if exc.error_status_hint == 431:
        return too_large(served)
    reason = str(exc)[:200].encode("ascii", "backslashreplace").decode("ascii")
    if exc.error_status_hint == 501:
        return Response(
            501,
            says(
                "不支持该传输编码，本端点不接收请求体。",
                f"the request's Transfer-Encoding is not supported ({reason}): this "
                "read-only endpoint takes no request body",
                served,
            ),
        )
    return Response(
        400,
        says("请求不是合规的 HTTP/1.1 请求。", f"not a valid HTTP/1.1 request ({reason})", served),
    )


def judge(event: h11.Request, head: bytes, served: bytes) -> Request | Response:
    """The request to answer, or the error answer to a request that cannot be served."""
    if len(head) > MAX_HEAD or len(event.headers) > MAX_HEADERS:
        return too_large(served)
    if b"\n " in head or b"\n\t" in head:  # obs-fold: RFC 9112 5.2 lets a server refuse it
        return Response(
            400,
            says(
                "请求头字段不得折行。",
                "a header field folded over several lines (obs-fold) is refused; send each "
                "field on one line",
                served,
            ),
        )
    if not event.http_version.startswith(b"1."):
        return Response(505, says("只支持 HTTP/1.x。", "only HTTP/1.x is spoken here", served))
    method = event.method.decode("ascii")  # h11: a token
    if method not in METHODS:
        return Response(
            405,
            says(
                "本端点只读，只接受 GET 和 HEAD。",
                "only GET and HEAD are allowed: this endpoint is read-only",
                served,
            ),
            headers=(("Allow", ", ".join(METHODS)),),
        )
    hosts = [value for name, value in event.headers if name == b"host"]  # h11: at most one
    host = hosts[0].decode("ascii", "replace") if hosts else None
    tags = [value for name, value in event.headers if name == b"if-none-match"]
    path, _, query = event.target.decode("ascii").partition("?")
    tag = b",".join(tags).decode("ascii", "replace") if tags else None
    return Request(method, path, host, query, tag)


def encode(conn: h11.Connection, response: Response, *, head: bool = False) -> bytes:
    """The whole answer as h11 writes it; for HEAD the same head (Content-Length too)
    without the body. A 304 has neither body nor Content-Length (RFC 9110 15.4.5)."""
    length = () if response.status == 304 else (("Content-Length", str(len(response.body))),)
    headers = [
        ("Content-Type", response.content_type),
        *length,
        ("Cache-Control", "no-store"),
        ("Connection", "close"),
        *STRICT_HEADERS,
        *response.headers,
    ]
    reason = REASONS[response.status]
    answer = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    if not head and response.status != 304:
        answer += conn.send(h11.Data(data=response.body))
    return answer + conn.send(h11.EndOfMessage())


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
        self._clients = Clients(MAX_CLIENTS, WRITE_TIMEOUT, linger=LINGER)

    async def __aenter__(self) -> MetricsServer:
        try:
            # limit: the stream buffers little more than a head before it stops reading
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, limit=MAX_HEAD, reuse_address=True
            )
        except OSError as exc:
            raise self._listen_error(exc) from exc
        if self.port == 0:  # the kernel chose one (tests)
            self.port = self._server.sockets[0].getsockname()[1]
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
            writer,
            lambda: self.reply(reader.read),
            accepting=self._server is not None,
            reader=reader,
        )

    async def reply(self, receive: Receive) -> bytes | None:
        """The whole answer to the one request ``receive`` gives (None: the client sent
        nothing and gets nothing)."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                arrived = await receive_head(conn, receive, self._served)
        except TimeoutError:
            arrived = Response(
                408,
                says(
                    f"请求头未在 {READ_TIMEOUT:g} 秒内到达。",
                    f"the request head did not arrive within {READ_TIMEOUT:g} s",
                    self._served,
                ),
            )
        if arrived is None:
            return None
        if isinstance(arrived, Response):
            return encode(conn, arrived)
        event, head = arrived
        request = judge(event, head, self._served)
        response = request if isinstance(request, Response) else await self._answer(request)
        return encode(conn, response, head=event.method == b"HEAD")

    async def _answer(self, request: Request) -> Response:
        try:
            found = answer_monitoring(request.path, self._metrics, self._health)
            if found is not None:
                return found
            if self._pages is not None and request.path in self._pages.paths:
                return await self._pages.answer(request)
        except Exception:  # a fault in a collector must not end the hub: answer 500, log it
            log.exception("metrics.failed", path=request.path[:100])
            return Response(
                500,
                "集线器未能生成应答，见其日志的 metrics.failed 事件。the hub could not build the "
                "answer; see the event metrics.failed in its log\n".encode(),
            )
        return Response(404, says("未找到。", "not found", self._served))
