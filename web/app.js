// Polls the status endpoint and two SQL queries once a second; no framework, no build step.
const fmt = new Intl.NumberFormat("en-US");
let last = null;

async function sql(query) {
  const r = await fetch("/api/v1/sql", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql: query }) });
  if (!r.ok) throw new Error((await r.json()).error);
  return (await r.json()).rows;
}

function card(label, value) {
  return `<div class="card"><div class="label">${label}</div><div class="value">${value}</div></div>`;
}

function fill(id, rows, cols) {
  document.querySelector(`#${id} tbody`).innerHTML = rows
    .map((r) => "<tr>" + cols.map((c) => `<td>${String(r[c] ?? "").replace(/[<>&]/g, "")}</td>`).join("") + "</tr>")
    .join("");
}

function follower(c) {
  return { id: c.id, type: c.type, state: c.state, at: c.position == null ? "–" : `flush ${c.position}`, lag: fmt.format(c.lag_flushes), errors: fmt.format(c.errors), error: c.last_error };
}

async function tick() {
  try {
    const s = await (await fetch("/api/v1/status")).json();
    const now = performance.now();
    const rate = last ? ((s.processed - last.processed) / ((now - last.t) / 1000)) : 0;
    last = { processed: s.processed, t: now };
    document.getElementById("state").textContent = s.failure ? `failed: ${s.failure}` : `up ${Math.round(s.uptime_secs)} s`;
    const rows = s.rows || {};
    document.getElementById("cards").innerHTML = [
      card("ticks/s", fmt.format(Math.round(rate))),
      card("log lag", fmt.format(s.log_lag)),
      card("trades", fmt.format(rows.trades || 0)),
      card("bars", fmt.format(rows.bars || 0)),
      card("alerts", fmt.format(s.alerts)),
      card("rejected", fmt.format(s.rejected)),
      card("p99 to lake", s.latency_p99_seconds == null ? "–" : `${(s.latency_p99_seconds * 1000).toFixed(0)} ms`),
    ].join("");
    // Sources, sinks and notifiers with their state: a channel that is down shows here.
    const connectors = [
      ...(s.sources || []).map((c) => ({ kind: "source", id: c.id, type: c.type, state: c.state, at: fmt.format(c.events), lag: "", errors: "", error: c.error })),
      ...(s.sinks || []).map((c) => ({ kind: "sink", ...follower(c) })),
      ...(s.notifiers || []).map((c) => ({ kind: "notifier", ...follower(c) })),
    ];
    fill("connectors", connectors, ["kind", "id", "type", "state", "at", "lag", "errors", "error"]);
    fill("prices", await sql("SELECT symbol, last_value(price ORDER BY ts_event) AS last, max(ts_event) AS time FROM trades WHERE ts_event > now() - interval '1 minute' GROUP BY symbol ORDER BY symbol"), ["symbol", "last", "time"]);
    fill("alerts", await sql("SELECT ts, rule, symbol, message FROM alerts ORDER BY ts DESC LIMIT 10"), ["ts", "rule", "symbol", "message"]);
  } catch (e) {
    document.getElementById("state").textContent = `error: ${e.message}`;
  }
}

tick();
setInterval(tick, 1000);
