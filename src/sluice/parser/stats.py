"""The parser's metrics, served on ``/metrics``.

Record counters are bumped once per message or bulk, never per record, so they cost
nothing measurable on the hot path.
"""

from __future__ import annotations

from ..metrics import Registry

__all__ = ["BULK_BUCKETS", "ParserMetrics"]

# Bulk requests of thousands of documents take tens of milliseconds to seconds.
BULK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ParserMetrics:
    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry("sluice_parser")
        r = self.registry
        self.messages_in = r.counter("messages_in_total", "AMQP messages received", ("kind",))
        self.messages_acked = r.counter("messages_acked_total", "AMQP messages acked", ("kind",))
        self.messages_requeued = r.counter(
            "messages_requeued_total",
            "AMQP messages given back to the queue (nack) after indexing kept failing",
        )
        self.records_in = r.counter("records_in_total", "records received", ("kind",))
        self.indexed = r.counter("records_indexed_total", "records Elasticsearch created")
        self.duplicates = r.counter(
            "records_duplicate_total", "records already stored (409 on create), counted as success"
        )
        self.dead_lettered = r.counter(
            "dead_lettered_total",
            "records (or whole poison messages) published to the dead-letter exchange",
            ("reason",),
        )
        self.dead_events = r.counter(
            "dead_letter_events_total",
            "dead-letter event documents sent to <prefix>-dead-*: result=created, or "
            "duplicate (409: already written for an earlier delivery)",
            ("result",),
        )
        self.dead_events_failed = r.counter(
            "dead_letter_events_failed_total",
            "dead-letter event documents not written (the RabbitMQ dead letter still exists): "
            "cause=store (Elasticsearch unreachable or busy), refused, dropped (buffer full, "
            "shutdown) or error",
            ("cause",),
        )
        self.retries = r.counter(
            "bulk_retries_total",
            "bulk retries: cause=request (the request failed) or item (429/5xx items)",
            ("cause",),
        )
        self.bulk_seconds = r.histogram(
            "bulk_seconds", "latency of one bulk request", BULK_BUCKETS
        )
        self.inflight = r.gauge("inflight_messages", "AMQP messages received and not yet acked")
        self.store_up = r.gauge("elasticsearch_up", "1 when the last Elasticsearch call worked")
        self.broker_up = r.gauge("broker_up", "1 while the RabbitMQ link is up")
