"""Settings of ``sluice server``: flags, ``SLUICE_*`` variables and their validation."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..protocol import DEFAULT_MAX_FRAME
from ..settings import BrokerSettings, OpsSettings, check_kinds, option

__all__ = ["DEFAULT_MAX_INFLIGHT_BYTES", "ServerSettings"]

#: sized for a small container (256 MiB): the budget, plus the interpreter (about 60 MiB),
#: plus transient copies while frames are decoded and written to RabbitMQ
DEFAULT_MAX_INFLIGHT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings(OpsSettings, BrokerSettings):
    host: str = option("0.0.0.0", "address to listen on (ingest TCP and the HTTP side port)")
    port: int = option(7000, "TCP port for client connections (0 = any free port)")
    kinds: tuple[str, ...] = option(
        ("measurement",), "record kinds whose queues are declared at start (comma-separated); "
        "batches of other kinds are nacked unroutable unless something else binds them",
    )
    max_frame: int = option(DEFAULT_MAX_FRAME, "largest frame accepted, in bytes")
    max_inflight: int = option(64, "unconfirmed batches per connection before the server "
                                   "stops reading it")
    max_inflight_bytes: int = option(
        DEFAULT_MAX_INFLIGHT_BYTES, "bytes of unsettled batches held across all connections; "
        "at this budget the server stops reading connections (TCP backpressure, no error) "
        "until confirms free bytes; at least max_frame")
    max_connections: int = option(1000, "client connections served at once; more are refused")
    idle_timeout: float = option(60.0, "seconds a connection with nothing in flight may stay "
                                       "silent before it is closed")
    drain_timeout: float = option(8.0, "seconds to wait on SIGTERM/SIGINT for in-flight "
                                       "confirms before closing")
    # -- security (docs/security.md) --
    tls_cert: str = option("", "certificate (PEM, with its chain) to serve ingest over TLS; "
                               "needs --tls-key", metavar="PATH")
    tls_key: str = option("", "private key of --tls-cert (PEM)", metavar="PATH")
    tls_client_ca: str = option("", "CA (PEM) of client certificates (mutual TLS): a client "
                                    "must present one it signed, or a token when --token-file "
                                    "is set; needs --tls-cert", metavar="PATH")
    token_file: str = option("", "file of hashed client tokens with their allowed kinds; "
                                 "clients must then authenticate (reloaded when it changes)",
                             metavar="PATH")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, not {self.port}")
        check_kinds(self.kinds)
        if not 64 <= self.max_frame <= 2**32 - 1:
            raise ConfigError(f"max_frame must be 64..{2**32 - 1} bytes, not {self.max_frame}")
        if self.max_inflight < 1:
            raise ConfigError(f"max_inflight must be at least 1, not {self.max_inflight}")
        if self.max_inflight_bytes < self.max_frame:
            raise ConfigError(f"max_inflight_bytes ({self.max_inflight_bytes}) must be at least "
                              f"max_frame ({self.max_frame})")
        if self.max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, not {self.max_connections}")
        if not self.idle_timeout > 0:
            raise ConfigError(f"idle_timeout must be positive, not {self.idle_timeout}")
        if not self.drain_timeout >= 0:
            raise ConfigError(f"drain_timeout must be 0 or more, not {self.drain_timeout}")
        self._check_tls()

    def _check_tls(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
