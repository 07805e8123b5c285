"""The aiohttp application: routes, the JSON error middleware, request metrics, and the
cleanup contexts that own the Elasticsearch client and the RabbitMQ connection.

Errors never leave as HTML or a stack trace: every status other than 200 is
``{"error": {"status", "code", "message"}}`` (see responses.py), including aiohttp's own
404 and 405; a 503 carries ``Retry-After``. CORS (``--cors-origins``) is the outermost layer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from importlib import resources
from pathlib import Path
from typing import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware
from prometheus_client import Counter, Histogram

from ..auth import TokenFile
from ..backoff import Backoff
from ..errors import IndexingError
from ..es import ensure_template
from ..lifecycle import TaskOwner
from ..logs import get_logger
from ..ops import OpsServer, service_registry
from ..topology import Topology
from .auth import bearer_auth
from .cors import cors_middleware
from .handlers import CONTEXT, ApiContext, add_routes
from .openapi import openapi_document
from .params import PLAIN, parse_query
from .pipeline import QueueInspector
from .responses import RETRY_AFTER_S, ApiError, error_body, json_response
from .settings import ApiSettings
from .store import Store

__all__ = ["ApiMetrics", "BadRequestLogFilter", "build_app", "quiet_bad_request_logs", "static_dir"]

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiMetrics:
    """What ``/metrics`` reports about the API itself."""

    def __init__(self) -> None:
        self.registry = service_registry()
        self.requests = Counter(
            "sluice_api_requests_total", "HTTP requests answered, by route, method and status",
            ("route", "method", "status"), registry=self.registry,
        )
        self.latency = Histogram(
            "sluice_api_request_duration_seconds", "time to answer an HTTP request, by route",
            ("route",), registry=self.registry,
        )
        self.store_latency = Histogram(
            "sluice_api_store_request_duration_seconds",
            "time of each Elasticsearch search the API sends", registry=self.registry,
        )


METRICS = web.AppKey("sluice_api_metrics", ApiMetrics)


class BadRequestLogFilter(logging.Filter):
    """Turns aiohttp's ERROR-with-traceback for a request malformed at the HTTP level
    (a line or header over 8190 bytes, bytes that are not ASCII, a broken header) into
    one WARNING line: the client sent garbage and got a plain 400; the API is fine.
    Every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.getMessage()}: bad HTTP request ({type(exc).__name__}, status 400)"
            record.args = ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_bad_request_logs() -> None:
    """Install :class:`BadRequestLogFilter` on the ``aiohttp.server`` logger, once."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, BadRequestLogFilter) for f in logger.filters):
        logger.addFilter(BadRequestLogFilter())


def static_dir() -> Path:
    return Path(str(resources.files("sluice.api") / "static"))


def _route_label(request: web.Request) -> str:
    # The route's template, never the raw path: unknown paths must not grow the label set.
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None or getattr(info, "http_exception", None) is not None:
        return "unmatched"
    return str(resource.canonical)


def _not_found(request: web.Request) -> str:
    return f"no such endpoint: {request.path}; see /api/v1/openapi.json"


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.status
        response = json_response(request, exc.body(), status=exc.status)
        if exc.status == 503:
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "bad_request")
        message = {
            404: _not_found(request),
            405: f"{request.method} is not allowed on {request.path}",
        }.get(exc.status, exc.reason)
        response = json_response(request, error_body(code, message, exc.status), status=exc.status)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        status = 499  # the client went away
        raise
    except Exception as exc:
        status = 500
        log.error("unhandled_error", path=request.path, error=repr(exc), exc_info=exc)
        return json_response(request, error_body("internal", "internal error; see the API's log", 500),
                             status=500)
    finally:
        metrics = request.app[METRICS]
        route = _route_label(request)
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)


def _plain_query(request: web.Request) -> None:
    parse_query(request.query, PLAIN)  # ?pretty only: anything else is a 400


async def _openapi(request: web.Request) -> web.Response:
    parse_query(request.query, PLAIN)
    return json_response(request, openapi_document())


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(static_dir() / "index.html", headers={"Cache-Control": "no-cache"})


async def _asset(request: web.Request) -> web.FileResponse:
    # Only the files that exist, by exact name: nothing else under the package is served.
    name = request.match_info["name"]
    path = static_dir() / name
    if name.startswith(".") or "/" in name or not path.is_file():
        raise ApiError(404, "not_found", _not_found(request))
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


async def _install_template(store: Store, retention_days: int) -> None:
    """Install the index template once Elasticsearch answers, whenever that is."""
    backoff = Backoff(base=0.5, cap=30.0)
    while True:
        try:
            await ensure_template(store.client, store.prefix, retention_days=retention_days)
        except IndexingError as exc:
            log.warning("template_install_failed", error=str(exc)[:300])
            await asyncio.sleep(backoff.next_delay())
        else:
            return


def build_app(settings: ApiSettings, *, install_template: bool = True) -> web.Application:
    """The API application; its resources open on startup and close on cleanup. With
    ``settings.token_file``, requests need a bearer token with the read scope (see
    ``auth.py``). ``/healthz``, ``/readyz`` and ``/metrics`` are :class:`OpsServer`'s
    handlers, answering in the API's JSON (``?pretty``, unknown parameters refused)."""
    quiet_bad_request_logs()
    metrics = ApiMetrics()
    # CORS outermost: preflights are answered before anything else, errors get its headers;
    # bearer tokens innermost, so a 401 is counted and carries the CORS headers too.
    middlewares: list[Middleware] = (
        [cors_middleware(settings.cors_origins)] if settings.cors_origins else [])
    middlewares.append(_errors_and_metrics)
    if settings.token_file:
        middlewares.append(bearer_auth(TokenFile(settings.token_file)))
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
    app[METRICS] = metrics

    async def resources_ctx(app: web.Application) -> AsyncIterator[None]:
        store = Store(settings.es_url, settings.index_prefix, settings.kinds,
                      timeout=settings.es_timeout, latency=metrics.store_latency,
                      es_options=settings.es_client_options())
        inspector = QueueInspector(settings.amqp_url) if settings.amqp_url else None
        tasks = TaskOwner("api")
        app[CONTEXT] = ApiContext(store, inspector, Topology(settings.namespace), settings.kinds)
        if install_template:
            tasks.spawn(_install_template(store, settings.retention_days), name="install-template")
        try:
            yield
        finally:
            await tasks.close()
            if inspector is not None:
                await inspector.close()
            await store.close()

    async def ready() -> dict[str, bool]:
        return {"elasticsearch": await app[CONTEXT].store.ping()}

    app.cleanup_ctx.append(resources_ctx)
    add_routes(app)
    # No side port (port -1): the API's own port serves the ops endpoints.
    ops = OpsServer(metrics.registry, ready, settings.host, -1, render=json_response,
                    check_request=_plain_query)
    ops.add_routes(app)
    app.router.add_get("/api/v1/openapi.json", _openapi)
    app.router.add_get("/", _index)
    app.router.add_get("/static/{name}", _asset)
    return app
