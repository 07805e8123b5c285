"""Settings of ``sluice parser``: flags, ``SLUICE_*`` variables and their validation."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..es import index_name
from ..settings import BrokerSettings, OpsSettings, StoreSettings, check_kinds, option

__all__ = ["ParserSettings"]


@dataclass(frozen=True)
class ParserSettings(OpsSettings, BrokerSettings, StoreSettings):
    host: str = option("0.0.0.0", "address the HTTP side port (/healthz, /readyz, /metrics) "
                                  "listens on")
    kinds: tuple[str, ...] = option(
        ("measurement",), "record kinds to consume, comma-separated (one queue each)"
    )
    parsers: str = option(
        "measurement",
        "parser chain: 'a,b' for every kind, or per kind 'kind=a,b;kind2=c' "
        "(an entry without 'kind=' is the chain for the other kinds)",
    )
    parser_options: str = option(
        "", "parser options NAME.KEY=VALUE separated by ';' (or repeat --parser-option)"
    )
    ts_max_age_days: float = option(
        30.0, "records whose ts is older than this many days are dead-lettered "
        "(ts_out_of_range) instead of creating old daily indices; 0 = no bound")
    ts_max_ahead_days: float = option(
        1.0, "records whose ts is more than this many days ahead are dead-lettered "
        "(ts_out_of_range); 0 = no bound")
    prefetch: int = option(
        5000, "unacked messages per queue, at most; --prefetch-records and --prefetch-bytes "
        "make the window smaller for larger messages"
    )
    prefetch_records: int = option(
        100_000, "unacked records per queue (the window in messages is this over the average "
        "records per message): bounds the documents held and the work redone after a crash"
    )
    prefetch_bytes: int = option(
        64 * 1024 * 1024, "message bytes held unacked before consuming pauses (RabbitMQ's "
        "prefetch counts messages only); it resumes at half")
    bulk_size: int = option(5000, "documents per bulk request")
    bulk_max_bytes: int = option(
        10 * 1024 * 1024, "a bulk request is sent once its actions reach this many bytes"
    )
    bulk_linger_ms: int = option(50, "longest wait for a bulk to fill before it is sent")
    bulk_concurrency: int = option(2, "bulk requests in flight at once")
    max_retries: int = option(
        0, "retries of a failing bulk before its messages are requeued (0 = until it works)"
    )
    retry_cap: float = option(10.0, "longest wait between bulk retries, seconds")
    item_retry_limit: int = option(
        500, "retries of one bulk item that keeps failing with a transient error (429, 5xx, "
        "cluster block, ...) while its request goes through; then it is dead-lettered with "
        "reason es_retry_exhausted (0 = retry for ever). 500 is about 40 minutes at the "
        "default retry_cap"
    )
    stall_timeout: float = option(
        120.0, "/readyz turns false when no bulk settled a single record for this many "
        "seconds while messages wait"
    )
    es_timeout: float = option(30.0, "timeout of one Elasticsearch request, seconds")
    # Below docker compose's 30 s stop_grace_period, so the drain ends before SIGKILL.
    drain_timeout: float = option(20.0, "on SIGTERM, how long the bulks in flight may take")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kinds(self.kinds)
        try:
            index_name(self.index_prefix, "kind", 0)
        except ValueError as exc:
            raise ConfigError(f"index_prefix: {exc}") from exc
        positive = {
            "prefetch": self.prefetch, "bulk_size": self.bulk_size,
            "bulk_concurrency": self.bulk_concurrency, "bulk_max_bytes": self.bulk_max_bytes,
            "prefetch_bytes": self.prefetch_bytes, "prefetch_records": self.prefetch_records,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if self.prefetch > 65535:  # basic.qos carries a 16-bit count
            raise ConfigError(f"prefetch must be at most 65535, not {self.prefetch}")
        if self.ts_max_age_days < 0 or self.ts_max_ahead_days < 0:
            raise ConfigError("ts_max_age_days and ts_max_ahead_days cannot be negative")
        if min(self.max_retries, self.bulk_linger_ms, self.item_retry_limit) < 0:
            raise ConfigError("max_retries, bulk_linger_ms and item_retry_limit cannot be negative")
        if min(self.retry_cap, self.es_timeout, self.drain_timeout, self.stall_timeout) <= 0:
            raise ConfigError(
                "retry_cap, es_timeout, drain_timeout and stall_timeout must be positive"
            )
