"""Bulk indexing into Elasticsearch, one request per batch, retried until every item
has a final answer.

The bulk helpers of elasticsearch-py (``async_streaming_bulk``) were measured here and
bypassed: their per-action Python work (action expansion, chunking, re-serializing each
action) capped a process at about 34,000 documents/s, while sending one ndjson body built
with orjson through ``client.bulk()`` reached 172,000. This module keeps the helpers'
semantics on top of the raw call:

- every action is ``create`` with ``_id`` = the record's id, so a resent or redelivered
  record answers 409 and is never stored twice;
- per-item results are read: 200/201 indexed, 409 a duplicate (success); any other
  answer is judged by :mod:`sluice.storeerrors` (error type and status): transient ones
  are retried, up to ``item_retry_limit`` times and then refused with reason
  ``es_retry_exhausted``, content errors are refused with reason ``es_<type>``; the caller
  dead-letters what is refused;
- a failed request judged transient (429, 5xx, timeout, no connection, a cluster block,
  wrong credentials, an answer that is not a bulk answer) is retried whole;
- a request refused whole for its content (400, 413, another 4xx) is split in halves sent
  on their own, down to single actions, which are then refused with reason ``es_<type>``
  (``es_<status>`` when the answer names no type).

Retries wait with exponential backoff and full jitter, so an outage costs a handful of
requests, not a busy loop. The caller's AMQP messages stay unacked all the while: a
crash loses nothing, because RabbitMQ delivers them again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, cast

import orjson
from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from ..backoff import Backoff
from ..errors import StoreUnavailable
from ..logs import RateLimitedLog, get_logger
from ..storeerrors import DUPLICATE_STATUS, OK_STATUSES, RETRY_EXHAUSTED, item_fault, request_fault
from .stats import ParserMetrics

__all__ = ["BulkIndexer", "BulkOutcome", "Refusal", "action_prefix", "encode_create"]

log = get_logger(__name__)

_OK = OK_STATUSES
# Only what is read below: a full answer is ~150 bytes per item and decoding it cost more
# than building the request.
_FILTER = "errors,items.*.status,items.*.error"

_DUPLICATE = DUPLICATE_STATUS


def encode_create(action_prefix: bytes, doc_id: str, source: bytes) -> bytes:
    """The two ndjson lines of one ``create``; ``action_prefix`` is :func:`action_prefix`."""
    return b"".join((action_prefix, orjson.dumps(doc_id), b"}}\n", source, b"\n"))


def action_prefix(index: str) -> bytes:
    """The constant start of every ``create`` line into ``index`` (cache it per index)."""
    return b'{"create":{"_index":' + orjson.dumps(index) + b',"_id":'


@dataclass(frozen=True)
class Refusal:
    """Elasticsearch refused one item for its content; it must be dead-lettered."""

    position: int
    status: int
    reason: str
    error: str


@dataclass
class BulkOutcome:
    indexed: int = 0
    duplicates: int = 0
    refused: list[Refusal] = field(default_factory=list)
    attempts: int = 0


class BulkIndexer:
    """Sends prepared ``create`` actions in one bulk request and retries what may succeed
    later. ``max_retries`` 0 retries for as long as it takes (the default: nothing is
    dropped during an outage); otherwise :class:`StoreUnavailable` is raised after that
    many retries and the caller gives its messages back to the queue.

    ``item_retry_limit`` bounds the retries of one item that keeps answering with a
    transient error while its request goes through (0: no bound); past it the item is
    refused with reason ``es_retry_exhausted``, so one item cannot hold a flusher for ever.
    ``on_progress`` is called whenever a bulk answer settled at least one item.
    """

    def __init__(
        self,
        client: AsyncElasticsearch,
        metrics: ParserMetrics,
        *,
        retry_cap: float = 10.0,
        max_retries: int = 0,
        on_store_state: Callable[[bool], None] | None = None,
        item_retry_limit: int = 0,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._retry_cap = retry_cap
        self._max_retries = max_retries
        self._on_store_state = on_store_state or (lambda up: None)
        self._item_retry_limit = item_retry_limit
        self._on_progress = on_progress or (lambda: None)
        self._rate_limited = RateLimitedLog(log)

    def _backoff(self) -> Backoff:
        # The floor keeps even the luckiest jitter draw from becoming a tight loop.
        return Backoff(base=0.1, cap=self._retry_cap, floor=0.05)

    async def index(self, actions: Sequence[bytes]) -> BulkOutcome:
        """Index ``actions`` (from :func:`encode_create`); returns once every item is
        indexed, a duplicate, or refused. Refusal positions index into ``actions``.

        A request Elasticsearch refuses as a whole for its content (as judged by
        :mod:`sluice.storeerrors`) is split in halves that are sent on their own, down to
        single actions, which are then refused with reason ``es_<type>``.
        """
        outcome = BulkOutcome()
        groups = [list(range(len(actions)))]
        while groups:
            halves = await self._index_group(actions, groups.pop(), outcome)
            groups.extend(reversed(halves))  # the first half next
        return outcome

    async def _index_group(
        self, actions: Sequence[bytes], pending: list[int], outcome: BulkOutcome
    ) -> list[list[int]]:
        """Retry ``pending`` until settled; the halves to send instead when refused whole."""
        backoff = self._backoff()
        retries = 0
        tries: dict[int, int] = {}  # position -> item retries so far
        last: dict[int, str] = {}  # position -> its last transient error
        while pending:
            outcome.attempts += 1
            items = await self._attempt(actions, pending)
            if isinstance(items, _Refused):
                if len(pending) > 1:
                    middle = len(pending) // 2
                    self._rate_limited.warning(
                        "bulk_split", "bulk_refused_split", status=items.status,
                        items=len(pending), error=items.error,
                    )
                    return [pending[:middle], pending[middle:]]
                outcome.refused.append(Refusal(
                    pending[0], items.status, items.reason, items.error[:2000]
                ))
                return []
            if items is None:
                cause = "request"
            else:
                pending = self._settle(pending, items, outcome, last)
                if self._item_retry_limit:
                    pending = self._cap(pending, tries, last, outcome)
                if not pending:
                    break
                cause = "item"
            retries += 1
            self._metrics.retries.labels(cause).inc()
            if self._max_retries and retries > self._max_retries:
                raise StoreUnavailable(
                    f"{len(pending)} bulk item(s) still failing after {self._max_retries} retries"
                )
            await asyncio.sleep(backoff.next_delay())
        return []

    def _cap(
        self, pending: list[int], tries: dict[int, int], last: dict[int, str],
        outcome: BulkOutcome,
    ) -> list[int]:
        """Refuse the items that used up their retries; the ones to try again."""
        again = []
        for position in pending:
            tries[position] = tries.get(position, 0) + 1
            if tries[position] <= self._item_retry_limit:
                again.append(position)
                continue
            detail = f"still failing after {self._item_retry_limit} retries: {last.get(position, '')}"
            outcome.refused.append(Refusal(position, 0, RETRY_EXHAUSTED, detail[:2000]))
        if len(again) < len(pending):
            self._rate_limited.warning(
                "bulk_item_exhausted", "bulk_items_retry_exhausted",
                items=len(pending) - len(again), limit=self._item_retry_limit,
            )
        return again

    async def _attempt(
        self, actions: Sequence[bytes], pending: Sequence[int]
    ) -> list[Mapping[str, Any]] | _Refused | None:
        """One bulk request: its items; ``_Refused`` when Elasticsearch refused the request
        for its content; None when it failed in a way that may pass."""
        whole = len(pending) == len(actions)
        body = b"".join(actions) if whole else b"".join([actions[i] for i in pending])
        started = time.perf_counter()
        try:
            # The client types ``operations`` as a list of dicts; ready ndjson bytes are
            # sent as they are, which is the point.
            response = await self._client.bulk(operations=cast(Any, body), filter_path=_FILTER)
        except (ApiError, TransportError) as exc:
            fault = request_fault(exc, "bulk request failed")
            if not fault.transient:
                # The store answered, but not "up" for this data: leave its state alone.
                return _Refused(fault.status, fault.detail, fault.reason)
            self._on_store_state(False)
            self._rate_limited.warning(
                "bulk_failed", "bulk_failed", error=fault.detail, items=len(pending)
            )
            return None
        finally:
            self._metrics.bulk_seconds.observe(time.perf_counter() - started)
        result = response.body
        items = result.get("items") if isinstance(result, Mapping) else None
        if not isinstance(items, list) or len(items) != len(pending):
            # 200 with something else than a bulk answer: a proxy's HTML page, a truncated
            # body. Not Elasticsearch as we know it: retried, and the store is not up.
            self._on_store_state(False)
            self._rate_limited.warning(
                "bulk_items", "bulk_unexpected_response", sent=len(pending),
                got=len(items) if isinstance(items, list) else type(result).__name__,
            )
            return None
        self._on_store_state(True)
        if not result.get("errors"):
            # Fast path: every item succeeded, and a 409 would have set ``errors``.
            self._on_progress()
            return []
        return items

    def _settle(
        self, pending: list[int], items: list[Mapping[str, Any]], outcome: BulkOutcome,
        last: dict[int, str],
    ) -> list[int]:
        """Count final answers into ``outcome``; the positions to try again."""
        if not items:
            outcome.indexed += len(pending)
            self._metrics.indexed.inc(len(pending))
            return []
        again: list[int] = []
        indexed = duplicates = 0
        for position, item in zip(pending, items):
            result = _item_result(item)
            status = result.get("status") if result is not None else None
            if result is None or type(status) is not int:
                again.append(position)  # an answer of an unknown shape: try again
            elif status in _OK:
                indexed += 1
            elif status == _DUPLICATE:
                duplicates += 1
            else:
                fault = item_fault(status, result.get("error"))
                if fault.transient:
                    again.append(position)
                    last[position] = fault.detail
                else:
                    outcome.refused.append(Refusal(position, status, fault.reason, fault.detail))
        outcome.indexed += indexed
        outcome.duplicates += duplicates
        self._metrics.indexed.inc(indexed)
        self._metrics.duplicates.inc(duplicates)
        if len(again) < len(pending):
            self._on_progress()
        if again:
            self._rate_limited.warning("bulk_item_retry", "bulk_items_retried", items=len(again))
        return again


@dataclass(frozen=True)
class _Refused:
    """Elasticsearch refused a whole bulk request for what it holds (400, 413, ...)."""

    status: int
    error: str
    reason: str


def _item_result(item: Any) -> Mapping[str, Any] | None:
    if not isinstance(item, Mapping):
        return None
    result = item.get("create")
    if result is None and item:
        result = next(iter(item.values()))
    return result if isinstance(result, Mapping) else None
