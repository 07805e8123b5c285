"""Header-rewriting HTTP proxy in front of an Elasticsearch-compatible server.

elasticsearch-py 9 always sends ``application/vnd.elasticsearch+json; compatible-with=9``
(``+x-ndjson`` for bulk) as Accept and Content-Type, and osmem-server answers those with 406.
The proxy maps them to plain ``application/json`` / ``application/x-ndjson`` and passes
everything else through: method, raw path and query string, body, status, response headers.

In a TLS deployment it stands in for Elasticsearch's own security too: ``--tls-cert`` and
``--tls-key`` make it listen with HTTPS only, and ``--password`` (default: the
``ELASTIC_PASSWORD`` environment variable, as the real image reads it) makes it answer 401
to any request without ``elastic`` and that password in basic authentication, so the hop
is really encrypted and authenticated with the stand-in as well.

It can also simulate an outage: ``pause()`` stops listening and drops open connections, so
clients see "connection refused" exactly as when Elasticsearch is down, and ``resume()``
listens again on the same port. ``pause(status=503)`` instead answers every request with 503
(``pause(status=403, error={"type": "cluster_block_exception", ...})`` with that error body).

``fail_items(ids, status, error)`` makes ``_bulk`` answer the actions with those ``_id`` values
(every action when ``ids`` is None) with that per-item error, as Elasticsearch does, while
the other actions of the same request reach the server; ``clear_faults()`` ends it.

This file must stay self-contained (aiohttp + stdlib only): it is copied into a container
image as a stand-in and run as a script::

    python es_proxy.py --listen 127.0.0.1:9200 --upstream 127.0.0.1:9201 [--no-rewrite]

The script prints one JSON line ``{"url": ..., "upstream": ..., "pid": ...}`` on stdout once it
listens. SIGUSR1 pauses (refuses connections), SIGUSR2 resumes, SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
from collections.abc import Iterable
from typing import Any, Optional

import aiohttp
from aiohttp import web
from yarl import URL

__all__ = ["EsProxy", "ProxyThread", "main", "rewrite_media_type"]

log = logging.getLogger("es_proxy")

# Headers that describe one hop, not the message; aiohttp recomputes the framing ones.
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
        "Host",
    )
)

_VND = re.compile(r"application/vnd\.elasticsearch\+([A-Za-z0-9.\-]+)")
_COMPAT_PARAM = re.compile(r"\s*;\s*compatible-with\s*=\s*[0-9]+", re.IGNORECASE)


def rewrite_media_type(value: str) -> str:
    """``application/vnd.elasticsearch+json; compatible-with=9`` -> ``application/json``.

    Works on Accept lists too; other parameters (charset, q) are kept.
    """
    if "vnd.elasticsearch+" not in value:
        return value
    parts = []
    for part in value.split(","):
        if _VND.search(part):
            part = _COMPAT_PARAM.sub("", _VND.sub(r"application/\1", part))
        parts.append(part)
    return ",".join(parts)


def _parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    if "://" in value:
        u = URL(value)
        return u.host or default_host, u.port or 80
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return (host.strip("[]") or default_host), int(port)


def _upstream_url(value: str) -> URL:
    if "://" not in value:
        value = "http://" + value
    u = URL(value)
    return u.with_path(u.path.rstrip("/"))


class EsProxy:
    """The proxy on the current event loop: ``start()``, ``pause()``, ``resume()``, ``stop()``."""

    def __init__(
        self,
        upstream: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rewrite: bool = True,
        ssl_context: Optional[ssl.SSLContext] = None,
        password: Optional[str] = None,
    ) -> None:
        upstream_url = _upstream_url(upstream)
        self._ssl = ssl_context
        self._password = password
        # Credentials in the upstream URL are added for clients that send none, so code
        # under test can be given the proxy's bare URL.
        self._auth: Optional[str] = None
        if upstream_url.user is not None:
            basic = aiohttp.BasicAuth(upstream_url.user, upstream_url.password or "")
            self._auth = basic.encode()
            upstream_url = upstream_url.with_user(None)
        self.upstream = upstream_url
        self.host = host
        self.port = port
        self.rewrite = rewrite
        self._session: Optional[aiohttp.ClientSession] = None
        self._web_server: Optional[web.Server] = None
        self._listener: Optional[asyncio.AbstractServer] = None
        self._paused_status: Optional[int] = None
        self._paused_error: Any = None
        self._item_fault: Optional[tuple[Optional[frozenset[str]], int, Any]] = None
        self._refusing = False
        self._in_flight: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._ssl else 'http'}://{host}:{self.port}"

    @property
    def paused(self) -> bool:
        return self._refusing or self._paused_status is not None

    async def start(self) -> None:
        # No total timeout: searches and bulk requests may legitimately be slow upstream;
        # the client in front decides when to give up.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._web_server = web.Server(self._handle)
        await self._listen()

    async def stop(self) -> None:
        await self._close_listener()
        self._drop_connections()
        # Requests whose client was dropped by pause() may still be waiting on upstream.
        pending = list(self._in_flight)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._web_server is not None:
            await self._web_server.shutdown(1.0)
            self._web_server = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def pause(self, status: Optional[int] = None, error: Any = None) -> None:
        """Make the service unavailable until ``resume()``.

        Without ``status`` the port stops accepting (connection refused) and open
        connections are dropped; with a status every request is answered with it, and
        with ``error`` as the body's ``error`` (an Elasticsearch error object).
        """
        if status is not None:
            self._paused_status = status
            self._paused_error = error
            return
        self._refusing = True
        await self._close_listener()
        self._drop_connections()

    def fail_items(self, ids: Optional[Iterable[str]], status: int, error: Any) -> None:
        """Answer ``_bulk`` actions with these ``_id`` values (all when None) with an item error."""
        self._item_fault = (None if ids is None else frozenset(ids), status, error)

    def clear_faults(self) -> None:
        self._item_fault = None

    async def resume(self) -> None:
        self._paused_status = None
        self._paused_error = None
        if self._refusing:
            self._refusing = False
            await self._listen()

    async def _listen(self) -> None:
        assert self._web_server is not None
        loop = asyncio.get_running_loop()
        # The same port again after a pause: other processes were told this address.
        self._listener = await loop.create_server(
            self._web_server, self.host, self.port, reuse_address=True, backlog=1024, ssl=self._ssl
        )
        sock = self._listener.sockets[0]
        self.port = sock.getsockname()[1]

    async def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None

    def _drop_connections(self) -> None:
        if self._web_server is None:
            return
        for proto in self._web_server.connections:
            transport = getattr(proto, "transport", None)
            if transport is not None:
                transport.abort()

    def _forward_headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        out = []
        for name, value in headers:
            lname = name.lower()
            if lname in _HOP_BY_HOP:
                continue
            if self.rewrite and lname in ("accept", "content-type"):
                value = rewrite_media_type(value)
            out.append((name, value))
        if self._auth is not None and not any(n.lower() == "authorization" for n, _ in out):
            out.append(("Authorization", self._auth))
        return out

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is None:
            return await self._forward(request)
        self._in_flight.add(task)
        try:
            return await self._forward(request)
        finally:
            self._in_flight.discard(task)

    def _authorized(self, request: web.BaseRequest) -> bool:
        if self._password is None:
            return True
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == "elastic" and hmac.compare_digest(password, self._password)

    async def _forward(self, request: web.BaseRequest) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response(
                {"error": {"type": "security_exception", "reason": "missing or wrong credentials"},
                 "status": 401},
                status=401, headers={"WWW-Authenticate": 'Basic realm="security"'},
            )
        if self._paused_status is not None:
            return web.json_response(
                {"error": self._paused_error or "es_proxy: service paused",
                 "status": self._paused_status},
                status=self._paused_status,
            )
        assert self._session is not None
        target = URL(str(self.upstream) + request.raw_path, encoded=True)
        # Not request.read(): that caps bodies at 1 MiB, and bulk requests are far larger.
        body = await request.content.read()
        if self._item_fault is not None and request.path.endswith("/_bulk") and body:
            return await self._bulk_with_faults(request, target, body, self._item_fault)
        try:
            async with self._session.request(
                request.method,
                target,
                headers=self._forward_headers(request.headers.items()),
                # A BytesIO, not bytes: aiohttp warns (ResourceWarning) about raw bodies over 1 MiB.
                data=io.BytesIO(body) if body else None,
                # Pass the client's headers as they are; no defaults of our own.
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                resp = web.Response(status=upstream.status, reason=upstream.reason)
                for name, value in upstream.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        resp.headers.add(name, value)
                if request.method == "HEAD":
                    length = upstream.headers.get("Content-Length")
                    if length is not None:
                        resp.headers["Content-Length"] = length
                else:
                    resp.body = payload
                return resp
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
            log.warning("upstream %s unreachable: %r", self.upstream, exc)
            return web.json_response({"error": f"es_proxy: upstream unreachable: {exc!r}", "status": 502}, status=502)


    async def _bulk_with_faults(
        self, request: web.BaseRequest, target: URL, body: bytes,
        fault: tuple[Optional[frozenset[str]], int, Any],
    ) -> web.StreamResponse:
        """Forward the actions the fault spares; answer the others with its error, each
        at its place in ``items``. Only ``create``/``index`` actions (two lines) are sent
        by sluice, so the body is read as pairs."""
        ids, status, error = fault
        lines = body.splitlines()
        pairs = [lines[i:i + 2] for i in range(0, len(lines), 2)]
        failed: list[bool] = []
        for pair in pairs:
            action = json.loads(pair[0])
            meta = next(iter(action.values()))
            failed.append(ids is None or meta.get("_id") in ids)
        kept = b"".join(b"\n".join(pair) + b"\n" for pair, bad in zip(pairs, failed) if not bad)
        upstream_items: list[Any] = []
        took = 0
        if kept:
            async with self._session.request(  # type: ignore[union-attr]
                request.method, target, data=io.BytesIO(kept),
                headers=self._forward_headers(request.headers.items()),
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            ) as upstream:
                answer = json.loads(await upstream.read())
                if upstream.status != 200:
                    return web.json_response(answer, status=upstream.status,
                                             headers={"X-Elastic-Product": "Elasticsearch"})
                upstream_items = list(answer.get("items", []))
                took = int(answer.get("took", 0))
        items = []
        for bad in failed:
            items.append({"create": {"status": status, "error": error}} if bad
                         else upstream_items.pop(0))
        return web.json_response(
            {"took": took, "errors": True, "items": items},
            headers={"X-Elastic-Product": "Elasticsearch"},
        )


class ProxyThread:
    """An ``EsProxy`` on its own event loop in a daemon thread, controlled synchronously.

    Keeps the proxy independent of whichever loop a test (or pytest-asyncio) is running.
    """

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0, *, rewrite: bool = True) -> None:
        self.proxy = EsProxy(upstream, host, port, rewrite=rewrite)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def paused(self) -> bool:
        return self.proxy.paused

    def start(self, timeout: float = 10.0) -> ProxyThread:
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.proxy.start())
            except BaseException as exc:
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.proxy.stop())
                # What aiohttp still runs for dropped connections ends with the loop.
                leftover = asyncio.all_tasks(loop)
                for task in leftover:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="es-proxy", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError("es_proxy did not start in time")
        if errors:
            raise errors[0]
        return self

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def pause(self, status: Optional[int] = None, error: Any = None) -> None:
        self._call(self.proxy.pause(status, error))

    def fail_items(self, ids: Optional[Iterable[str]], status: int, error: Any) -> None:
        self._call(_run(self.proxy.fail_items, ids, status, error))

    def clear_faults(self) -> None:
        self._call(_run(self.proxy.clear_faults))

    def resume(self) -> None:
        self._call(self.proxy.resume())

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _run(func: Any, *args: Any) -> Any:
    """``func(*args)`` on the proxy's loop, so it applies before the next request."""
    return func(*args)


