"""Settings of ``sluice api``: flags, ``SLUICE_*`` variables and their validation."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError
from ..es import index_pattern
from ..settings import BrokerSettings, StoreSettings, check_kinds, option

__all__ = ["ApiSettings"]


@dataclass(frozen=True)
class ApiSettings(BrokerSettings, StoreSettings):
    """Settings of ``sluice api``; RabbitMQ is only read for queue depths."""

    host: str = option("0.0.0.0", "address to listen on")
    port: int = option(8000, "port of the API, the dashboard, /healthz, /readyz and /metrics")
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
        check_kinds(self.kinds)
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
