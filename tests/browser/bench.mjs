// The dashboard's figures for `scripts/bench.sh web` (crates/bench/src/web.rs starts the server
// over 1,024 miners and reads this script's one JSON line). Times come from the page's own
// performance marks, measured from the navigation's start: `machines:first-render` is set in
// the frame after the one that drew the first rows, so the rows have been painted.

import { launch, need } from "./lib.mjs";

const url = need("NICOMPUTE_URL");
const token = need("NICOMPUTE_TOKEN");
const runs = Number(process.env.NICOMPUTE_RUNS || 10);

const browser = await launch();
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p) => s[Math.min(s.length - 1, Math.round((s.length - 1) * p))];
  return { p50: at(0.5), p90: at(0.9), max: s[s.length - 1], runs: s };
};

/** A fresh context (empty cache) whose tab already holds the token, as after logging in. */
async function context() {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await ctx.addInitScript((t) => sessionStorage.setItem("nicompute.token", t), token);
  return ctx;
}

async function firstRender(page) {
  await page.waitForFunction(() => performance.getEntriesByName("machines:first-render").length > 0, null, { timeout: 30000 });
  return page.evaluate(() => performance.getEntriesByName("machines:first-render")[0].startTime);
}

/** Where a cold first render's time went: each step's end, from the navigation's start. */
function timeline() {
  const nav = performance.getEntriesByType("navigation")[0];
  const res = performance.getEntriesByType("resource");
  const end = (f) => Math.max(0, ...res.filter((r) => f(new URL(r.name).pathname)).map((r) => r.responseEnd));
  const mark = (n) => performance.getEntriesByName(n)[0]?.startTime ?? NaN;
  return {
    html: nav.responseEnd,
    me: end((p) => p === "/v1/me"),
    lists: end((p) => p.startsWith("/v1/resources")),
    scripts: nav.domContentLoadedEventEnd,
    view: mark("machines:load"),
    rendered: mark("machines:rendered"),
    painted: mark("machines:first-render"),
  };
}

const phases = [];
const cold = [];
const warm = [];
const thousand = [];
let assets = null;
for (let i = 0; i < runs; i++) {
  const ctx = await context();
  const page = await ctx.newPage();
  await page.goto(url);
  cold.push(await firstRender(page));
  phases.push(await page.evaluate(timeline));
  if (!assets) {
    assets = await page.evaluate(() => {
      const nav = performance.getEntriesByType("navigation")[0];
      const files = performance.getEntriesByType("resource").filter((r) => new URL(r.name).pathname.startsWith("/ui/"));
      const all = [nav, ...files];
      return {
        files: all.length,
        transfer_bytes: all.reduce((t, r) => t + r.encodedBodySize, 0),
        decoded_bytes: all.reduce((t, r) => t + r.decodedBodySize, 0),
        rows: document.querySelectorAll("#machines-rows tr").length,
        summary: document.querySelector("#machines-summary").textContent,
      };
    });
    if (!/of 1024 machines/.test(assets.summary)) throw new Error(`the page does not show 1,024 machines: ${assets.summary}`);
  }
  await page.reload();
  warm.push(await firstRender(page));
  // All 1,000 rows of a page: from the choice to the rows painted.
  thousand.push(await page.evaluate(() => new Promise((done) => {
    const t0 = performance.now();
    const sel = document.querySelector("#per-page");
    sel.value = "1000";
    sel.dispatchEvent(new Event("change"));
    const check = () => {
      if (document.querySelectorAll("#machines-rows tr").length >= 1000) {
        requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0));
      } else {
        setTimeout(check, 1);
      }
    };
    check();
  })));
  await ctx.close();
}

process.stdout.write(`${JSON.stringify({
  cold: stats(cold),
  warm: stats(warm),
  thousand: stats(thousand),
  phases: Object.fromEntries(Object.keys(phases[0]).map((k) => [k, stats(phases.map((p) => p[k])).p50])),
  assets,
  browser: `chromium ${browser.version()}`,
})}\n`);
await browser.close();
process.exit(0);
