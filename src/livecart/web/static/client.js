// The pages' client: tokens, REST calls, and the WebSocket through the SDK
// (`livecart-client.js`, a copy of clients/js/src/index.js). The pages build on it alone.
import { LivecartClient, newRef } from "./livecart-client.js";

/** A client-chosen ref (1–64 chars), unique per page load. */
export { newRef };

/** Room log events: they carry `session` and a contiguous `offset` (SPEC §5). */
export const ROOM_EVENTS = new Set([
  "chat", "chat_removed", "pinned", "offer", "offer_ended", "sold",
  "auction", "bid", "auction_ended", "status", "slow", "giveaway", "giveaway_ended",
]);

// ------------------------------------------------------------------ tokens

const storage = {
  get(key) {
    try { return window.localStorage.getItem(key); } catch { return null; }
  },
  set(key, value) {
    try {
      if (value) window.localStorage.setItem(key, value);
      else window.localStorage.removeItem(key);
    } catch { /* storage disabled: the token lives for this page only */ }
  },
};

/** The fragment's parameters (`#token=…&session=…`). */
export function fragment() {
  return new URLSearchParams(window.location.hash.replace(/^#/, ""));
}

/** Decodes a JWT's claims without verifying it (the server verifies). */
export function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "===".slice((part.length + 3) % 4);
    const json = decodeURIComponent(
      Array.from(atob(padded), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    const c = JSON.parse(json);
    return typeof c === "object" && c && typeof c.sub === "string" ? c : null;
  } catch {
    return null;
  }
}

/**
 * Sign-in state of one page. Each page keeps its own token (`livecart.token.<scope>`), so the
 * viewer, creator and moderator links of the demo can be open side by side in one browser.
 * A token in the URL fragment wins, is stored, and is removed from the address bar.
 */
export class Auth {
  constructor(scope) {
    this.key = `livecart.token.${scope}`;
    const params = fragment();
    const fromUrl = params.get("token");
    if (fromUrl) {
      storage.set(this.key, fromUrl.trim());
      params.delete("token");
      const rest = params.toString();
      window.history.replaceState(
        null, "", window.location.pathname + window.location.search + (rest ? "#" + rest : ""),
      );
    }
    this.token = storage.get(this.key) || "";
    this.user = this.token ? claims(this.token) : null;
    if (this.token && (!this.user || (this.user.exp && this.user.exp * 1000 < Date.now()))) {
      this.expired = Boolean(this.user);
      this.token = "";
      this.user = null;
      storage.set(this.key, "");
    }
  }

  get signedIn() {
    return Boolean(this.user);
  }

  get role() {
    return this.user ? this.user.role : "guest";
  }

  set(token) {
    storage.set(this.key, token.trim());
  }

  clear() {
    storage.set(this.key, "");
  }
}

// ------------------------------------------------------------------ REST

export class ApiError extends Error {
  constructor(status, code, message, retryAfterMs) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

/** `api(method, path, body?)` → parsed JSON, or throws ApiError with the SPEC code. */
export function makeApi(auth) {
  return async function api(method, path, body) {
    const headers = { accept: "application/json" };
    if (auth && auth.token) headers.authorization = `Bearer ${auth.token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (exc) {
      throw new ApiError(0, "unavailable", "the server cannot be reached");
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!res.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(
        res.status, err.code || `http_${res.status}`, err.message || res.statusText,
        err.retry_after_ms,
      );
    }
    return data;
  };
}

// ------------------------------------------------------------------ helpers

const moneyFormats = new Map();

/** Integer minor units → a localised amount (`1500, "USD"` → `$15.00`). */
export function money(cents, currency = "USD") {
  if (cents === null || cents === undefined || Number.isNaN(Number(cents))) return "–";
  const cur = /^[A-Z]{3}$/.test(currency || "") ? currency : "USD";
  let fmt = moneyFormats.get(cur);
  if (!fmt) {
    try {
      fmt = new Intl.NumberFormat(undefined, { style: "currency", currency: cur });
    } catch {
      fmt = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" });
    }
    moneyFormats.set(cur, fmt);
  }
  const digits = fmt.resolvedOptions().maximumFractionDigits;
  // Amounts are integers in minor units; only the display divides (exact up to 2^53).
  return fmt.format(Number(cents) / 10 ** digits);
}

// ------------------------------------------------------------------ WebSocket

/**
 * The pages' connection: the SDK's LivecartClient (`livecart-client.js`, the same file as
 * clients/js/src/index.js) behind the interface the pages were written against.
 *
 * - Every server message goes to `on(type, fn)` listeners (and to `on("*", fn)`); log events
 *   come once each, in offset order, resumed with `since` after any reconnect.
 * - `send(frame)` sends now (false when offline); `sendRetryable(frame)` (buy, bid, buy_now,
 *   accept: safe to repeat with the same ref) is also sent again after a reconnect until it
 *   is answered; `bid`, `buyNow` and `acceptSecondChance` build those frames.
 * - Lifecycle events: `open` (after hello), `offline` ({code, retryInMs}), `unauthorized`.
 */
const PRESSED = new Set(["buy", "bid", "buy_now"]);

export class LiveSocket {
  constructor(token) {
    this.token = token || "";
    const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    this.client = new LivecartClient(`${proto}//${window.location.host}/ws`, {
      token: this.token, backoff: { minMs: 500, maxMs: 10000 },
    });
    // Answers to sendRetryable frames are handled by the pages' own listeners.
    this.retryable = { delete: (ref) => this.client.pending.delete(ref) };
    this.delays = new Map(); // session -> the video delay last reported (ms)
  }

  get online() { return this.client.ready; }

  get hello() { return this.client.hello; }

  /** Whether `feed {on: true}` is sent after every connect. */
  get feedOn() { return this.client.feedOn; }

  set feedOn(on) { this.client.feedOn = on; }

  on(type, fn) { return this.client.on(type, fn); }

  connect() { this.client.connect().catch(() => { /* `unauthorized` tells the page */ }); }

  close() { this.client.close(); }

  send(frame) { return this.client.send(frame); }

  /** `delay {session, ms}` (SPEC §12): how far this viewer's picture is behind the studio. */
  reportDelay(session, ms) {
    this.delays.set(session, ms);
    return this.send({ type: "delay", session, ms });
  }

  /** The studio-clock time of the picture this viewer sees now, once a delay was reported. */
  videoAt(session) {
    const delay = this.delays.get(session);
    return delay === undefined ? null : Math.round(this.client.now()) - delay;
  }

  /** buy, bid, buy_now, accept; a buy, bid or buy_now says when its viewer pressed
   * (`video_at`, docs/commerce.md "Trip allowance") once a delay was reported. */
  sendRetryable(frame) {
    if (PRESSED.has(frame.type) && frame.video_at === undefined) {
      const pressed = this.videoAt(frame.session);
      if (pressed !== null) frame = { ...frame, video_at: pressed };
    }
    this.client.request(frame, { retries: 0 }).catch(() => { /* the `error` listener shows it */ });
    return this.client.ready;
  }

  /** `bid` (SPEC §11; `maxCents` makes it a proxy bid), retried on reconnect; its ref. */
  bid(session, auction, amountCents, maxCents = null, ref = newRef("bid")) {
    const frame = { type: "bid", session, auction, amount_cents: amountCents, ref };
    if (maxCents) frame.max_cents = maxCents;
    this.sendRetryable(frame);
    return ref;
  }

  /** `buy_now` (SPEC §11): answered `order`; retried on reconnect; its ref. */
  buyNow(session, auction, ref = newRef("buynow")) {
    this.sendRetryable({ type: "buy_now", session, auction, ref });
    return ref;
  }

  /** `accept` a `second_chance` (SPEC §11): answered `order`; retried on reconnect; its ref. */
  acceptSecondChance(session, auction, ref = newRef("accept")) {
    this.sendRetryable({ type: "accept", session, auction, ref });
    return ref;
  }

  join(session) { this.client.join(session); }

  leave(session) { this.client.leave(session); }

  feed(on) { this.client.feed(on); }
}

/**
 * Reads a session's archived log (`/timeline`) for offsets in (since, upTo] and hands each
 * event to `onEvent`; removed chat comes as `{type: "chat", offset, removed: true}`. Used
 * when a join could not resume (a new epoch after a restart, or a position outside the
 * history window) so the page catches up from the archive instead of losing what it showed.
 */
export async function replay(api, session, since, upTo, onEvent, maxPages = 5) {
  let from = Math.max(0, since);
  for (let page = 0; page < maxPages && from < upTo; page += 1) {
    const data = await api(
      "GET", `/api/sessions/${encodeURIComponent(session)}/timeline?since=${from}&limit=1000`,
    );
    const events = (data && data.events) || [];
    for (const e of events) {
      if (e.offset > upTo) return;
      onEvent(e);
    }
    if (!events.length || !(data.next_since > from)) return;
    from = data.next_since;
  }
}

let routesPromise = null;

/**
 * Whether the server offers a route, from its OpenAPI document (read once per page). Pages
 * skip optional routes a server does not have (a partial deployment, an older node) instead
 * of requesting them and failing. `path` uses the document's templates: `/api/sessions/{id}`.
 */
export async function hasRoute(method, path) {
  if (!routesPromise) {
    routesPromise = fetch("/openapi.json", { headers: { accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : null))
      .then((doc) => {
        if (!doc || !doc.paths) return null;
        const set = new Set();
        for (const [p, ops] of Object.entries(doc.paths)) {
          for (const m of Object.keys(ops)) set.add(`${m.toUpperCase()} ${p}`);
        }
        return set;
      })
      .catch(() => null);
  }
  const routes = await routesPromise;
  return routes === null ? true : routes.has(`${method.toUpperCase()} ${path}`);
}
