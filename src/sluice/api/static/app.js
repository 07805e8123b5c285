// The sluice dashboard: plain DOM and SVG, no library, no network beyond this API.
// Every number shown is also stored raw in a data-value attribute, and every section keeps
// the API URL it was drawn from in data-url, so a test (or a curious user) can compare the
// page with the API's JSON exactly. The view (metric, range, sensor, tags) lives in the URL.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const RANGES = { "15m": 15 * 60e3, "1h": 3600e3, "6h": 6 * 3600e3, "24h": 24 * 3600e3 };
  const ingestMinutes = 15;
  const SPARK_POINTS = 40;
  const byId = (id) => document.getElementById(id);

  // -- the view, read from and written to the URL ------------------------------------------
  const page = new URLSearchParams(window.location.search);
  const view = {
    refresh: Math.max(1, Number(page.get("refresh")) || 5),
    metric: page.get("metric") || "",
    range: RANGES[page.get("range")] || page.get("range") === "custom" ? page.get("range") : "6h",
    from: page.get("from") || "",
    to: page.get("to") || "",
    sensor: page.get("sensor") || "",
    tags: page.getAll("tag"),
    paused: page.get("paused") === "true",
  };
  if (view.range === "custom" && !view.from) view.range = "6h";
  let units = {};          // metric -> unit, from /api/v1/metrics
  let refreshes = 0;
  let generation = 0;      // a newer refresh wins over a slower older one
  const history = new Map();  // queue -> [{messages, consumers}], for the sparklines

  function writeUrl() {
    const q = new URLSearchParams();
    if (view.metric) q.set("metric", view.metric);
    q.set("range", view.range);
    if (view.range === "custom") { q.set("from", view.from); if (view.to) q.set("to", view.to); }
    if (view.sensor) q.set("sensor", view.sensor);
    for (const t of view.tags) q.append("tag", t);
    if (view.paused) q.set("paused", "true");
    if (page.get("refresh")) q.set("refresh", String(view.refresh));
    window.history.replaceState(null, "", "?" + q.toString());
  }

  // The time window as epoch ms. Presets start on a whole minute, so a refresh and a re-read
  // of the same URL agree, and have no end (data arriving now shows up).
  function windowMs() {
    if (view.range === "custom") {
      return { from: toMs(view.from), to: view.to ? toMs(view.to) : null };
    }
    return { from: Math.floor((Date.now() - RANGES[view.range]) / 60000) * 60000, to: null };
  }

  function toMs(text) {
    if (/^[0-9]+$/.test(text)) return Number(text);
    const ms = Date.parse(/[zZ]|[+-][0-9]{2}:?[0-9]{2}$/.test(text) ? text : text + "Z");
    return Number.isNaN(ms) ? null : ms;
  }

  // Query string of the filters; `withMetric` false for the metric list itself.
  function filters(withMetric) {
    const w = windowMs();
    const q = new URLSearchParams();
    if (w.from !== null) q.set("from", String(w.from));
    if (w.to !== null) q.set("to", String(w.to));
    if (withMetric && view.metric) q.set("metric", view.metric);
    if (view.sensor) q.set("sensor", view.sensor);
    for (const t of view.tags) q.append("tag", t);
    return q;
  }

  function path(endpoint, q, extra) {
    const all = new URLSearchParams(q);
    for (const [k, v] of Object.entries(extra || {})) all.set(k, v);
    const s = all.toString();
    return "/api/v1/" + endpoint + (s ? "?" + s : "");
  }

  // With API tokens on (docs/security.md) the page sends the token its user gave it: from
  // the address's #token=... (a fragment never reaches a server or its logs), or asked for
  // once after a 401; kept for this tab only.
  function authHeaders() {
    const fromHash = new URLSearchParams(window.location.hash.slice(1)).get("token");
    if (fromHash) {
      sessionStorage.setItem("sluiceToken", fromHash);
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    const token = sessionStorage.getItem("sluiceToken");
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function askForToken() {
    const token = window.prompt("This sluice API needs a token (scope read):");
    if (token) sessionStorage.setItem("sluiceToken", token.trim());
    return Boolean(token);
  }

  async function api(url, retried) {
    const headers = Object.assign({ Accept: "application/json" }, authHeaders());
    const resp = await fetch(url, { headers: headers, cache: "no-store" });
    // Requests run in parallel: only the first 401 asks; the others retry with its answer.
    if (resp.status === 401 && !retried &&
        (authHeaders().Authorization !== headers.Authorization || askForToken())) {
      return api(url, true);
    }
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON: reported below */ }
    if (!resp.ok) {
      const msg = body && body.error ? body.error.message : resp.status + " " + resp.statusText;
      const err = new Error(url + ": " + msg);
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  // -- formatting and DOM helpers -----------------------------------------------------------
  function fmt(n, digits) {
    if (n === null || n === undefined) return "–";
    if (Number.isInteger(n) && digits === undefined) return n.toLocaleString("en-US");
    const d = digits === undefined ? 2 : digits;
    return Number(n).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  }

  function setNum(id, value, digits) {
    const node = byId(id);
    node.textContent = fmt(value, digits);
    node.dataset.value = value === null || value === undefined ? "" : String(value);
  }

  function el(tag, attrs, text) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function shortTime(iso, spanMs) {
    const d = new Date(iso);
    const pad = (x) => String(x).padStart(2, "0");
    const hm = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    if (spanMs <= 86400000) return hm;
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + hm;
  }

  function sparkline(values) {
    const svg = el("svg:svg", { class: "spark", viewBox: "0 0 80 18", preserveAspectRatio: "none",
                                "data-points": values.join(",") });
    const nums = values.filter((v) => v !== null);
    if (nums.length < 2) return svg;
    const max = Math.max(1, ...nums);
    const step = 80 / (SPARK_POINTS - 1);
    const x0 = 80 - step * (values.length - 1);
    let d = "";
    values.forEach((v, i) => {
      if (v === null) return;
      d += (d ? " L" : "M") + (x0 + i * step).toFixed(1) + " " + (16 - 14 * (v / max)).toFixed(1);
    });
    svg.appendChild(el("svg:path", { d: d, fill: "none", stroke: "#2f6fb3", "stroke-width": 1.5, "vector-effect": "non-scaling-stroke" }));
    return svg;
  }

  // -- renderers ----------------------------------------------------------------------------
  function renderMetrics(m) {
    units = Object.fromEntries(m.metrics.map((x) => [x.metric, x.unit]));
    const select = byId("metric-select");
    const keep = view.metric;
    select.replaceChildren(el("option", { value: "" }, "all metrics (counts only)"));
    const names = m.metrics.map((x) => x.metric);
    if (keep && !names.includes(keep)) names.push(keep);  // chosen from the URL, no data in range
    for (const name of names) {
      const unit = units[name];
      select.appendChild(el("option", { value: name }, name + (unit ? " (" + unit + ")" : "")));
    }
    select.value = keep;
  }

  function renderStats(s, url) {
    byId("stats-cards").dataset.url = url;
    setNum("total-count", s.count);
    // Averages and percentiles mean something for one metric only: volts and hPa do not mix.
    const one = Boolean(view.metric);
    const unit = one ? units[view.metric] || "" : "";
    byId("metric-unit").textContent = one ? "(" + view.metric + (unit ? ", " + unit : "") + ")" : "";
    for (const [id, v] of [["avg-value", s.avg], ["min-value", s.min], ["max-value", s.max],
                           ["p50-value", s.percentiles.p50], ["p95-value", s.percentiles.p95],
                           ["p99-value", s.percentiles.p99]]) {
      setNum(id, one ? v : null);
    }
    byId("pct-hint").textContent = one ? "estimated percentiles" + (unit ? ", " + unit : "") : "choose a metric above";
  }

  function renderHistogram(h, url) {
    const svg = byId("histogram-chart");
    svg.replaceChildren();
    svg.dataset.url = url;
    const buckets = h.buckets;
    const W = 900, H = 260, top = 12, bottom = 8;
    const total = buckets.reduce((s, b) => s + b.count, 0);
    svg.dataset.buckets = String(buckets.length);
    svg.dataset.total = String(total);
    byId("histogram-interval").textContent = buckets.length
      ? "(" + byId("range-label").textContent + ", " + h.interval + " buckets, UTC" + (view.sensor ? ", sensor " + view.sensor : "") + ")" : "";
    byId("legend-avg").hidden = !view.metric;
    const axis = byId("histogram-axis");
    axis.replaceChildren();
    byId("histogram-max").textContent = "";
    if (!buckets.length) {
      axis.appendChild(el("span", {}, "no data in this range"));
      return;
    }
    const maxCount = Math.max(1, ...buckets.map((b) => b.count));
    const avgs = buckets.map((b) => b.avg).filter((v) => v !== null);
    const lo = avgs.length ? Math.min(...avgs) : 0, hi = avgs.length ? Math.max(...avgs) : 1;
    const step = W / buckets.length;
    const y = (frac) => top + (H - top - bottom) * (1 - frac);
    for (let i = 0; i < 5; i++) {
      svg.appendChild(el("svg:line", { x1: 0, x2: W, y1: y(i / 4), y2: y(i / 4), stroke: "#eef2f6", "stroke-width": 1 }));
    }
    buckets.forEach((b, i) => {
      const hgt = (H - top - bottom) * (b.count / maxCount);
      const rect = el("svg:rect", {
        x: i * step + step * 0.1, y: y(0) - hgt, width: Math.max(1, step * 0.8), height: hgt,
        fill: "#9cc0e6", "data-count": b.count, "data-ts": b.ts,
      });
      rect.appendChild(el("svg:title", {}, b.t + "  count " + b.count + (b.avg === null || !view.metric ? "" : "  avg " + fmt(b.avg))));
      svg.appendChild(rect);
    });
    if (view.metric) {
      let line = "";
      buckets.forEach((b, i) => {
        if (b.avg === null) return;
        const frac = hi > lo ? (b.avg - lo) / (hi - lo) : 0.5;
        line += (line ? " L" : "M") + (i * step + step / 2).toFixed(1) + " " + y(0.05 + 0.9 * frac).toFixed(1);
      });
      if (line) svg.appendChild(el("svg:path", { d: line, fill: "none", stroke: "#e07a1f", "stroke-width": 2.5, "vector-effect": "non-scaling-stroke" }));
    }
    byId("histogram-max").textContent = "· tallest bar " + fmt(maxCount);
    const span = buckets[buckets.length - 1].ts - buckets[0].ts;
    const marks = [0, Math.floor(buckets.length / 2), buckets.length - 1];
    for (const i of marks) axis.appendChild(el("span", {}, shortTime(buckets[i].t, span)));
  }

  function renderSensors(s, url) {
    const one = Boolean(view.metric);
    byId("sensor-table").dataset.url = url;
    byId("bars-title").firstChild.textContent = one ? "Average " + view.metric + " per sensor " : "Measurements per sensor ";
    const bars = byId("sensor-bars");
    bars.replaceChildren();
    const rows = s.sensors.slice(0, 12);
    bars.dataset.rows = String(rows.length);
    const value = (r) => (one ? r.avg : r.count);
    const maxAbs = Math.max(1e-12, ...rows.map((r) => Math.abs(value(r) || 0)));
    for (const r of rows) {
      const v = value(r);
      const line = el("div", { class: "bar", "data-sensor": r.sensor, "data-avg": !one || r.avg === null ? "" : String(r.avg), "data-value": v === null ? "" : String(v) });
      line.appendChild(el("span", { class: "name", title: r.sensor }, r.sensor));
      const track = el("div", { class: "track" });
      track.appendChild(el("div", { class: "fill", style: "width:" + (100 * Math.abs(v || 0) / maxAbs).toFixed(1) + "%" }));
      line.appendChild(track);
      line.appendChild(el("span", { class: "num" }, one ? fmt(v) : fmt(v)));
      line.addEventListener("click", () => chooseSensor(r.sensor));
      bars.appendChild(line);
    }
    if (!rows.length) bars.appendChild(el("div", { class: "muted" }, "no sensors in this range"));

    const list = byId("sensor-list");
    list.replaceChildren(...s.sensors.map((r) => el("option", { value: r.sensor })));
    const body = document.querySelector("#sensor-table tbody");
    body.replaceChildren();
    for (const r of s.sensors) {
      const tr = el("tr", { "data-sensor": r.sensor, class: r.sensor === view.sensor ? "selected" : "" });
      tr.appendChild(el("td", {}, r.sensor));
      for (const [field, digits] of [["count", undefined], ["avg", 2], ["min", 2], ["max", 2]]) {
        const v = field === "count" || one ? r[field] : null;
        tr.appendChild(el("td", { class: "num", "data-field": field, "data-value": v === null ? "" : String(v) }, fmt(v, digits)));
      }
      tr.appendChild(el("td", { "data-field": "last_seen", "data-value": r.last_seen || "" }, r.last_seen ? r.last_seen.replace("T", " ").replace(".000Z", "Z") : "–"));
      tr.addEventListener("click", () => chooseSensor(r.sensor));
      body.appendChild(tr);
    }
  }

  function renderMeasurements(m, url) {
    const panel = byId("sensor-detail");
    panel.dataset.url = url;
    byId("detail-sensor").textContent = view.sensor;
    const body = document.querySelector("#measurements-table tbody");
    body.replaceChildren();
    for (const d of m.measurements) {
      const tr = el("tr", { "data-id": d.id });
      tr.appendChild(el("td", { "data-field": "time", "data-value": d["@timestamp"] }, d["@timestamp"].replace("T", " ").replace("Z", "")));
      tr.appendChild(el("td", { "data-field": "metric", "data-value": d.metric }, d.metric));
      tr.appendChild(el("td", { class: "num", "data-field": "value", "data-value": String(d.value) }, fmt(d.value)));
      tr.appendChild(el("td", { "data-field": "unit", "data-value": d.unit || "" }, d.unit || ""));
      const tags = Object.entries(d.tags || {}).map(([k, v]) => k + ":" + v).join(" ");
      tr.appendChild(el("td", { "data-field": "tags", "data-value": tags }, tags));
      tr.appendChild(el("td", { "data-field": "id", "data-value": d.id }, d.id));
      body.appendChild(tr);
    }
    const total = byId("measurements-total");
    total.dataset.value = String(m.total);
    total.textContent = m.measurements.length + " newest of " + fmt(m.total) + " in the range";
  }

  function renderIngest(ing) {
    const svg = byId("ingest-chart");
    svg.replaceChildren();
    const b = ing.buckets, W = 420, H = 140;
    svg.dataset.buckets = String(b.length);
    const max = Math.max(1, ...b.map((x) => x.count));
    const step = W / Math.max(1, b.length);
    b.forEach((x, i) => {
      const hgt = (H - 16) * (x.count / max);
      const rect = el("svg:rect", { x: i * step + 2, y: H - hgt, width: Math.max(1, step - 4), height: hgt, fill: "#2f6fb3", "data-count": x.count });
      rect.appendChild(el("svg:title", {}, x.t + "  " + x.count));
      svg.appendChild(rect);
    });
    byId("ingest-max").textContent = b.length ? "tallest bar " + fmt(max) + " per minute" : "";
  }

  function renderPipeline(p) {
    setNum("ingest-rate", p.ingest.rate_per_s, 1);
    setNum("ingest-count", p.ingest.count);
    byId("ingest-minutes").textContent = String(ingestMinutes);
    const depth = p.broker.up ? p.queues.reduce((s, q) => s + (q.messages || 0), 0) : null;
    setNum("queue-depth", depth);
    setNum("dead-letter-total", p.dead_letters.total);
    renderIngest(p.ingest);
    const body = document.querySelector("#pipeline-table tbody");
    body.replaceChildren();
    const rows = p.queues.map((q) => [q, "raw"]).concat(p.dead_letters.queues.map((q) => [q, "dead"]));
    for (const [q, role] of rows) {
      const past = history.get(q.queue) || [];
      past.push({ messages: q.messages, consumers: q.consumers });
      while (past.length > SPARK_POINTS) past.shift();
      history.set(q.queue, past);
      const tr = el("tr", { "data-queue": q.queue, "data-role": role });
      tr.appendChild(el("td", {}, q.queue + (q.exists === false ? " (absent)" : "")));
      tr.appendChild(el("td", {}, q.kind));
      tr.appendChild(el("td", { class: "num", "data-field": "messages", "data-value": q.messages === null ? "" : String(q.messages) }, fmt(q.messages)));
      tr.appendChild(el("td", { class: "spark-cell", "data-spark": "messages" }, undefined)).appendChild(sparkline(past.map((x) => x.messages)));
      tr.appendChild(el("td", { class: "num", "data-field": "consumers", "data-value": q.consumers === null ? "" : String(q.consumers) }, fmt(q.consumers)));
      tr.appendChild(el("td", { class: "spark-cell", "data-spark": "consumers" }, undefined)).appendChild(sparkline(past.map((x) => x.consumers)));
      body.appendChild(tr);
    }
    const reasons = byId("dead-reasons");
    reasons.replaceChildren();
    if (!p.broker.up) reasons.appendChild(el("div", {}, "RabbitMQ: " + (p.broker.error || "unreachable")));
    if (p.dead_letters.by_reason && p.dead_letters.by_reason.length) {
      reasons.appendChild(el("span", {}, "dead letters by reason: "));
      for (const r of p.dead_letters.by_reason) {
        reasons.appendChild(el("span", { "data-reason": r.reason, "data-value": String(r.count) }, r.reason + " " + fmt(r.count) + "  "));
      }
    }
    const samples = byId("dead-samples");
    samples.replaceChildren();
    for (const s of p.dead_letters.samples || []) {
      const li = el("li", { "data-reason": s.reason || "", "data-record": s.record_id || "" });
      li.appendChild(el("code", {}, s.reason || "?"));
      li.appendChild(document.createTextNode(" " + (s.record_id ? "record " + s.record_id + ": " : "") + (s.error || "") + (s["@timestamp"] ? " (" + s["@timestamp"] + ")" : "")));
      samples.appendChild(li);
    }
  }

  // -- controls -----------------------------------------------------------------------------
  function rangeLabel() {
    if (view.range !== "custom") return "last " + view.range.replace("m", " min").replace("h", " h");
    const w = windowMs();
    const iso = (ms) => (ms === null ? "now" : new Date(ms).toISOString().slice(0, 19).replace("T", " "));
    return iso(w.from) + " to " + iso(w.to) + " UTC";
  }

  function syncControls() {
    byId("range-select").value = view.range;
    byId("custom-range").hidden = view.range !== "custom";
    const local = (ms) => (ms === null ? "" : new Date(ms).toISOString().slice(0, 19));
    if (view.range === "custom") {
      byId("from-input").value = local(toMs(view.from));
      byId("to-input").value = view.to ? local(toMs(view.to)) : "";
    }
    byId("sensor-input").value = view.sensor;
    byId("tag-input").value = view.tags.join(", ");
    byId("range-label").textContent = rangeLabel();
    byId("sensor-detail").hidden = !view.sensor;
    document.body.dataset.paused = String(view.paused);
    byId("pause-button").textContent = view.paused ? "Resume" : "Pause";
    byId("pause-button").setAttribute("aria-pressed", String(view.paused));
  }

  function changed() {
    writeUrl();
    syncControls();
    refresh();
  }

  function chooseSensor(sensor) {
    view.sensor = sensor;
    changed();
    byId("sensor-detail").scrollIntoView({ block: "nearest" });
  }

  byId("metric-select").addEventListener("change", (e) => { view.metric = e.target.value; changed(); });
  byId("range-select").addEventListener("change", (e) => {
    view.range = e.target.value;
    if (view.range === "custom") {
      // Start from the window shown so far; Apply makes it take effect.
      const span = RANGES["6h"];
      byId("custom-range").hidden = false;
      byId("from-input").value = new Date(Date.now() - span).toISOString().slice(0, 19);
      byId("to-input").value = new Date().toISOString().slice(0, 19);
      return;
    }
    changed();
  });
  byId("apply-range").addEventListener("click", () => {
    const from = byId("from-input").value, to = byId("to-input").value;
    if (!from) return;
    view.range = "custom";
    view.from = String(toMs(from));
    view.to = to ? String(toMs(to)) : "";
    changed();
  });
  byId("sensor-input").addEventListener("change", (e) => { view.sensor = e.target.value.trim(); changed(); });
  byId("tag-input").addEventListener("change", (e) => {
    view.tags = e.target.value.split(",").map((t) => t.trim()).filter((t) => t);
    changed();
  });
  byId("clear-sensor").addEventListener("click", () => { view.sensor = ""; changed(); });
  byId("pause-button").addEventListener("click", () => { view.paused = !view.paused; changed(); });
  byId("refresh-button").addEventListener("click", () => refresh());

  // -- refresh ------------------------------------------------------------------------------
  async function refresh() {
    const mine = ++generation;
    const status = byId("status");
    const errors = [];
    const q = filters(true);
    const statsUrl = path("stats", q);
    const sensorsUrl = path("sensors", q, { size: "50", order: "count:desc" });
    const histUrl = path("histogram", q);
    const measUrl = path("measurements", q, { size: "20" });
    const fresh = (fn) => (body) => { if (mine === generation) fn(body); };
    // The metric list first: the cards need the chosen metric's unit.
    try { fresh(renderMetrics)(await api(path("metrics", filters(false)))); } catch (e) { errors.push(e); }
    const jobs = [
      api(statsUrl).then(fresh((s) => renderStats(s, statsUrl))),
      api(sensorsUrl).then(fresh((s) => renderSensors(s, sensorsUrl))),
      api(histUrl).then(fresh((h) => renderHistogram(h, histUrl))),
      api("/api/v1/pipeline?minutes=" + ingestMinutes).then(fresh(renderPipeline)),
    ];
    if (view.sensor) jobs.push(api(measUrl).then(fresh((m) => renderMeasurements(m, measUrl))));
    for (const r of await Promise.allSettled(jobs)) if (r.status === "rejected") errors.push(r.reason);
    if (mine !== generation) return;
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
    byId("updated-at").textContent = new Date().toISOString().slice(11, 19) + "Z";
    if (errors.length) {
      const down = errors.some((e) => e.status === 503);
      status.textContent = down ? "store unavailable" : "error";
      status.className = "pill bad";
      status.dataset.ready = "false";
      byId("error").textContent = errors.map((e) => e.message).join("; ");
      document.body.dataset.state = "error";
    } else {
      status.textContent = view.paused ? "paused" : "live";
      status.className = "pill ok";
      status.dataset.ready = "true";
      byId("error").textContent = "";
      document.body.dataset.state = "ready";
    }
  }

  async function loop() {
    if (!view.paused) {
      try { await refresh(); } catch (e) { byId("error").textContent = String(e); }
    }
    window.setTimeout(loop, view.refresh * 1000);
  }

  writeUrl();
  syncControls();
  if (view.paused) refresh();  // a paused view shared by URL still shows its data once
  loop();
})();
