// The dashboard as a renter uses it, in chromium, against a real `nicompute serve` on a devnet
// (started by crates/cli/tests/it/web.rs, which gives the URL and a token and answers the
// questions this script asks: run the SSH command the page shows, kill a miner).
//
// A wrong token is refused with a message; the right one logs in (typed, then Enter); the
// machines are listed and charted; a filter narrows them; the H100 is allocated with the
// requirement form while the page shows the server's progress; the SSH command and the
// password revealed on click are handed to the Rust side, which logs in with the built-in SSH
// client; "My allocations" shows it active and online with a countdown; restart answers with
// the miner's result, and so do pause and unpause (each observed: no SSH greeting, then one
// again); the 4090 is allocated from its row; its miner is killed and the page turns
// it "Offline" by itself (live events, no reload); the H100 is released and disappears; a token
// kept in the tab lists the machines at once, a refused one asks to log in again. Prints one
// JSON report; the Rust test asserts on it. Screenshots go to NICOMPUTE_ARTIFACTS.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { ask, emit, launch, need, step } from "./lib.mjs";

const url = need("NICOMPUTE_URL");
const token = need("NICOMPUTE_TOKEN");
const shots = need("NICOMPUTE_ARTIFACTS");
mkdirSync(shots, { recursive: true });

const report = { console_errors: [], page_loads: 0 };
const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.setDefaultTimeout(30000);
page.on("pageerror", (e) => report.console_errors.push(`pageerror: ${e.message}`));
page.on("console", (m) => {
  // The wrong token's 401 is expected; everything else is a defect.
  if (m.type() === "error" && !/401/.test(m.text())) report.console_errors.push(m.text());
});
// Every step below happens in the one page: a second load would be a reload.
page.on("load", () => { report.page_loads += 1; });

