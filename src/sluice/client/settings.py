"""Settings of ``sluice client``: flags, ``SLUICE_*`` variables and their validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .. import tls
from ..errors import ConfigError
from ..protocol import validate_kind
from ..records import MEASUREMENT_KIND
from ..settings import CommonSettings, Seconds, option
from .security import Credentials

__all__ = ["ClientSettings", "parse_target"]


def parse_target(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6addr]:port`` as (host, port); raises ConfigError."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"target must be HOST:PORT, not {target!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


@dataclass(frozen=True)
class ClientSettings(CommonSettings):
    target: str = option("localhost:7000", "server (or load balancer) to stream to, HOST:PORT",
                         metavar="HOST:PORT")
    connections: int = option(1, "persistent connections to open, each with its own batches")
    batch_size: int = option(2000, "records per batch (one frame, one AMQP message)")
    linger_ms: float = option(50.0, "send a partial batch once its first record is this old (ms)")
    rate: float = option(0.0, "records per second to generate; 0 = as fast as they are acked")
    duration: Seconds = option(0.0, "how long to generate, e.g. 90s, 5m, 1h30m (plain numbers "
                                    "are seconds); 0 = until --count (or forever)")
    count: int = option(0, "records to generate; 0 = until --duration (or forever)")
    sensors: int = option(100, "number of synthetic sensors")
    extra_tags: int = option(0, "extra tags per generated record (t01, t02, ...), to measure "
                                "throughput at larger records; see --tag-bytes")
    tag_bytes: int = option(16, "characters in each extra tag's value")
    seed: Optional[int] = option(None, "seed for reproducible generated data (default random)")
    file: str = option("", "send NDJSON records from PATH, or - for stdin, instead of generating",
                       metavar="PATH")
    kind: str = option(MEASUREMENT_KIND, "record kind (routing key raw.<kind>)")
    max_tries: int = option(20, "nacks of one batch with a lasting cause (a code this client "
                                "does not know; unroutable gives up after 3 at most) before "
                                "giving it up as failed; transient failures do not count: "
                                "see --give-up-after")
    give_up_after: Seconds = option(600.0, "seconds to keep retrying through transient failures "
                                         "(RabbitMQ unavailable, a full queue refusing "
                                         "publishes, connections broken or refused, "
                                         "server unreachable or silent), counted from a batch's "
                                         "first send, before giving it up as failed; 0 = never")
    drain_timeout: Seconds = option(30.0, "on SIGINT/SIGTERM, how long to wait for acks still owed")
    json: bool = option(False, "print the final summary as one JSON object on stdout, and the "
                               "progress reports as JSON lines on stderr")
    report_interval: Seconds = option(5.0, "when stderr is not a terminal, a progress report "
                                           "(rate, acked, in flight, nacks, reconnects) this "
                                           "often on stderr; 0 = none. A terminal gets a live "
                                           "line instead")
    # -- security (docs/security.md) --
    tls: bool = option(False, "connect with TLS, verifying the server's certificate")
    ca_file: str = option("", "CA (PEM) to verify the server with, instead of the system's "
                              "(implies --tls)", metavar="PATH")
    cert: str = option("", "client certificate (PEM) for servers that require one (implies --tls)",
                       metavar="PATH")
    key: str = option("", "private key of --cert (PEM)", metavar="PATH")
    server_name: str = option("", "name the server's certificate must carry (default: the "
                                  "--target host)")
    token: str = option("", "token sent in hello to servers that require one (prefer "
                            "SLUICE_TOKEN_FILE: a flag shows in the process list)", secret=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_target(self.target)
        for name in ("connections", "batch_size", "sensors", "max_tries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("linger_ms", "rate", "duration", "count", "drain_timeout", "give_up_after",
                     "report_interval", "extra_tags", "tag_bytes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        try:
            validate_kind(self.kind)
        except ValueError as exc:
            raise ConfigError(f"kind: {exc}") from exc
        if not self.file and self.kind != MEASUREMENT_KIND:
            raise ConfigError("the generator makes measurement records; other kinds need --file")
        if self.extra_tags > 64 or self.tag_bytes > 1024:
            raise ConfigError("extra_tags is at most 64 and tag_bytes at most 1024")
        if self.key and not self.cert:
            raise ConfigError("--key needs --cert")
        if self.ca_file or self.cert or self.server_name:
            object.__setattr__(self, "tls", True)

    def credentials(self) -> Credentials:
        """How each stream connects and authenticates; loads the TLS files (ConfigError)."""
        context = tls.client_context(self.ca_file, self.cert, self.key) if self.tls else None
        return Credentials(context, self.server_name or None, self.token or None)

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_target(self.target)
