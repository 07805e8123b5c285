"""structlog configuration: JSON lines off a TTY, readable lines on a TTY.

Every line carries ``service`` and ``instance`` so logs from many replicas can be merged.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = ["REQUEST_LOGGERS", "RateLimitedLog", "configure_logging", "get_logger"]

#: Libraries that log a line at INFO for every request they make or serve (elastic_transport:
#: one per Elasticsearch request, so one per bulk; aiohttp: one per access). At INFO they
#: would flood an operator's log and push the service's own events out of any tail, so they
#: speak only at ``log_level=debug``; their warnings and errors always pass.
REQUEST_LOGGERS = ("elastic_transport", "aiohttp.access", "aiohttp.client", "aiormq", "pamqp")


def configure_logging(service: str, instance: str, level: str = "info") -> None:
    """Configure structlog, and route the standard library's logging (aiormq, aiohttp,
    asyncio) through the same renderer, so every line has the same shape and identity."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: Any
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()

    def add_identity(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        event.setdefault("service", service)
        event.setdefault("instance", instance)
        return event

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_identity,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The root stays at INFO even at debug: the libraries' own DEBUG output is frame-level.
    root.setLevel(max(numeric, logging.INFO))
    quiet = logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING
    for name in REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(quiet)


def get_logger(name: str) -> FilteringBoundLogger:
    """A logger named ``name``; its class is the filtering one :func:`configure_logging`
    installs (bound lazily, so loggers made at import time follow a later configuration)."""
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger


class RateLimitedLog:
    """Logs an event at most once per ``interval`` seconds per key, counting the rest.

    Bad input can arrive thousands of times a second; the log must not become the outage.
    """

    def __init__(self, logger: FilteringBoundLogger, interval: float = 5.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, event: str, **fields: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fields["suppressed"] = suppressed
        self._logger.warning(event, **fields)
