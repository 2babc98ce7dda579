// The dashboard's only way to make markup: elements built one by one, every value set as text
// (a miner's answer is hostile input; nothing it sends is ever parsed as HTML).

const SVG = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: `h("td", {class: "x"}, "text", child)`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG, tag), attrs, children);
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  return build(el, {}, children);
}

/** Says `text` to screen readers (and shows it in the live line). */
export function announce(text) {
  const el = $("#announce");
  if (el) el.textContent = text;
}

export function shortKey(hk) {
  return typeof hk === "string" && hk.length > 14 ? `${hk.slice(0, 6)}…${hk.slice(-6)}` : String(hk ?? "");
}

export function gb(x) {
  if (typeof x !== "number" || !isFinite(x)) return "–";
  return x >= 100 ? `${Math.round(x)} GB` : `${x.toFixed(1)} GB`;
}

/** "3 h 12 min", "45 s": how long `ms` is. */
export function span(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d} d ${hh} h`;
  if (hh > 0) return `${hh} h ${m} min`;
  if (m > 0) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

/** "5 min ago" for a Unix time in ms. */
export function ago(ms, now = Date.now()) {
  return typeof ms === "number" ? `${span(now - ms)} ago` : "never";
}

/** Copies `text`; says whether it worked (clipboard access needs a secure context). */
export async function copy(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    // Off a secure origin: select a hidden field and use the older command.
    const t = h("textarea", { class: "offscreen", "aria-hidden": "true" });
    t.value = text;
    document.body.append(t);
    t.select();
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    t.remove();
  }
  const was = button.textContent;
  button.textContent = ok ? "Copied" : "Select and copy it by hand";
  announce(ok ? "Copied to the clipboard" : "Could not copy: select the text and copy it");
  setTimeout(() => { button.textContent = was; }, 2000);
}
