"""Fuzz target: what a client sends the hub's metrics and status listener.

Input: the bytes a client sends, then its close. They reach ``MetricsServer.reply``, the
listener's own handling of a connection: h11 reads the request head (request line, header
fields, Host, Content-Length and Transfer-Encoding rules) under the listener's caps
(8 KiB, 64 fields, no obs-fold, HTTP/1.x, GET and HEAD), the request is routed (/metrics,
/healthz, the status page's paths behind its Host check, ``browser_host_allowed``, against
DNS rebinding) and h11 writes the answer. The bytes arrive in pieces of 1 to 97 bytes (by
the input's length), as a slow client would send them. The documented outcome of a bad
request is an HTTP error answer (400, 405, 431, 501, 505) or, for an empty one, none; any
exception escaping, or an answer that is not one whole HTTP/1.1 head with
``Connection: close``, is a crash.
"""

from __future__ import annotations

import asyncio
import sys

import atheris

with atheris.instrument_imports(include=["hubd", "h11"]):
    from hubd.web.metrics import Readiness
    from hubd.web.server import MetricsServer, Request, Response
    from hubd.web.statuspage import PATHS, browser_host_allowed


class HostCheckedPages:
    """The status page's paths, answered as the page answers them: 403 to a Host name."""

    paths = PATHS
    served = b"this endpoint serves GET /metrics, GET /healthz and the status page at GET /\n"

    async def answer(self, request: Request) -> Response:
        if not browser_host_allowed(request.host):
            return Response(403, b"refused\n")
        return Response(200, b"{}", "application/json")


LOOP = asyncio.new_event_loop()
SERVER = MetricsServer(
    "127.0.0.1",
    0,
    metrics=lambda: b"# metrics\n",
    health=lambda: Readiness(ready=True, report={}),
    pages=HostCheckedPages(),
)


def test_one_input(data: bytes) -> None:
    step = 1 + len(data) % 97
    sent = memoryview(data)

    async def receive(most: int) -> bytes:
        nonlocal sent
        piece, sent = sent[: min(most, step)], sent[min(most, step) :]
        return bytes(piece)

    answer = LOOP.run_until_complete(SERVER.reply(receive))
    if answer is None:
        return
    head, end, _ = answer.partition(b"\r\n\r\n")
    if not (end and head.startswith(b"HTTP/1.1 ") and b"\r\nConnection: close" in head):
        raise AssertionError(f"not a whole HTTP/1.1 answer with Connection: close: {answer!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
