// Machines: the network's resources with list_r's filters and sort (asked of the API, which
// filters and pages), a bar chart of GPUs by model (inline SVG), and "allocate this machine".

import { get, query } from "./api.js";
import { $, ago, fill, gb, h, s, shortKey } from "./dom.js";

const state = { page: 1, perPage: 50, sort: "hotkey", seq: 0, first: true };
let ctx = null;
let timer = null;

function filters() {
  const f = $("#filters");
  return {
    gpu: f.gpu.value,
    gpu_size_min: f.gpu_size_min.value,
    gpu_count_min: f.gpu_count_min.value,
    max_age_seconds: f.max_age_seconds.value,
    available: f.available.checked,
    sort: f.sort.value,
  };
}

export function init(c) {
  ctx = c;
  const f = $("#filters");
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.page = 1; load(); }, 150);
  };
  f.addEventListener("input", later);
  f.addEventListener("change", later);
  f.addEventListener("submit", (e) => e.preventDefault());
  $("#prev").addEventListener("click", () => { state.page -= 1; load(); });
  $("#next").addEventListener("click", () => { state.page += 1; load(); });
  $("#per-page").addEventListener("change", (e) => {
    state.perPage = Number(e.target.value);
    state.page = 1;
    load();
  });
  // Column headers sort too (buttons, so the keyboard reaches them).
  for (const th of document.querySelectorAll("#machines-table th[data-sort]")) {
    const label = th.textContent;
    fill(th, h("button", { type: "button", class: "sort", onclick: () => {
      f.sort.value = th.dataset.sort;
      state.page = 1;
      load();
    } }, label));
  }
  // Availability changes when anything is allocated or released.
  c.bus.addEventListener("allocation", (e) => {
    if (["active", "released"].includes(e.detail.state) && !$("#view-machines").hidden) later();
  });
}

export function show() {
  load();
}

/** The requests behind one page of rows and the chart, started at once. */
function requests(f) {
  const list = get(`/v1/resources${query({ ...f, page: state.page, per_page: state.perPage })}`);
  const { sort, gpu, ...rest } = f;
  // The chart: every model among the machines the other filters keep.
  const c = get(`/v1/resources/counts${query(rest)}`);
  // The model list: the whole network (once).
  const n = state.models ? null : get("/v1/resources/counts");
  return Promise.all([list, c, n]);
}

/** The first page's requests, started before the log-in check answers (see `prefetch`). */
let early = null;

/**
 * Starts the first page's requests now, while app.js checks a token kept from before (it is
 * usually still good): the rows arrive a round trip sooner. A refused token is handled by the
 * check; the early answer is then dropped.
 */
export function prefetch() {
  const key = JSON.stringify([filters(), state.page, state.perPage]);
  const promise = requests(filters());
  early = { key, promise };
  promise.catch(() => {
    if (early && early.promise === promise) early = null;
  });
}

async function load() {
  const seq = ++state.seq;
  const f = filters();
  const err = $("#machines-error");
  performance.mark("machines:load");
  const key = JSON.stringify([f, state.page, state.perPage]);
  const pending = early && early.key === key ? early.promise : null;
  early = null;
  let page, counts, network;
  try {
    [page, counts, network] = await (pending || requests(f));
  } catch (e) {
    if (seq === state.seq) err.textContent = `Cannot list the machines: ${e.message}`;
    return;
  }
  if (seq !== state.seq) return;
  err.textContent = "";
  if (network) models(network);
  // The chart first: it reads its width (a layout) before the rows make the page long.
  chart(counts, f.gpu);
  rows(page);
  pager(page);
  for (const th of document.querySelectorAll("#machines-table th[data-sort]")) {
    th.setAttribute("aria-sort", th.dataset.sort === f.sort ? (["hotkey", "gpu"].includes(f.sort) ? "ascending" : "descending") : "none");
  }
  const from = page.total ? (page.page - 1) * page.per_page + 1 : 0;
  const to = from ? from + page.items.length - 1 : 0;
  $("#machines-summary").textContent = page.total
    ? `Showing ${from}–${to} of ${page.total} machine${page.total === 1 ? "" : "s"}.`
    : "No machine matches these filters.";
  performance.mark("machines:rendered");
  if (state.first) {
    state.first = false;
    // Marked once the rows are painted (the frame after the one that drew them).
    requestAnimationFrame(() => setTimeout(() => performance.mark("machines:first-render"), 0));
  }
}

function models(counts) {
  state.models = counts.models.map((m) => String(m.model));
  const sel = $("#f-gpu");
  const chosen = sel.value;
  fill(sel, h("option", { value: "" }, "Any"), state.models.map((m) => h("option", { value: m }, m)));
  sel.value = chosen;
  fill($("#gpu-models"), state.models.map((m) => h("option", { value: m })));
}

