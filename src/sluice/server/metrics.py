"""The server's Prometheus metrics, served on the ops side port at ``/metrics``.

Nothing is labelled by client-controlled values (kind, client id): a misbehaving client
must not be able to grow the metric set without bound.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ServerMetrics"]

#: confirm latencies run from sub-millisecond (idle broker) to seconds (alarms, restarts)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0)


def _gauge(registry: CollectorRegistry, name: str, help: str, read: Callable[[], float]) -> Gauge:
    """A gauge read at scrape time: the value lives where the work is done."""
    gauge = Gauge(f"sluice_server_{name}", help, registry=registry)
    gauge.set_function(read)
    return gauge


class ServerMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        connections: Callable[[], int],
        inflight: Callable[[], int],
        broker_up: Callable[[], bool],
        inflight_bytes: Callable[[], int] = lambda: 0,
        budget_waiting: Callable[[], int] = lambda: 0,
    ) -> None:
        self.registry = registry
        r = registry
        # Not "sluice_server_connections": that is the counter's family name below.
        self.connections = _gauge(r, "connections_open", "client connections open now", connections)
        self.connections_total = Counter(
            "sluice_server_connections_total", "client connections accepted (including rejected ones)",
            registry=r,
        )
        self.frames = Counter("sluice_server_frames_total", "frames received from clients, by type",
                              ("type",), registry=r)
        self.batches = Counter("sluice_server_batches_total", "batch frames received", registry=r)
        self.records = Counter("sluice_server_records_total", "records received (sum of batch counts)",
                               registry=r)
        self.bytes = Counter("sluice_server_bytes_total", "payload bytes received in batches",
                             registry=r)
        self.acks = Counter("sluice_server_acks_total", "batches acked (confirmed by RabbitMQ)",
                            registry=r)
        self.nacks = Counter("sluice_server_nacks_total", "batches nacked, by code", ("code",),
                             registry=r)
        self.errors = Counter("sluice_server_errors_total",
                              "connections closed with an error frame, by code", ("code",), registry=r)
        self.inflight = _gauge(r, "inflight_batches", "batches published and not yet settled", inflight)
        self.inflight_bytes = _gauge(
            r, "inflight_bytes", "bytes of unsettled batches held, of max_inflight_bytes", inflight_bytes)
        self.budget_waiting = _gauge(
            r, "budget_waiting", "connections not read because max_inflight_bytes is reached",
            budget_waiting)
        self.broker_up = _gauge(r, "broker_up", "1 when the RabbitMQ link is up",
                                lambda: int(broker_up()))
        self.confirm_latency = Histogram(
            "sluice_server_confirm_latency_seconds", "time from receiving a batch to its ack or nack",
            buckets=LATENCY_BUCKETS, registry=r,
        )
