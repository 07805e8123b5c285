"""The dashboard in a real headless Chromium: the numbers on the page are the API's.

The screenshot is kept as ``test-artifacts/dashboard.png`` at the repository root.
"""

from __future__ import annotations

import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Optional

import aiohttp
import aiormq
import pytest

from sluice.es import ensure_template, index_name, make_client
from sluice.topology import Topology
from tests.support.api import ROOT, index_documents, iso_ms, make_measurements

browser = [pytest.mark.browser, pytest.mark.timeout(180)]

ARTIFACTS = Path(ROOT) / "test-artifacts"

# Everything the test compares, read from the page in one evaluation.
READ_PAGE = """
(() => {
  const v = (id) => document.getElementById(id).dataset.value;
  const t = (id) => document.getElementById(id).textContent;
  const rows = (sel) => Array.from(document.querySelectorAll(sel));
  const cells = (tr) => Object.fromEntries(
    Array.from(tr.querySelectorAll('[data-field]')).map((td) => [td.dataset.field, td.dataset.value]));
  const texts = (tr) => Object.fromEntries(
    Array.from(tr.querySelectorAll('[data-field]')).map((td) => [td.dataset.field, td.textContent]));
  const hist = document.getElementById('histogram-chart');
  const ids = ['total-count', 'avg-value', 'min-value', 'max-value', 'p50-value', 'p95-value',
               'p99-value', 'ingest-count', 'ingest-rate', 'queue-depth', 'dead-letter-total'];
  return {
    state: document.body.dataset.state,
    total: v('total-count'), avg: v('avg-value'), min: v('min-value'), max: v('max-value'),
    p50: v('p50-value'), p95: v('p95-value'), p99: v('p99-value'),
    ingestCount: v('ingest-count'), ingestRate: v('ingest-rate'),
    queueDepth: v('queue-depth'), deadTotal: v('dead-letter-total'),
    text: Object.fromEntries(ids.map((id) => [id, t(id)])),
    histUrl: hist.dataset.url,
    histBuckets: hist.dataset.buckets, histTotal: hist.dataset.total,
    histRects: hist.querySelectorAll('rect').length,
    histCounts: Array.from(hist.querySelectorAll('rect')).map((r) => Number(r.dataset.count)),
    ingestRects: document.querySelectorAll('#ingest-chart rect').length,
    bars: rows('#sensor-bars .bar').map((b) => [b.dataset.sensor, b.dataset.avg,
                                                b.querySelector('.num').textContent]),
    sensors: rows('#sensor-table tbody tr').map((tr) => [tr.dataset.sensor, cells(tr), texts(tr)]),
    queues: rows('#pipeline-table tbody tr').map((tr) => [tr.dataset.queue, tr.dataset.role, cells(tr),
                                                         texts(tr)]),
    reasons: rows('#dead-reasons [data-reason]').map((r) => [r.dataset.reason, r.dataset.value,
                                                            r.textContent.trim()]),
  };
})()
"""


def fmt(value: Any, digits: Optional[int] = None) -> str:
    """What app.js's ``fmt()`` shows: ``Number.toLocaleString("en-US", ...)``."""
    if value is None:
        return "\u2013"
    if digits is None and float(value).is_integer():
        return f"{int(value):,}"
    d = 2 if digits is None else digits
    # Intl (ICU) rounds the shortest decimal that reads back as the double, half away
    # from zero: 1.005 shows as 1.01 (where toFixed says 1.00).
    exact = Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-d), rounding=ROUND_HALF_UP)
    return f"{exact:,.{d}f}"


def test_fmt_matches_app_js():
    assert fmt(None) == "\u2013"
    assert fmt(1234) == fmt(1234.0) == "1,234"
    assert fmt(1234.5) == "1,234.50"
    assert fmt(-0.125) == "-0.13" and fmt(0.125) == "0.13"
    assert fmt(2, 2) == "2.00" and fmt(1 / 3, 1) == "0.3" and fmt(1.005) == "1.01"


def num(text: str) -> Any:
    return None if text == "" else float(text)