async def _serve(args: argparse.Namespace) -> None:
    host, port = _parse_hostport(args.listen)
    context = None
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key or None)
    proxy = EsProxy(args.upstream, host, port, rewrite=not args.no_rewrite, ssl_context=context,
                    password=args.password or None)
    await proxy.start()
    print(
        json.dumps({"url": proxy.url, "upstream": str(proxy.upstream), "pid": os.getpid()}),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    # Signals only enqueue; this loop applies them in order, so a quick USR1+USR2 pair
    # cannot resume before the pause has finished.
    commands: asyncio.Queue[str] = asyncio.Queue()
    for signum, command in (
        (signal.SIGUSR1, "pause"),
        (signal.SIGUSR2, "resume"),
        (signal.SIGTERM, "stop"),
        (signal.SIGINT, "stop"),
    ):
        loop.add_signal_handler(signum, commands.put_nowait, command)
    try:
        while True:
            command = await commands.get()
            log.info("signal: %s", command)
            if command == "stop":
                break
            if command == "pause":
                await proxy.pause()
            else:
                await proxy.resume()
    finally:
        await proxy.stop()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Header-rewriting proxy in front of an Elasticsearch-compatible server "
        "(SIGUSR1 = refuse connections, SIGUSR2 = accept again)."
    )
    parser.add_argument("--listen", default="127.0.0.1:9200", help="HOST:PORT to listen on")
    parser.add_argument("--upstream", required=True, help="HOST:PORT or URL of the server")
    parser.add_argument(
        "--no-rewrite",
        action="store_true",
        help="pass Accept/Content-Type unchanged (a real Elasticsearch needs no rewriting)",
    )
    parser.add_argument("--tls-cert", default=os.environ.get("ES_PROXY_TLS_CERT", ""),
                        help="serve HTTPS only, with this certificate (PEM) [env ES_PROXY_TLS_CERT]")
    parser.add_argument("--tls-key", default=os.environ.get("ES_PROXY_TLS_KEY", ""),
                        help="key of --tls-cert [env ES_PROXY_TLS_KEY]")
    parser.add_argument("--password", default=os.environ.get("ELASTIC_PASSWORD", ""),
                        help="require basic authentication as 'elastic' with this password "
                        "[env ELASTIC_PASSWORD]")
    parser.add_argument("--log-level", default=os.environ.get("ES_PROXY_LOG_LEVEL", "WARNING"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:
        print(f"es_proxy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
