// The sluice dashboard: plain DOM and SVG, no library, no network beyond this API.
// Every number shown is also stored raw in a data-value attribute, so a test (or a
// curious user) can compare the page with the API's JSON exactly.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const page = new URLSearchParams(window.location.search);
  const refreshSeconds = Math.max(1, Number(page.get("refresh")) || 5);
  const ingestMinutes = 15;
  const histogramHours = 6;
  let refreshes = 0;

  // With API tokens on (docs/security.md) the page sends the token its user gave it: from
  // the address's #token=... (a fragment never reaches a server or its logs), or asked for
  // once after a 401; kept for this tab only.
  function authHeaders() {
    const fromHash = new URLSearchParams(window.location.hash.slice(1)).get("token");
    if (fromHash) {
      sessionStorage.setItem("sluiceToken", fromHash);
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    const token = sessionStorage.getItem("sluiceToken");
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function askForToken() {
    const token = window.prompt("This sluice API needs a token (scope read):");
    if (token) sessionStorage.setItem("sluiceToken", token.trim());
    return Boolean(token);
  }

  async function api(path, retried) {
    const headers = Object.assign({ Accept: "application/json" }, authHeaders());
    const resp = await fetch(path, { headers: headers, cache: "no-store" });
    // Requests run in parallel: only the first 401 asks; the others retry with its answer.
    if (resp.status === 401 && !retried &&
        (authHeaders().Authorization !== headers.Authorization || askForToken())) {
      return api(path, true);
    }
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON: reported below */ }
    if (!resp.ok) {
      const msg = body && body.error ? body.error.message : resp.status + " " + resp.statusText;
      const err = new Error(path + ": " + msg);
      err.status = resp.status;
      err.body = body;
      throw err;
    }
    return body;
  }

  function fmt(n, digits) {
    if (n === null || n === undefined) return "–";
    if (Number.isInteger(n) && digits === undefined) return n.toLocaleString("en-US");
    const d = digits === undefined ? 2 : digits;
    return Number(n).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  }

  function setNum(id, value, digits) {
    const el = document.getElementById(id);
    el.textContent = fmt(value, digits);
    el.dataset.value = value === null || value === undefined ? "" : String(value);
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

  function renderHistogram(h, url) {
    const svg = document.getElementById("histogram-chart");
    svg.replaceChildren();
    svg.dataset.url = url;
    const buckets = h.buckets;
    const W = 900, H = 260, top = 12, bottom = 8;
    const total = buckets.reduce((s, b) => s + b.count, 0);
    svg.dataset.buckets = String(buckets.length);
    svg.dataset.total = String(total);
    document.getElementById("histogram-interval").textContent = buckets.length ? "(last " + histogramHours + " h, " + h.interval + " buckets, UTC)" : "";
    const axis = document.getElementById("histogram-axis");
    axis.replaceChildren();
    document.getElementById("histogram-max").textContent = "";
    if (!buckets.length) {
      axis.appendChild(el("span", {}, "no data yet"));
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
      rect.appendChild(el("svg:title", {}, b.t + "  count " + b.count + (b.avg === null ? "" : "  avg " + fmt(b.avg))));
      svg.appendChild(rect);
    });
    let path = "";
    buckets.forEach((b, i) => {
      if (b.avg === null) return;
      const frac = hi > lo ? (b.avg - lo) / (hi - lo) : 0.5;
      path += (path ? " L" : "M") + (i * step + step / 2).toFixed(1) + " " + y(0.05 + 0.9 * frac).toFixed(1);
    });
    if (path) {
      svg.appendChild(el("svg:path", { d: path, fill: "none", stroke: "#e07a1f", "stroke-width": 2.5, "vector-effect": "non-scaling-stroke" }));
    }
    document.getElementById("histogram-max").textContent = "· tallest bar " + fmt(maxCount);
    const span = buckets[buckets.length - 1].ts - buckets[0].ts;
    const marks = [0, Math.floor(buckets.length / 2), buckets.length - 1];
    for (const i of marks) axis.appendChild(el("span", {}, shortTime(buckets[i].t, span)));
  }

  function renderSensors(s) {
    const bars = document.getElementById("sensor-bars");
    bars.replaceChildren();
    const rows = s.sensors.slice(0, 12);
    bars.dataset.rows = String(rows.length);
    const maxAbs = Math.max(1e-12, ...rows.map((r) => Math.abs(r.avg || 0)));
    for (const r of rows) {
      const line = el("div", { class: "bar", "data-sensor": r.sensor, "data-avg": r.avg === null ? "" : String(r.avg) });
      line.appendChild(el("span", { class: "name", title: r.sensor }, r.sensor));
      const track = el("div", { class: "track" });
      track.appendChild(el("div", { class: "fill", style: "width:" + (100 * Math.abs(r.avg || 0) / maxAbs).toFixed(1) + "%" }));
      line.appendChild(track);
      line.appendChild(el("span", { class: "num" }, fmt(r.avg)));
      bars.appendChild(line);
    }
    if (!rows.length) bars.appendChild(el("div", { class: "muted" }, "no sensors yet"));

    const body = document.querySelector("#sensor-table tbody");
    body.replaceChildren();
    for (const r of s.sensors) {
      const tr = el("tr", { "data-sensor": r.sensor });
      tr.appendChild(el("td", {}, r.sensor));
      for (const [field, digits] of [["count", undefined], ["avg", 2], ["min", 2], ["max", 2]]) {
        const v = r[field];
        tr.appendChild(el("td", { class: "num", "data-field": field, "data-value": v === null ? "" : String(v) }, fmt(v, digits)));
      }
      tr.appendChild(el("td", { "data-field": "last_seen", "data-value": r.last_seen || "" }, r.last_seen ? r.last_seen.replace("T", " ").replace(".000Z", "Z") : "–"));
      body.appendChild(tr);
    }
  }

  function renderIngest(ing) {
    const svg = document.getElementById("ingest-chart");
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
    document.getElementById("ingest-max").textContent = b.length ? "tallest bar " + fmt(max) + " per minute" : "";
  }

  function renderPipeline(p) {
    setNum("ingest-rate", p.ingest.rate_per_s, 1);
    setNum("ingest-count", p.ingest.count);
    document.getElementById("ingest-minutes").textContent = String(ingestMinutes);
    const depth = p.broker.up ? p.queues.reduce((s, q) => s + (q.messages || 0), 0) : null;
    setNum("queue-depth", depth);
    setNum("dead-letter-total", p.dead_letters.total);
    renderIngest(p.ingest);
    const body = document.querySelector("#pipeline-table tbody");
    body.replaceChildren();
    const rows = p.queues.map((q) => [q, "raw"]).concat(p.dead_letters.queues.map((q) => [q, "dead"]));
    for (const [q, role] of rows) {
      const tr = el("tr", { "data-queue": q.queue, "data-role": role });
      tr.appendChild(el("td", {}, q.queue + (q.exists === false ? " (absent)" : "")));
      tr.appendChild(el("td", {}, q.kind));
      tr.appendChild(el("td", { class: "num", "data-field": "messages", "data-value": q.messages === null ? "" : String(q.messages) }, fmt(q.messages)));
      tr.appendChild(el("td", { class: "num", "data-field": "consumers", "data-value": q.consumers === null ? "" : String(q.consumers) }, fmt(q.consumers)));
      body.appendChild(tr);
    }
    const reasons = document.getElementById("dead-reasons");
    reasons.replaceChildren();
    if (!p.broker.up) reasons.appendChild(el("div", {}, "RabbitMQ: " + (p.broker.error || "unreachable")));
    if (p.dead_letters.by_reason && p.dead_letters.by_reason.length) {
      reasons.appendChild(el("span", {}, "dead letters by reason: "));
      for (const r of p.dead_letters.by_reason) {
        reasons.appendChild(el("span", { "data-reason": r.reason, "data-value": String(r.count) }, r.reason + " " + fmt(r.count) + "  "));
      }
    }
  }

  function renderStats(s) {
    setNum("total-count", s.count);
    setNum("avg-value", s.avg);
    setNum("min-value", s.min);
    setNum("max-value", s.max);
    setNum("p50-value", s.percentiles.p50);
    setNum("p95-value", s.percentiles.p95);
    setNum("p99-value", s.percentiles.p99);
  }

  async function refresh() {
    const status = document.getElementById("status");
    const errors = [];
    // The chart covers a recent window (whole minutes, so a refresh and a re-read of
    // the same URL agree): one stray old record must not stretch it into months.
    const histFrom = Math.floor((Date.now() - histogramHours * 3600e3) / 60000) * 60000;
    const histPath = "/api/v1/histogram?from=" + histFrom;
    const jobs = [
      api("/api/v1/stats").then(renderStats),
      api("/api/v1/sensors?size=50&order=count:desc").then(renderSensors),
      api(histPath).then((h) => renderHistogram(h, histPath)),
      api("/api/v1/pipeline?minutes=" + ingestMinutes).then(renderPipeline),
    ];
    for (const r of await Promise.allSettled(jobs)) if (r.status === "rejected") errors.push(r.reason);
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
    document.getElementById("updated-at").textContent = new Date().toISOString().slice(11, 19) + "Z";
    if (errors.length) {
      const down = errors.some((e) => e.status === 503);
      status.textContent = down ? "store unavailable" : "error";
      status.className = "pill bad";
      status.dataset.ready = "false";
      document.getElementById("error").textContent = errors.map((e) => e.message).join("; ");
      document.body.dataset.state = "error";
    } else {
      status.textContent = "live";
      status.className = "pill ok";
      status.dataset.ready = "true";
      document.getElementById("error").textContent = "";
      document.body.dataset.state = "ready";
    }
  }

  async function loop() {
    try { await refresh(); } catch (e) { document.getElementById("error").textContent = String(e); }
    window.setTimeout(loop, refreshSeconds * 1000);
  }

  loop();
})();
