"""``sluice api``: settings and the service's main loop."""

from __future__ import annotations

import argparse
import asyncio
import re
from dataclasses import dataclass

from aiohttp import web

from .. import tls
from ..auth import TokenFile
from ..errors import ConfigError
from ..es import index_pattern
from ..lifecycle import run_service, stop_on_signals
from ..logs import configure_logging, get_logger
from ..settings import BrokerSettings, StoreSettings, describe, load, option
from ..settings import add_arguments as add_settings
from .app import build_app

__all__ = ["HELP", "ApiSettings", "add_arguments", "main", "serve"]

HELP = (
    "serve the query API (/api/v1/...), its OpenAPI document, the dashboard (/) and "
    "/healthz, /readyz, /metrics over Elasticsearch"
)

log = get_logger(__name__)


@dataclass(frozen=True)
class ApiSettings(BrokerSettings, StoreSettings):
    """Settings of ``sluice api``; RabbitMQ is only read for queue depths."""

    host: str = option("0.0.0.0", "address to listen on")
    port: int = option(8000, "port of the API, the dashboard, /healthz, /readyz and /metrics")
    # Inherited from BrokerSettings; the API serves its operations endpoints on --port.
    http_port: int = option(-1, "unused by the API: /healthz, /readyz and /metrics are on --port")
    kinds: tuple[str, ...] = option(
        ("measurement",), "record kinds whose indices are queried and whose queues are reported"
    )
    es_timeout: float = option(
        10.0, "seconds before an Elasticsearch request counts as failed (answered 503)"
    )
    cors_origins: tuple[str, ...] = option(
        (), "origins allowed to call the API from a browser (CORS), comma-separated, e.g. "
        "https://grafana.example.com; * allows any; empty = no CORS headers (same origin only)"
    )
    token_file: str = option("", "file of hashed tokens (sluice token); when set, every "
                                 "request except /healthz, /readyz, the dashboard page and "
                                 "the OpenAPI document needs a bearer token with the read "
                                 "scope (reloaded when it changes)", metavar="PATH")
    tls_cert: str = option("", "certificate (PEM) to serve HTTPS instead of HTTP; needs "
                               "--tls-key", metavar="PATH")
    tls_key: str = option("", "private key of --tls-cert (PEM)", metavar="PATH")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, not {self.port}")
        if not self.kinds:
            raise ConfigError("kinds must name at least one record kind")
        if self.es_timeout <= 0:
            raise ConfigError(f"es_timeout must be positive, not {self.es_timeout}")
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+/?", origin):
                raise ConfigError(f"cors_origins: {origin!r} is not an origin such as https://host:port or *")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        try:
            for kind in self.kinds:
                index_pattern(self.index_prefix, kind)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, ApiSettings)


async def serve(settings: ApiSettings, stop: asyncio.Event) -> None:
    """Run the API until ``stop`` is set."""
    app = build_app(
        es_url=settings.es_url,
        index_prefix=settings.index_prefix,
        kinds=settings.kinds,
        amqp_url=settings.amqp_url or None,
        namespace=settings.namespace,
        es_timeout=settings.es_timeout,
        cors_origins=settings.cors_origins,
        tokens=TokenFile(settings.token_file) if settings.token_file else None,
        es_options=settings.es_client_options(),
        retention_days=settings.retention_days,
    )
    context = tls.server_context(settings.tls_cert, settings.tls_key) if settings.tls_cert else None
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else settings.port
        scheme = "https" if context else "http"
        # Tests and scripts read this line to learn the port when --port 0 was given.
        log.info("api_listening", host=settings.host, port=port,
                 url=f"{scheme}://{'127.0.0.1' if settings.host in ('0.0.0.0', '') else settings.host}:{port}")
        await stop.wait()
    finally:
        await runner.cleanup()


def main(args: argparse.Namespace) -> int:
    settings = load(ApiSettings, args)
    configure_logging("api", settings.instance_id, settings.log_level)
    log.info("starting", settings=describe(settings))

    async def run() -> int:
        stop = asyncio.Event()
        remove = stop_on_signals(stop)
        try:
            await serve(settings, stop)
        finally:
            remove()
        log.info("stopped")
        return 0

    return run_service(run)
