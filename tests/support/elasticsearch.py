"""Elasticsearch for tests: a server, a proxy in front of it, per-test index prefixes,
simulated outages and a reader that fetches every document for assertions.

The server is ``SLUICE_ES_URL`` when set (a real cluster), otherwise a private
``osmem-server`` (``pip install osmem-server``), an in-memory stand-in. Either way the
code under test talks to :mod:`tests.support.es_proxy` in front of it, which rewrites
elasticsearch-py's compatibility media types for osmem (a real cluster gets them
unchanged) and can refuse connections on demand, so outage tests run against both.

Fixtures::

    es_service       session   EsService(url, upstream_url, local, proxy)
    es_url           session   str: the URL code under test is given (the proxy)
    es_index_prefix  function  str: a fresh prefix "t<hex>"; its indices and template
                               are deleted afterwards
    es_outage        function  EsOutage: pause()/resume()/paused(); resumed afterwards
    es_fetch_all     function  async (pattern, query=None) -> list of hits
    es_count         function  async (pattern, query=None) -> int

The readers go to the server directly, not through the proxy, so they work while a
test holds an outage.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import aiohttp
import pytest
from yarl import URL

from .es_proxy import ProxyThread
from .names import unique_name

__all__ = [
    "EsOutage",
    "EsService",
    "count_docs",
    "fetch_all_docs",
]

ENV_URL = "SLUICE_ES_URL"
STARTUP_TIMEOUT = 60.0
_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


@dataclass(frozen=True)
class EsService:
    url: str
    """What code under test connects to: the proxy."""
    upstream_url: str
    """The server itself; unaffected by :class:`EsOutage`."""
    local: bool
    """True for the osmem stand-in, False for ``SLUICE_ES_URL``."""
    proxy: ProxyThread


class EsOutage:
    """Makes Elasticsearch unavailable to everything that uses ``es_url``.

    ``pause()`` refuses new connections and drops open ones, as a stopped server does;
    ``pause(status=503)`` answers every request with that status instead. Data is kept.
    """

    def __init__(self, proxy: ProxyThread) -> None:
        self._proxy = proxy

    @property
    def is_paused(self) -> bool:
        return self._proxy.paused

    def pause(self, status: Optional[int] = None, error: Any = None) -> None:
        self._proxy.pause(status, error)

    def fail_items(self, ids: Optional[Any], status: int, error: Any) -> None:
        """Bulk items with these ``_id`` values (all when None) are answered with this error."""
        self._proxy.fail_items(ids, status, error)

    def clear_faults(self) -> None:
        self._proxy.clear_faults()

    def resume(self) -> None:
        self._proxy.resume()

    @contextlib.contextmanager
    def paused(self, status: Optional[int] = None) -> Iterator[None]:
        self.pause(status)
        try:
            yield
        finally:
            self.resume()


def _find_osmem() -> Optional[str]:
    explicit = os.environ.get("OSMEM_SERVER_BIN")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "osmem-server"
    if beside.exists():
        return str(beside)
    on_path = shutil.which("osmem-server")
    if on_path:
        return on_path
    # The wheel keeps the binary inside its package and installs no script for it.
    spec = importlib.util.find_spec("osmem_server")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "osmem-server"
        if bundled.exists():
            return str(bundled)
    return None


class _Osmem:
    def __init__(self, binary: str, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
        # Port 0 and the ready line osmem prints avoid racing another process for a port;
        # -parent-pid stops it even if pytest is killed.
        self.process = subprocess.Popen(
            [
                binary,
                "-addr",
                "127.0.0.1:0",
                "-no-stdin-watch",
                "-parent-pid",
                str(os.getpid()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self.url = self._await_ready_line()
        # Keep reading so osmem never blocks on a full stdout pipe.
        threading.Thread(target=self._drain, name="osmem-stdout", daemon=True).start()

    def _await_ready_line(self) -> str:
        found: list[str] = []

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict) and "url" in msg:
                    found.append(str(msg["url"]))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        if not found:
            self.stop()
            raise RuntimeError(
                f"osmem-server did not report ready within {STARTUP_TIMEOUT} s; its log: {self.log_tail()}"
            )
        return found[0]

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


def _request(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    parsed = URL(url)
    headers = dict(_JSON)
    if parsed.user is not None:
        auth = aiohttp.BasicAuth(parsed.user, parsed.password or "")
        headers["Authorization"] = auth.encode()
        url = str(parsed.with_user(None))
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode()
    return json.loads(text) if text else None


def _wait_until_up(url: str, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    problem = ""
    while time.monotonic() < deadline:
        try:
            _request("GET", url + "/", timeout=5)
            return
        except (OSError, ValueError) as exc:
            problem = repr(exc)
            time.sleep(0.2)
    raise RuntimeError(f"{what} at {url} did not answer within {STARTUP_TIMEOUT} s: {problem}")


@pytest.fixture(scope="session")
def es_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsService]:
    real = os.environ.get(ENV_URL, "").strip().rstrip("/")
    osmem: Optional[_Osmem] = None
    if real:
        try:
            _wait_until_up(real, ENV_URL)
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        upstream = real
    else:
        binary = _find_osmem()
        if binary is None:
            pytest.fail(
                "osmem-server, the Elasticsearch stand-in for tests, is not installed: "
                "run `pip install osmem-server` (or `pip install -e .[test]`), "
                f"or set {ENV_URL} to a real cluster.",
                pytrace=False,
            )
        log_path = tmp_path_factory.mktemp("osmem") / "osmem.log"
        try:
            osmem = _Osmem(binary, log_path)
        except (OSError, RuntimeError) as exc:
            pytest.fail(f"cannot start {binary}: {exc}", pytrace=False)
        upstream = osmem.url
    proxy = ProxyThread(upstream, rewrite=osmem is not None).start()
    try:
        _wait_until_up(proxy.url, "the Elasticsearch proxy")
        yield EsService(url=proxy.url, upstream_url=upstream, local=osmem is not None, proxy=proxy)
    finally:
        proxy.stop()
        if osmem is not None:
            osmem.stop()


@pytest.fixture(scope="session")
def es_url(es_service: EsService) -> str:
    return es_service.url


def _delete_prefix(upstream: str, prefix: str) -> None:
    # Real clusters refuse wildcard deletes by default (action.destructive_requires_name),
    # so resolve the names first.
    try:
        found = _request("GET", f"{upstream}/{prefix}-*?ignore_unavailable=true&allow_no_indices=true")
        names = sorted(found or {})
        if names:
            _request("DELETE", f"{upstream}/{','.join(names)}?ignore_unavailable=true")
    except (OSError, ValueError):
        pass
    with contextlib.suppress(OSError, ValueError):
        _request("DELETE", f"{upstream}/_index_template/{prefix}")


@pytest.fixture
def es_index_prefix(es_service: EsService) -> Iterator[str]:
    # A leading letter: index names may not start with "_", "-" or "+".
    prefix = unique_name("t")
    yield prefix
    _delete_prefix(es_service.upstream_url, prefix)


@pytest.fixture
def es_outage(es_service: EsService) -> Iterator[EsOutage]:
    outage = EsOutage(es_service.proxy)
    try:
        yield outage
    finally:
        # The proxy is shared by the whole session.
        es_service.proxy.clear_faults()
        es_service.proxy.resume()


async def _post(session: aiohttp.ClientSession, url: str, body: Any, *, ok: tuple[int, ...] = (200,)) -> Any:
    async with session.post(url, data=json.dumps(body), headers=_JSON) as resp:
        payload = await resp.json(content_type=None)
        if resp.status not in ok:
            raise AssertionError(f"POST {url} -> {resp.status}: {payload}")
        return payload


def _session(url: str) -> tuple[aiohttp.ClientSession, str]:
    parsed = URL(url)
    auth = None
    if parsed.user is not None:
        auth = aiohttp.BasicAuth(parsed.user, parsed.password or "")
        url = str(parsed.with_user(None))
    timeout = aiohttp.ClientTimeout(total=120)
    return aiohttp.ClientSession(auth=auth, timeout=timeout), url.rstrip("/")


_MISSING_OK = "ignore_unavailable=true&allow_no_indices=true"


async def fetch_all_docs(
    url: str,
    pattern: str,
    query: Optional[dict[str, Any]] = None,
    *,
    refresh: bool = True,
    page_size: int = 5000,
) -> list[dict[str, Any]]:
    """Every hit (``_index``, ``_id``, ``_source``) in ``pattern``, in no particular order.

    Scrolls in ``_doc`` order, so any number of documents and any document shape work;
    search_after would need a unique sortable field, and sorting on ``_id`` is refused by
    real Elasticsearch. A pattern matching nothing gives ``[]``.
    """
    session, base = _session(url)
    async with session:
        if refresh:
            await _post(session, f"{base}/{pattern}/_refresh?{_MISSING_OK}", {})
        body: dict[str, Any] = {"size": page_size, "sort": ["_doc"]}
        if query is not None:
            body["query"] = query
        page = await _post(session, f"{base}/{pattern}/_search?scroll=2m&{_MISSING_OK}", body)
        hits: list[dict[str, Any]] = []
        scroll_id = page.get("_scroll_id")
        try:
            while page["hits"]["hits"]:
                hits.extend(page["hits"]["hits"])
                if scroll_id is None:
                    break
                page = await _post(session, f"{base}/_search/scroll", {"scroll": "2m", "scroll_id": scroll_id})
                scroll_id = page.get("_scroll_id", scroll_id)
        finally:
            if scroll_id is not None:
                async with session.delete(
                    f"{base}/_search/scroll", data=json.dumps({"scroll_id": scroll_id}), headers=_JSON
                ):
                    pass
        return hits


async def count_docs(url: str, pattern: str, query: Optional[dict[str, Any]] = None, *, refresh: bool = True) -> int:
    """The number of documents in ``pattern`` (0 when nothing matches)."""
    session, base = _session(url)
    async with session:
        if refresh:
            await _post(session, f"{base}/{pattern}/_refresh?{_MISSING_OK}", {})
        body = {} if query is None else {"query": query}
        result = await _post(session, f"{base}/{pattern}/_count?{_MISSING_OK}", body)
        return int(result["count"])


FetchAll = Callable[..., Awaitable[list[dict[str, Any]]]]
Count = Callable[..., Awaitable[int]]


@pytest.fixture
def es_fetch_all(es_service: EsService) -> FetchAll:
    """``await es_fetch_all(pattern, query=None, refresh=True)`` -> every hit."""

    def fetch(pattern: str, query: Optional[dict[str, Any]] = None, **kwargs: Any) -> Awaitable[list[dict[str, Any]]]:
        return fetch_all_docs(es_service.upstream_url, pattern, query, **kwargs)

    return fetch


@pytest.fixture
def es_count(es_service: EsService) -> Count:
    """``await es_count(pattern, query=None, refresh=True)`` -> number of documents."""

    def count(pattern: str, query: Optional[dict[str, Any]] = None, **kwargs: Any) -> Awaitable[int]:
        return count_docs(es_service.upstream_url, pattern, query, **kwargs)

    return count
