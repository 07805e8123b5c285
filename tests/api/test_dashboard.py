"""The dashboard in a real headless Chromium: the numbers on the page are the API's.

The screenshot is kept as ``test-artifacts/dashboard.png`` at the repository root.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import pytest

from sluice.topology import Topology
from tests.support.api import ROOT, index_documents, iso_ms, make_measurements

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

ARTIFACTS = Path(ROOT) / "test-artifacts"

# Everything the test compares, read from the page in one evaluation.
READ_PAGE = """
(() => {
  const v = (id) => document.getElementById(id).dataset.value;
  const rows = (sel) => Array.from(document.querySelectorAll(sel));
  const cells = (tr) => Object.fromEntries(
    Array.from(tr.querySelectorAll('[data-field]')).map((td) => [td.dataset.field, td.dataset.value]));
  const hist = document.getElementById('histogram-chart');
  return {
    state: document.body.dataset.state,
    total: v('total-count'), avg: v('avg-value'), min: v('min-value'), max: v('max-value'),
    p50: v('p50-value'), p95: v('p95-value'), p99: v('p99-value'),
    ingestCount: v('ingest-count'), ingestRate: v('ingest-rate'),
    queueDepth: v('queue-depth'), deadTotal: v('dead-letter-total'),
    histBuckets: hist.dataset.buckets, histTotal: hist.dataset.total,
    histRects: hist.querySelectorAll('rect').length,
    histCounts: Array.from(hist.querySelectorAll('rect')).map((r) => Number(r.dataset.count)),
    ingestRects: document.querySelectorAll('#ingest-chart rect').length,
    bars: rows('#sensor-bars .bar').map((b) => [b.dataset.sensor, b.dataset.avg]),
    sensors: rows('#sensor-table tbody tr').map((tr) => [tr.dataset.sensor, cells(tr)]),
    queues: rows('#pipeline-table tbody tr').map((tr) => [tr.dataset.queue, tr.dataset.role, cells(tr)]),
  };
})()
"""


def num(text: str) -> Any:
    return None if text == "" else float(text)


async def fetch(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_dashboard_shows_the_api_numbers(
    chromium, api_process, es_url, es_index_prefix, amqp_url, namespace
):
    now = int(time.time() * 1000)
    docs = make_measurements(900, seed=21, span_ms=6 * 3_600_000, start=now - 6 * 3_600_000)
    for i, d in enumerate(docs):  # a recent trickle, so the ingest chart has bars
        d["ingested_at"] = d["@timestamp"] if i % 3 else iso_ms(now - (i % 600) * 1000)
    await index_documents(es_url, es_index_prefix, docs)
    topology = Topology(namespace)
    conn = await aiormq.connect(amqp_url)
    try:
        channel = await conn.channel()
        await topology.declare(channel, ["measurement"])
        for i in range(7):
            await channel.basic_publish(b"x%d" % i, exchange=topology.exchange,
                                        routing_key=topology.routing_key("measurement"))
        for i in range(2):
            await channel.basic_publish(b"d%d" % i, exchange=topology.dead_exchange,
                                        routing_key=topology.dead_routing_key("measurement"))
    finally:
        await conn.close()

    api = api_process(es_index_prefix, amqp_url=amqp_url, namespace=namespace)
    browser = await chromium()
    page = await browser.open(f"{api.url}/?refresh=2", width=1400, height=1000)
    await page.wait_for("document.body.dataset.state === 'ready' && "
                        "document.querySelectorAll('#histogram-chart rect').length > 0", timeout=60)
    # Wait for one more full refresh, so what is read is a settled render.
    seen = int(await page.evaluate("Number(document.body.dataset.refreshes)"))
    await page.wait_for(f"Number(document.body.dataset.refreshes) > {seen}", timeout=30)
    shown = await page.evaluate(READ_PAGE)

    async with aiohttp.ClientSession() as session:
        stats = await fetch(session, f"{api.url}/api/v1/stats")
        sensors = await fetch(session, f"{api.url}/api/v1/sensors?size=50&order=count:desc")
        hist = await fetch(session, f"{api.url}/api/v1/histogram")
        pipeline = await fetch(session, f"{api.url}/api/v1/pipeline?minutes=15")

    assert shown["state"] == "ready"
    assert num(shown["total"]) == stats["count"] == len(docs)
    for key in ("avg", "min", "max"):
        assert num(shown[key]) == stats[key], key
    for p in ("p50", "p95", "p99"):
        assert num(shown[p]) == stats["percentiles"][p], p

    assert int(shown["histBuckets"]) == len(hist["buckets"]) == shown["histRects"]
    assert shown["histCounts"] == [b["count"] for b in hist["buckets"]]
    assert int(shown["histTotal"]) == stats["count"]

    api_rows = {s["sensor"]: s for s in sensors["sensors"]}
    assert [s for s, _ in shown["sensors"]] == [s["sensor"] for s in sensors["sensors"]]
    for sensor, cells in shown["sensors"]:
        for key in ("count", "avg", "min", "max"):
            assert num(cells[key]) == api_rows[sensor][key], (sensor, key)
        assert cells["last_seen"] == api_rows[sensor]["last_seen"]
    assert [s for s, _ in shown["bars"]] == [s["sensor"] for s in sensors["sensors"][:12]]
    for sensor, avg in shown["bars"]:
        assert num(avg) == api_rows[sensor]["avg"]

    assert num(shown["ingestCount"]) == pipeline["ingest"]["count"] > 0
    assert num(shown["ingestRate"]) > 0
    assert shown["ingestRects"] == len(pipeline["ingest"]["buckets"]) == 15
    assert num(shown["queueDepth"]) == sum(q["messages"] for q in pipeline["queues"]) == 7
    assert num(shown["deadTotal"]) == pipeline["dead_letters"]["total"] == 2
    queues = {q: (role, cells) for q, role, cells in shown["queues"]}
    assert queues[topology.raw_queue("measurement")] == ("raw", {"messages": "7", "consumers": "0"})
    assert queues[topology.dead_queue("measurement")] == ("dead", {"messages": "2", "consumers": "0"})

    assert page.exceptions == []
    shot = await page.screenshot(ARTIFACTS / "dashboard.png")
    assert shot.stat().st_size > 10_000