function rows(page) {
  const now = Date.now();
  const body = $("#machines-rows");
  const out = document.createDocumentFragment();
  for (const r of page.items) {
    const free = !r.allocated;
    const status = h("td", { "data-label": "Status" },
      h("span", { class: `badge ${free ? "ok" : "busy"}` }, free ? "Available" : "Allocated"),
      r.stale ? h("span", { class: "badge warn", title: String(r.last_error || "no answer to the last sync") }, "stale") : null);
    const action = h("td", { class: "act" });
    if (free && ctx.canAllocate) {
      action.append(h("button", {
        type: "button",
        class: "small",
        "aria-label": `Allocate this machine: ${r.gpu_count} × ${r.gpu_name}, miner ${shortKey(r.hotkey)}`,
        onclick: () => ctx.go("allocate", { machine: r }),
      }, "Allocate this machine"));
    }
    out.append(h("tr", { "data-hotkey": r.hotkey },
      h("td", { "data-label": "GPU" }, r.gpu_name),
      h("td", { "data-label": "Memory / GPU", class: "num" }, gb(r.gpu_size_gb)),
      h("td", { "data-label": "GPUs", class: "num" }, r.gpu_count),
      h("td", { "data-label": "CPUs", class: "num" }, r.vcpus),
      h("td", { "data-label": "RAM", class: "num" }, gb(r.ram_gb)),
      h("td", { "data-label": "Disk", class: "num" }, gb(r.disk_gb)),
      status,
      h("td", { "data-label": "Specs" }, ago(r.specs_updated_ms, now)),
      h("td", { "data-label": "Miner" }, h("code", { title: r.hotkey }, shortKey(r.hotkey))),
      action));
  }
  body.replaceChildren(out);
}

function pager(page) {
  const pages = Math.max(1, Math.ceil(page.total / page.per_page));
  $("#page-info").textContent = `Page ${page.page} of ${pages}`;
  $("#prev").disabled = page.page <= 1;
  $("#next").disabled = !page.next_page;
}

/** Horizontal bars: GPUs per model, the available part in a second colour. */
function chart(counts, chosen) {
  const list = [...counts.models].sort((a, b) => b.gpus - a.gpus || String(a.model).localeCompare(String(b.model)));
  const shown = list.slice(0, 12);
  const rest = list.slice(12);
  if (rest.length) {
    const sum = (k) => rest.reduce((t, m) => t + (m[k] || 0), 0);
    shown.push({ model: `${rest.length} other models`, gpus: sum("gpus"), available_gpus: sum("available_gpus"), machines: sum("machines"), other: true });
  }
  const body = $("#chart-body");
  const freeGpus = list.reduce((t, m) => t + (m.available_gpus || 0), 0);
  $("#chart-caption").textContent = `GPUs by model: ${counts.total_gpus} GPUs on ${counts.total_machines} machines, ${freeGpus} GPUs available`;
  if (!shown.length) {
    fill(body, h("p", { class: "summary" }, "No machine with a GPU matches."));
    return;
  }
  const max = Math.max(...shown.map((m) => m.gpus), 1);
  // Drawn at the width it is shown at, so the text stays readable on a phone.
  const width = Math.min(700, Math.max(300, body.clientWidth || 700));
  const rowH = 26, labelW = Math.round(Math.min(210, width * 0.4)), barW = width - labelW - 120;
  const chars = Math.floor(labelW / 7.5);
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${shown.length * rowH + 6}`,
    class: "bars",
    role: "img",
    "aria-labelledby": "chart-caption chart-desc",
  });
  const desc = shown.map((m) => `${m.model}: ${m.gpus} GPUs, ${m.available_gpus} available`).join("; ");
  svg.append(s("desc", { id: "chart-desc" }, desc));
  shown.forEach((m, i) => {
    const y = i * rowH + 3;
    const w = Math.max(2, (m.gpus / max) * barW);
    const fw = (m.available_gpus / max) * barW;
    const g = s("g", { class: m.model === chosen ? "chosen" : "" },
      s("text", { x: labelW - 8, y: y + 15, "text-anchor": "end", class: "label" }, truncate(String(m.model), chars)),
      s("rect", { x: labelW, y: y + 3, width: w, height: rowH - 8, rx: 3, class: "all" }),
      s("rect", { x: labelW, y: y + 3, width: fw, height: rowH - 8, rx: 3, class: "free" }),
      s("text", { x: labelW + w + 6, y: y + 15, class: "value" }, `${m.gpus} (${m.available_gpus} free)`),
      s("title", {}, `${m.model}: ${m.gpus} GPUs on ${m.machines} machines, ${m.available_gpus} GPUs available`));
    svg.append(g);
  });
  fill(body, svg, h("p", { class: "legend" },
    h("span", { class: "key all" }), " all GPUs ", h("span", { class: "key free" }), " available"));
}

function truncate(t, n) {
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}