async def fetch(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


@browser[0]
@browser[1]
async def test_dashboard_shows_the_api_numbers(
    chromium, api_process, es_url, es_index_prefix, amqp_url, namespace
):
    now = int(time.time() * 1000)
    # Inside the dashboard's 6-hour histogram window, plus one stray record from months ago
    # that the chart must leave out (it is in the totals).
    docs = make_measurements(900, seed=21, span_ms=5 * 3_600_000, start=now - 5 * 3_600_000)
    stray = make_measurements(1, seed=22, start=now - 90 * 86_400_000, span_ms=1000)[0]
    stray["id"] = "stray-old-record"
    for i, d in enumerate(docs):
        # A third ingested in the last 10 minutes (so the ingest chart has bars); the rest
        # over 20 minutes ago, so the 15-minute ingest count cannot change while the test runs.
        recent = now - (i % 600) * 1000
        d["ingested_at"] = iso_ms(recent) if i % 3 == 0 else iso_ms(min(d["ts"], now - 20 * 60_000))
    await index_documents(es_url, es_index_prefix, [*docs, stray])
    await _seed_dead_letter_events(es_url, es_index_prefix, now, {"bad_value": 2, "poison": 1})
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
        hist = await fetch(session, f"{api.url}{shown['histUrl']}")
        pipeline = await fetch(session, f"{api.url}/api/v1/pipeline?minutes=15")

    assert shown["state"] == "ready"
    text = shown["text"]
    assert num(shown["total"]) == stats["count"] == len(docs) + 1
    assert text["total-count"] == fmt(stats["count"])
    for key in ("avg", "min", "max"):
        assert num(shown[key]) == stats[key], key
        assert text[f"{key}-value"] == fmt(stats[key]), key
    for p in ("p50", "p95", "p99"):
        assert num(shown[p]) == stats["percentiles"][p], p
        assert text[f"{p}-value"] == fmt(stats["percentiles"][p]), p

    # The chart asks for the last 6 hours (whole minutes), not the whole data set.
    assert shown["histUrl"].startswith("/api/v1/histogram?from=")
    hist_from = int(shown["histUrl"].split("=", 1)[1])
    assert hist_from % 60_000 == 0 and abs(hist_from - (now - 6 * 3_600_000)) < 5 * 60_000
    assert int(shown["histBuckets"]) == len(hist["buckets"]) == shown["histRects"]
    assert shown["histCounts"] == [b["count"] for b in hist["buckets"]]
    assert int(shown["histTotal"]) == sum(b["count"] for b in hist["buckets"]) == len(docs)
    assert hist["interval_ms"] <= 10 * 60_000  # not months-wide buckets because of the stray

    api_rows = {s["sensor"]: s for s in sensors["sensors"]}
    assert [s for s, _, _ in shown["sensors"]] == [s["sensor"] for s in sensors["sensors"]]
    for sensor, cells, texts in shown["sensors"]:
        row = api_rows[sensor]
        for key in ("count", "avg", "min", "max"):
            assert num(cells[key]) == row[key], (sensor, key)
        assert texts["count"] == fmt(row["count"]), sensor
        for key in ("avg", "min", "max"):
            assert texts[key] == fmt(row[key], 2), (sensor, key)
        assert cells["last_seen"] == row["last_seen"]
        assert texts["last_seen"] == row["last_seen"].replace("T", " ").replace(".000Z", "Z")
    assert [s for s, _, _ in shown["bars"]] == [s["sensor"] for s in sensors["sensors"][:12]]
    for sensor, avg, avg_text in shown["bars"]:
        assert num(avg) == api_rows[sensor]["avg"]
        assert avg_text == fmt(api_rows[sensor]["avg"])

    ingest = pipeline["ingest"]
    assert num(shown["ingestCount"]) == ingest["count"] == 300
    assert text["ingest-count"] == fmt(ingest["count"])
    assert num(shown["ingestRate"]) == ingest["rate_per_s"] == 300 / (15 * 60)
    assert text["ingest-rate"] == fmt(ingest["rate_per_s"], 1)
    assert shown["ingestRects"] == len(ingest["buckets"]) == 15
    assert num(shown["queueDepth"]) == sum(q["messages"] for q in pipeline["queues"]) == 7
    assert text["queue-depth"] == "7"
    assert num(shown["deadTotal"]) == pipeline["dead_letters"]["total"] == 2
    assert text["dead-letter-total"] == "2"
    queues = {q: (role, cells, texts) for q, role, cells, texts in shown["queues"]}
    assert queues[topology.raw_queue("measurement")] == (
        "raw", {"messages": "7", "consumers": "0"}, {"messages": "7", "consumers": "0"})
    assert queues[topology.dead_queue("measurement")] == (
        "dead", {"messages": "2", "consumers": "0"}, {"messages": "2", "consumers": "0"})

    # Dead-letter event documents, by reason, as the API counts them.
    assert pipeline["dead_letters"]["by_reason"] == [
        {"reason": "bad_value", "count": 2}, {"reason": "poison", "count": 1}]
    assert shown["reasons"] == [["bad_value", "2", "bad_value 2"], ["poison", "1", "poison 1"]]

    # The Python fmt() agrees with this browser's toLocaleString on rounding ties.
    samples = [1.005, 0.125, -0.125, 2.675, 1234567.891, 156.240234375, 1 / 3]
    shown_samples = await page.evaluate(
        f"{samples}.map((x) => x.toLocaleString('en-US', "
        "{minimumFractionDigits: 2, maximumFractionDigits: 2}))")
    assert shown_samples == [fmt(x) for x in samples]

    assert page.exceptions == []
    shot = await page.screenshot(ARTIFACTS / "dashboard.png")
    assert shot.stat().st_size > 10_000



async def _seed_dead_letter_events(es_url: str, prefix: str, now: int, reasons: dict[str, int]) -> None:
    """Event documents in ``<prefix>-dead-*`` as a parser writes them (``reason`` a keyword)."""
    client = make_client(es_url)
    try:
        await ensure_template(client, prefix)
    finally:
        await client.close()
    index = index_name(prefix, "dead", now)
    mapping = {"mappings": {"properties": {"reason": {"type": "keyword"}}}}
    async with aiohttp.ClientSession() as session, session.put(f"{es_url}/{index}", json=mapping) as r:
        assert r.status == 200, await r.text()
    docs = [{"id": f"dead-{reason}-{i}", "ts": now, "reason": reason, "kind": "measurement",
             "@timestamp": iso_ms(now)}
            for reason, n in reasons.items() for i in range(n)]
    await index_documents(es_url, prefix, docs, kind="dead", template=False)
