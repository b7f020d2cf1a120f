"""Fuzz target: the head of an HTTP request to the hub's metrics and status listener.

Input: the bytes a client sends. They are fed to an ``asyncio.StreamReader`` with the
listener's limit and read by the listener's own ``MetricsServer._read`` (the request line,
at most 64 header lines and 8 KiB, the Host header), then as the listener goes on: the
status page's Host check (``browser_host_allowed``, against DNS rebinding) and the
encoding of the answer's head. The documented outcome of a bad request is an error
``Response`` (400, 405, 431, 505); any exception escaping is a crash.
"""

from __future__ import annotations

import asyncio
import sys

import atheris

with atheris.instrument_imports(include=["hubd"]):
    from hubd.web.metrics import Readiness
    from hubd.web.server import MAX_HEAD, MetricsServer, Request, Response
    from hubd.web.statuspage import browser_host_allowed

LOOP = asyncio.new_event_loop()
SERVER = MetricsServer(
    "127.0.0.1", 0, metrics=lambda: b"", health=lambda: Readiness(ready=True, report={})
)


async def read(data: bytes) -> Request | Response | None:
    reader = asyncio.StreamReader(limit=MAX_HEAD)
    reader.feed_data(data)
    reader.feed_eof()
    return await SERVER._read(reader)  # noqa: SLF001 - the listener's own reading of the head


def test_one_input(data: bytes) -> None:
    request = LOOP.run_until_complete(read(data))
    if isinstance(request, Response):
        request.encode()
    elif isinstance(request, Request):
        browser_host_allowed(request.host)
        Response(200, b"", headers=(("Vary", "Host"),)).encode(head=request.method == "HEAD")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
