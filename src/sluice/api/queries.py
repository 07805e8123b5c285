"""Elasticsearch request bodies, and the shaping of their answers into the API's JSON.

Pure functions, no I/O: the handlers pair each ``*_body`` with its ``*_result``.
Counts are exact: ``track_total_hits`` is on wherever a total is reported, and metric
counts come from ``stats`` (an exact value count), never from the capped hit total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from ..timestamps import iso_utc_ms
from .params import Filters

__all__ = [
    "AUTO_BUCKETS",
    "ES_MAX_BUCKETS",
    "MAX_BUCKETS",
    "METRICS_PER_SENSOR",
    "PERCENTS",
    "SENSOR_SHARD_SIZE",
    "bounds_body",
    "bounds_result",
    "bucket_count",
    "choose_interval",
    "dead_reasons_body",
    "dead_reasons_result",
    "filter_query",
    "format_interval",
    "histogram_body",
    "histogram_result",
    "ingest_body",
    "ingest_result",
    "ingest_window",
    "max_sensors",
    "measurements_body",
    "measurements_result",
    "sensors_body",
    "sensors_result",
    "stats_body",
    "stats_result",
]

PERCENTS = (50.0, 95.0, 99.0)
#: the widest histogram answered; a narrower interval over a long range is a 400
MAX_BUCKETS = 2000
#: how many buckets an interval chosen by the API aims for
AUTO_BUCKETS = 60
# Widths a person reads easily; past the last one, whole days.
_NICE_MS = tuple(
    n * unit
    for n, unit in (
        (1, 1_000), (2, 1_000), (5, 1_000), (10, 1_000), (15, 1_000), (30, 1_000),
        (1, 60_000), (2, 60_000), (5, 60_000), (10, 60_000), (15, 60_000), (30, 60_000),
        (1, 3_600_000), (2, 3_600_000), (3, 3_600_000), (6, 3_600_000), (12, 3_600_000),
        (1, 86_400_000), (2, 86_400_000), (7, 86_400_000), (14, 86_400_000), (30, 86_400_000),
    )
)
_DAY_MS = 86_400_000
# Every shard returns every sensor up to this many, so per-sensor counts and the order
# by a sub-aggregation are exact rather than estimated from each shard's top few.
_SENSOR_SHARD_SIZE = 10_000
METRICS_PER_SENSOR = _METRICS_PER_SENSOR = 100
#: Elasticsearch's default ``search.max_buckets``: more buckets in one answer fail the search.
ES_MAX_BUCKETS = 65_536
#: Sensors considered per shard: ranking and counts are exact up to this many distinct
#: sensors per shard (the terms aggregation's ``shard_size``).
SENSOR_SHARD_SIZE = _SENSOR_SHARD_SIZE


def max_sensors(per_metric: bool) -> int:
    """The largest ``size`` whose answer stays within :data:`ES_MAX_BUCKETS` buckets
    (each sensor's bucket plus, with ``per_metric``, up to 100 metric buckets in it)."""
    return ES_MAX_BUCKETS // (1 + _METRICS_PER_SENSOR) if per_metric else ES_MAX_BUCKETS
_DOC_FIELDS = ["id", "sensor", "metric", "value", "unit", "ts", "tags", "@timestamp",
               "ingested_at", "parser"]


def filter_query(f: Filters) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = []
    if f.metric is not None:
        clauses.append({"term": {"metric": f.metric}})
    if f.sensor is not None:
        clauses.append({"term": {"sensor": f.sensor}})
    if f.start is not None or f.end is not None:
        bounds: dict[str, Any] = {"format": "epoch_millis"}
        if f.start is not None:
            bounds["gte"] = f.start
        if f.end is not None:
            bounds["lt"] = f.end
        clauses.append({"range": {"@timestamp": bounds}})
    for key, value in f.tags:
        clauses.append({"term": {f"tags.{key}": value}})
    if not clauses:
        return {"match_all": {}}
    return {"bool": {"filter": clauses}}


def _num(value: Any) -> Optional[float]:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: Any) -> int:
    return int(value or 0)


# -- stats ---------------------------------------------------------------------------------


def stats_body(f: Filters) -> dict[str, Any]:
    return {
        "size": 0,
        "track_total_hits": True,
        "query": filter_query(f),
        "aggs": {
            "value_stats": {"stats": {"field": "value"}},
            "value_percentiles": {"percentiles": {"field": "value", "percents": list(PERCENTS)}},
        },
    }


