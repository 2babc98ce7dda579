// What the browser scripts share: Debian's chromium launched headless through playwright-core
// (never a browser download), with the flags that work in a container and a fresh profile each
// time, and the line protocol with the Rust test that runs the script (JSON lines on stdout;
// answers to questions on stdin).

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Launches chromium (playwright gives it a new temporary profile directory). */
export async function launch() {
  return chromium.launch({
    executablePath: process.env.NICOMPUTE_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
  });
}

/** A setting the Rust side must give. */
export function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is not set (this script is run by the Rust tests and benchmarks)`);
    process.exit(2);
  }
  return v;
}

export function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the Rust side to do something (`{ask, ...}`) and waits for its one-line JSON answer. */
export async function ask(what, args) {
  emit({ ask: what, ...args });
  const { value, done } = await lines.next();
  if (done) throw new Error(`no answer to ${what}: stdin closed`);
  const answer = JSON.parse(value);
  if (!answer.ok) throw new Error(`${what} failed on the Rust side: ${answer.error}`);
  return answer;
}

/** Logs a step on stderr (shown with the test's output when it fails). */
export function step(text) {
  process.stderr.write(`[browser] ${text}\n`);
}
