"""/api/v1/metrics: the metrics measured, with their unit and exact count."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.api import BASE_TS, index_documents, make_measurements

from .test_aggregations import get_json

pytestmark = pytest.mark.timeout(120)


async def test_metrics_with_units_and_counts(api_client, es_url, es_index_prefix):
    docs = make_measurements(300, seed=5, metrics=("temperature", "humidity", "voltage"))
    units = {"temperature": "C", "humidity": "%", "voltage": "V"}
    for d in docs:
        d["unit"] = units[d["metric"]]
    await index_documents(es_url, es_index_prefix, docs)
    client = await api_client(es_index_prefix)
    body = await get_json(client, "/api/v1/metrics")
    want = Counter(d["metric"] for d in docs)
    assert body["total"] == len(docs) and body["others_count"] == 0
    assert {m["metric"]: m["count"] for m in body["metrics"]} == dict(want)
    assert all(m["unit"] == units[m["metric"]] for m in body["metrics"])
    counts = [m["count"] for m in body["metrics"]]
    assert counts == sorted(counts, reverse=True)

    # Filters apply: only one sensor's metrics, in a time range.
    sensor = docs[0]["sensor"]
    start, end = BASE_TS, BASE_TS + 24 * 3_600_000
    body = await get_json(client, f"/api/v1/metrics?sensor={sensor}&from={start}&to={end}")
    want = Counter(d["metric"] for d in docs if d["sensor"] == sensor and start <= d["ts"] < end)
    assert {m["metric"]: m["count"] for m in body["metrics"]} == dict(want)
    assert body["filters"]["sensor"] == sensor
