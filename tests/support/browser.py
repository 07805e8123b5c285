"""A real headless Chromium for tests, driven over the Chrome DevTools Protocol with
aiohttp's websocket client: no browser download, no driver package.

Fixture::

    chromium   function  async factory () -> Browser (closed afterwards)

``Browser.open(url)`` gives a :class:`Page` with ``evaluate``, ``wait_for`` and
``screenshot``. Chromium missing fails the test with the command that installs it.
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
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Callable, Optional

import aiohttp
import pytest

__all__ = ["Browser", "BrowserError", "Page", "find_chromium"]

FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in containers
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
)


class BrowserError(RuntimeError):
    pass


def find_chromium() -> Optional[str]:
    explicit = os.environ.get("SLUICE_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class Page:
    """One tab, spoken to over its own DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BrowserError("DevTools connection closed"))

    async def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy; its value is returned."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(BrowserError):
                last = await self.evaluate(expression)
                if last:
                    return last
            await asyncio.sleep(interval)
        raise BrowserError(
            f"timed out after {timeout} s waiting for {expression!r} (last value {last!r}); "
            f"console: {self.console[-5:]}; exceptions: {self.exceptions[-5:]}"
        )

    async def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = await self.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        data = await self.send("Page.captureScreenshot", **params)
        _write(path, base64.b64decode(data["data"]))
        return path

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    # Popen returns as soon as the process exists; the wait for its port is async below.
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Browser:
    """A headless Chromium process with an empty profile of its own."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, profile: str) -> None:
        self.process = process
        self.port = port
        self._profile = profile
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._pages: list[Page] = []

    @classmethod
    async def launch(cls, binary: str, width: int = 1400, height: int = 1000, timeout: float = 30.0) -> Browser:
        profile = tempfile.mkdtemp(prefix="sluice-chromium-")
        args = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        process = _spawn(args)
        # Chromium writes the port it picked (and the browser target's path) into the profile.
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                shutil.rmtree(profile, ignore_errors=True)
                raise BrowserError(f"{binary} exited with status {process.returncode} at startup")
            with contextlib.suppress(OSError, ValueError, IndexError):
                port = int(port_file.read_text().splitlines()[0])
                return cls(process, port, profile)
            await asyncio.sleep(0.05)
        process.kill()
        process.wait()
        shutil.rmtree(profile, ignore_errors=True)
        raise BrowserError(f"{binary} did not open its DevTools port within {timeout} s")

    async def open(self, url: str, width: int = 1400, height: int = 1000) -> Page:
        async with self._session.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as resp:
            target = await resp.json(content_type=None)
        ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        self._pages.append(page)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=1, mobile=False)
        await page.goto(url)
        return page

    async def close(self) -> None:
        for page in self._pages:
            with contextlib.suppress(Exception):
                await page.close()
        await self._session.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)


@pytest.fixture
async def chromium() -> AsyncIterator[Callable[[], Awaitable[Browser]]]:
    binary = find_chromium()
    if binary is None:
        pytest.fail(
            "Chromium is needed for the dashboard test and is not installed: apt-get install chromium "
            "(or set SLUICE_CHROMIUM to a Chromium/Chrome binary)",
            pytrace=False,
        )
    browsers: list[Browser] = []

    async def launch() -> Browser:
        browser = await Browser.launch(binary)
        browsers.append(browser)
        return browser

    yield launch
    for browser in browsers:
        await browser.close()
