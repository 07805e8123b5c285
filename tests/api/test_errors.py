"""Bad parameters get a 400 naming them; unknown routes a JSON 404; never a 500 or a trace."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest

from tests.support.metrics import parse_metrics

from .test_aggregations import get_json

pytestmark = pytest.mark.timeout(120)

BAD = [
    # (path, parameter the message must name, a word of what was expected)
    ("/api/v1/stats?from=yesterday", "from", "ISO 8601"),
    ("/api/v1/stats?from=2026-02-30", "from", "not a valid time"),
    ("/api/v1/stats?to=2026-11-28T25:00:00Z", "to", "not a valid time"),
    ("/api/v1/stats?to=99999999999999999", "to", "ISO 8601"),
    ("/api/v1/stats?from=253402300800000", "from", "between"),
    ("/api/v1/stats?from=-5", "from", "ISO 8601"),
    ("/api/v1/stats?from=2026-11-28&to=2026-11-27", "from", "before 'to'"),
    ("/api/v1/stats?metric=", "metric", "non-empty"),
    ("/api/v1/stats?sensor=" + "x" * 257, "sensor", "at most 256"),
    ("/api/v1/stats?metric=a&metric=b", "metric", "once"),
    ("/api/v1/stats?tag=site", "tag", "key:value"),
    ("/api/v1/stats?tag=:lab", "tag", "key:value"),
    ("/api/v1/stats?pretty=yes", "pretty", "true or false"),
    ("/api/v1/sensors?size=0", "size", "from 1 to 1000"),
    ("/api/v1/sensors?size=1001", "size", "from 1 to 1000"),
    ("/api/v1/sensors?size=ten", "size", "integer"),
    ("/api/v1/sensors?size=1.5", "size", "integer"),
    ("/api/v1/sensors?order=avg", "order", "one of"),
    ("/api/v1/sensors?order=value:desc", "order", "one of"),
    ("/api/v1/sensors?per_metric=yes", "per_metric", "true or false"),
    ("/api/v1/sensors?per_metric=true&size=1000", "size", "per_metric"),
    ("/api/v1/stats?" + "&".join(f"tag=k{i}:v" for i in range(33)), "tag", "at most 32"),
    ("/api/v1/histogram?interval=5", "interval", "unit"),
    ("/api/v1/histogram?interval=0m", "interval", "unit"),
    ("/api/v1/histogram?interval=5w", "interval", "unit"),
    ("/api/v1/histogram?interval=1s&from=2026-01-01&to=2026-02-01", "interval", "buckets"),
    ("/api/v1/measurements?size=-1", "size", "from 1 to 1000"),
    ("/api/v1/measurements?cursor=%2F%2F", "cursor", "next_cursor"),
    ("/api/v1/pipeline?minutes=0", "minutes", "from 1 to 60"),
    ("/api/v1/pipeline?minutes=61", "minutes", "from 1 to 60"),
]


@pytest.mark.parametrize(("path", "name", "expected"), BAD)
async def test_bad_parameters_are_400_naming_them(api_client, seeded_prefix, path, name, expected):
    client = await api_client(seeded_prefix)
    body = await get_json(client, path, status=400)
    assert set(body) == {"error"}
    assert body["error"]["code"] == "bad_parameter"
    assert body["error"]["status"] == 400 and body["error"]["param"] == name
    assert f"'{name}'" in body["error"]["message"]
    assert expected in body["error"]["message"]


@pytest.mark.parametrize(("path", "name"), [
    ("/api/v1/stats?sensors=x", "sensors"), ("/api/v1/measurements?offset=100", "offset"),
    ("/api/v1/pipeline?metric=x", "metric"), ("/healthz?x=1", "x"),
])
async def test_unknown_parameters_are_refused(api_client, seeded_prefix, path, name):
    client = await api_client(seeded_prefix)
    body = await get_json(client, path, status=400)
    assert body["error"]["code"] == "unknown_parameter"
    assert body["error"]["param"] == name and body["error"]["status"] == 400
    assert "accepts:" in body["error"]["message"]


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v2/stats", "/static/missing.js", "/api/v1/stats/"])
async def test_unknown_routes_are_json_404(api_client, seeded_prefix, path):
    client = await api_client(seeded_prefix)
    body = await get_json(client, path, status=404)
    assert body["error"]["code"] == "not_found"
    assert body["error"]["status"] == 404 and "param" not in body["error"]


async def test_wrong_method_is_json_405(api_client, seeded_prefix):
    client = await api_client(seeded_prefix)
    resp = await client.post("/api/v1/stats", data=b"{}")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


async def test_pretty_output(api_client, seeded_prefix):
    client = await api_client(seeded_prefix)
    compact = await (await client.get("/api/v1/stats")).text()
    pretty = await (await client.get("/api/v1/stats?pretty")).text()
    assert "\n" not in compact.strip()
    assert pretty.startswith('{\n  "count": ')
    assert json.loads(pretty) == json.loads(compact)
    error = await (await client.get("/api/v1/stats?size=1&pretty")).text()
    assert error.startswith('{\n  "error": {')


async def test_health_and_metrics(api_client, seeded_prefix):
    client = await api_client(seeded_prefix)
    assert await get_json(client, "/healthz") == {"status": "ok"}
    assert await get_json(client, "/readyz") == {"ready": True, "checks": {"elasticsearch": True}}
    await get_json(client, "/api/v1/stats")
    await get_json(client, "/nope/at/all", status=404)
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    metrics = parse_metrics(await resp.text())
    assert metrics['sluice_api_requests_total{method="GET",route="/api/v1/stats",status="200"}'] == 1
    assert metrics['sluice_api_requests_total{method="GET",route="unmatched",status="404"}'] == 1
    # Latency per route: each route answered once so far has its own histogram.
    assert metrics['sluice_api_request_duration_seconds_count{route="/api/v1/stats"}'] == 1
    assert metrics['sluice_api_request_duration_seconds_count{route="unmatched"}'] == 1
    assert metrics["sluice_api_store_request_duration_seconds_count"] == 1


async def test_dashboard_and_assets_are_served(api_client, seeded_prefix):
    client = await api_client(seeded_prefix)
    page = await client.get("/")
    html = await page.text()
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    assert 'src="/static/app.js"' in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    for asset in ("/static/app.js", "/static/style.css"):
        resp = await client.get(asset)
        body = await resp.text()
        assert resp.status == 200
        assert "https://" not in body, "the dashboard must not load anything from the internet"


@pytest.mark.parametrize("request_bytes", [
    b"GET /api/v1/stats?sensor=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
    b"GET /api/v1/stats?sensor=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
])
async def test_requests_malformed_at_the_http_level_are_400_without_a_traceback(
    api_client, seeded_prefix, caplog, request_bytes
):
    """aiohttp answers these before the API sees them (a plain-text 400, as the OpenAPI
    document says); its log line is one WARNING, not an ERROR with a traceback."""
    client = await api_client(seeded_prefix)
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request_bytes)
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert re.match(rb"HTTP/1\.[01] 400 ", head), head
    for _ in range(50):  # the log record is written after the answer
        if any(r.name == "aiohttp.server" for r in caplog.records):
            break
        await asyncio.sleep(0.02)
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records, "aiohttp logged nothing"
    for record in records:
        assert record.levelno <= logging.WARNING, record.getMessage()
        assert record.exc_info is None
    assert any("bad HTTP request" in r.getMessage() for r in records)


async def test_relative_times_are_resolved_and_echoed(api_client, seeded_prefix):
    """from=now-1h: the answer echoes the resolved time, an hour before the request."""
    import datetime as dt
    import time

    client = await api_client(seeded_prefix)
    before = time.time()
    body = await get_json(client, "/api/v1/stats?from=now-1h&to=now")
    after = time.time()
    start = dt.datetime.fromisoformat(body["filters"]["from"].replace("Z", "+00:00")).timestamp()
    end = dt.datetime.fromisoformat(body["filters"]["to"].replace("Z", "+00:00")).timestamp()
    assert before - 3600 - 0.001 <= start <= after - 3600
    assert before - 0.001 <= end <= after
    bad = await get_json(client, "/api/v1/stats?from=now-1y", status=400)
    assert bad["error"]["param"] == "from" and "now-1h" in bad["error"]["message"]