def _percentile(values: Mapping[str, Any], percent: float) -> Optional[float]:
    # Elasticsearch keys them "50.0"; be lenient about "50".
    for key in (str(percent), f"{percent:g}"):
        if key in values:
            return _num(values[key])
    return None


def stats_result(resp: Mapping[str, Any]) -> dict[str, Any]:
    aggs = resp.get("aggregations") or {}
    stats = aggs.get("value_stats") or {}
    count = _count(stats.get("count"))
    pct = (aggs.get("value_percentiles") or {}).get("values") or {}
    return {
        "count": count,
        "sum": _num(stats.get("sum")) if count else 0.0,
        "avg": _num(stats.get("avg")) if count else None,
        "min": _num(stats.get("min")) if count else None,
        "max": _num(stats.get("max")) if count else None,
        "percentiles": {
            f"p{p:g}": (_percentile(pct, p) if count else None) for p in PERCENTS
        },
    }


# -- sensors -------------------------------------------------------------------------------

_ORDER_KEYS = {
    "count": "_count",
    "sensor": "_key",
    "avg": "avg_value",
    "min": "min_value",
    "max": "max_value",
    "last_seen": "last_seen",
}


def _group_aggs() -> dict[str, Any]:
    # Single-value aggregations, so terms can order by any of them by name.
    return {
        "avg_value": {"avg": {"field": "value"}},
        "min_value": {"min": {"field": "value"}},
        "max_value": {"max": {"field": "value"}},
        "sum_value": {"sum": {"field": "value"}},
        "last_seen": {"max": {"field": "@timestamp"}},
    }


def sensors_body(f: Filters, size: int, order: str, per_metric: bool) -> dict[str, Any]:
    field, direction = order.split(":")
    key = _ORDER_KEYS[field]
    ordering: list[dict[str, str]] = [{key: direction}]
    if key != "_key":
        ordering.append({"_key": "asc"})  # ties: stable, by name
    aggs: dict[str, Any] = _group_aggs()
    if per_metric:
        aggs["metrics"] = {
            "terms": {"field": "metric", "size": _METRICS_PER_SENSOR, "order": [{"_key": "asc"}]},
            "aggs": _group_aggs(),
        }
    return {
        "size": 0,
        "track_total_hits": True,
        "query": filter_query(f),
        "aggs": {
            "sensors": {
                "terms": {
                    "field": "sensor",
                    "size": size,
                    "shard_size": max(size, _SENSOR_SHARD_SIZE),
                    "order": ordering,
                },
                "aggs": aggs,
            }
        },
    }


def _value_of(bucket: Mapping[str, Any], name: str) -> Any:
    return (bucket.get(name) or {}).get("value")


def _group(bucket: Mapping[str, Any]) -> dict[str, Any]:
    last = _value_of(bucket, "last_seen")
    return {
        "count": _count(bucket.get("doc_count")),
        "avg": _num(_value_of(bucket, "avg_value")),
        "min": _num(_value_of(bucket, "min_value")),
        "max": _num(_value_of(bucket, "max_value")),
        "sum": _num(_value_of(bucket, "sum_value")) or 0.0,
        "last_seen": iso_utc_ms(int(last)) if last is not None else None,
    }


def _total(resp: Mapping[str, Any]) -> int:
    total = (resp.get("hits") or {}).get("total") or {}
    return _count(total.get("value") if isinstance(total, Mapping) else total)


def sensors_result(resp: Mapping[str, Any], per_metric: bool) -> dict[str, Any]:
    terms = (resp.get("aggregations") or {}).get("sensors") or {}
    rows = []
    for bucket in terms.get("buckets") or []:
        row = {"sensor": str(bucket["key"]), **_group(bucket)}
        if per_metric:
            row["metrics"] = [
                {"metric": str(m["key"]), **_group(m)}
                for m in ((bucket.get("metrics") or {}).get("buckets") or [])
            ]
        rows.append(row)
    return {
        "total": _total(resp),
        "others_count": _count(terms.get("sum_other_doc_count")),
        "sensors": rows,
    }


# -- histogram -----------------------------------------------------------------------------


