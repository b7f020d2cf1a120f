"""Debian's headless Chromium driven over the Chrome DevTools Protocol, for page tests.

``async with Chromium(folder) as browser`` starts ``chromium --headless`` with a fresh
profile in ``folder`` and no background traffic (the network here is closed: without
those flags Chromium's own connections are refused and it logs about them), finds its
DevTools port in the profile's ``DevToolsActivePort`` file (so no port is guessed), and
opens one page. Commands go over one websocket (the ``websockets`` package); console
messages and uncaught exceptions of the page are collected, so a test can insist there
were none. The process is killed at exit whatever happened.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from runtime.tasks import cancel_and_wait
from tests.hubproc import stop_process

START_WITHIN = 30.0  # seconds for Chromium to write its DevTools port (a loaded machine)
COMMAND_WITHIN = 30.0
REQUIRE = "GOVX_REQUIRE_CHROMIUM"  # set by .ci/run: a missing browser fails, never skips
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)


def chromium_or_skip() -> str:
    """Chromium's path; a skip naming the reason, or a failure where CI requires it."""
    found = shutil.which("chromium")
    if found is None:
        reason = "Debian's chromium is not installed (apt-get install chromium fonts-noto-cjk)"
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{REQUIRE}=1 but {reason}")
        pytest.skip(reason)
    return found


def cjk_font_or_skip() -> None:
    """A font with Chinese glyphs, or the page's names would be boxes in the screenshot."""
    fc_list = shutil.which("fc-list")
    listed = ""
    if fc_list is not None:
        listed = subprocess.run(  # noqa: S603 - fontconfig's own lister, fixed arguments
            [fc_list, ":lang=zh", "family"], capture_output=True, text=True, check=False
        ).stdout
    if not listed.strip():
        reason = "no font with Chinese glyphs (apt-get install fonts-noto-cjk)"
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{REQUIRE}=1 but {reason}")
        pytest.skip(reason)


class PageError(AssertionError):
    """The page threw, or a DevTools command failed."""


class Chromium:
    def __init__(self, folder: Path, *, width: int = 1440, height: int = 900) -> None:
        self.folder, self.width, self.height = folder, width, height
        self.console: list[str] = []  # "level: text" of every console message
        self.exceptions: list[str] = []  # uncaught exceptions in the page
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._session: str | None = None
        self._scratch: Path | None = None  # the TMPDIR it runs with

    async def __aenter__(self) -> Chromium:
        binary = chromium_or_skip()
        profile = self.folder / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        # Chromium makes scratch folders (org.chromium.Chromium.*) in TMPDIR and leaves
        # them behind when stopped: in a folder of this browser's, removed when it stops.
        # A short path under /tmp: its socket there must fit a Unix socket path (108
        # bytes; one under the test's folder made Chromium abort, "Socket path too long").
        self._scratch = Path(tempfile.mkdtemp(prefix="govx-chromium-"))
        scratch = self._scratch
        with (self.folder / "chromium.log").open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603, ASYNC220 - starting it is quick
                [
                    binary,
                    *FLAGS,
                    f"--user-data-dir={profile}",
                    f"--window-size={self.width},{self.height}",
                    "about:blank",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TMPDIR": str(scratch)},
            )
        try:
            port, path = await self._devtools_address(profile / "DevToolsActivePort")
            self._socket = await connect(f"ws://127.0.0.1:{port}{path}", max_size=None)
            self._reader = asyncio.create_task(self._read(self._socket))
            target = await self.send("Target.createTarget", url="about:blank")
            attached = await self.send(
                "Target.attachToTarget", targetId=target["targetId"], flatten=True
            )
            self._session = attached["sessionId"]
            for domain in ("Page", "Runtime"):
                await self.send(f"{domain}.enable")
            await self.viewport(self.width, self.height)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            await cancel_and_wait(self._reader)
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()
        if self._process is not None:
            stop_process(self._process)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    async def _devtools_address(self, active: Path) -> tuple[int, str]:
        try:
            async with asyncio.timeout(START_WITHIN):
                while True:  # Chromium writes the file once it listens
                    if self._process is not None and self._process.poll() is not None:
                        raise PageError(
                            f"chromium exited with {self._process.returncode}; see "
                            f"{self.folder / 'chromium.log'}"
                        )
                    with contextlib.suppress(FileNotFoundError, ValueError):
                        port, path = active.read_text().splitlines()[:2]  # noqa: ASYNC240
                        return int(port), path
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise PageError(
                f"chromium did not open DevTools within {START_WITHIN:.0f} s; see "
                f"{self.folder / 'chromium.log'}"
            ) from None

    async def _read(self, socket: ClientConnection) -> None:
        async for raw in socket:
            message = json.loads(raw)
            waiter = self._waiting.pop(message.get("id", -1), None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(message)
                continue
            method, params = message.get("method"), message.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                self.console.append(f"{params['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                thrown = details.get("exception", {}).get("description") or details.get("text")
                self.exceptions.append(str(thrown))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result, or PageError with the protocol's message."""
        assert self._socket is not None
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if self._session is not None and not method.startswith("Target."):
            message["sessionId"] = self._session
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = waiter
        await self._socket.send(json.dumps(message))
        try:
            async with asyncio.timeout(COMMAND_WITHIN):
                answer = await waiter
        finally:
            self._waiting.pop(ident, None)
        if "error" in answer:
            raise PageError(f"{method} failed: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def viewport(self, width: int, height: int) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    async def open(self, url: str) -> None:
        answer = await self.send("Page.navigate", url=url)
        if answer.get("errorText"):
            raise PageError(f"cannot open {url}: {answer['errorText']}")

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page."""
        answer = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in answer:
            raise PageError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, what: str, within: float = 30.0) -> Any:
        """Evaluate ``expression`` until it is truthy; its value. The DOM is polled."""
        last: Any = None
        try:
            async with asyncio.timeout(within):
                while True:
                    last = await self.evaluate(expression)
                    if last:
                        return last
                    await asyncio.sleep(0.2)  # polling the page's DOM, bounded above
        except TimeoutError:
            raise AssertionError(
                f"gave up after {within:.0f} s waiting for {what}; last {last!r}; "
                f"page exceptions {self.exceptions}; console {self.console[-5:]}"
            ) from None

    async def screenshot(self, path: Path) -> Path:
        """The whole page (not only the viewport) as a PNG at ``path``."""
        height = int(await self.evaluate("document.documentElement.scrollHeight"))
        await self.viewport(self.width, max(height, self.height))
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))  # noqa: ASYNC240 - once, small
        await self.viewport(self.width, self.height)
        return path
