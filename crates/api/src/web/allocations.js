// My allocations: each one's state, time left, health from the server's checks (online or
// offline), how to log in, and the actions — restart, pause, unpause, exchange key, release —
// each answered with what the miner actually did (the API's result or its problem's words).
// Kept current by the live stream, with a slow poll as a safety net.

import { call, get } from "./api.js";
import { $, ago, announce, fill, h, shortKey, span } from "./dom.js";
import { credentials } from "./allocate.js";

const ENDED = new Set(["released", "failed"]);
const state = { seq: 0, items: [], poll: null, tick: null, visible: false, busy: new Set() };
/** The last result line of each allocation (kept across re-renders). */
const results = new Map();
let ctx = null;
let timer = null;

export function init(c) {
  ctx = c;
  $("#show-ended").addEventListener("change", render);
  $("#allocations-refresh").addEventListener("click", load);
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(load, 100);
  };
  for (const kind of ["allocation", "health"]) {
    c.bus.addEventListener(kind, () => { if (state.visible) soon(); });
  }
  c.bus.addEventListener("connection", (e) => { if (e.detail === "live" && state.visible) soon(); });
}

export function show() {
  state.visible = true;
  load();
  clearInterval(state.poll);
  clearInterval(state.tick);
  state.poll = setInterval(load, 20000);
  state.tick = setInterval(countdown, 1000);
}

export function hide() {
  state.visible = false;
  clearInterval(state.poll);
  clearInterval(state.tick);
}

async function load() {
  const seq = ++state.seq;
  try {
    const page = await get("/v1/allocations?per_page=1000");
    if (seq !== state.seq) return;
    state.items = page.items;
    $("#allocations-error").textContent = "";
  } catch (e) {
    if (seq === state.seq) $("#allocations-error").textContent = `Cannot list your allocations: ${e.message}`;
    return;
  }
  render();
}

