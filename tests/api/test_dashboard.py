"""The dashboard in a real headless Chromium: the numbers on the page are the API's, in
the default view and after choosing a metric, changing the range and clicking a sensor.

Screenshots of each state are kept in ``test-artifacts/`` at the repository root:
``dashboard.png``, ``dashboard-metric.png``, ``dashboard-range.png``, ``dashboard-sensor.png``.
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
    state: document.body.dataset.state, location: location.search,
    total: v('total-count'), avg: v('avg-value'), min: v('min-value'), max: v('max-value'),
    p50: v('p50-value'), p95: v('p95-value'), p99: v('p99-value'),
    ingestCount: v('ingest-count'), ingestRate: v('ingest-rate'),
    queueDepth: v('queue-depth'), deadTotal: v('dead-letter-total'),
    text: Object.fromEntries(ids.map((id) => [id, t(id)])),
    unit: t('metric-unit'), rangeLabel: t('range-label'),
    statsUrl: document.getElementById('stats-cards').dataset.url,
    sensorsUrl: document.getElementById('sensor-table').dataset.url,
    measUrl: document.getElementById('sensor-detail').dataset.url,
    measTotal: v('measurements-total'),
    measurements: rows('#measurements-table tbody tr').map((tr) => ({id: tr.dataset.id, ...cells(tr)})),
    histUrl: hist.dataset.url,
    histBuckets: hist.dataset.buckets, histTotal: hist.dataset.total,
    histRects: hist.querySelectorAll('rect').length,
    histCounts: Array.from(hist.querySelectorAll('rect')).map((r) => Number(r.dataset.count)),
    ingestRects: document.querySelectorAll('#ingest-chart rect').length,
    bars: rows('#sensor-bars .bar').map((b) => [b.dataset.sensor, b.dataset.avg, b.dataset.value,
                                                b.querySelector('.num').textContent]),
    sensors: rows('#sensor-table tbody tr').map((tr) => [tr.dataset.sensor, cells(tr), texts(tr)]),
    queues: rows('#pipeline-table tbody tr').map((tr) => [tr.dataset.queue, tr.dataset.role, cells(tr),
                                                         texts(tr),
                                                         tr.querySelector('[data-spark=messages] svg').dataset.points]),
    reasons: rows('#dead-reasons [data-reason]').map((r) => [r.dataset.reason, r.dataset.value,
                                                            r.textContent.trim()]),
    samples: rows('#dead-samples li').map((li) => [li.dataset.reason, li.dataset.record]),
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
    # Inside the dashboard's default 6-hour window, plus one stray record from months ago
    # that the view leaves out (it is outside every preset range).
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
    shown = await settled(page)

    async with aiohttp.ClientSession() as session:
        get = lambda url: fetch(session, f"{api.url}{url}")  # noqa: E731
        window_from = int(shown["statsUrl"].split("from=", 1)[1].split("&", 1)[0])
        assert window_from % 60_000 == 0 and abs(window_from - (now - 6 * 3_600_000)) < 5 * 60_000
        stats = await get(shown["statsUrl"])
        sensors = await get(shown["sensorsUrl"])
        hist = await get(shown["histUrl"])
        pipeline = await get("/api/v1/pipeline?minutes=15")

        # -- the default view: every metric, counts only ------------------------------------
        assert shown["state"] == "ready"
        assert num(shown["total"]) == stats["count"] == len(docs)  # the stray is out of range
        assert shown["text"]["total-count"] == fmt(stats["count"])
        for key in ("avg", "min", "max", "p50", "p95", "p99"):
            # Averages over volts and hPa together mean nothing: none is shown.
            assert shown[key] == "" and shown["text"][f"{key}-value"] == fmt(None), key
        check_histogram(shown, hist, docs=len(docs))
        check_sensor_table(shown, sensors, metric=False)
        assert [(s, v) for s, _, v, _ in shown["bars"]] == [
            (r["sensor"], str(r["count"])) for r in sensors["sensors"][:12]]
        options = await page.evaluate(
            "Array.from(document.querySelectorAll('#metric-select option')).map((o) => [o.value, o.textContent])")
        metrics = await get("/api/v1/metrics?from=" + str(window_from))
        assert options == [["", "all metrics (counts only)"]] + [
            [m["metric"], f"{m['metric']} ({m['unit']})"] for m in metrics["metrics"]]

        ingest = pipeline["ingest"]
        assert num(shown["ingestCount"]) == ingest["count"] == 300
        assert shown["text"]["ingest-count"] == fmt(ingest["count"])
        assert num(shown["ingestRate"]) == ingest["rate_per_s"] == 300 / (15 * 60)
        assert shown["text"]["ingest-rate"] == fmt(ingest["rate_per_s"], 1)
        assert shown["ingestRects"] == len(ingest["buckets"]) == 15
        assert num(shown["queueDepth"]) == sum(q["messages"] for q in pipeline["queues"]) == 7
        assert shown["text"]["queue-depth"] == "7"
        assert num(shown["deadTotal"]) == pipeline["dead_letters"]["total"] == 2
        assert shown["text"]["dead-letter-total"] == "2"
        queues = {q: (role, cells, texts, spark) for q, role, cells, texts, spark in shown["queues"]}
        raw, dead = topology.raw_queue("measurement"), topology.dead_queue("measurement")
        assert queues[raw][:3] == ("raw", {"messages": "7", "consumers": "0"}, {"messages": "7", "consumers": "0"})
        assert queues[dead][:3] == ("dead", {"messages": "2", "consumers": "0"}, {"messages": "2", "consumers": "0"})
        # Sparklines: one point per refresh so far, the latest being the number shown.
        assert queues[raw][3].split(",")[-1] == "7" and len(queues[raw][3].split(",")) >= 2
        assert pipeline["dead_letters"]["by_reason"] == [
            {"reason": "bad_value", "count": 2}, {"reason": "poison", "count": 1}]
        assert shown["reasons"] == [["bad_value", "2", "bad_value 2"], ["poison", "1", "poison 1"]]
        samples = pipeline["dead_letters"]["samples"]
        assert shown["samples"] == [[x["reason"], x["record_id"]] for x in samples] and len(samples) == 3
        await page.screenshot(ARTIFACTS / "dashboard.png")

        # -- choose a metric: its averages, percentiles and unit ----------------------------
        await page.evaluate("(() => { const s = document.getElementById('metric-select');"
                            " s.value = 'temperature'; s.dispatchEvent(new Event('change')); })()")
        shown = await settled(page, "document.getElementById('stats-cards').dataset.url.includes('metric=temperature')")
        stats = await get(shown["statsUrl"])
        temps = [d for d in docs if d["metric"] == "temperature"]
        assert num(shown["total"]) == stats["count"] == len(temps)
        for key in ("avg", "min", "max"):
            assert num(shown[key]) == stats[key], key
            assert shown["text"][f"{key}-value"] == fmt(stats[key]), key
        for p in ("p50", "p95", "p99"):
            assert num(shown[p]) == stats["percentiles"][p], p
            assert shown["text"][f"{p}-value"] == fmt(stats["percentiles"][p]), p
        assert shown["unit"] == "(temperature, u)"
        check_sensor_table(shown, await get(shown["sensorsUrl"]), metric=True)
        check_histogram(shown, await get(shown["histUrl"]), docs=len(temps))
        assert "metric=temperature" in shown["location"] and "range=6h" in shown["location"]
        await page.screenshot(ARTIFACTS / "dashboard-metric.png")

        # -- change the range to the last hour -------------------------------------------------
        await page.evaluate("(() => { const s = document.getElementById('range-select');"
                            " s.value = '1h'; s.dispatchEvent(new Event('change')); })()")
        shown = await settled(page, "location.search.includes('range=1h') && "
                                    "document.getElementById('stats-cards').dataset.url !== " + repr(shown["statsUrl"]))
        hour_from = int(shown["histUrl"].split("from=", 1)[1].split("&", 1)[0])
        assert abs(hour_from - (now - 3_600_000)) < 5 * 60_000
        in_hour = [d for d in temps if d["ts"] >= hour_from]
        stats = await get(shown["statsUrl"])
        assert num(shown["total"]) == stats["count"] == len(in_hour)
        check_histogram(shown, await get(shown["histUrl"]), docs=len(in_hour))
        assert shown["rangeLabel"] == "last 1 h"
        await page.screenshot(ARTIFACTS / "dashboard-range.png")

        # -- click a sensor: its histogram and its latest measurements -----------------------
        sensor = shown["sensors"][0][0]
        await page.evaluate(f"document.querySelector('#sensor-table tbody tr[data-sensor=\"{sensor}\"]').click()")
        shown = await settled(page, "!document.getElementById('sensor-detail').hidden && "
                                    "document.getElementById('sensor-detail').dataset.url.includes('sensor=')")
        assert f"sensor={sensor}" in shown["location"] and f"sensor={sensor}" in shown["histUrl"]
        measured = await get(shown["measUrl"])
        mine = sorted((d for d in in_hour if d["sensor"] == sensor), key=lambda d: (d["ts"], d["id"]), reverse=True)
        assert measured["total"] == len(mine) == int(shown["measTotal"])
        assert [r["id"] for r in shown["measurements"]] == [d["id"] for d in measured["measurements"]]
        assert [r["id"] for r in shown["measurements"]] == [d["id"] for d in mine[:20]]
        for row, doc in zip(shown["measurements"], measured["measurements"]):
            assert num(row["value"]) == doc["value"] and row["metric"] == "temperature"
        check_histogram(shown, await get(shown["histUrl"]), docs=len(mine))
        await page.screenshot(ARTIFACTS / "dashboard-sensor.png")

        # -- the URL is the view: open it again; a custom range; pause -----------------------
        location = shown["location"]
        page2 = await browser.open(f"{api.url}/{location}", width=1400, height=1000)
        await page2.wait_for("document.body.dataset.state === 'ready' && "
                             "!document.getElementById('sensor-detail').hidden", timeout=60)
        restored = await page2.evaluate(
            "[document.getElementById('metric-select').value, document.getElementById('range-select').value,"
            " document.getElementById('detail-sensor').textContent]")
        assert restored == ["temperature", "1h", sensor]
        start, end = now - 4 * 3_600_000, now - 3 * 3_600_000
        page3 = await browser.open(f"{api.url}/?range=custom&from={start}&to={end}&refresh=2", width=1400, height=1000)
        custom = await settled(page3)
        assert custom["histUrl"].startswith(f"/api/v1/histogram?from={start}&to={end}")
        stats = await get(custom["statsUrl"])
        assert num(custom["total"]) == stats["count"] == sum(1 for d in docs if start <= d["ts"] < end)
        await page3.evaluate("document.getElementById('pause-button').click()")
        await page3.wait_for("document.body.dataset.paused === 'true' && location.search.includes('paused=true')")
        assert await page3.evaluate("document.getElementById('pause-button').textContent") == "Resume"

    # The Python fmt() agrees with this browser's toLocaleString on rounding ties.
    samples = [1.005, 0.125, -0.125, 2.675, 1234567.891, 156.240234375, 1 / 3]
    shown_samples = await page.evaluate(
        f"{samples}.map((x) => x.toLocaleString('en-US', "
        "{minimumFractionDigits: 2, maximumFractionDigits: 2}))")
    assert shown_samples == [fmt(x) for x in samples]
    assert page.exceptions == [] and page2.exceptions == [] and page3.exceptions == []
    for name in ("dashboard", "dashboard-metric", "dashboard-range", "dashboard-sensor"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000


async def settled(page: Any, condition: str = "true") -> dict[str, Any]:
    """Wait for ``condition`` and then for one more full refresh, and read the page."""
    await page.wait_for(f"document.body.dataset.state === 'ready' && ({condition})", timeout=60)
    seen = int(await page.evaluate("Number(document.body.dataset.refreshes)"))
    await page.wait_for(f"Number(document.body.dataset.refreshes) > {seen}", timeout=30)
    shown: dict[str, Any] = await page.evaluate(READ_PAGE)
    return shown


def check_histogram(shown: dict[str, Any], hist: dict[str, Any], docs: int) -> None:
    assert int(shown["histBuckets"]) == len(hist["buckets"]) == shown["histRects"]
    assert shown["histCounts"] == [b["count"] for b in hist["buckets"]]
    assert int(shown["histTotal"]) == sum(b["count"] for b in hist["buckets"]) == docs
    assert hist["interval_ms"] <= 10 * 60_000  # not months-wide buckets because of the stray


def check_sensor_table(shown: dict[str, Any], sensors: dict[str, Any], metric: bool) -> None:
    api_rows = {s["sensor"]: s for s in sensors["sensors"]}
    assert [s for s, _, _ in shown["sensors"]] == [s["sensor"] for s in sensors["sensors"]]
    for sensor, cells, texts in shown["sensors"]:
        row = api_rows[sensor]
        assert num(cells["count"]) == row["count"] and texts["count"] == fmt(row["count"])
        for key in ("avg", "min", "max"):
            want = row[key] if metric else None
            assert num(cells[key]) == want, (sensor, key)
            assert texts[key] == fmt(want, 2), (sensor, key)
        assert cells["last_seen"] == row["last_seen"]
        assert texts["last_seen"] == row["last_seen"].replace("T", " ").replace(".000Z", "Z")
    if metric:
        assert [(s, a, t) for s, a, _, t in shown["bars"]] == [
            (r["sensor"], str(r["avg"]), fmt(r["avg"])) for r in sensors["sensors"][:12]]


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
             "record_id": f"rec-{reason}-{i}", "error": f"{reason} number {i}"}
            for reason, n in reasons.items() for i in range(n)]
    for k, doc in enumerate(docs):  # distinct times: the samples' order is then well defined
        doc["@timestamp"] = iso_ms(now - k * 1000)
    await index_documents(es_url, prefix, docs, kind="dead", template=False)
