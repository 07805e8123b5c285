"""The API's view of Elasticsearch: searches with a deadline, errors classified.

A store that is down, overloaded or slow becomes :class:`ApiError` 503
(``store_unavailable``); a request the store refuses becomes 502 (``store_error``).
Neither leaks the store's own message beyond one line, and neither is a 500.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from elasticsearch import ApiError as EsApiError
from elasticsearch import AsyncElasticsearch, TransportError
from prometheus_client import Histogram

from ..errors import StoreUnavailable
from ..es import index_pattern, make_client, store_error
from ..logs import RateLimitedLog, get_logger
from .responses import ApiError

__all__ = ["Store"]

log = get_logger(__name__)


class Store:
    """Searches the daily indices of ``kinds`` under ``prefix``."""

    def __init__(
        self,
        url: str,
        prefix: str,
        kinds: Sequence[str],
        *,
        timeout: float,
        latency: Histogram | None = None,
        client: AsyncElasticsearch | None = None,
        es_options: Mapping[str, Any] | None = None,
    ) -> None:
        # One retry at most: a user is waiting, and the 503 tells them to try again.
        self.client = client or make_client(
            url, request_timeout=timeout, max_retries=1, retry_on_timeout=False, **(es_options or {})
        )
        self.prefix = prefix
        self.timeout = timeout
        self.data_index = ",".join(index_pattern(prefix, kind) for kind in kinds)
        self.dead_index = index_pattern(prefix, "dead")
        self._latency = latency
        self._warn = RateLimitedLog(log, interval=10.0)

    async def search(self, body: Mapping[str, Any], *, index: str | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            # A deadline of our own as well: a proxy that accepts and never answers must
            # not hold the request past the client's timeout plus its one retry.
            resp = await asyncio.wait_for(
                self.client.search(
                    index=index or self.data_index,
                    body=dict(body),
                    ignore_unavailable=True,
                    allow_no_indices=True,
                    # A shard that fails must fail the search, not shrink the counts.
                    allow_partial_search_results=False,
                ),
                self.timeout * 2 + 1,
            )
        except asyncio.TimeoutError as exc:
            raise self._fail(StoreUnavailable("Elasticsearch did not answer in time")) from exc
        except (EsApiError, TransportError) as exc:
            raise self._fail(store_error(exc, "search failed")) from exc
        finally:
            if self._latency is not None:
                self._latency.observe(time.perf_counter() - started)
        body = dict(resp.body)
        self._check_complete(body)
        return body

    def _check_complete(self, body: Mapping[str, Any]) -> None:
        """Refuse an answer that covers only part of the data (a shard failed or the
        search timed out): its counts would be silently low."""
        shards = body.get("_shards")
        failed = shards.get("failed") if isinstance(shards, Mapping) else None
        total = shards.get("total") if isinstance(shards, Mapping) else None
        if body.get("timed_out") is True:
            raise self._fail(StoreUnavailable("search timed out; the answer would be partial"))
        if isinstance(failed, int) and failed > 0:
            raise self._fail(StoreUnavailable(
                f"{failed} of {total} shards failed; the answer would be partial"))

    def _fail(self, error: Exception) -> ApiError:
        self._warn.warning(type(error).__name__, "store_request_failed", error=str(error)[:300])
        if isinstance(error, StoreUnavailable):
            return ApiError(503, "store_unavailable", "Elasticsearch is unavailable; try again shortly")
        return ApiError(502, "store_error", "Elasticsearch refused the query")

    async def ping(self, timeout: float = 2.0) -> bool:
        """Whether Elasticsearch answers at all (for ``/readyz``)."""
        try:
            await asyncio.wait_for(
                self.client.options(request_timeout=timeout, max_retries=0).info(), timeout + 1
            )
        except (asyncio.TimeoutError, EsApiError, TransportError):
            return False
        return True

    async def close(self) -> None:
        await self.client.close()
