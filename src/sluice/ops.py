"""The operations side port every long-running service serves over HTTP:

- ``/healthz``: the process is alive and its event loop answers (always 200 while running);
- ``/readyz``: 200 when the service can do its job (its dependencies are reachable), else 503;
- ``/metrics``: Prometheus text format, from the service's own ``CollectorRegistry``
  (several services may share one process, as in the tests, so none uses the global one).

Services that speak only TCP or AMQP serve them on a side port (``start()``); a service
whose own port is HTTP (the API) mounts the same handlers on its app with ``add_routes``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any, Callable, Optional, Union

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from . import __version__

__all__ = ["OpsServer", "service_registry"]

#: named checks, all must pass; may be a coroutine (a check that asks a store)
ReadyCheck = Callable[[], "Union[dict[str, bool], Awaitable[dict[str, bool]]]"]
#: renders a JSON body with a status (default: aiohttp's ``json_response``)
Render = Callable[[web.Request, Any, int], web.Response]
#: validates a request before it is answered (e.g. rejects unknown query parameters)
CheckRequest = Callable[[web.Request], None]


def service_registry() -> CollectorRegistry:
    """A service's registry, with the standard process, Python and GC metrics and
    ``sluice_build_info{version}``; the service adds its own metrics to it."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Gauge("sluice_build_info", "the running sluice version, always 1", ("version",),
          registry=registry).labels(__version__).set(1)
    return registry


class OpsServer:
    """A tiny aiohttp app on its own port; ``ready`` returns named checks, all must pass."""

    def __init__(self, registry: CollectorRegistry, ready: ReadyCheck, host: str, port: int, *,
                 render: Optional[Render] = None,
                 check_request: Optional[CheckRequest] = None) -> None:
        self._registry = registry
        self._ready = ready
        self._render = render
        self._check = check_request
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    def add_routes(self, app: web.Application) -> None:
        """Serve ``/healthz``, ``/readyz`` and ``/metrics`` from ``app`` too."""
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)

    def _app(self) -> web.Application:
        app = web.Application()
        self.add_routes(app)
        return app

    def _checked(self, request: web.Request) -> None:
        if self._check is not None:
            self._check(request)

    def _json(self, request: web.Request, data: Any, status: int = 200) -> web.Response:
        if self._render is not None:
            return self._render(request, data, status)
        return web.json_response(data, status=status)

    async def _healthz(self, request: web.Request) -> web.Response:
        self._checked(request)
        return self._json(request, {"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        self._checked(request)  # before the checks run: a bad request costs nothing
        result = self._ready()
        checks = await result if inspect.isawaitable(result) else result
        ready = all(checks.values())
        return self._json(request, {"ready": ready, "checks": checks}, 200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        self._checked(request)
        return web.Response(
            body=generate_latest(self._registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST, "X-Content-Type-Options": "nosniff"},
        )

    async def start(self) -> None:
        if self._port < 0:
            return
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        addresses = self._runner.addresses
        self.bound_port = int(addresses[0][1]) if addresses else self._port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
