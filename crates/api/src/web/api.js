// The dashboard's client of `/v1`: every request carries the pasted token (kept in this tab's
// sessionStorage only: closing the tab forgets it), errors come back as the API's RFC 9457
// problems, and the live stream (`/v1/events`, server-sent events) is read with fetch so that
// it can carry the token too (EventSource cannot send an Authorization header).

const KEY = "nicompute.token";

let token = sessionStorage.getItem(KEY);
let onUnauthorized = () => {};

/** A refused request: the HTTP status and the problem the API sent (`title`, `detail`). */
export class ApiError extends Error {
  constructor(status, problem) {
    const p = problem && typeof problem === "object" ? problem : {};
    super(`${p.title || `HTTP ${status}`}: ${p.detail || ""}`.replace(/: $/, ""));
    this.status = status;
    this.title = String(p.title || `HTTP ${status}`);
    this.detail = typeof p.detail === "string" ? p.detail : "";
  }
}

export function hasToken() {
  return !!token;
}

export function setToken(t) {
  token = t;
  sessionStorage.setItem(KEY, t);
}

export function forget() {
  token = null;
  sessionStorage.removeItem(KEY);
}

/** What to do when the server refuses the token (revoked while the page was open). */
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

/** `method path` with `body` as JSON; `{status, data}`, or throws an ApiError. */
export async function call(method, path, body, t = token) {
  const headers = { accept: "application/json" };
  if (t) headers.authorization = `Bearer ${t}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, {
      title: "The server cannot be reached",
      detail: `${e.message}. Is nicompute serve still running?`,
    });
  }
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!r.ok) {
    const err = new ApiError(r.status, data || { detail: text.slice(0, 300) });
    if (r.status === 401 && t === token && token) onUnauthorized(err);
    throw err;
  }
  return { status: r.status, data };
}

export const get = (path) => call("GET", path).then((r) => r.data);

/** A query string from the entries of `params` that are set. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "" && v !== false) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/**
 * Follows `/v1/events`: `onEvent(kind, event)` for each one, `onState("live" | "reconnecting" |
 * "stopped")` as the connection comes and goes; reconnects with backoff. Returns a stop function.
 */
export function follow(onEvent, onState) {
  let stopped = false;
  let ctl = null;
  let delay = 1000;
  const run = async () => {
    while (!stopped) {
      ctl = new AbortController();
      try {
        const r = await fetch("/v1/events", {
          headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" },
          signal: ctl.signal,
          cache: "no-store",
        });
        if (r.status === 401) {
          onUnauthorized(new ApiError(401, await r.json().catch(() => null)));
          break;
        }
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        onState("live");
        delay = 1000;
        await read(r.body, onEvent);
      } catch (e) {
        if (stopped) break;
      }
      if (stopped) break;
      onState("reconnecting");
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 15000);
    }
    onState("stopped");
  };
  run();
  return () => {
    stopped = true;
    if (ctl) ctl.abort();
  };
}

async function read(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") kind = v;
        else if (field === "data") data.push(v);
      }
      if (!data.length) continue;
      let ev;
      try {
        ev = JSON.parse(data.join("\n"));
      } catch {
        continue;
      }
      if (ev && typeof ev === "object") onEvent(kind, ev);
    }
  }
}
