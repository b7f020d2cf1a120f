"""The metrics and status listener (hubd.web.server) on a real TCP socket in this process.

Real clients (urllib, http.client) get what a scraper and a script get; raw sockets send
what no client should: broken request lines, oversized heads, folded headers, conflicting
framing, a trickle that never ends, more connections than the cap, pipelined and
keep-alive requests. Every answer is read to the server's close and parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from structlog.testing import capture_logs

from hubd.web import server as web
from hubd.web.metrics import Readiness
from hubd.web.server import MAX_CLIENTS, MAX_HEAD, MAX_HEADERS, MetricsServer, Request, Response

WITHIN = 30.0  # a bound on every wait, never a measure of how fast the server is
CSP = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
EXPOSITION = b"# HELP govxchg_up 1\ngovxchg_up 1\n"


class EchoPages:
    """Pages that answer with what the listener read of the request."""

    paths = frozenset(["/", "/status.json"])
    served = b"this endpoint serves GET /metrics, GET /healthz and the page at GET /\n"

    async def answer(self, request: Request) -> Response:
        seen = {"method": request.method, "path": request.path, "host": request.host}
        return Response(200, json.dumps(seen).encode(), "application/json")


@dataclass
class Health:
    ready: bool = True

    def __call__(self) -> Readiness:
        if self.ready:
            return Readiness(ready=True, report={"status": "ok"})
        return Readiness(ready=False, report={"not_ready": ["the store is not open yet"]})


@dataclass
class Served:
    server: MetricsServer
    health: Health

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    health = Health()
    async with MetricsServer(
        "127.0.0.1", 0, metrics=lambda: EXPOSITION, health=health, pages=EchoPages()
    ) as server:
        yield Served(server, health)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    rest: bytes  # whatever came after this answer before the close

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


def parse(raw: bytes, *, head: bool = False) -> Reply:
    """One answer by h11 as a client reads it (after a GET, or a HEAD if ``head``), and
    the bytes after it."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="HEAD" if head else "GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    client.receive_data(b"")
    answer = client.next_event()
    assert isinstance(answer, h11.Response), answer
    body = b""
    while isinstance(event := client.next_event(), h11.Data):
        body += event.data
    assert isinstance(event, h11.EndOfMessage), event
    headers = {name.decode(): value.decode() for name, value in answer.headers}
    return Reply(answer.status_code, headers, body, client.trailing_data[0])


async def exchange(port: int, raw: bytes, *, head: bool = False, half_close: bool = False) -> Reply:
    """Send ``raw`` as it is and read the answer up to the server's close."""
    return parse(await send(port, raw, half_close=half_close), head=head)


async def send(port: int, raw: bytes, *, half_close: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        if half_close:
            writer.write_eof()
        await writer.drain()
        async with asyncio.timeout(WITHIN):
            return await reader.read()
    finally:
        writer.close()


def get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", *headers, "", ""]
    return "\r\n".join(lines).encode()


def assert_strict(reply: Reply) -> None:
    assert reply.headers["content-security-policy"] == CSP
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["referrer-policy"] == "no-referrer"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["connection"] == "close"


# ---------------------------------------------------------------------------- real clients


async def test_urllib_scrapes_metrics_and_reads_healthz(served: Served) -> None:
    def scrape() -> tuple[int, str, bytes, int, bytes]:
        base = f"http://127.0.0.1:{served.port}"
        with urllib.request.urlopen(f"{base}/metrics", timeout=WITHIN) as metrics:  # noqa: S310
            content_type, body = metrics.headers["Content-Type"], metrics.read()
        with urllib.request.urlopen(f"{base}/healthz", timeout=WITHIN) as health:  # noqa: S310
            return metrics.status, content_type, body, health.status, health.read()

    status, content_type, body, health_status, health = await asyncio.to_thread(scrape)

    assert (status, content_type, body) == (200, CONTENT_TYPE_LATEST, EXPOSITION)
    assert health_status == 200
    assert json.loads(health) == {"status": "ok"}


async def test_http_client_gets_the_head_alone_and_reconnects_after_each_answer(
    served: Served,
) -> None:
    def talk() -> list[tuple[int, str | None, bytes, bool]]:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=WITHIN)
        answers = []
        try:  # one HTTPConnection: it opens a new socket when the last answer said close
            for method, path in (("GET", "/healthz"), ("HEAD", "/healthz"), ("GET", "/?x=1")):
                conn.request(method, path, headers={"Connection": "keep-alive"})
                answer = conn.getresponse()
                length = answer.getheader("Content-Length")
                answers.append((answer.status, length, answer.read(), answer.will_close))
        finally:
            conn.close()
        return answers

    got, head, page = await asyncio.to_thread(talk)

    assert got[0] == head[0] == page[0] == 200
    assert head[1] == got[1] == str(len(got[2])), "HEAD: the same Content-Length"
    assert head[2] == b"", "HEAD: no body"
    assert all(answer[3] for answer in (got, head, page)), "keep-alive is answered with close"
    assert json.loads(page[2]) == {"method": "GET", "path": "/", "host": f"127.0.0.1:{served.port}"}


