"""The OpenAPI 3.0 document served at ``/api/v1/openapi.json``.

Parameters come from the same :class:`~.params.Param` declarations the handlers parse
with; response schemas are written out here and checked against real answers by the
schemathesis test, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from .. import __version__
from . import params
from .params import Param
from .queries import ES_MAX_BUCKETS, MAX_BUCKETS, SENSOR_SHARD_SIZE, max_sensors
from .responses import ERROR_CODES

__all__ = ["openapi_document"]

_NUM = {"type": "number", "nullable": True}
_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": "string", "format": "date-time", "nullable": True}


def _obj(properties: dict[str, Any], *, extra: bool = False) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": extra,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_GROUP: dict[str, Any] = {
    "count": {"type": "integer", "minimum": 0},
    "avg": _NUM,
    "min": _NUM,
    "max": _NUM,
    "sum": {"type": "number"},
    "last_seen": _TIME_OR_NULL,
}


_SCHEMAS: dict[str, Any] = {
    "Error": _obj({
        "error": {
            "type": "object",
            "required": ["status", "code", "message"],
            "properties": {
                "status": {"type": "integer", "description": "the HTTP status, repeated"},
                "code": {"type": "string", "enum": list(ERROR_CODES)},
                "message": {"type": "string"},
                "param": {"type": "string", "description": "the query parameter at fault "
                          "(only on 400 bad_parameter and unknown_parameter)"},
            },
            "additionalProperties": False,
        },
    }),
    "Filters": _obj({
        "metric": {"type": "string", "nullable": True},
        "sensor": {"type": "string", "nullable": True},
        "from": _TIME_OR_NULL,
        "to": _TIME_OR_NULL,
        "tags": {"type": "array", "items": {"type": "string"}},
    }),
    "Stats": _obj({
        "count": {"type": "integer", "minimum": 0, "description": "exact number of measurements"},
        "sum": {"type": "number"},
        "avg": _NUM,
        "min": _NUM,
        "max": _NUM,
        "percentiles": _obj({"p50": _NUM, "p95": _NUM, "p99": _NUM}),
        "filters": _ref("Filters"),
    }),
    "MetricGroup": _obj({"metric": {"type": "string"}, **_GROUP}),
    "SensorGroup": {
        **_obj({"sensor": {"type": "string"}, **_GROUP}),
        "properties": {
            "sensor": {"type": "string"},
            **_GROUP,
            "metrics": {"type": "array", "items": _ref("MetricGroup"),
                        "description": "present when per_metric=true"},
        },
    },
    "Sensors": _obj({
        "total": {"type": "integer", "minimum": 0, "description": "measurements matched"},
        "others_count": {"type": "integer", "minimum": 0,
                         "description": "measurements of sensors beyond `size`"},
        "sensors": {"type": "array", "items": _ref("SensorGroup")},
        "order": {"type": "string", "enum": list(params.SENSOR_ORDERS)},
        "filters": _ref("Filters"),
    }),
    "Histogram": _obj({
        "interval": {"type": "string", "example": "5m"},
        "interval_ms": {"type": "integer", "minimum": 1},
        "from": _TIME_OR_NULL,
        "to": _TIME_OR_NULL,
        "buckets": {"type": "array", "items": _obj({
            "t": _TIME,
            "ts": {"type": "integer", "description": "bucket start, epoch ms"},
            "count": {"type": "integer", "minimum": 0},
            "avg": _NUM,
        })},
        "filters": _ref("Filters"),
    }),
    "Measurement": {
        "type": "object",
        "description": "a stored document, as the parser indexed it",
        "required": ["id", "sensor", "metric", "value", "ts", "@timestamp"],
        "properties": {
            "id": {"type": "string"},
            "sensor": {"type": "string"},
            "metric": {"type": "string"},
            "value": {"type": "number"},
            "unit": {"type": "string"},
            "ts": {"type": "integer", "description": "epoch ms"},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "@timestamp": _TIME,
            "ingested_at": _TIME,
            "parser": {"type": "string"},
        },
        "additionalProperties": True,
    },
    "Measurements": _obj({
        "total": {"type": "integer", "minimum": 0, "description": "exact, all pages"},
        "size": {"type": "integer", "minimum": 1},
        "measurements": {"type": "array", "items": _ref("Measurement")},
        "next_cursor": {"type": "string", "nullable": True,
                        "description": "pass as `cursor` for the next page; null on the last"},
        "filters": _ref("Filters"),
    }),
    "Metrics": _obj({
        "total": {"type": "integer", "minimum": 0, "description": "measurements matching the filters"},
        "others_count": {"type": "integer", "minimum": 0,
                         "description": "measurements of metrics beyond the listed ones"},
        "metrics": {"type": "array", "items": _obj({
            "metric": {"type": "string"},
            "unit": {"type": "string", "nullable": True, "description": "the most common unit"},
            "count": {"type": "integer", "minimum": 0},
        })},
        "filters": _ref("Filters"),
    }),
    "QueueState": _obj({
        "kind": {"type": "string"},
        "queue": {"type": "string"},
        "exists": {"type": "boolean", "nullable": True, "description": "null: broker down"},
        "messages": {"type": "integer", "minimum": 0, "nullable": True,
                     "description": "messages ready in the queue"},
        "consumers": {"type": "integer", "minimum": 0, "nullable": True},
    }),
    "Pipeline": _obj({
        "generated_at": _TIME,
        "broker": _obj({"up": {"type": "boolean"}, "error": {"type": "string", "nullable": True}}),
        "queues": {"type": "array", "items": _ref("QueueState")},
        "dead_letters": _obj({
            "total": {"type": "integer", "minimum": 0, "nullable": True,
                      "description": "messages in every dead-letter queue; null: broker down"},
            "queues": {"type": "array", "items": _ref("QueueState")},
            "by_reason": {
                "type": "array",
                "nullable": True,
                "description": "dead letters by `reason`, counted over the event documents parsers "
                "write to `<prefix>-dead-*`; null when the store cannot count them",
                "items": _obj({"reason": {"type": "string"},
                               "count": {"type": "integer", "minimum": 0}}),
            },
            "samples": {
                "type": "array",
                "nullable": True,
                "description": "the latest few dead-letter events, newest first (the dead letter "
                "itself, with the record, stays in the dead-letter queue); null when the store "
                "cannot list them",
                "items": {"type": "object", "additionalProperties": True},
            },
        }),
        "ingest": _obj({
            "from": {**_TIME, "description": "start of the window: `to` minus `minutes` minutes"},
            "to": {**_TIME, "description": "end of the window (exclusive): the time of the request"},
            "count": {"type": "integer", "minimum": 0,
                      "description": "documents ingested in [from, to), exact"},
            "rate_per_s": {"type": "number", "minimum": 0,
                           "description": "`count` divided by the window's length in seconds"},
            "buckets": {"type": "array", "description": "documents ingested per whole UTC minute, "
                        "the last one the current, still filling minute", "items": _obj({
                "t": _TIME, "ts": {"type": "integer"}, "count": {"type": "integer", "minimum": 0},
            })},
        }),
    }),
    "Health": _obj({"status": {"type": "string", "enum": ["ok"]}}),
    "Ready": _obj({
        "ready": {"type": "boolean"},
        "checks": _obj({"elasticsearch": {"type": "boolean"}}),
    }),
}


def _parameter(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": p.name,
        "in": "query",
        "required": False,
        "description": p.description,
        "schema": dict(p.schema),
    }
    if p.repeatable:
        out.update(style="form", explode=True)
    if p.example is not None:
        out["example"] = p.example
    out.update(p.extra)
    return out


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _get(
    summary: str,
    schema: str,
    parameters: Sequence[Param],
    *,
    store: bool = True,
    tag: str = "data",
    description: str = "",
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": _ref(schema)}}},
        "400": _error("a parameter is missing its expected form; the message names it"),
    }
    if store:
        responses["502"] = _error("Elasticsearch refused the query")
        responses["503"] = _error("Elasticsearch is down or timing out; retry after the "
                                  "seconds in the Retry-After header")
        responses["503"]["headers"] = {"Retry-After": {
            "description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "operationId": summary.lower().replace(" ", "_").replace(",", ""),
        "parameters": [_parameter(p) for p in parameters],
        "responses": responses,
    }
    if description:
        op["description"] = description
    return {"get": op}


@functools.lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    ready = _get("Readiness", "Ready", params.PLAIN, store=False, tag="operations",
                 description="200 when Elasticsearch answers, else 503 with ready=false.")
    ready["get"]["responses"]["503"] = {
        "description": "Elasticsearch does not answer",
        "content": {"application/json": {"schema": _ref("Ready")}},
    }
    metrics_op = _get("Prometheus metrics", "Health", params.PLAIN, store=False, tag="operations")
    metrics_op["get"]["responses"]["200"] = {
        "description": "Prometheus text exposition format 0.0.4",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "sluice API",
            "version": __version__,
            "description": "Aggregations over the measurements sluice stored, and the state of "
            "the pipeline. Every error is JSON: {\"error\": {\"status\", \"code\", "
            "\"message\"}}, where `status` repeats the HTTP status and `code` is one of a fixed "
            "list; a 400 about one parameter also names it in `param`; a 503 carries a "
            "`Retry-After` header (seconds). `from` and `to` take ISO 8601, epoch milliseconds or "
            "times relative to now (`now-1h`, `now-15m`, `now`). Cross-origin calls from a "
            "browser are refused unless the API runs with `--cors-origins`. Add "
            "`?pretty` for indented output. A request malformed at the HTTP level (a request "
            "line or header longer than 8190 bytes, bytes that are not ASCII in the URL, a broken "
            "header) is refused by the HTTP server before it reaches the API: that 400 is plain "
            "text, not JSON.",
        },
        "paths": {
            "/api/v1/stats": _get(
                "Value statistics", "Stats", params.STATS,
                description="count, sum, avg, min, max (exact) and p50/p95/p99 (estimated by "
                "Elasticsearch's t-digest) of `value` over the filtered measurements.",
            ),
            "/api/v1/sensors": _get(
                "Per-sensor statistics", "Sensors", params.SENSORS,
                description="count, avg, min, max, sum and last seen per sensor, optionally per "
                "metric within each sensor (up to 100 metrics per sensor). The ranking and the "
                f"per-sensor numbers are exact while each shard holds at most "
                f"{SENSOR_SHARD_SIZE:,} distinct sensors matching the filters; beyond that the "
                "order may be approximate. With `per_metric=true`, `size` is at most "
                f"{max_sensors(True)}, so the answer stays within Elasticsearch's "
                f"{ES_MAX_BUCKETS:,} buckets (`search.max_buckets`).",
            ),
            "/api/v1/metrics": _get(
                "Metrics", "Metrics", params.METRICS,
                description="The metrics measured, most measurements first, each with its most "
                "common unit and its count (exact). Averages mix units across metrics: ask "
                "`/stats` with `metric=` for one of these.",
            ),
            "/api/v1/histogram": _get(
                "Date histogram", "Histogram", params.HISTOGRAM,
                description="count and avg of `value` per time bucket. Without `from`/`to` the "
                f"range is that of the matching data. At most {MAX_BUCKETS} buckets.",
            ),
            "/api/v1/measurements": _get(
                "Latest measurements", "Measurements", params.MEASUREMENTS,
                description="Newest first (by @timestamp, then id), paginated with "
                "`next_cursor` (search_after): no deep offsets, no record missed or repeated.",
            ),
            "/api/v1/pipeline": _get(
                "Pipeline state", "Pipeline", params.PIPELINE, tag="operations",
                description="Depth and consumers of every raw and dead-letter queue (from "
                "RabbitMQ; null while the broker is unreachable), dead letters by reason, and "
                "documents ingested per minute over the last `minutes`.",
            ),
            "/api/v1/openapi.json": {"get": {
                "summary": "This document", "tags": ["operations"], "operationId": "openapi",
                "parameters": [_parameter(p) for p in params.PLAIN],
                "responses": {
                    "200": {"description": "OpenAPI 3.0",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                    "400": _error("bad parameter"),
                },
            }},
            "/healthz": _get("Liveness", "Health", params.PLAIN, store=False, tag="operations"),
            "/readyz": ready,
            "/metrics": metrics_op,
        },
        "components": {"schemas": _SCHEMAS},
    }

