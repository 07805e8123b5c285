"""The parser's metrics, served on ``/metrics``.

Record counters are bumped once per message or bulk, never per record, so they cost
nothing measurable on the hot path.
"""

from __future__ import annotations

from typing import Any, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..ops import service_registry

__all__ = ["BULK_BUCKETS", "ParserMetrics"]

# Bulk requests of thousands of documents take tens of milliseconds to seconds.
BULK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ParserMetrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry if registry is not None else service_registry()
        r = self.registry
        self.messages_in = Counter("sluice_parser_messages_in_total", "AMQP messages received",
                                   ("kind",), registry=r)
        self.messages_acked = Counter("sluice_parser_messages_acked_total", "AMQP messages acked",
                                      ("kind",), registry=r)
        self.messages_requeued = Counter(
            "sluice_parser_messages_requeued_total",
            "AMQP messages given back to the queue (nack) after indexing kept failing", registry=r,
        )
        self.records_in = Counter("sluice_parser_records_in_total", "records received", ("kind",),
                                  registry=r)
        self.indexed = Counter("sluice_parser_records_indexed_total", "records Elasticsearch created",
                               registry=r)
        self.duplicates = Counter(
            "sluice_parser_records_duplicate_total",
            "records already stored (409 on create), counted as success", registry=r,
        )
        self.dead_lettered = Counter(
            "sluice_parser_dead_lettered_total",
            "records (or whole poison messages) published to the dead-letter exchange",
            ("reason",), registry=r,
        )
        self.dead_events = Counter(
            "sluice_parser_dead_letter_events_total",
            "dead-letter event documents sent to <prefix>-dead-*: result=created, or "
            "duplicate (409: already written for an earlier delivery)",
            ("result",), registry=r,
        )
        self.dead_events_failed = Counter(
            "sluice_parser_dead_letter_events_failed_total",
            "dead-letter event documents not written (the RabbitMQ dead letter still exists): "
            "cause=store (Elasticsearch unreachable or busy), refused, dropped (buffer full, "
            "shutdown) or error",
            ("cause",), registry=r,
        )
        self.retries = Counter(
            "sluice_parser_bulk_retries_total",
            "bulk retries: cause=request (the request failed) or item (429/5xx items)",
            ("cause",), registry=r,
        )
        self.bulk_seconds = Histogram(
            "sluice_parser_bulk_seconds", "latency of one bulk request", buckets=BULK_BUCKETS,
            registry=r,
        )
        #: AMQP messages received and not yet acked; the worker counts, the gauge reads it
        #: and the store probe asks it whether work is waiting
        self.inflight_messages = 0
        self.inflight = Gauge("sluice_parser_inflight_messages",
                              "AMQP messages received and not yet acked", registry=r)
        self.inflight.set_function(lambda: self.inflight_messages)
        self.store_up = Gauge("sluice_parser_elasticsearch_up",
                              "1 when the last Elasticsearch call worked", registry=r)
        self.broker_up = Gauge("sluice_parser_broker_up", "1 while the RabbitMQ link is up",
                               registry=r)
        self._received: dict[str, tuple[Any, Any]] = {}

    def received(self, kind: str, records: int) -> None:
        """One message of ``kind`` holding ``records`` records. The labelled children are
        looked up once per kind: ``labels()`` cost more than the rest of the count, per
        message, with small messages."""
        children = self._received.get(kind)
        if children is None:
            children = (self.messages_in.labels(kind), self.records_in.labels(kind))
            self._received[kind] = children
        children[0].inc()
        children[1].inc(records)
