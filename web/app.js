// The dashboard: live candles, prices, alerts and the pipeline from GET /api/v1/stream
// (Server-Sent Events), history and tables from the HTTP API. No framework, no build step,
// nothing fetched from outside the binary.
"use strict";

const $ = (selector) => document.querySelector(selector);
const fmt = new Intl.NumberFormat("en-US");
const MAX_CANDLES = 240;
const REJECT_REASONS = ["malformed", "non_positive_price", "zero_size", "crossed_quote", "absurd_timestamp", "late", "out_of_range", "delivery_failed", "inconsistent_bar", "sink_refused"];
const RESOLUTIONS = { "1s": "1S", "1m": "1", "5m": "5", "1h": "60", "1d": "1D" };

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function utc(text) {
  if (text == null) return "";
  const s = String(text);
  return s.replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace("Z", "");
}

function nanosToUtc(nanos) {
  return nanos == null ? "–" : utc(new Date(Number(nanos) / 1e6).toISOString());
}

// ---- Chart ------------------------------------------------------------------------------

const chart = { symbol: null, interval: "1m", candles: new Map(), events: null, pending: false };

function setCandle(bar) {
  const held = chart.candles.get(bar.t);
  // A final bar never goes back to open (an open snapshot can lag a final one).
  if (held && held.final && !bar.final) return;
  chart.candles.set(bar.t, { t: bar.t, o: +bar.o, h: +bar.h, l: +bar.l, c: +bar.c, v: +bar.v, final: !!bar.final });
}

function trimCandles() {
  if (chart.candles.size <= MAX_CANDLES) return;
  const keys = [...chart.candles.keys()].sort((a, b) => a - b);
  for (const key of keys.slice(0, keys.length - MAX_CANDLES)) chart.candles.delete(key);
}

function scheduleDraw() {
  if (chart.pending) return;
  chart.pending = true;
  requestAnimationFrame(() => {
    chart.pending = false;
    drawChart();
  });
}