def bounds_body(f: Filters) -> dict[str, Any]:
    """First and last timestamp under ``f``: the range a histogram spans when not given."""
    return {
        "size": 0,
        "query": filter_query(f),
        "aggs": {"first": {"min": {"field": "@timestamp"}}, "last": {"max": {"field": "@timestamp"}}},
    }


def bounds_result(resp: Mapping[str, Any]) -> Optional[tuple[int, int]]:
    aggs = resp.get("aggregations") or {}
    first, last = _value_of(aggs, "first"), _value_of(aggs, "last")
    if first is None or last is None:
        return None
    return int(first), int(last)


def choose_interval(span_ms: int, target: int = AUTO_BUCKETS) -> int:
    """The smallest readable width giving at most ``target`` buckets over ``span_ms``."""
    for width in _NICE_MS:
        if span_ms / width <= target:
            return width
    return max(1, math.ceil(span_ms / (target * _DAY_MS))) * _DAY_MS


def bucket_count(start: int, end: int, interval: int) -> int:
    """Buckets a histogram from ``start`` (inclusive) to ``end`` (exclusive) has;
    buckets are aligned on multiples of ``interval`` since the epoch."""
    if end <= start:
        return 0
    return (end - 1) // interval - start // interval + 1


def format_interval(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def histogram_body(f: Filters, start: int, end: int, interval: int) -> dict[str, Any]:
    ranged = Filters(f.metric, f.sensor, start, end, f.tags)
    return {
        "size": 0,
        "query": filter_query(ranged),
        "aggs": {
            "over_time": {
                "date_histogram": {
                    "field": "@timestamp",
                    "fixed_interval": format_interval(interval),
                    "min_doc_count": 0,
                    # Empty buckets at both ends too, so the series covers the range.
                    "extended_bounds": {"min": start, "max": end - 1},
                },
                "aggs": {"avg_value": {"avg": {"field": "value"}}},
            }
        },
    }


def histogram_result(resp: Mapping[str, Any], start: int, end: int) -> list[dict[str, Any]]:
    agg = (resp.get("aggregations") or {}).get("over_time") or {}
    out = []
    for bucket in agg.get("buckets") or []:
        key = int(bucket["key"])
        out.append({
            "t": iso_utc_ms(key),
            "ts": key,
            "count": _count(bucket.get("doc_count")),
            "avg": _num(_value_of(bucket, "avg_value")),
        })
    return out


# -- measurements --------------------------------------------------------------------------


def measurements_body(f: Filters, size: int, cursor: Optional[Sequence[Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {
        # One more than asked: whether it comes back says if there is a next page.
        "size": size + 1,
        "track_total_hits": True,
        "query": filter_query(f),
        # ``id`` breaks ties between equal timestamps; it is unique, so the order is total
        # and search_after never skips or repeats a document.
        "sort": [{"@timestamp": {"order": "desc"}}, {"id": {"order": "desc"}}],
        "_source": _DOC_FIELDS,
    }
    if cursor is not None:
        body["search_after"] = list(cursor)
    return body


def measurements_result(resp: Mapping[str, Any], size: int) -> tuple[list[dict[str, Any]], Optional[list[Any]], int]:
    """(documents, sort values of the last one if more follow, exact total)."""
    hits = (resp.get("hits") or {}).get("hits") or []
    page = hits[:size]
    docs = [dict(hit.get("_source") or {}) for hit in page]
    after: Optional[list[Any]] = None
    if len(hits) > size and page:
        sort = page[-1].get("sort") or []
        after = [int(sort[0]), str(sort[1])] if len(sort) == 2 else None
    return docs, after, _total(resp)


# -- pipeline ------------------------------------------------------------------------------


def ingest_window(now: int, minutes: int) -> tuple[int, int, int]:
    """``(window_start, bucket_start, end)`` for the last ``minutes`` before ``now``.

    The rate is counted over exactly ``[window_start, end)`` (``minutes`` whole minutes
    back from ``now``); the per-minute buckets are aligned on the minute, so they start
    at ``bucket_start`` (the current, still filling minute is the last one).
    """
    return now - minutes * 60_000, (now // 60_000 - (minutes - 1)) * 60_000, now


def ingest_body(window_start: int, bucket_start: int, end: int, interval: int = 60_000) -> dict[str, Any]:
    """Documents ingested in ``[window_start, end)`` (exact count, a filter aggregation)
    and per ``interval`` from ``bucket_start``."""
    lower = min(window_start, bucket_start)
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"range": {"ingested_at": {"gte": lower, "lt": end, "format": "epoch_millis"}}},
        "aggs": {
            "window": {
                "filter": {"range": {"ingested_at": {
                    "gte": window_start, "lt": end, "format": "epoch_millis"}}},
            },
            "per_interval": {
                "filter": {"range": {"ingested_at": {
                    "gte": bucket_start, "lt": end, "format": "epoch_millis"}}},
                "aggs": {"histogram": {
                    "date_histogram": {
                        "field": "ingested_at",
                        "fixed_interval": format_interval(interval),
                        "min_doc_count": 0,
                        "extended_bounds": {"min": bucket_start, "max": end - 1},
                    }
                }},
            },
            "last_ingested": {"max": {"field": "ingested_at"}},
        },
    }


def ingest_result(resp: Mapping[str, Any], window_start: int, bucket_start: int, end: int) -> dict[str, Any]:
    aggs = resp.get("aggregations") or {}
    per_interval = ((aggs.get("per_interval") or {}).get("histogram") or {}).get("buckets") or []
    buckets = [
        {"t": iso_utc_ms(int(b["key"])), "ts": int(b["key"]), "count": _count(b.get("doc_count"))}
        for b in per_interval
        if bucket_start <= int(b["key"]) < end
    ]
    count = _count((aggs.get("window") or {}).get("doc_count"))
    span_s = (end - window_start) / 1000.0
    return {
        "from": iso_utc_ms(window_start),
        "to": iso_utc_ms(end),
        "count": count,
        "rate_per_s": count / span_s if span_s > 0 else 0.0,
        "buckets": buckets,
    }


def dead_reasons_body() -> dict[str, Any]:
    return {
        "size": 0,
        "track_total_hits": True,
        "aggs": {
            "reasons": {
                "terms": {"field": "reason", "size": 100, "order": [{"_count": "desc"}, {"_key": "asc"}]}
            }
        },
    }


def dead_reasons_result(resp: Mapping[str, Any]) -> list[dict[str, Any]]:
    buckets = ((resp.get("aggregations") or {}).get("reasons") or {}).get("buckets") or []
    return [{"reason": str(b["key"]), "count": _count(b.get("doc_count"))} for b in buckets]


# -- metrics -------------------------------------------------------------------------------

#: metrics listed by /api/v1/metrics; the rest are counted in ``others_count``
METRICS_LIMIT = 200


def metrics_body(f: Filters) -> dict[str, Any]:
    return {
        "size": 0,
        "track_total_hits": True,
        "query": filter_query(f),
        "aggs": {
            "metrics": {
                "terms": {"field": "metric", "size": METRICS_LIMIT,
                          "order": [{"_count": "desc"}, {"_key": "asc"}]},
                # The most common unit: a metric should have one, but records decide.
                "aggs": {"units": {"terms": {"field": "unit", "size": 1}}},
            }
        },
    }


def metrics_result(resp: Mapping[str, Any]) -> dict[str, Any]:
    buckets = ((resp.get("aggregations") or {}).get("metrics") or {}).get("buckets") or []
    metrics: list[dict[str, Any]] = []
    listed = 0
    for b in buckets:
        units = (b.get("units") or {}).get("buckets") or []
        count = _count(b.get("doc_count"))
        listed += count
        metrics.append({"metric": str(b["key"]), "unit": str(units[0]["key"]) if units else None,
                        "count": count})
    total = _total(resp)
    return {"total": total, "others_count": max(0, total - listed), "metrics": metrics}


# -- dead-letter samples -------------------------------------------------------------------

DEAD_SAMPLES = 5
DEAD_SAMPLE_FIELDS = ("@timestamp", "reason", "kind", "error", "record_id", "source_message_id",
                      "position", "parser")


def dead_samples_body() -> dict[str, Any]:
    return {"size": DEAD_SAMPLES, "sort": [{"@timestamp": {"order": "desc"}}],
            "_source": list(DEAD_SAMPLE_FIELDS)}


def dead_samples_result(resp: Mapping[str, Any]) -> list[dict[str, Any]]:
    hits = (resp.get("hits") or {}).get("hits") or []
    return [{k: (h.get("_source") or {}).get(k) for k in DEAD_SAMPLE_FIELDS} for h in hits]
