"""Stats, sensors and histogram answers against values computed from the indexed records."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import BASE_TS, iso_ms

from .expected import group_by, matching, percentile_window, summary

pytestmark = pytest.mark.timeout(120)

HOUR = 3_600_000


async def get_json(client: Any, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    body = await resp.json()
    assert resp.status == status, body
    assert resp.headers["Content-Type"].startswith("application/json")
    return body


def assert_summary(got: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    want = summary(docs)
    for key in ("count", "sum", "avg", "min", "max"):
        assert got[key] == want[key], (key, got[key], want[key])


async def test_stats_over_everything_are_exact(api_client, seeded_prefix, measurements):
    client = await api_client(seeded_prefix)
    got = await get_json(client, "/api/v1/stats")
    assert_summary(got, measurements)
    values = [d["value"] for d in measurements]
    for p in (50, 95, 99):
        low, high = percentile_window(values, p)
        assert low <= got["percentiles"][f"p{p}"] <= high, (p, got["percentiles"])
    assert got["filters"] == {"metric": None, "sensor": None, "from": None, "to": None, "tags": []}


@pytest.mark.parametrize(
    ("query", "criteria"),
    [
        ("metric=temperature", {"metric": "temperature"}),
        ("sensor=sensor-03", {"sensor": "sensor-03"}),
        ("tag=site:lab", {"tags": [("site", "lab")]}),
        ("tag=site:lab&tag=floor:2", {"tags": [("site", "lab"), ("floor", "2")]}),
        ("metric=humidity&sensor=sensor-01&tag=site:north",
         {"metric": "humidity", "sensor": "sensor-01", "tags": [("site", "north")]}),
        (f"from={BASE_TS + 10 * HOUR}&to={BASE_TS + 20 * HOUR}",
         {"start": BASE_TS + 10 * HOUR, "end": BASE_TS + 20 * HOUR}),
        # the same instants as ISO 8601, in UTC and with an offset
        ("from=2026-11-20T10:00:00Z&to=2026-11-20T22:00:00%2B02:00",
         {"start": BASE_TS + 10 * HOUR, "end": BASE_TS + 20 * HOUR}),
        ("from=2026-11-21", {"start": BASE_TS + 24 * HOUR}),
        ("to=2026-11-21T00:00:00.000", {"end": BASE_TS + 24 * HOUR}),
    ],
)
async def test_stats_filters(api_client, seeded_prefix, measurements, query, criteria):
    client = await api_client(seeded_prefix)
    expected_docs = matching(measurements, **criteria)
    assert expected_docs, "the filter should match something in the seeded set"
    got = await get_json(client, f"/api/v1/stats?{query}")
    assert_summary(got, expected_docs)


async def test_time_range_is_inclusive_start_exclusive_end(api_client, seeded_prefix, measurements):
    client = await api_client(seeded_prefix)
    ts = measurements[0]["ts"]
    same = matching(measurements, start=ts, end=ts + 1)
    got = await get_json(client, f"/api/v1/stats?from={ts}&to={ts + 1}")
    assert got["count"] == len(same) >= 1
    assert (await get_json(client, f"/api/v1/stats?from={ts}&to={ts}"))["count"] == 0


@pytest.mark.parametrize(
    "query",
    ["metric=no-such-metric", "tag=site:mars", "from=2030-01-01", "to=1971-01-01", "tag=nokey:x"],
)
async def test_empty_results(api_client, seeded_prefix, query):
    client = await api_client(seeded_prefix)
    got = await get_json(client, f"/api/v1/stats?{query}")
    assert got["count"] == 0
    assert got["sum"] == 0
    assert got["avg"] is None and got["min"] is None and got["max"] is None
    assert got["percentiles"] == {"p50": None, "p95": None, "p99": None}
    sensors = await get_json(client, f"/api/v1/sensors?{query}")
    assert sensors["sensors"] == [] and sensors["total"] == 0
    hist = await get_json(client, f"/api/v1/histogram?{query}")
    assert sum(b["count"] for b in hist["buckets"]) == 0
    page = await get_json(client, f"/api/v1/measurements?{query}")
    assert page == {**page, "total": 0, "measurements": [], "next_cursor": None}


async def test_no_indices_at_all(api_client, es_index_prefix):
    client = await api_client(es_index_prefix)
    assert (await get_json(client, "/api/v1/stats"))["count"] == 0
    hist = await get_json(client, "/api/v1/histogram")
    assert hist["buckets"] == [] and hist["from"] is None


async def test_counts_are_exact_beyond_ten_thousand(api_client, es_url, es_index_prefix):
    from tests.support.api import index_documents, make_measurements

    docs = make_measurements(10_250, seed=11, sensors=3, span_ms=6 * HOUR)
    await index_documents(es_url, es_index_prefix, docs)
    client = await api_client(es_index_prefix)
    assert (await get_json(client, "/api/v1/stats"))["count"] == 10_250
    page = await get_json(client, "/api/v1/measurements?size=1")
    assert page["total"] == 10_250
    sensors = await get_json(client, "/api/v1/sensors")
    assert sensors["total"] == 10_250
    assert sum(s["count"] for s in sensors["sensors"]) == 10_250


def _expected_sensor_rows(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rows = {}
    for sensor, group in group_by(docs, lambda d: d["sensor"]).items():
        last = max(d["ts"] for d in group)
        rows[sensor] = {**summary(group), "last_seen": iso_ms(last)}
    return rows


@pytest.mark.parametrize("query", ["", "metric=pressure", "tag=site:south&from=2026-11-21"])
async def test_sensors_match_independent_groups(api_client, seeded_prefix, measurements, query):
    client = await api_client(seeded_prefix)
    f: dict[str, Any] = {}
    if "metric=pressure" in query:
        f = {"metric": "pressure"}
    elif query:
        f = {"tags": [("site", "south")], "start": BASE_TS + 24 * HOUR}
    docs = matching(measurements, **f)
    want = _expected_sensor_rows(docs)
    got = await get_json(client, f"/api/v1/sensors?size=1000&{query}")
    assert got["total"] == len(docs)
    assert got["others_count"] == 0
    assert {row["sensor"] for row in got["sensors"]} == set(want)
    for row in got["sensors"]:
        expected = want[row["sensor"]]
        for key in ("count", "sum", "avg", "min", "max", "last_seen"):
            assert row[key] == expected[key], (row["sensor"], key)
    # default order: count descending, ties by name
    assert [r["sensor"] for r in got["sensors"]] == sorted(want, key=lambda s: (-want[s]["count"], s))


@pytest.mark.parametrize("order", ["avg:desc", "avg:asc", "max:desc", "min:asc", "last_seen:desc", "sensor:asc",
                                   "count:asc"])
async def test_sensors_size_and_order(api_client, seeded_prefix, measurements, order):
    client = await api_client(seeded_prefix)
    want = _expected_sensor_rows(measurements)
    field, direction = order.split(":")
    # Ties go by name ascending; Python's sort is stable, also with reverse=True.
    ordered = sorted(want)
    if field == "sensor":
        ordered.sort(reverse=direction == "desc")
    else:
        ordered.sort(key=lambda s: want[s][field], reverse=direction == "desc")
    got = await get_json(client, f"/api/v1/sensors?size=3&order={order}")
    assert [r["sensor"] for r in got["sensors"]] == ordered[:3]
    assert got["order"] == order
    assert got["others_count"] == sum(want[s]["count"] for s in ordered[3:])


async def test_sensors_per_metric(api_client, seeded_prefix, measurements):
    client = await api_client(seeded_prefix)
    got = await get_json(client, "/api/v1/sensors?per_metric=true&size=648&sensor=sensor-05")
    [row] = got["sensors"]
    docs = matching(measurements, sensor="sensor-05")
    by_metric = group_by(docs, lambda d: d["metric"])
    assert [m["metric"] for m in row["metrics"]] == sorted(by_metric)
    for m in row["metrics"]:
        want = {**summary(by_metric[m["metric"]]),
                "last_seen": iso_ms(max(d["ts"] for d in by_metric[m["metric"]]))}
        for key, value in want.items():
            assert m[key] == value, (m["metric"], key)
    plain = await get_json(client, "/api/v1/sensors?sensor=sensor-05")
    assert "metrics" not in plain["sensors"][0]


@pytest.mark.parametrize("interval", ["1h", "90m", "1d", "7200s"])
async def test_histogram_with_explicit_interval(api_client, seeded_prefix, measurements, interval):
    client = await api_client(seeded_prefix)
    ms = {"1h": HOUR, "90m": 90 * 60_000, "1d": 24 * HOUR, "7200s": 2 * HOUR}[interval]
    start, end = BASE_TS + 5 * HOUR, BASE_TS + 50 * HOUR
    got = await get_json(client, f"/api/v1/histogram?interval={interval}&metric=temperature&from={start}&to={end}")
    docs = matching(measurements, metric="temperature", start=start, end=end)
    assert got["interval_ms"] == ms
    by_bucket = group_by(docs, lambda d: d["ts"] // ms * ms)
    keys = [b["ts"] for b in got["buckets"]]
    # Contiguous, aligned, covering the range, empty buckets included.
    assert keys == list(range(start // ms * ms, end, ms))
    for b in got["buckets"]:
        group = by_bucket.get(b["ts"], [])
        assert b["count"] == len(group)
        assert b["avg"] == summary(group)["avg"]
        assert b["t"] == iso_ms(b["ts"])
    assert sum(b["count"] for b in got["buckets"]) == len(docs)


async def test_histogram_chooses_an_interval_from_the_data(api_client, seeded_prefix, measurements):
    client = await api_client(seeded_prefix)
    got = await get_json(client, "/api/v1/histogram")
    first = min(d["ts"] for d in measurements)
    last = max(d["ts"] for d in measurements)
    assert got["interval"] == "2h"  # 72 h of data, at most 60 buckets, a readable width
    assert got["from"] == iso_ms(first) and got["to"] == iso_ms(last + 1)
    assert sum(b["count"] for b in got["buckets"]) == len(measurements)
    assert len(got["buckets"]) <= 60
    narrow = await get_json(client, f"/api/v1/histogram?from={BASE_TS}&to={BASE_TS + 30 * 60_000}")
    assert narrow["interval"] == "30s"
    assert len(narrow["buckets"]) == 60


async def test_histogram_refuses_too_many_buckets(api_client, seeded_prefix):
    client = await api_client(seeded_prefix)
    body = await get_json(client, "/api/v1/histogram?interval=1s", status=400)
    assert body["error"]["code"] == "bad_parameter"
    assert "'interval'" in body["error"]["message"] and "buckets" in body["error"]["message"]
