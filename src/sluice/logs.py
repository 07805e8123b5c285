"""structlog configuration: JSON lines off a TTY, readable lines on a TTY.

Every line carries ``service`` and ``instance`` so logs from many replicas can be merged.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog

__all__ = ["RateLimitedLog", "configure_logging", "get_logger"]


def configure_logging(service: str, instance: str, level: str = "info") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: Any
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service, instance=instance)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


class RateLimitedLog:
    """Logs an event at most once per ``interval`` seconds per key, counting the rest.

    Bad input can arrive thousands of times a second; the log must not become the outage.
    """

    def __init__(self, logger: Any, interval: float = 5.0) -> None:
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
