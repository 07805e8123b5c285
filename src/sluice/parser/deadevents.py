"""Dead-letter events: one small Elasticsearch document per confirmed dead letter, so that
the API can count dead letters by reason (``GET /api/v1/pipeline``, ``dead_letters.by_reason``).

The RabbitMQ dead letter (``deadletter.py``) is the authoritative copy, with the record's
body. The event is a best-effort summary, written in the background after the dead letter
is confirmed, and never in the way of an ack:

- :meth:`DeadLetterEvents.record` only builds ``create`` actions and queues them; a
  background task (:meth:`DeadLetterEvents.run`) sends what is queued in small bulk
  requests of its own. They are deliberately not added to the worker's record bulks:
  those retry until Elasticsearch answers and hold the messages' acks meanwhile, while an
  event that cannot be written after a few attempts is given up.
- Every failure is counted in ``dead_letter_events_failed_total{cause}`` and logged at
  most every few seconds; the queue is bounded, so an Elasticsearch outage costs events,
  never memory.
- The ``_id`` is derived from the kind, the source message id, the record's position in
  the message, the reason and the dead letter's body. A redelivered (or resent) message
  yields the same ids, the ``create`` answers 409, and the count does not double.

The document, in the daily index ``<prefix>-dead-YYYY.MM.DD`` of the moment it was
written (:func:`sluice.es.index_name` with kind ``dead``)::

    {"reason": "bad_value", "kind": "measurement", "error": "value: not a number",
     "@timestamp": "2024-03-01T12:00:00.123Z", "source_message_id": "c1:17",
     "record_id": "r-42", "position": 3, "parser": "measurement", "instance": "host-1234"}

``record_id`` and ``position`` are absent for a poison message, ``source_message_id`` when
the message had none. The template in :mod:`sluice.es` maps ``reason``, ``kind``,
``error``, ``parser``, ``source_message_id``, ``record_id`` and ``instance`` as keywords.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional, cast

import orjson
from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from ..backoff import Backoff
from ..es import DEAD_KIND, ERROR_IGNORE_ABOVE, index_name, store_error
from ..logs import RateLimitedLog, get_logger
from ..storeerrors import DUPLICATE_STATUS, OK_STATUSES, item_fault
from ..timestamps import iso_utc_ms
from .deadletter import DeadLetter
from .indexer import action_prefix, encode_create
from .stats import ParserMetrics

__all__ = ["DeadLetterEvents", "event_document", "event_id"]

log = get_logger(__name__)

_FILTER = "errors,items.*.status,items.*.error"
_OK = OK_STATUSES
_DUPLICATE = DUPLICATE_STATUS


def event_id(kind: str, source_message_id: Optional[str], letter: DeadLetter) -> str:
    """The deterministic ``_id`` of a letter's event: the same for every delivery of the
    same message, different for every record (position and body) in it."""
    digest = hashlib.blake2b(digest_size=16)
    position = "" if letter.position is None else str(letter.position)
    for part in (kind, source_message_id or "", position, letter.reason):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    digest.update(letter.body)
    return f"{kind}:{digest.hexdigest()}"


def event_document(
    kind: str,
    source_message_id: Optional[str],
    letter: DeadLetter,
    *,
    parser: str,
    instance: str,
    timestamp: str,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "reason": letter.reason,
        "kind": kind,
        "error": letter.error[:ERROR_IGNORE_ABOVE],
        "@timestamp": timestamp,
        "parser": parser,
        "instance": instance,
    }
    if source_message_id:
        doc["source_message_id"] = source_message_id
    if letter.record_id is not None:
        doc["record_id"] = letter.record_id
    if letter.position is not None:
        doc["position"] = letter.position
    return doc


class DeadLetterEvents:
    """Queues event documents for confirmed dead letters and writes them in the background.

    ``parsers`` maps each kind to its parser chain (``"measurement"``, ``"a,b"``).
    Create it inside the running event loop; run :meth:`run` as a task.
    """

    def __init__(
        self,
        client: AsyncElasticsearch,
        index_prefix: str,
        metrics: ParserMetrics,
        *,
        parsers: Mapping[str, str],
        instance: str,
        batch_size: int = 500,
        max_pending: int = 10_000,
        attempts: int = 5,
        retry_cap: float = 5.0,
    ) -> None:
        index_name(index_prefix, DEAD_KIND, 0)  # a bad prefix fails here, not per event
        self._client = client
        self._prefix = index_prefix
        self._metrics = metrics
        self._parsers = dict(parsers)
        self._instance = instance
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._attempts = max(1, attempts)
        self._retry_cap = retry_cap
        self._pending: collections.deque[bytes] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._rate_limited = RateLimitedLog(log)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(
        self, kind: str, source_message_id: Optional[str], letters: Sequence[DeadLetter]
    ) -> None:
        """Queue one event per letter; returns at once and never raises."""
        try:
            self._record(kind, source_message_id, letters)
        except Exception as exc:  # a bug here must not keep a message from its ack
            self._fail("error", len(letters), error=repr(exc))

    def _record(
        self, kind: str, source_message_id: Optional[str], letters: Sequence[DeadLetter]
    ) -> None:
        now_ms = int(time.time() * 1000)
        prefix = action_prefix(index_name(self._prefix, DEAD_KIND, now_ms))
        timestamp = iso_utc_ms(now_ms)
        parser = self._parsers.get(kind, "")
        room = self._max_pending - len(self._pending)
        if room < len(letters):
            self._fail("dropped", len(letters) - max(room, 0), note="event buffer full")
            letters = letters[:max(room, 0)]
        for letter in letters:
            doc = event_document(
                kind, source_message_id, letter,
                parser=parser, instance=self._instance, timestamp=timestamp,
            )
            self._pending.append(
                encode_create(prefix, event_id(kind, source_message_id, letter), orjson.dumps(doc))
            )
        if self._pending:
            self._idle.clear()
            self._wake.set()

    async def run(self) -> None:
        """Send what is queued, a bulk at a time, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                count = min(self._batch_size, len(self._pending))
                batch = [self._pending.popleft() for _ in range(count)]
                try:
                    await self._send(batch)
                except asyncio.CancelledError:
                    self._fail("dropped", len(batch) + len(self._pending), note="cancelled")
                    self._pending.clear()
                    raise
                except Exception as exc:
                    self._fail("error", len(batch), error=repr(exc))
            self._idle.set()

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queue to be written (at shutdown)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _send(self, actions: list[bytes]) -> None:
        backoff = Backoff(base=0.5, cap=self._retry_cap, floor=0.1)
        pending = actions
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(backoff.next_delay())
            items = await self._attempt(pending)
            if items is None:
                continue
            pending = self._settle(pending, items)
            if not pending:
                return
        self._fail("store", len(pending), note=f"gave up after {self._attempts} attempts")

    async def _attempt(self, actions: list[bytes]) -> Optional[list[Mapping[str, Any]]]:
        try:
            response = await self._client.bulk(
                operations=cast(Any, b"".join(actions)), filter_path=_FILTER
            )
        except (ApiError, TransportError) as exc:
            self._rate_limited.warning(
                "request", "dead_letter_events_request_failed",
                error=str(store_error(exc, "bulk request failed")), events=len(actions),
            )
            return None
        body: Mapping[str, Any] = response.body
        items = body.get("items")
        if not isinstance(items, list) or len(items) != len(actions):
            return None
        if not body.get("errors"):
            self._metrics.dead_events.labels("created").inc(len(actions))
            return []
        return items

    def _settle(self, actions: list[bytes], items: list[Mapping[str, Any]]) -> list[bytes]:
        if not items:
            return []
        again: list[bytes] = []
        created = duplicates = refused = 0
        for action, item in zip(actions, items):
            result: Mapping[str, Any] = item.get("create") or next(iter(item.values()), {})
            status = int(result.get("status", 0))
            if status in _OK:
                created += 1
            elif status == _DUPLICATE:
                duplicates += 1
            elif item_fault(status, result.get("error")).transient:
                again.append(action)
            else:
                refused += 1
                self._rate_limited.warning(
                    "refused", "dead_letter_event_refused", status=status,
                    error=str(result.get("error"))[:300],
                )
        if created:
            self._metrics.dead_events.labels("created").inc(created)
        if duplicates:
            self._metrics.dead_events.labels("duplicate").inc(duplicates)
        if refused:
            self._metrics.dead_events_failed.labels("refused").inc(refused)
        return again

    def _fail(self, cause: str, count: int, **fields: Any) -> None:
        if count <= 0:
            return
        self._metrics.dead_events_failed.labels(cause).inc(count)
        self._rate_limited.warning(
            cause, "dead_letter_events_not_written", cause=cause, events=count,
            dead_letters="kept in RabbitMQ", **fields,
        )
