"""The HTTP handlers. Each one parses its parameters (:mod:`.params`), sends the bodies
built by :mod:`.queries` to the store, and answers JSON; nothing here keeps state
between requests, so any number of API processes can serve the same data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from aiohttp import web

from ..timestamps import iso_utc_ms
from ..topology import Topology
from . import params, queries
from .params import Filters, filters_of, parse_query
from .pipeline import QueueInspector
from .responses import ApiError, json_response
from .store import Store

__all__ = ["CONTEXT", "ApiContext", "add_routes"]


@dataclass
class ApiContext:
    store: Store
    inspector: Optional[QueueInspector]
    topology: Topology
    kinds: Sequence[str]


CONTEXT = web.AppKey("sluice_api_context", ApiContext)


def _ctx(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


async def stats(request: web.Request) -> web.Response:
    values = parse_query(request.query, params.STATS)
    f = filters_of(values)
    resp = await _ctx(request).store.search(queries.stats_body(f))
    return json_response(request, {**queries.stats_result(resp), "filters": f.describe()})


async def metrics(request: web.Request) -> web.Response:
    values = parse_query(request.query, params.METRICS)
    f = filters_of(values)
    resp = await _ctx(request).store.search(queries.metrics_body(f))
    return json_response(request, {**queries.metrics_result(resp), "filters": f.describe()})


async def sensors(request: web.Request) -> web.Response:
    values = parse_query(request.query, params.SENSORS)
    f = filters_of(values)
    limit = queries.max_sensors(values["per_metric"])
    if values["size"] > limit:
        raise ApiError.bad_parameter(
            "size", f"expected at most {limit} with per_metric=true (each sensor may hold "
            f"{queries.METRICS_PER_SENSOR} metric buckets; Elasticsearch answers at most "
            f"{queries.ES_MAX_BUCKETS} buckets), got {values['size']}")
    body = queries.sensors_body(f, values["size"], values["order"], values["per_metric"])
    resp = await _ctx(request).store.search(body)
    result = queries.sensors_result(resp, values["per_metric"])
    return json_response(request, {**result, "order": values["order"], "filters": f.describe()})


async def _time_range(store: Store, f: Filters) -> Optional[tuple[int, int]]:
    """``[start, end)`` of the histogram: the filters' range, completed from the data."""
    if f.start is not None and f.end is not None:
        return f.start, f.end
    found = queries.bounds_result(await store.search(queries.bounds_body(f)))
    if found is None:
        if f.start is None and f.end is None:
            return None
        # One bound given and no data in reach: an empty series of zero length.
        edge = f.start if f.start is not None else f.end
        assert edge is not None
        return edge, edge
    first, last = found
    start = f.start if f.start is not None else first
    end = f.end if f.end is not None else last + 1
    return start, max(start, end)


async def histogram(request: web.Request) -> web.Response:
    values = parse_query(request.query, params.HISTOGRAM)
    f = filters_of(values)
    store = _ctx(request).store
    explicit: Optional[int] = values["interval"]
    span = await _time_range(store, f)
    start, end = span if span is not None else (0, 0)
    interval = explicit if explicit is not None else queries.choose_interval(end - start)
    buckets: list[dict[str, Any]] = []
    if end > start:
        count = queries.bucket_count(start, end, interval)
        if count > queries.MAX_BUCKETS:
            raise ApiError.bad_parameter(
                "interval",
                f"{queries.format_interval(interval)} over this time range makes {count} buckets; "
                f"expected at most {queries.MAX_BUCKETS} (choose a wider interval or a shorter range)",
            )
        resp = await store.search(queries.histogram_body(f, start, end, interval))
        buckets = queries.histogram_result(resp, start, end)
    return json_response(request, {
        "interval": queries.format_interval(interval),
        "interval_ms": interval,
        "from": iso_utc_ms(start) if span is not None else None,
        "to": iso_utc_ms(end) if span is not None else None,
        "buckets": buckets,
        "filters": f.describe(),
    })


