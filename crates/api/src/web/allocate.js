// Allocate: a requirement form (or one machine chosen on the Machines view), the progress the
// server reports while it asks the miners, then how to log in: the SSH command with a copy
// button, the password revealed on click (the API gives it once), the pinned host key.

import { call, get } from "./api.js";
import { $, announce, copy, fill, gb, h, shortKey, span } from "./dom.js";

let ctx = null;
let chosen = null;
let busy = false;
/** Progress events seen, by allocation id (they may come before the POST's answer). */
const progress = new Map();
let watching = null;

export function init(c) {
  ctx = c;
  $("#allocate-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  $("#chosen-clear").addEventListener("click", () => choose(null));
  c.bus.addEventListener("progress", (e) => {
    const ev = e.detail;
    if (typeof ev.id !== "string") return;
    const seen = progress.get(ev.id) || [];
    seen.push(ev);
    progress.set(ev.id, seen.slice(-20));
    if (watching === ev.id) step(ev);
  });
}

export function show(_ctx, arg) {
  if (arg && arg.machine) choose(arg.machine);
  $("#allocate-submit").disabled = busy || !ctx.canAllocate;
  if (!ctx.canAllocate) $("#allocate-error").textContent = "This token can only look (scope read): ask for one with scope allocate to rent a machine.";
}

function choose(machine) {
  chosen = machine;
  $("#chosen").hidden = !machine;
  $("#requirement").hidden = !!machine;
  $("#requirement").disabled = !!machine;
  if (machine) {
    $("#chosen-text").textContent =
      `${machine.gpu_count} × ${machine.gpu_name} (${gb(machine.gpu_size_gb)} each), ${machine.vcpus} CPUs, ${gb(machine.ram_gb)} RAM, miner ${shortKey(machine.hotkey)}`;
  }
}

function number(input) {
  const v = input.value.trim();
  if (v === "") return undefined;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : NaN;
}

function order() {
  const f = $("#allocate-form");
  const body = { ttl_seconds: Number(f.ttl.value) };
  const key = f.ssh_key.value.trim();
  if (key) {
    if (!/^(ssh-|ecdsa-|sk-ssh-|sk-ecdsa-)\S+ \S+/.test(key) || /[\r\n]/.test(key)) {
      throw new Error("The SSH key should be one line starting with ssh-ed25519, ssh-rsa or ecdsa-… (the content of your .pub file).");
    }
    body.ssh_key = key;
  }
  if (chosen) {
    body.hotkey = chosen.hotkey;
    return body;
  }
  const req = {};
  const gpu = f.gpu_type.value.trim();
  if (gpu) req.gpu_type = gpu;
  for (const [name, label, whole] of [["gpu_size_gb", "Memory per GPU", false], ["gpu_count", "GPUs", true],
    ["cpu_count", "CPUs", true], ["ram_gb", "RAM", false], ["disk_gb", "Disk", false]]) {
    const v = number(f[name]);
    if (Number.isNaN(v) || (whole && v !== undefined && !Number.isInteger(v))) {
      f[name].focus();
      throw new Error(`${label}: give a ${whole ? "whole " : ""}number, 0 or more.`);
    }
    if (v !== undefined) req[name] = v;
  }
  body.requirement = req;
  return body;
}

function step(ev) {
  const text = String(ev.detail || ev.state);
  $("#progress-now").textContent = `${text[0].toUpperCase()}${text.slice(1)}…`;
  $("#progress-log").append(h("li", {}, text));
}

async function submit() {
  if (busy) return;
  const err = $("#allocate-error");
  err.textContent = "";
  let body;
  try {
    body = order();
  } catch (e) {
    err.textContent = e.message;
    return;
  }
  busy = true;
  $("#allocate-submit").disabled = true;
  $("#credentials").hidden = true;
  $("#progress").hidden = false;
  fill($("#progress-log"));
  $("#progress-now").textContent = "Sending the request…";
  const started = Date.now();
  const tick = setInterval(() => {
    $("#progress-bar").title = `${span(Date.now() - started)} so far`;
  }, 1000);
  try {
    let { data: a } = await call("POST", "/v1/allocations", body);
    watching = a.id;
    for (const ev of progress.get(a.id) || []) step(ev);
    if (a.state === "allocating") $("#progress-now").textContent = "Looking for a machine…";
    // Waits in steps of 30 s, so a slow check of many miners never looks like a hang.
    while (a.state === "allocating") {
      a = await get(`/v1/allocations/${encodeURIComponent(a.id)}?wait=30`);
    }
    watching = null;
    $("#progress").hidden = true;
    if (a.state === "active") {
      ready(a);
    } else {
      err.textContent = `Nothing was allocated: ${a.error || a.state}. Try a smaller requirement or another machine.`;
    }
  } catch (e) {
    $("#progress").hidden = true;
    err.textContent = `Nothing was allocated: ${e.message}`;
  } finally {
    clearInterval(tick);
    watching = null;
    busy = false;
    $("#allocate-submit").disabled = !ctx.canAllocate;
  }
}

function ready(a) {
  fill($("#credentials-body"), credentials(a, { fresh: true }));
  $("#credentials").hidden = false;
  $("#credentials-title").focus();
  announce("Your machine is ready. The login details follow.");
  choose(null);
}

/**
 * How to log in to allocation `a`: the SSH command (copy), the password (revealed on click,
 * when this answer has it), the pinned host key, and the steps for someone new to a terminal.
 */
export function credentials(a, { fresh = false } = {}) {
  const m = a.machine || {};
  const id = String(a.id).replace(/[^A-Za-z0-9-]/g, "");
  const command = String(m.ssh_command || "");
  const parts = [];
  parts.push(h("p", {}, `Machine: ${m.resource || "?"} from miner `,
    h("code", { title: String(a.hotkey) }, shortKey(a.hotkey)), m.expires_at_ms ? `, until ${new Date(m.expires_at_ms).toLocaleString()}` : ""));
  const cmd = h("code", { class: "cmd", id: `ssh-${id}` }, command);
  parts.push(h("div", { class: "secret" }, h("span", { class: "k" }, "SSH command"), cmd,
    h("button", { type: "button", class: "small", "aria-label": "Copy the SSH command", onclick: (e) => copy(command, e.currentTarget) }, "Copy")));
  if (typeof m.password === "string" && m.password) {
    const pw = h("code", { class: "cmd password", id: `pw-${id}`, hidden: true }, m.password);
    const reveal = h("button", { type: "button", class: "small", "aria-expanded": "false", "aria-controls": `pw-${id}` }, "Show password");
    reveal.addEventListener("click", () => {
      pw.hidden = !pw.hidden;
      reveal.setAttribute("aria-expanded", String(!pw.hidden));
      reveal.textContent = pw.hidden ? "Show password" : "Hide password";
    });
    parts.push(h("div", { class: "secret" }, h("span", { class: "k" }, "Password"), reveal, pw,
      h("button", { type: "button", class: "small", "aria-label": "Copy the password", onclick: (e) => copy(m.password, e.currentTarget) }, "Copy")));
    if (fresh) parts.push(h("p", { class: "warn-text" }, "The password is shown this once: copy it somewhere safe now."));
  } else if (fresh || m.ssh_key_injected) {
    parts.push(h("p", {}, m.ssh_key_injected ? "Your SSH key is installed: ssh logs in with it." : "The password was shown when the machine was allocated."));
  }
  const fp = m.host_key_fingerprint;
  if (typeof fp === "string" && fp) {
    parts.push(h("div", { class: "secret" }, h("span", { class: "k" }, "Host key (pinned)"), h("code", { class: "cmd", id: `fp-${id}` }, fp)));
  }
  parts.push(h("details", { class: "howto" }, h("summary", {}, "How do I log in?"),
    h("ol", {},
      h("li", {}, "Open a terminal: on Windows, PowerShell (Start menu, type “PowerShell”); on macOS, Terminal (Spotlight, type “Terminal”); on Linux, your terminal."),
      h("li", {}, "Paste the SSH command above and press Enter."),
      h("li", {}, typeof fp === "string" && fp
        ? `The first time, ssh asks whether to trust the machine and shows a fingerprint: type yes only if it is ${fp}.`
        : "The first time, ssh asks whether to trust the machine: type yes."),
      h("li", {}, m.ssh_key_injected ? "Your key logs you in." : "When it asks for the password, paste it (nothing shows while you type) and press Enter."),
      h("li", {}, "You are in: type exit to leave. Release the machine on “My allocations” when you are done."))));
  return parts;
}
