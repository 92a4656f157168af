// Drives the dashboard of a running tickflow in headless Chromium (playwright-core), as
// tests/it/dashboard.rs asks: node dashboard.cjs <base url> <screenshot dir>.
// Every wait is for something the page shows; the timeouts only stop a broken run.
// Exits 1 with the reason on the first check that fails.
"use strict";

const { chromium } = require("playwright-core");
const path = require("path");

const [url, shots] = process.argv.slice(2);
const WAIT = { timeout: 60_000 };

function check(ok, what) {
  if (!ok) throw new Error(what);
}

async function post(pathname, body) {
  const r = await fetch(url + pathname, { method: "POST", headers: { "content-type": "application/json" }, body });
  const text = await r.text();
  check(r.ok, `${pathname} answered ${r.status}: ${text}`);
  return JSON.parse(text);
}

async function rows(sql) {
  return (await post("/api/v1/sql", JSON.stringify({ sql, format: "json" }))).rows;
}

/// Every console error and uncaught exception of a page.
function watchErrors(page, errors) {
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`exception: ${e.message}`));
}

async function desktop(browser, errors) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  watchErrors(page, errors);
  await page.goto(url + "/");

  // Prices arrive over the stream, and the chart follows the first symbol.
  await page.waitForSelector("#prices tbody tr", WAIT);
  await page.selectOption("#interval", "1s");
  await page.waitForFunction(() => Number(document.querySelector("#chart").dataset.candles) > 0, null, WAIT);
  const first = await page.$eval("#chart", (c) => Number(c.dataset.last));
  // Two more one-second candles formed while the simulator ran.
  await page.waitForFunction((t) => Number(document.querySelector("#chart").dataset.last) >= t + 2, first, WAIT);
  const candles = await page.$eval("#chart", (c) => Number(c.dataset.candles));
  console.log(`chart: ${candles} candles, the last ${await page.$eval("#chart", (c) => c.dataset.last)} (first seen ${first})`);

  // The pipeline view names each stage and component.
  await page.waitForSelector('#flow .node[data-kind="sink"]', WAIT);
  const flow = await page.$eval("#flow", (f) => f.textContent);
  for (const needle of ["sim", "simulator", "durable log", "processor", "Parquet lake", "backup", "csv"]) {
    check(flow.includes(needle), `the pipeline view lacks ${JSON.stringify(needle)}: ${flow}`);
  }

  // An alert raised through ingest appears in the feed.
  const now = new Date().toISOString();
  await post("/api/v1/ingest", JSON.stringify({ type: "trade", symbol: "ALRT", ts_event: now, price: "150", size: "1", trade_id: "a1" }));
  await page.waitForFunction(() => document.querySelector("#alert-feed").textContent.includes("alrt-above-100"), null, WAIT);

  // The SQL console answers.
  await page.fill("#sql-text", "SELECT symbol, count(*) AS n FROM trades WHERE symbol = 'ALRT' GROUP BY symbol");
  await page.click("#sql-run");
  await page.waitForFunction(() => document.querySelector("#sql-result tbody").textContent.includes("ALRT"), null, WAIT);
  const cells = await page.$$eval("#sql-result tbody td", (tds) => tds.map((td) => td.textContent));
  check(cells.join(",") === "ALRT,1", `the SQL console showed ${cells}`);

  // A bad tick is listed in the DLQ, fixed and replayed once.
  await post("/api/v1/ingest", JSON.stringify({ type: "trade", symbol: "FIXME", ts_event: now, price: "-5", size: "1", trade_id: "f1" }));
  await page.waitForFunction(async () => {
    if (document.querySelector("#dlq-list tbody").textContent.includes("FIXME")) return true;
    document.querySelector("#dlq-refresh").click();
    return false;
  }, null, { ...WAIT, polling: 500 });
  const row = page.locator("#dlq-list tbody tr", { hasText: "FIXME" });
  check((await row.textContent()).includes("non_positive_price"), "the DLQ row lacks its reason");
  await row.locator("button").click();
  const payload = await page.inputValue("#dlq-payload");
  check(payload.includes('"-5"'), `the editor holds ${payload}`);
  await page.screenshot({ path: path.join(shots, "dashboard-dlq.png"), fullPage: false, clip: await page.locator("#dlq").boundingBox() });
  await page.fill("#dlq-payload", payload.replace('"-5"', '"5"'));
  await page.click("#dlq-replay");
  await page.waitForFunction(() => document.querySelector("#dlq-result").textContent.startsWith("replayed"), null, WAIT);
  await page.waitForFunction(() => {
    const r = [...document.querySelectorAll("#dlq-list tbody tr")].find((tr) => tr.textContent.includes("FIXME"));
    return r && r.textContent.includes("replayed");
  }, null, WAIT);
  let fixed = [];
  for (let tries = 0; fixed.length === 0; tries += 1) {
    check(tries < 600, "the replayed trade never became queryable");
    fixed = await rows("SELECT CAST(price AS VARCHAR) AS price FROM trades WHERE symbol = 'FIXME'");
    if (fixed.length === 0) await new Promise((r) => setTimeout(r, 100));
  }
  check(fixed.length === 1 && Number(fixed[0].price) === 5, `the replayed trade is stored as ${JSON.stringify(fixed)}`);

  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(shots, "dashboard-desktop.png"), fullPage: true });
  await page.close();
}

async function phone(browser, errors) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  watchErrors(page, errors);
  await page.goto(url + "/");
  await page.waitForSelector("#prices tbody tr", WAIT);
  await page.waitForFunction(() => Number(document.querySelector("#chart").dataset.candles) > 0, null, WAIT);
  await page.waitForSelector('#flow .node[data-kind="source"]', WAIT);
  // The same sections, each visible and none wider than the screen.
  for (const id of ["#market", "#pipeline", "#alerts", "#dlq", "#sql", "#jobs"]) {
    check(await page.isVisible(id), `${id} is not shown on a phone`);
  }
  // A phone browser zooms out to fit a page wider than the screen, so the widths are
  // checked against the screen's 390 px, not against the (then wider) window.
  const widest = await page.evaluate(() => Math.max(document.documentElement.scrollWidth,
    ...[...document.querySelectorAll("header, main > section")].map((e) => e.getBoundingClientRect().right)));
  check(widest <= 391, `the page is ${widest}px wide on a 390px phone screen`);
  // The alert raised on the desktop comes from the stored alerts, loaded on their own.
  await page.waitForFunction(() => document.querySelector("#alert-feed").textContent.includes("alrt-above-100"), null, WAIT);
  await page.screenshot({ path: path.join(shots, "dashboard-phone.png"), fullPage: true });
  await context.close();
}

(async () => {
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  const errors = [];
  try {
    await desktop(browser, errors);
    await phone(browser, errors);
    check(errors.length === 0, `the dashboard logged errors:\n${errors.join("\n")}`);
    console.log(`ok; screenshots in ${shots}`);
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