function render() {
  const showEnded = $("#show-ended").checked;
  const items = state.items.filter((a) => showEnded || !ENDED.has(a.state))
    .sort((a, b) => (b.created_at_ms || 0) - (a.created_at_ms || 0));
  $("#allocations-empty").hidden = items.length > 0;
  const list = $("#allocations-list");
  // Keep focus where it was across a re-render (a live update must not steal it).
  const focused = document.activeElement && list.contains(document.activeElement)
    ? document.activeElement.dataset.focusKey : null;
  fill(list, items.map(card));
  if (focused) {
    const again = list.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  countdown();
}

function health(a) {
  if (a.state !== "active" && a.state !== "releasing") return h("span", { class: "badge" }, "–");
  const hs = a.health;
  if (!hs) return h("span", { class: "badge" }, "not checked yet");
  const online = hs.status === "ONLINE";
  return h("span", {},
    h("span", { class: `badge ${online ? "ok" : "bad"}`, "data-health": online ? "online" : "offline" }, online ? "Online" : "Offline"),
    " checked ", h("span", { "data-ago": String(hs.last_check_ms ?? "") }, ago(hs.last_check_ms)),
    !online && hs.failures ? ` (${hs.failures} failed check${hs.failures === 1 ? "" : "s"})` : "");
}

/** The machine's GPU; once it is gone, what was asked for. */
function titleOf(a) {
  const m = a.machine || {};
  if (m.resource) return String(m.resource);
  const r = a.request || {};
  const g = r.requirement && r.requirement.gpu;
  if (r.hotkey) return `The machine of miner ${shortKey(r.hotkey)}`;
  if (g && g.type) return `${g.count > 1 ? `${g.count} × ` : ""}${g.type} (as asked for)`;
  return "Any machine (as asked for)";
}

function card(a) {
  const id = String(a.id);
  const m = a.machine || {};
  const title = titleOf(a);
  const result = h("p", { class: "result", role: "status", "aria-live": "polite", id: `result-${id}` });
  const last = results.get(id);
  if (last) {
    result.textContent = last.text;
    result.classList.toggle("error", !last.ok);
  }
  const active = a.state === "active";
  const canAct = ctx.canAllocate && !state.busy.has(id);
  const button = (label, action, extra = {}) => h("button", {
    type: "button", class: "small", "data-focus-key": `${id}:${action}`, disabled: !canAct || !active,
    onclick: () => act(a, action, result), ...extra,
  }, label);
  const rows = [
    ["State", h("span", { class: `badge state-${a.state}`, "data-state": a.state }, a.state)],
    ["Health", health(a)],
    ["Time left", m.expires_at_ms
      ? h("time", { "data-expires": String(m.expires_at_ms), datetime: new Date(m.expires_at_ms).toISOString() })
      : (active ? "no end set" : "–")],
    ["Miner", h("code", { title: String(a.hotkey || "") }, shortKey(a.hotkey || "–"))],
    ["Since", new Date(a.created_at_ms).toLocaleString()],
  ];
  if (a.error) rows.push(["Error", a.error]);
  const key = h("form", { class: "exchange", hidden: true, "aria-label": "Exchange the SSH key" },
    h("label", { for: `key-${id}` }, "New SSH public key"),
    h("textarea", { id: `key-${id}`, name: "ssh_key", rows: 2, spellcheck: "false", required: true }),
    h("label", { for: `kt-${id}` }, "Key for"),
    h("select", { id: `kt-${id}`, name: "key_type" }, h("option", { value: "user" }, "logging in (user)"), h("option", { value: "terminal" }, "the web terminal (terminal)")),
    h("button", { type: "submit", class: "small", "data-focus-key": `${id}:exchange-send` }, "Send the new key"));
  key.addEventListener("submit", (e) => {
    e.preventDefault();
    act(a, "exchange-key", result, { ssh_key: key.ssh_key.value.trim(), key_type: key.key_type.value });
  });
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Actions" },
    button("Restart", "restart"),
    button("Pause", "pause"),
    button("Unpause", "unpause"),
    button("Exchange key", "toggle-key", {
      "aria-expanded": "false",
      onclick: (e) => {
        key.hidden = !key.hidden;
        e.currentTarget.setAttribute("aria-expanded", String(!key.hidden));
        if (!key.hidden) key.ssh_key.focus();
      },
    }),
    h("button", {
      type: "button", class: "small danger", "data-focus-key": `${id}:release`,
      disabled: !ctx.canAllocate || state.busy.has(id) || !["active", "releasing"].includes(a.state),
      onclick: () => release(a, result),
    }, "Release"));
  return h("article", { class: "card alloc", "data-id": id, "aria-labelledby": `t-${id}` },
    h("h2", { id: `t-${id}` }, title),
    h("dl", {}, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    (active || a.state === "releasing") && m.ssh_command ? h("div", { class: "login" }, credentials(a)) : null,
    active || a.state === "releasing" ? actions : null,
    key,
    result);
}

function countdown() {
  const now = Date.now();
  for (const t of document.querySelectorAll("#allocations-list time[data-expires]")) {
    const left = Number(t.dataset.expires) - now;
    t.textContent = left > 0 ? span(left) : "ended";
  }
  for (const t of document.querySelectorAll("#allocations-list [data-ago]")) {
    t.textContent = ago(t.dataset.ago ? Number(t.dataset.ago) : undefined, now);
  }
}

const DONE = {
  restart: "Restarted: the miner confirmed and the machine answers again.",
  pause: "Paused: the miner confirmed and the machine shows it.",
  unpause: "Running again: the miner confirmed and the machine shows it.",
  "exchange-key": "Key exchanged: the miner confirmed and the machine shows it.",
};

function say(id, result, text, ok) {
  results.set(id, { text, ok });
  result.textContent = text;
  result.classList.toggle("error", !ok);
  announce(text);
}

async function act(a, action, result, body) {
  if (action === "toggle-key") return;
  const id = String(a.id);
  state.busy.add(id);
  say(id, result, `Asking the miner (${action})…`, true);
  for (const b of result.parentElement.querySelectorAll("button")) b.disabled = true;
  try {
    const { data } = await call("POST", `/v1/allocations/${encodeURIComponent(id)}/${action}`, body || {});
    say(id, result, data.done ? DONE[action] : `The miner answered, but the machine does not show it yet (${action}).`, !!data.done);
  } catch (e) {
    say(id, result, `${action} failed: ${e.message}`, false);
  } finally {
    state.busy.delete(id);
    load();
  }
}

async function release(a, result) {
  const id = String(a.id);
  if (!confirm(`Release this machine (${a.machine && a.machine.resource ? a.machine.resource : shortKey(a.hotkey)})? Everything on it is lost.`)) return;
  state.busy.add(id);
  say(id, result, "Asking the miner to release it…", true);
  for (const b of result.parentElement.querySelectorAll("button")) b.disabled = true;
  try {
    const r = await call("DELETE", `/v1/allocations/${encodeURIComponent(id)}`);
    const text = r.status === 202
      ? "Releasing: the miner did not confirm yet; the server keeps asking."
      : "Released: the miner confirmed. The machine is no longer yours.";
    say(id, result, text, true);
    $("#allocations-notice").textContent = `${a.machine && a.machine.resource ? a.machine.resource : "The machine"}: ${text}`;
  } catch (e) {
    say(id, result, `Release failed: ${e.message}`, false);
  } finally {
    state.busy.delete(id);
    load();
  }
}