function drawChart() {
  const canvas = $("#chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const all = [...chart.candles.values()].sort((a, b) => a.t - b.t);
  canvas.dataset.candles = String(all.length);
  canvas.dataset.last = all.length > 0 ? String(all[all.length - 1].t) : "";
  const axis = 64;
  const bottom = 20;
  const plotWidth = Math.max(10, width - axis);
  const plotHeight = Math.max(10, height - bottom - 8);
  const slot = Math.max(4, Math.min(14, plotWidth / Math.max(all.length, 1)));
  const candles = all.slice(-Math.floor(plotWidth / slot));
  $("#chart-info").textContent = chart.symbol ? `${chart.symbol} · ${chart.interval} · ${all.length} candles` : "waiting for prices…";
  if (candles.length === 0) {
    ctx.fillStyle = "#9aa5b1";
    ctx.font = "13px system-ui, sans-serif";
    ctx.fillText(chart.symbol ? "no bars yet for this interval" : "waiting for data…", 12, 24);
    return;
  }
  let low = Math.min(...candles.map((c) => c.l));
  let high = Math.max(...candles.map((c) => c.h));
  if (high === low) { high += 1; low -= 1; }
  const pad = (high - low) * 0.05;
  low -= pad; high += pad;
  const y = (price) => 8 + (high - price) / (high - low) * plotHeight;
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#222a33";
  ctx.fillStyle = "#9aa5b1";
  for (let i = 0; i <= 4; i += 1) {
    const price = low + (high - low) * (i / 4);
    const py = Math.round(y(price)) + 0.5;
    ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(plotWidth, py); ctx.stroke();
    ctx.fillText(price.toFixed(price < 10 ? 4 : 2), plotWidth + 6, py + 4);
  }
  const body = Math.max(1, slot * 0.7);
  candles.forEach((c, i) => {
    const x = i * slot + slot / 2;
    const up = c.c >= c.o;
    ctx.strokeStyle = ctx.fillStyle = up ? "#3fb950" : "#f85149";
    ctx.globalAlpha = c.final ? 1 : 0.75;
    ctx.beginPath(); ctx.moveTo(Math.round(x) + 0.5, y(c.h)); ctx.lineTo(Math.round(x) + 0.5, y(c.l)); ctx.stroke();
    const top = y(Math.max(c.o, c.c));
    ctx.fillRect(x - body / 2, top, body, Math.max(1, y(Math.min(c.o, c.c)) - top));
  });
  ctx.globalAlpha = 1;
  const last = candles[candles.length - 1];
  const ly = Math.round(y(last.c)) + 0.5;
  ctx.strokeStyle = "#58a6ff";
  ctx.setLineDash([3, 3]);
  ctx.beginPath(); ctx.moveTo(0, ly); ctx.lineTo(plotWidth, ly); ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = "#58a6ff";
  ctx.fillText(String(last.c), plotWidth + 6, ly - 4);
  ctx.fillStyle = "#9aa5b1";
  const every = Math.max(1, Math.ceil(70 / slot));
  for (let i = 0; i < candles.length; i += every) {
    const when = new Date(candles[i].t * 1000).toISOString();
    const label = chart.interval === "1d" ? when.slice(5, 10) : when.slice(11, chart.interval === "1s" ? 19 : 16);
    ctx.fillText(label, i * slot, height - 5);
  }
}

async function loadHistory() {
  const { symbol, interval } = chart;
  const h = await api(`/api/v1/history?symbol=${encodeURIComponent(symbol)}&resolution=${RESOLUTIONS[interval]}&countback=${MAX_CANDLES}`);
  if (symbol !== chart.symbol || interval !== chart.interval || h.s !== "ok") return;
  // Every bar but the newest is final; a final bar the stream delivered while this loaded
  // stays, anything else takes the stored one.
  h.t.forEach((t, i) => {
    const held = chart.candles.get(t);
    if (!held || !held.final) chart.candles.set(t, { t, o: h.o[i], h: h.h[i], l: h.l[i], c: h.c[i], v: h.v[i], final: i < h.t.length - 1 });
  });
  trimCandles();
  scheduleDraw();
}

function followChart() {
  if (!chart.symbol) return;
  if (chart.events) chart.events.close();
  chart.candles = new Map();
  scheduleDraw();
  const events = new EventSource(`/api/v1/stream?topics=bars&interval=${chart.interval}&symbols=${encodeURIComponent(chart.symbol)}`);
  chart.events = events;
  events.addEventListener("bars", (e) => {
    for (const bar of JSON.parse(e.data)) setCandle(bar);
    trimCandles();
    scheduleDraw();
  });
  events.addEventListener("reload", () => {
    // Bars were missed: start again from what is stored.
    chart.candles = new Map();
    loadHistory().catch(showError);
  });
  loadHistory().catch(showError);
}

function selectSymbol(symbol) {
  if (symbol === chart.symbol) return;
  chart.symbol = symbol;
  $("#symbol").value = symbol;
  followChart();
}

// ---- Prices -----------------------------------------------------------------------------

const prices = new Map();

function renderPrices() {
  const rows = [...prices.values()].sort((a, b) => a.symbol.localeCompare(b.symbol));
  $("#prices tbody").innerHTML = rows.map((p) => {
    const change = p.change_pct == null ? "–" : `${p.change_pct >= 0 ? "+" : ""}${p.change_pct.toFixed(2)}%`;
    const cls = p.change_pct == null ? "" : p.change_pct >= 0 ? "up" : "down";
    const selected = p.symbol === chart.symbol ? " selected" : "";
    return `<tr data-symbol="${esc(p.symbol)}" class="pick${selected}"><td>${esc(p.symbol)}</td><td class="num">${esc(p.last)}</td><td class="num ${cls}">${change}</td></tr>`;
  }).join("");
  const select = $("#symbol");
  const known = new Set([...select.options].map((o) => o.value));
  for (const p of rows) {
    if (!known.has(p.symbol)) select.add(new Option(p.symbol, p.symbol));
  }
  if (!chart.symbol && rows.length > 0) selectSymbol(rows[0].symbol);
}

// ---- Alerts -----------------------------------------------------------------------------

function alertRow(a) {
  return `<tr class="sev-${esc(a.severity)}"><td>${esc(utc(a.ts))}</td><td>${esc(a.severity)}${a.kind && a.kind !== "fired" ? ` (${esc(a.kind)})` : ""}</td><td>${esc(a.rule)}</td><td>${esc(a.symbol)}</td><td>${esc(a.message)}</td></tr>`;
}

function addAlerts(alerts) {
  const body = $("#alert-feed tbody");
  body.insertAdjacentHTML("afterbegin", alerts.slice().reverse().map(alertRow).join(""));
  while (body.rows.length > 200) body.deleteRow(-1);
}

async function loadAlerts() {
  const { alerts } = await api("/api/v1/alerts?limit=50");
  $("#alert-feed tbody").innerHTML = alerts.map(alertRow).join("");
}

// ---- Status, pipeline view and jobs -----------------------------------------------------

let previous = null;

function card(label, value) {
  return `<div class="card"><div class="label">${esc(label)}</div><div class="value">${esc(value)}</div></div>`;
}

function node(kind, title, state, lines) {
  return `<div class="node state-${esc(state)}" data-kind="${esc(kind)}"><div class="node-title">${esc(title)}</div><div class="node-state">${esc(state)}</div>${lines.filter(Boolean).map((l) => `<div>${l}</div>`).join("")}</div>`;
}

function stage(name, nodes) {
  return `<div class="stage"><div class="stage-name">${esc(name)}</div>${nodes.join("") || '<div class="muted">none</div>'}</div>`;
}

function renderStatus(s) {
  const dt = previous ? Math.max(0.001, s.uptime_secs - previous.uptime_secs) : 0;
  const rate = (now, before) => (dt > 0 && before != null ? Math.max(0, (now - before) / dt) : 0);
  const perSec = (n) => `${fmt.format(Math.round(n))}/s`;
  const rows = s.rows || {};
  $("#state").textContent = s.failure ? `failed: ${s.failure}` : `live · up ${fmt.format(Math.round(s.uptime_secs))} s`;
  $("#state").className = s.failure ? "bad" : "good";
  const ticks = rate(s.processed, previous?.processed);
  $("#cards").innerHTML = [
    card("ticks/s", fmt.format(Math.round(ticks))),
    card("log lag", fmt.format(s.log_lag)),
    card("trades", fmt.format(rows.trades || 0)),
    card("bars", fmt.format(rows.bars || 0)),
    card("alerts", fmt.format(s.alerts)),
    card("rejected", fmt.format(s.rejected)),
    card("p99 to lake", s.latency_p99_seconds == null ? "–" : `${(s.latency_p99_seconds * 1000).toFixed(0)} ms`),
  ].join("");

  const sources = (s.sources || []).map((c) => node("source", c.id, c.state, [
    esc(c.type),
    `${perSec(rate(c.events, previous?.sources?.find((p) => p.id === c.id)?.events))} · ${fmt.format(c.events)} events`,
    c.error ? `<span class="bad">${esc(c.error)}</span>` : "",
  ]));
  const listed = new Set((s.sources || []).map((c) => c.id));
  for (const [id, n] of Object.entries(s.ingested || {})) {
    if (!listed.has(id)) sources.push(node("source", id, "running", ["http ingest", `${perSec(rate(n, previous?.ingested?.[id]))} · ${fmt.format(n)} events`]));
  }
  const log = [node("log", "durable log", s.log_lag > 0 ? "behind" : "ok", [
    `next offset ${fmt.format(s.log_next_offset)}`,
    `${perSec(rate(s.log_next_offset, previous?.log_next_offset))} appended`,
    `lag ${fmt.format(s.log_lag)}`,
  ])];
  const processing = [node("processing", "processor", s.failure ? "failed" : "ok", [
    `offset ${fmt.format(s.processed_offset)}`,
    `${perSec(ticks)} processed`,
    `${fmt.format(s.rejected)} rejected · ${fmt.format(s.duplicates)} duplicates`,
    `${fmt.format(s.alerts)} alerts`,
  ])];
  const lake = [node("lake", "Parquet lake", "ok", [
    `flush ${fmt.format(s.published_flush)} published`,
    `${fmt.format(s.flushes)} flushes · ${fmt.format(s.compactions)} compactions`,
    s.latency_p99_seconds == null ? "" : `p99 tick → lake ${(s.latency_p99_seconds * 1000).toFixed(0)} ms`,
  ])];
  const follower = (kind) => (c) => node(kind, c.id, c.state, [
    esc(c.type),
    c.position == null ? "no position yet" : `flush ${fmt.format(c.position)} · lag ${fmt.format(c.lag_flushes)} flushes (${fmt.format(c.lag_rows)} rows)`,
    `${fmt.format(c.rows_written)} rows · ${fmt.format(c.errors)} errors`,
    c.last_error ? `<span class="bad">${esc(c.last_error)}</span>` : "",
  ]);
  $("#flow").innerHTML = [
    stage("sources", sources),
    stage("log", log),
    stage("processing", processing),
    stage("lake", lake),
    stage("sinks", (s.sinks || []).map(follower("sink"))),
    stage("notifiers", (s.notifiers || []).map(follower("notifier"))),
  ].join('<div class="arrow" aria-hidden="true"></div>');

  const jobs = s.jobs || [];
  $("#job-list tbody").innerHTML = jobs.length === 0
    ? '<tr><td colspan="7" class="muted">no [[jobs]] in the config</td></tr>'
    : jobs.map((j) => `<tr><td>${esc(j.name)}</td><td>${esc(j.kind)}</td><td><code>${esc(j.cron)}</code> ${esc(j.timezone)}</td><td>${esc(j.running ? "running now" : nanosToUtc(j.next_run))}</td><td>${j.last ? `${esc(j.last.outcome)}: ${esc(j.last.message)}` : "–"}</td><td>${fmt.format(j.runs)}</td><td>${fmt.format(j.failures)}</td></tr>`).join("");

  if (previous && s.rejected !== previous.rejected) refreshDlqSoon();
  previous = s;
}

// ---- DLQ --------------------------------------------------------------------------------

let dlqEntries = [];
let dlqEditing = null;
let dlqTimer = null;
let dlqLoaded = 0;

async function loadDlq() {
  dlqLoaded = Date.now();
  const reason = $("#dlq-reason").value;
  const { entries } = await api(`/api/v1/dlq?limit=100${reason ? `&reason=${reason}` : ""}`);
  dlqEntries = entries;
  $("#dlq-list tbody").innerHTML = entries.length === 0
    ? '<tr><td colspan="6" class="muted">nothing rejected</td></tr>'
    : entries.map((d, i) => `<tr data-id="${esc(d.id)}"><td>${esc(utc(d.ts))}</td><td>${esc(d.source)}</td><td>${esc(d.reason)}</td><td>${esc(d.error)}</td><td><code class="payload">${esc(d.payload)}</code></td><td>${d.replayed ? '<span class="good">replayed</span> ' : ""}<button type="button" data-fix="${i}">Fix &amp; replay</button></td></tr>`).join("");
}

function refreshDlqSoon() {
  if (dlqTimer) return;
  const wait = Math.max(0, 5000 - (Date.now() - dlqLoaded));
  dlqTimer = setTimeout(() => {
    dlqTimer = null;
    loadDlq().catch(showError);
  }, wait);
}

function editDlq(entry) {
  dlqEditing = entry;
  $("#dlq-editor").hidden = false;
  $("#dlq-editing").textContent = `${entry.reason}: ${entry.error}`;
  $("#dlq-payload").value = entry.payload;
  $("#dlq-result").textContent = "";
  $("#dlq-payload").focus();
}

async function replayDlq() {
  if (!dlqEditing) return;
  const result = $("#dlq-result");
  try {
    const r = await api("/api/v1/dlq/replay", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: dlqEditing.id, payload: $("#dlq-payload").value }),
    });
    result.className = "good";
    result.textContent = `replayed: ${r.accepted} event(s) at log offset ${r.first_offset}`;
    await loadDlq();
  } catch (e) {
    result.className = "bad";
    result.textContent = e.message;
  }
}

