"""Is Elasticsearch reachable? The answer behind ``/readyz``'s ``elasticsearch`` check.

Bulk requests report their outcome as they go; in quiet times a periodic ping keeps the
answer fresh.
"""

from __future__ import annotations

import asyncio

from elasticsearch import AsyncElasticsearch

from .stats import ParserMetrics

__all__ = ["StoreProbe"]


class StoreProbe:
    def __init__(
        self, client: AsyncElasticsearch, metrics: ParserMetrics, interval: float = 5.0
    ) -> None:
        self.client = client
        self._metrics = metrics
        self._interval = interval
        self.up = False

    def mark(self, up: bool) -> None:
        self.up = up
        self._metrics.store_up.set(1 if up else 0)

    async def run(self) -> None:
        while True:
            # ping() answers False for any transport or API error; it never raises them.
            self.mark(await self.client.ping())
            await asyncio.sleep(self._interval)
