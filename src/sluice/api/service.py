"""The API as one service object (see :class:`sluice.lifecycle.Service`): the aiohttp
application of :mod:`.app` served on ``--port`` (HTTPS with ``--tls-cert``), ops endpoints
included. It holds no state, so shutting down is closing."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from aiohttp import web

from .. import tls
from ..logs import get_logger
from .app import build_app
from .settings import ApiSettings

__all__ = ["ApiService"]

log = get_logger(__name__)


class ApiService:
    """``sluice api`` as an object, built from its settings."""

    name = "api"

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.app = build_app(settings)
        self._runner: Optional[web.AppRunner] = None
        #: never set: the API answers 503 while a dependency is away and waits it out
        self.failed = asyncio.Event()
        #: never set: the API serves until it is stopped
        self.done = asyncio.Event()
        #: the bound port (useful with port 0); None until started
        self.port: Optional[int] = None

    @property
    def failure(self) -> Optional[BaseException]:
        return None

    async def start(self) -> None:
        settings = self.settings
        context = tls.server_context(settings.tls_cert, settings.tls_key) if settings.tls_cert else None
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.host, settings.port, ssl_context=context)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else settings.port
        scheme = "https" if context else "http"
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
        # Tests and scripts read this line to learn the port when --port 0 was given.
        log.info("api_listening", host=settings.host, port=self.port,
                 url=f"{scheme}://{host}:{self.port}")

    async def shutdown(self) -> dict[str, Any]:
        return {}  # requests in progress finish within the runner's cleanup

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