async def measurements(request: web.Request) -> web.Response:
    values = parse_query(request.query, params.MEASUREMENTS)
    f = filters_of(values)
    size: int = values["size"]
    body = queries.measurements_body(f, size, values["cursor"])
    docs, after, total = queries.measurements_result(await _ctx(request).store.search(body), size)
    return json_response(request, {
        "total": total,
        "size": size,
        "measurements": docs,
        "next_cursor": params.encode_cursor(after) if after is not None else None,
        "filters": f.describe(),
    })


async def _ingest(store: Store, minutes: int) -> dict[str, Any]:
    # The rate over exactly the last ``minutes`` (never a partial minute's worth of
    # documents over a whole minute's time); the bar chart's buckets are whole minutes.
    window_start, bucket_start, end = queries.ingest_window(int(time.time() * 1000), minutes)
    resp = await store.search(queries.ingest_body(window_start, bucket_start, end))
    return queries.ingest_result(resp, window_start, bucket_start, end)


async def _dead_reasons(store: Store) -> tuple[Optional[list[dict[str, Any]]], Optional[list[dict[str, Any]]]]:
    """Dead-lettered records by reason and the latest few, from the event documents parsers
    write to ``<prefix>-dead-*``; ``None`` when the store cannot answer that question."""
    try:
        resp = await store.search(queries.dead_reasons_body(), index=store.dead_index)
    except ApiError as exc:
        if exc.status == 503:
            raise
        return None, None
    try:
        samples = queries.dead_samples_result(
            await store.search(queries.dead_samples_body(), index=store.dead_index))
    except ApiError as exc:
        if exc.status == 503:
            raise
        samples = None
    return queries.dead_reasons_result(resp), samples


async def pipeline(request: web.Request) -> web.Response:
    values = parse_query(request.query, params.PIPELINE)
    ctx = _ctx(request)
    raw = [ctx.topology.raw_queue(k) for k in ctx.kinds]
    dead = [ctx.topology.dead_queue(k) for k in ctx.kinds]

    async def queue_states() -> Optional[list[Any]]:
        if ctx.inspector is None:
            return None
        return await ctx.inspector.states([*raw, *dead])

    states, ingest, (reasons, samples) = await asyncio.gather(
        queue_states(), _ingest(ctx.store, values["minutes"]), _dead_reasons(ctx.store)
    )
    n = len(ctx.kinds)
    broker_up = states is not None
    queues = [
        {"kind": kind, **(states[i].to_dict() if states is not None else
                          {"queue": raw[i], "exists": None, "messages": None, "consumers": None})}
        for i, kind in enumerate(ctx.kinds)
    ]
    dead_queues = [
        {"kind": kind, **(states[n + i].to_dict() if states is not None else
                          {"queue": dead[i], "exists": None, "messages": None, "consumers": None})}
        for i, kind in enumerate(ctx.kinds)
    ]
    dead_total = sum(q["messages"] or 0 for q in dead_queues) if broker_up else None
    return json_response(request, {
        "generated_at": iso_utc_ms(int(time.time() * 1000)),
        "broker": {
            "up": broker_up,
            "error": None if broker_up else (
                ctx.inspector.error if ctx.inspector is not None else "no RabbitMQ URL configured"),
        },
        "queues": queues,
        "dead_letters": {
            "total": dead_total,
            "queues": dead_queues,
            "by_reason": reasons,
            "samples": samples,
        },
        "ingest": ingest,
    })


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/stats", stats)
    app.router.add_get("/api/v1/sensors", sensors)
    app.router.add_get("/api/v1/metrics", metrics)
    app.router.add_get("/api/v1/histogram", histogram)
    app.router.add_get("/api/v1/measurements", measurements)
    app.router.add_get("/api/v1/pipeline", pipeline)
