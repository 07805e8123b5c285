"""Is Elasticsearch reachable, and is indexing getting anywhere? The answers behind
``/readyz``'s ``elasticsearch`` and ``indexing`` checks.

Bulk requests report their outcome as they go; in quiet times a periodic ping keeps the
``elasticsearch`` answer fresh. A store can answer pings and still settle nothing (every
item 429, a cluster block on every index): ``indexing`` turns false when no bulk answer
has settled a single item for ``stall_timeout`` seconds while messages wait to be acked.
"""

from __future__ import annotations

import asyncio
import time

from elasticsearch import AsyncElasticsearch

from .stats import ParserMetrics

__all__ = ["StoreProbe"]


class StoreProbe:
    def __init__(
        self, client: AsyncElasticsearch, metrics: ParserMetrics, interval: float = 5.0,
        stall_timeout: float = 120.0,
    ) -> None:
        self.client = client
        self._metrics = metrics
        self._interval = interval
        self._stall_timeout = stall_timeout
        self.up = False
        # Counted from startup: a parser that never indexed anything is stalled too.
        self._progress_at = time.monotonic()

    def mark(self, up: bool) -> None:
        self.up = up
        self._metrics.store_up.set(1 if up else 0)

    def progressed(self) -> None:
        """A bulk answer settled at least one item (stored, duplicate or refused)."""
        self._progress_at = time.monotonic()

    def stalled(self) -> bool:
        """True while messages wait and nothing was settled for ``stall_timeout`` s."""
        return not self._idle() and time.monotonic() - self._progress_at > self._stall_timeout

    def _idle(self) -> bool:
        if self._metrics.inflight_messages > 0:
            return False
        # Idle is not stalled, and the clock starts again with the next work.
        self._progress_at = time.monotonic()
        return True

    async def run(self) -> None:
        while True:
            # ping() answers False for any transport or API error; it never raises them.
            self.mark(await self.client.ping())
            self._idle()
            await asyncio.sleep(min(self._interval, self._stall_timeout / 2))