async def test_a_real_client_is_told_405_with_allow_and_404_naming_what_is_served(
    served: Served,
) -> None:
    def refused() -> list[tuple[int, str | None, bytes]]:
        base = f"http://127.0.0.1:{served.port}"
        errors = []
        for request in (
            urllib.request.Request(f"{base}/metrics", data=b"x=1", method="POST"),  # noqa: S310
            urllib.request.Request(f"{base}/nothing-here"),  # noqa: S310 - our own server
        ):
            try:
                urllib.request.urlopen(request, timeout=WITHIN).close()  # noqa: S310
            except urllib.error.HTTPError as exc:
                with exc:
                    errors.append((exc.code, exc.headers["Allow"], exc.read()))
        return errors

    posted, missing = await asyncio.to_thread(refused)

    assert posted[:2] == (405, "GET, HEAD")
    assert b"read-only" in posted[2]
    assert missing[0] == 404
    assert missing[2].endswith(EchoPages.served)


# ---------------------------------------------------------------------------- malformed requests

FOLDED = "X-Note: one\r\n two"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", 400, id="not-a-request-line"),
        pytest.param(b"GET /metrics\r\n\r\n", 400, id="no-version"),
        pytest.param(b"GET  /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="two-spaces"),
        pytest.param(b"G\xc9T /metrics HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="method-not-a-token"),
        pytest.param(b"GET /m\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="nul-in-target"),
        pytest.param(get("/metrics"), 400, id="http-1.1-without-host"),
        pytest.param(get("/metrics", "Host: a", "Host: b"), 400, id="two-hosts"),
        pytest.param(get("/metrics", "Host : a"), 400, id="space-before-colon"),
        pytest.param(get("/metrics", "Host: a", "X-A: b\x00c"), 400, id="nul-in-value"),
        pytest.param(get("/metrics", "Host: a", FOLDED), 400, id="obs-fold"),
        pytest.param(get("/status.json", "Host: 127.0.0.1", "\tevil.example"), 400, id="fold-host"),
        pytest.param(
            get("/metrics", "Host: a", "Content-Length: 1", "Content-Length: 2"),
            400,
            id="conflicting-content-length",
        ),
        pytest.param(get("/metrics", "Host: a", "Content-Length: -1"), 400, id="negative-length"),
        pytest.param(get("/metrics", "Host: a", "Transfer-Encoding: gzip"), 501, id="te-gzip"),
        pytest.param(
            get("/metrics", "Host: a", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
            501,
            id="te-twice",
        ),
        pytest.param(get("/metrics", "Host: a", version="2.0"), 505, id="http-2.0"),
        pytest.param(get("/metrics", "Host: a", method="POST"), 405, id="post"),
        pytest.param(get("/metrics", "Host: a", method="OPTIONS"), 405, id="options"),
        pytest.param(get("/metrics", "Host: a", "X-Pad: " + "a" * MAX_HEAD), 431, id="long-field"),
        pytest.param(
            get("/metrics", "Host: a", *(f"X-{i}: 1" for i in range(MAX_HEADERS))),
            431,
            id="too-many-fields",
        ),
    ],
)
async def test_a_malformed_request_is_refused_with_its_status_and_strict_headers(
    served: Served, raw: bytes, status: int
) -> None:
    reply = await exchange(served.port, raw)

    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert_strict(reply)
    assert reply.body.endswith(EchoPages.served), "every refusal says what is served"
    assert reply.rest == b""


async def test_refusals_say_what_was_wrong_in_chinese_and_english(served: Served) -> None:
    large = await exchange(served.port, get("/", "Host: a", "X-Pad: " + "a" * MAX_HEAD))
    folded = await exchange(served.port, get("/", "Host: a", FOLDED))
    bad = await exchange(served.port, b"GARBAGE\r\n\r\n")
    posted = await exchange(served.port, get("/", "Host: a", method="POST"))

    assert "请求头过大".encode() in large.body
    assert f"at most {MAX_HEAD} bytes and {MAX_HEADERS} header fields".encode() in large.body
    assert "不得折行".encode() in folded.body
    assert b"send each field on one line" in folded.body
    assert b"illegal request line" in bad.body, "h11's reason, quoted"
    assert posted.headers["allow"] == "GET, HEAD"
    assert b"read-only" in posted.body


async def test_a_client_still_sending_past_the_cap_gets_its_431_not_a_reset(
    served: Served,
) -> None:
    # The server reads MAX_HEAD + 1 bytes; closing with the rest unread would reset the
    # connection and the client would lose the answer (its reader fails on the reset).
    reply = await exchange(served.port, get("/", "Host: a", "X-Pad: " + "a" * 40 * MAX_HEAD))

    assert reply.status == 431


async def test_the_head_cap_counts_every_byte_of_the_head_up_to_max_head(served: Served) -> None:
    def head_of(size: int) -> bytes:
        bare = get("/healthz", "Host: a", "X-Pad: ")
        return get("/healthz", "Host: a", "X-Pad: " + "a" * (size - len(bare)))

    at_cap = await exchange(served.port, head_of(MAX_HEAD))
    over = await exchange(served.port, head_of(MAX_HEAD + 1))

    assert len(head_of(MAX_HEAD)) == MAX_HEAD
    assert at_cap.status == 200
    assert over.status == 431


async def test_a_head_trickled_in_small_pieces_is_read_whole(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        for byte in get("/healthz", "Host: a"):
            writer.write(bytes([byte]))
            await writer.drain()
        async with asyncio.timeout(WITHIN):
            reply = parse(await reader.read())
    finally:
        writer.close()

    assert reply.status == 200


async def test_a_head_version_refusal_to_head_has_no_body(served: Served) -> None:
    reply = await exchange(
        served.port, get("/healthz", "Host: a", method="HEAD", version="2.0"), head=True
    )

    assert reply.status == 505
    assert reply.body == b""
    assert int(reply.headers["content-length"]) > 0, "the length of the body a GET would get"


# ---------------------------------------------------------------------------- one request each


async def test_pipelined_requests_get_one_answer_then_the_close(served: Served) -> None:
    second = get("/metrics", "Host: a")
    reply = await exchange(served.port, get("/healthz", "Host: a") + second)

    assert reply.status == 200
    assert json.loads(reply.body) == {"status": "ok"}
    assert reply.rest == b"", "the second request is never read, so never answered"


async def test_a_request_hidden_in_a_body_is_never_read(served: Served) -> None:
    hidden = get("/metrics", "Host: a")
    chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (len(hidden), hidden)
    smuggle = get(
        "/healthz", "Host: a", f"Content-Length: {len(hidden)}", "Transfer-Encoding: chunked"
    )
    with_length = get("/healthz", "Host: a", f"Content-Length: {len(hidden)}")

    both = await exchange(served.port, smuggle + chunked)
    body = await exchange(served.port, with_length + hidden)

    for reply in (both, body):
        assert reply.status == 200
        assert json.loads(reply.body) == {"status": "ok"}
        assert reply.rest == b""


async def test_keep_alive_and_http_1_0_are_answered_and_closed(served: Served) -> None:
    kept = await exchange(served.port, get("/", "Host: localhost", "Connection: keep-alive"))
    old = await exchange(served.port, get("/", version="1.0"))  # no Host in HTTP/1.0

    assert kept.status == old.status == 200
    assert kept.headers["connection"] == old.headers["connection"] == "close"
    assert kept.json()["host"] == "localhost"
    assert old.json() == {"method": "GET", "path": "/", "host": None}


async def test_the_path_is_routed_without_its_query(served: Served) -> None:
    query = await exchange(served.port, get("/status.json?since=1&x[]=2", "Host: a"))
    absolute = await exchange(served.port, get("http://a/status.json", "Host: a"))

    assert query.json()["path"] == "/status.json"
    assert absolute.status == 404, "absolute-form is not a path this listener serves"


async def test_a_client_that_closes_without_a_byte_gets_nothing_and_a_cut_head_gets_400(
    served: Served,
) -> None:
    nothing = await send(served.port, b"", half_close=True)
    cut = await exchange(served.port, b"GET /healthz HTTP/1.1\r\nHost:", half_close=True)

    assert nothing == b""
    assert cut.status == 400
    assert b"peer unexpectedly closed" in cut.body


# ---------------------------------------------------------------------------- slow and many clients


async def test_a_head_trickling_past_the_read_timeout_is_answered_408(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "READ_TIMEOUT", 0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")

    async def trickle() -> None:  # one header byte after another, never the end of the head
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.01)

    trickling = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(WITHIN):
            raw = await reader.read()
    finally:
        trickling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trickling
        writer.close()
    reply = parse(raw)

    assert reply.status == 408
    assert b"did not arrive within 0.3 s" in reply.body
    assert_strict(reply)


async def test_a_slow_client_does_not_hold_the_others(served: Served) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(b"GET /metr")  # and nothing more
        await writer.drain()
        meanwhile = await exchange(served.port, get("/healthz", "Host: a"))
    finally:
        writer.close()

    assert meanwhile.status == 200


class HeldPages(EchoPages):
    """Pages that hold every answer until :attr:`release`; :attr:`all_in` once ``count``
    requests are held inside the server."""

    def __init__(self, count: int) -> None:
        self.count, self.all_in, self.release = count, asyncio.Event(), asyncio.Event()

    async def answer(self, request: Request) -> Response:
        self.count -= 1
        if self.count == 0:
            self.all_in.set()
        await self.release.wait()
        return await super().answer(request)


async def refused(port: int) -> bool:
    """Whether a request is closed unanswered (reset: it was not even read)."""
    try:
        return await send(port, get("/healthz", "Host: a")) == b""
    except ConnectionResetError:
        return True


async def test_past_the_connection_cap_a_client_is_closed_unanswered_until_one_leaves() -> None:
    pages = HeldPages(MAX_CLIENTS)
    async with MetricsServer(
        "127.0.0.1", 0, metrics=lambda: b"", health=Health(), pages=pages
    ) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(MAX_CLIENTS)]
        for _, writer in held:
            writer.write(get("/", "Host: a"))
        async with asyncio.timeout(WITHIN):
            await pages.all_in.wait()
            one_more = await refused(server.port)
            pages.release.set()
            answers = [parse(await reader.read()) for reader, _ in held]
        for _, writer in held:
            writer.close()
        after = await refused(server.port)

    assert one_more, f"the {MAX_CLIENTS + 1}th connection is closed unanswered"
    assert [a.status for a in answers] == [200] * MAX_CLIENTS
    assert not after, "a place is free again once a client has its answer"


async def test_closing_the_server_ends_the_connections_it_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pages = HeldPages(1)  # never released
    server = MetricsServer("127.0.0.1", 0, metrics=lambda: b"", health=Health(), pages=pages)
    await server.__aenter__()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(get("/", "Host: a"))
        await writer.drain()
        async with asyncio.timeout(WITHIN):
            await pages.all_in.wait()
            await server.close()
            await server.close()  # idempotent
            left = await reader.read()
    finally:
        writer.close()

    assert left == b"", "closed unanswered"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "a close is no fault"


# ---------------------------------------------------------------------------- the answers


async def test_healthz_is_503_while_the_hub_is_not_ready(served: Served) -> None:
    served.health.ready = False
    reply = await exchange(served.port, get("/healthz", "Host: a"))

    assert reply.status == 503
    assert reply.json() == {"not_ready": ["the store is not open yet"]}


async def test_a_fault_while_answering_is_500_and_logged_and_the_listener_goes_on() -> None:
    def broken() -> bytes:
        raise RuntimeError("a fault in a collector")

    async with MetricsServer("127.0.0.1", 0, metrics=broken, health=Health()) as server:
        with capture_logs() as logs:
            failed = await exchange(server.port, get("/metrics", "Host: a"))
        health = await exchange(server.port, get("/healthz", "Host: a"))

    assert failed.status == 500
    assert b"metrics.failed" in failed.body
    assert [e["event"] for e in logs] == ["metrics.failed"]
    assert health.status == 200


async def test_without_pages_an_unknown_path_is_404_naming_metrics_and_healthz() -> None:
    async with MetricsServer("127.0.0.1", 0, metrics=lambda: b"", health=Health()) as server:
        reply = await exchange(server.port, get("/", "Host: a"))

    assert reply.status == 404
    assert reply.body.endswith(b"this endpoint serves GET /metrics and GET /healthz\n")