// ---- SQL console ------------------------------------------------------------------------

async function runSql() {
  const info = $("#sql-info");
  info.className = "muted";
  info.textContent = "running…";
  const started = performance.now();
  try {
    const r = await api("/api/v1/sql", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ sql: $("#sql-text").value, format: "json" }),
    });
    $("#sql-result thead").innerHTML = `<tr>${r.columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr>`;
    $("#sql-result tbody").innerHTML = r.rows.slice(0, 1000).map((row) => `<tr>${r.columns.map((c) => `<td>${esc(typeof row[c] === "object" && row[c] !== null ? JSON.stringify(row[c]) : row[c])}</td>`).join("")}</tr>`).join("");
    info.textContent = `${fmt.format(r.row_count)} rows in ${Math.round(performance.now() - started)} ms${r.row_count > 1000 ? " (first 1,000 shown)" : ""}`;
  } catch (e) {
    info.className = "bad";
    info.textContent = e.message;
  }
}

// ---- Wiring -----------------------------------------------------------------------------

function showError(e) {
  $("#state").className = "bad";
  $("#state").textContent = `error: ${e.message}`;
}

function follow() {
  const events = new EventSource("/api/v1/stream?topics=prices,alerts,status");
  events.addEventListener("prices", (e) => {
    for (const p of JSON.parse(e.data)) prices.set(p.symbol, p);
    renderPrices();
  });
  events.addEventListener("alerts", (e) => addAlerts(JSON.parse(e.data)));
  events.addEventListener("status", (e) => renderStatus(JSON.parse(e.data)));
  events.onerror = () => {
    $("#state").className = "bad";
    $("#state").textContent = "reconnecting…";
  };
}

