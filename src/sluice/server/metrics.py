"""The server's Prometheus metrics, served on the ops side port at ``/metrics``.

Nothing is labelled by client-controlled values (kind, client id): a misbehaving client
must not be able to grow the metric set without bound.
"""

from __future__ import annotations

from typing import Callable

from ..metrics import Registry

__all__ = ["ServerMetrics"]

#: confirm latencies run from sub-millisecond (idle broker) to seconds (alarms, restarts)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0)


class ServerMetrics:
    def __init__(
        self,
        registry: Registry,
        *,
        connections: Callable[[], int],
        inflight: Callable[[], int],
        broker_up: Callable[[], bool],
        inflight_bytes: Callable[[], int] = lambda: 0,
        budget_waiting: Callable[[], int] = lambda: 0,
    ) -> None:
        self.registry = registry
        self.connections = registry.gauge("connections", "client connections open now", connections)
        self.connections_total = registry.counter(
            "connections_total", "client connections accepted (including rejected ones)"
        )
        self.frames = registry.counter("frames_total", "frames received from clients, by type",
                                       ("type",))
        self.batches = registry.counter("batches_total", "batch frames received")
        self.records = registry.counter("records_total", "records received (sum of batch counts)")
        self.bytes = registry.counter("bytes_total", "payload bytes received in batches")
        self.acks = registry.counter("acks_total", "batches acked (confirmed by RabbitMQ)")
        self.nacks = registry.counter("nacks_total", "batches nacked, by code", ("code",))
        self.errors = registry.counter(
            "errors_total", "connections closed with an error frame, by code", ("code",)
        )
        self.inflight = registry.gauge("inflight_batches", "batches published and not yet settled",
                                       inflight)
        self.inflight_bytes = registry.gauge(
            "inflight_bytes", "bytes of unsettled batches held, of max_inflight_bytes",
            inflight_bytes)
        self.budget_waiting = registry.gauge(
            "budget_waiting", "connections not read because max_inflight_bytes is reached",
            budget_waiting)
        self.broker_up = registry.gauge("broker_up", "1 when the RabbitMQ link is up",
                                        lambda: int(broker_up()))
        self.confirm_latency = registry.histogram(
            "confirm_latency_seconds", "time from receiving a batch to its ack or nack",
            LATENCY_BUCKETS,
        )
