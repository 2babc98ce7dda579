// The dashboard's entry: logging in with a pasted token, the three views (hash routes
// #machines, #allocate, #allocations), and the live stream that tells the views what changed.

import { ApiError, call, follow, forget, hasToken, setToken, whenUnauthorized } from "./api.js";
import { $, announce } from "./dom.js";
import * as machines from "./machines.js";
import * as allocate from "./allocate.js";
import * as allocations from "./allocations.js";

const views = { machines, allocate, allocations };

/** What the views share: who is logged in, the live events, moving between views. */
const ctx = {
  me: null,
  canAllocate: false,
  bus: new EventTarget(),
  go(view, arg) {
    pending = arg;
    if (location.hash === `#${view}`) route();
    else location.hash = view;
  },
};

let pending = null;
let stopEvents = null;
let started = false;

function showLogin(message) {
  $("#login").hidden = false;
  $("#nav").hidden = true;
  $("#session").hidden = true;
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

function explain(e) {
  if (!(e instanceof ApiError)) return String(e);
  if (e.status === 401) {
    return `This token was refused (${e.detail || "unknown token"}). Check that you pasted all of it, or ask for a new one.`;
  }
  return `${e.title}${e.detail ? `: ${e.detail}` : ""}`;
}

async function logIn(token) {
  const r = await call("GET", "/v1/me", undefined, token);
  setToken(token);
  await start(r.data);
}

async function start(me) {
  ctx.me = me;
  ctx.canAllocate = me.level === "allocate" || me.level === "admin";
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#session").hidden = false;
  $("#who").textContent = `${me.name} (${me.scope})`;
  document.body.classList.toggle("read-only", !ctx.canAllocate);
  if (!started) {
    started = true;
    for (const v of Object.values(views)) v.init(ctx);
    addEventListener("hashchange", route);
  }
  stopEvents = follow(
    (kind, ev) => ctx.bus.dispatchEvent(new CustomEvent(kind, { detail: ev })),
    (state) => {
      const live = $("#live");
      live.textContent = state === "live" ? "live" : state === "reconnecting" ? "reconnecting…" : "offline";
      live.className = `live is-${state}`;
      ctx.bus.dispatchEvent(new CustomEvent("connection", { detail: state }));
    },
  );
  route();
}

function route() {
  if (!ctx.me) return;
  const name = location.hash.slice(1);
  const view = views[name] ? name : "machines";
  for (const [n, v] of Object.entries(views)) {
    const el = $(`#view-${n}`);
    const on = n === view;
    el.hidden = !on;
    const link = $(`#nav a[data-view="${n}"]`);
    if (on) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
    if (!on && v.hide) v.hide();
  }
  const arg = pending;
  pending = null;
  views[view].show(ctx, arg);
  // Keyboard and screen-reader users land on the view's heading.
  const title = $(`#view-${view} h1`);
  if (document.activeElement !== title && !arg?.keepFocus) title.focus({ preventScroll: true });
  announce(`${title.textContent} view`);
}

function logOut(message) {
  if (stopEvents) stopEvents();
  stopEvents = null;
  forget();
  ctx.me = null;
  history.replaceState(null, "", location.pathname);
  showLogin(message);
}

whenUnauthorized((e) => logOut(explain(e)));

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("#token");
  const token = input.value.trim();
  const err = $("#login-error");
  if (!token) {
    err.textContent = "Paste your token first.";
    input.focus();
    return;
  }
  err.textContent = "Checking the token…";
  try {
    await logIn(token);
    input.value = "";
    err.textContent = "";
  } catch (e) {
    err.textContent = explain(e);
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
});

$("#logout").addEventListener("click", () => logOut("Logged out."));

if (hasToken()) {
  // A token kept from before (a reload): the first view's data is asked for while it is checked.
  if (["", "#machines"].includes(location.hash)) machines.prefetch();
  call("GET", "/v1/me")
    .then((r) => start(r.data))
    .catch((e) => logOut(explain(e)));
} else {
  showLogin();
}