for (const reason of REJECT_REASONS) $("#dlq-reason").add(new Option(reason, reason));
$("#symbol").addEventListener("change", (e) => selectSymbol(e.target.value));
$("#interval").addEventListener("change", (e) => {
  chart.interval = e.target.value;
  followChart();
});
$("#prices tbody").addEventListener("click", (e) => {
  const row = e.target.closest("tr[data-symbol]");
  if (row) selectSymbol(row.dataset.symbol);
});
$("#dlq-refresh").addEventListener("click", () => loadDlq().catch(showError));
$("#dlq-reason").addEventListener("change", () => loadDlq().catch(showError));
$("#dlq-list tbody").addEventListener("click", (e) => {
  const button = e.target.closest("button[data-fix]");
  if (button) editDlq(dlqEntries[Number(button.dataset.fix)]);
});
$("#dlq-replay").addEventListener("click", replayDlq);
$("#dlq-cancel").addEventListener("click", () => {
  dlqEditing = null;
  $("#dlq-editor").hidden = true;
});
$("#sql-run").addEventListener("click", runSql);
$("#sql-text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    runSql();
  }
});
$("#sql-examples").addEventListener("change", (e) => {
  if (e.target.value) $("#sql-text").value = e.target.value;
  e.target.value = "";
});
window.addEventListener("resize", scheduleDraw);

// With [http] token set, the API answers 401 until the token is given once: it comes back
// as an HttpOnly cookie, which the stream and every request then carry.
function askForToken() {
  $("#state").className = "bad";
  $("#state").textContent = "locked";
  $("#login").hidden = false;
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const response = await fetch("/api/v1/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: $("#login-token").value }),
    });
    if (response.ok) {
      location.reload();
    } else {
      const body = await response.json().catch(() => ({}));
      $("#login-error").textContent = body.error || `${response.status} ${response.statusText}`;
    }
  });
}

async function start() {
  const probe = await fetch("/api/v1/status");
  if (probe.status === 401) return askForToken();
  follow();
  loadAlerts().catch(showError);
  loadDlq().catch(showError);
  scheduleDraw();
}

start().catch(showError);
