// The dashboard of a tickflow with [http] token, in headless Chromium: it asks for the
// token, refuses a wrong one, and once given the right one shows the live prices (the
// stream opened by the sign-in cookie). node dashboard_login.cjs <base url> <token>
"use strict";

const { chromium } = require("playwright-core");

const [url, token] = process.argv.slice(2);
const WAIT = { timeout: 60_000 };

function check(ok, what) {
  if (!ok) throw new Error(what);
}

(async () => {
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(`exception: ${e.message}`));
    page.on("console", (m) => {
      // The refusals before signing in are expected; anything else is not.
      if (m.type() === "error" && !m.text().includes("401")) errors.push(`console: ${m.text()}`);
    });
    await page.goto(url + "/");
    await page.waitForSelector("#login:not([hidden])", WAIT);
    check((await page.textContent("#state")) === "locked", "the page does not say it is locked");
    await page.fill("#login-token", "not-the-token-0000000000");
    await page.click("#login-form button");
    await page.waitForFunction(() => document.querySelector("#login-error").textContent.includes("wrong token"), null, WAIT);
    await page.fill("#login-token", token);
    await page.click("#login-form button");
    // Signed in: the page reloads, the form is gone and prices arrive over the stream.
    await page.waitForSelector("#prices tbody tr", WAIT);
    check(await page.isHidden("#login"), "the sign-in form is still shown");
    const cookies = await page.context().cookies();
    const cookie = cookies.find((c) => c.name === "tickflow_token");
    check(cookie && cookie.httpOnly && cookie.sameSite === "Strict", `the cookie is ${JSON.stringify(cookie)}`);
    check(errors.length === 0, `the dashboard logged errors:\n${errors.join("\n")}`);
    console.log("ok: locked, refused a wrong token, signed in, prices streamed");
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