const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`) });
const nav = (name) => page.locator("#nav").getByRole("link", { name, exact: true }).click();
const card = (text) => page.locator("article.alloc", { hasText: text });

try {
  step("open the page");
  await page.goto(url);
  await page.getByRole("heading", { name: "Log in" }).waitFor();

  step("a wrong token is refused with an error");
  await page.getByLabel("Access token").fill("nct_this-is-not-a-token");
  await page.getByRole("button", { name: "Log in" }).click();
  const alert = page.getByRole("alert").filter({ hasText: "refused" });
  await alert.waitFor();
  report.wrong_token_error = await alert.textContent();
  await shot("login-refused");

  step("log in with the token (typed, then Enter)");
  await page.getByLabel("Access token").fill(token);
  await page.getByLabel("Access token").press("Enter");
  await page.getByRole("heading", { name: "Machines", level: 1 }).waitFor();
  const rows = page.locator("#machines-rows tr");
  await page.waitForFunction(() => document.querySelectorAll("#machines-rows tr").length >= 3);
  report.machines = await rows.evaluateAll((trs) => trs.map((tr) => tr.cells[0].textContent));
  report.chart_bars = await page.locator("svg.bars g").count();
  report.chart_caption = await page.locator("#chart-caption").textContent();
  report.hostile_name_elements = await page.locator("#machines-rows img, #chart-body img").count();
  report.pwned = await page.evaluate(() => window.__pwned === 1);
  report.storage = await page.evaluate(() => ({
    session: sessionStorage.getItem("nicompute.token") !== null,
    local: localStorage.length,
    cookies: document.cookie,
  }));
  await shot("machines");

  step("filter: GPU model H100, available only");
  const model = await page.locator("#f-gpu option", { hasText: "H100" }).first().getAttribute("value");
  await page.getByLabel("GPU model").selectOption(model);
  await page.getByLabel("Available only").check();
  await page.waitForFunction(() => {
    const r = document.querySelectorAll("#machines-rows tr");
    return r.length === 1 && r[0].cells[0].textContent.includes("H100");
  });
  report.filtered = await rows.evaluateAll((trs) => trs.map((tr) => tr.cells[0].textContent));
  report.filtered_summary = await page.locator("#machines-summary").textContent();

  step("allocate the H100 with the requirement form");
  await nav("Allocate");
  await page.getByLabel("GPU type").fill("h100");
  await page.getByLabel("For how long").selectOption("3600");
  await page.getByRole("button", { name: "Allocate", exact: true }).click();
  await page.locator("#credentials").waitFor({ state: "visible", timeout: 90000 });
  report.progress = await page.locator("#progress-log li").allTextContents();
  const creds = page.locator("#credentials");
  report.ssh_command = (await creds.locator("code.cmd").first().textContent()).trim();
  report.password_hidden_first = await creds.locator("code.password").isHidden();
  await creds.getByRole("button", { name: "Show password" }).click();
  report.password = (await creds.locator("code.password").textContent()).trim();
  report.host_key_fingerprint = await creds.locator("[id^=fp-]").count() ? await creds.locator("[id^=fp-]").textContent() : null;
  await creds.getByText("How do I log in?").click();
  report.howto = await creds.locator(".howto li").allTextContents();
  await shot("allocate");

  step("run the SSH command the page shows (on the Rust side, with the built-in client)");
  const ran = await ask("ssh", { command: report.ssh_command, password: report.password });
  report.ssh_stdout = ran.stdout;

  step("my allocations: active, online, counting down, with its SSH command");
  await nav("My allocations");
  const h100 = card("H100");
  await h100.locator("[data-state=active]").waitFor();
  await h100.locator("[data-health=online]").waitFor();
  report.h100_card_command = (await h100.locator("code.cmd").first().textContent()).trim();
  const t1 = await h100.locator("time[data-expires]").textContent();
  await page.waitForTimeout(1100);
  report.countdown = [t1, await h100.locator("time[data-expires]").textContent()];
  await shot("allocations");

  step("restart: the miner's result is shown");
  await h100.getByRole("button", { name: "Restart" }).click();
  await page.waitForFunction(() => {
    const r = [...document.querySelectorAll("article.alloc .result")].map((e) => e.textContent);
    return r.some((t) => /^(Restarted|restart failed)/.test(t));
  }, null, { timeout: 90000 });
  report.restart = await card("H100").locator(".result").textContent();

  step("pause, then unpause: each with the miner's result and the machine's observed state");
  for (const [button, done] of [["Pause", /^(Paused|pause failed)/], ["Unpause", /^(Running again|unpause failed)/]]) {
    await card("H100").getByRole("button", { name: button, exact: true }).click();
    await page.waitForFunction((src) => {
      const re = new RegExp(src);
      return [...document.querySelectorAll("article.alloc .result")].some((e) => re.test(e.textContent));
    }, done.source, { timeout: 90000 });
    report[button.toLowerCase()] = await card("H100").locator(".result").textContent();
  }

  step("allocate the 4090 from its row on the Machines view");
  await nav("Machines");
  await page.getByLabel("GPU model").selectOption("");
  await page.waitForFunction(() => [...document.querySelectorAll("#machines-rows tr")].some((r) => r.textContent.includes("4090")));
  const row = page.locator("#machines-rows tr", { hasText: "4090" });
  report.rtx_hotkey = await row.getAttribute("data-hotkey");
  await row.getByRole("button", { name: /Allocate this machine/ }).click();
  await page.getByRole("heading", { name: "Allocate a machine" }).waitFor();
  report.chosen = await page.locator("#chosen-text").textContent();
  await page.getByRole("button", { name: "Allocate", exact: true }).click();
  await page.locator("#credentials").waitFor({ state: "visible", timeout: 90000 });

  step("kill the 4090's miner: the page turns it offline by itself");
  await nav("My allocations");
  const rtx = card("4090");
  await rtx.locator("[data-health=online]").waitFor();
  const before = report.page_loads;
  await ask("kill", { hotkey: report.rtx_hotkey });
  await rtx.locator("[data-health=offline]").waitFor({ timeout: 60000 });
  report.offline_text = await rtx.locator("dd", { has: page.locator("[data-health]") }).textContent();
  report.reloaded_for_offline = report.page_loads !== before;
  await shot("allocations-offline");

  step("release the H100: it disappears");
  page.once("dialog", (d) => d.accept());
  await card("H100").getByRole("button", { name: "Release" }).click();
  await card("H100").waitFor({ state: "detached", timeout: 60000 });
  report.release_notice = await page.locator("#allocations-notice").textContent();
  report.cards_left = await page.locator("article.alloc h2").allTextContents();
  await page.getByLabel("Show ended ones").check();
  await card("H100").locator("[data-state=released]").waitFor();
  report.ended_shown = true;

  step("narrow screen");
  await page.setViewportSize({ width: 390, height: 844 });
  await nav("Machines");
  await page.getByLabel("Available only").uncheck();
  await page.waitForFunction(() => document.querySelectorAll("#machines-rows tr").length >= 3);
  report.narrow_overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  await shot("machines-narrow");

  step("a token kept in the tab (a reload): the machines without logging in again; a refused one asks to log in");
  for (const [t, key] of [[token, "stored_ok"], ["nct_revoked-or-never-was", "stored_refused"]]) {
    const other = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await other.addInitScript((v) => sessionStorage.setItem("nicompute.token", v), t);
    const p = await other.newPage();
    const errors = [];
    p.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
    await p.goto(url);
    if (t === token) {
      await p.waitForFunction(() => document.querySelectorAll("#machines-rows tr").length >= 3);
      report[key] = { rows: await p.locator("#machines-rows tr").count(), errors };
    } else {
      const refused = p.getByRole("alert").filter({ hasText: "refused" });
      await refused.waitFor();
      report[key] = {
        alert: await refused.textContent(),
        login: await p.getByRole("heading", { name: "Log in" }).isVisible(),
        rows: await p.locator("#machines-rows tr").count(),
        errors,
      };
    }
    await other.close();
  }

  emit({ done: true, report });
  await browser.close();
  process.exit(0);
} catch (e) {
  step(`failed: ${e.stack || e}`);
  await shot("failure").catch(() => {});
  // What the API says now, beside what the page showed.
  report.api_allocations = await page.evaluate(async (t) => {
    const r = await fetch("/v1/allocations?per_page=1000", { headers: { authorization: `Bearer ${t}` } });
    return r.json();
  }, token).catch((err) => String(err));
  emit({ done: false, error: String(e.message || e), report });
  await browser.close();
  process.exit(1);
}
