// The livecart reference client: tokens, REST calls and the WebSocket with resume.
// Dependency-free ES module; the pages build on it and nothing else.

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

let refCounter = 0;

/** A client-chosen ref (1–64 chars), unique per page load. */
export function newRef(prefix = "r") {
  refCounter += 1;
  const rand = Math.random().toString(36).slice(2, 10);
  return `${prefix}-${Date.now().toString(36)}-${refCounter}-${rand}`.slice(0, 64);
}

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
 * One connection that multiplexes the joined sessions and the feed (SPEC §5).
 *
 * - Every server frame is a JSON array; each message goes to `on(type, fn)` listeners
 *   (and to `on("*", fn)`).
 * - It remembers `{epoch, offset}` per joined session, drops log events it has already
 *   seen, and after any disconnect reconnects with backoff and rejoins with `since`.
 * - `buy`/`bid`/`buy_now`/`accept` frames (idempotent per ref) that got no answer are sent
 *   again, with the same ref, after a reconnect.
 * - Lifecycle events: `open` (after hello), `offline` ({code, retryInMs}), `unauthorized`.
 */
export class LiveSocket {
  constructor(token) {
    this.token = token || "";
    this.listeners = new Map();
    this.rooms = new Map(); // session -> {epoch, offset} | null
    this.retryable = new Map(); // ref -> frame (buy, bid) awaiting an answer
    this.ws = null;
    this.online = false;
    this.attempt = 0;
    this.closedByUs = false;
    this.feedOn = false;
    this.pingTimer = null;
    this.pongDeadline = null;
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  emit(type, msg) {
    for (const key of [type, "*"]) {
      const set = this.listeners.get(key);
      if (!set) continue;
      for (const fn of set) {
        try {
          fn(msg);
        } catch (exc) {
          // A broken listener must not stop the others; report it without failing the socket.
          console.warn("listener failed", type, exc);
        }
      }
    }
  }

  url() {
    const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    const q = this.token ? `?token=${encodeURIComponent(this.token)}` : "";
    return `${proto}//${window.location.host}/ws${q}`;
  }

  connect() {
    this.closedByUs = false;
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleReconnect(1006);
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => this.onFrame(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopPing();
      const wasOnline = this.online;
      this.online = false;
      if (this.closedByUs) return;
      if (ev.code === 4001) {
        this.emit("unauthorized", { code: ev.code, reason: ev.reason });
        return;
      }
      this.scheduleReconnect(ev.code, wasOnline);
    };
    ws.onerror = () => { /* onclose follows and handles it */ };
  }

  scheduleReconnect(code, wasOnline = false) {
    // 1001 (server going away) is a planned restart: come back quickly, then back off.
    const base = code === 1001 ? 300 : code === 4008 ? 5000 : 500;
    const delay = Math.min(10000, base * 2 ** Math.min(this.attempt, 6));
    const wait = Math.round(delay * (0.6 + Math.random() * 0.4));
    this.attempt += 1;
    this.emit("offline", { code, retryInMs: wait, wasOnline });
    window.setTimeout(() => { if (!this.closedByUs && !this.ws) this.connect(); }, wait);
  }

  close() {
    this.closedByUs = true;
    this.stopPing();
    if (this.ws) this.ws.close(1000);
  }

  onFrame(data) {
    let messages;
    try {
      messages = JSON.parse(data);
    } catch {
      return;
    }
    if (!Array.isArray(messages)) messages = [messages];
    for (const msg of messages) {
      if (!msg || typeof msg.type !== "string") continue;
      if (!this.track(msg)) continue;
      if (msg.ref !== undefined && ["order", "ack", "error", "held"].includes(msg.type)) {
        if (!(msg.type === "error" && msg.code === "unavailable")) this.retryable.delete(msg.ref);
      }
      if (msg.type === "hello") this.onHello(msg);
      if (msg.type === "pong") this.pongDeadline = null;
      this.emit(msg.type, msg);
    }
  }

  /** Keeps positions; false for a log event already seen (never shown twice). */
  track(msg) {
    if (msg.type === "joined") {
      if (this.rooms.has(msg.session)) {
        this.rooms.set(msg.session, { epoch: msg.epoch, offset: msg.offset });
      }
      return true;
    }
    if (ROOM_EVENTS.has(msg.type) && typeof msg.offset === "number" && msg.session) {
      const pos = this.rooms.get(msg.session);
      if (pos) {
        if (msg.offset <= pos.offset) return false;
        pos.offset = msg.offset;
      }
    }
    return true;
  }

  onHello(msg) {
    this.online = true;
    this.attempt = 0;
    this.hello = msg;
    for (const [session, pos] of this.rooms) this.sendJoin(session, pos);
    if (this.feedOn) this.send({ type: "feed", on: true });
    for (const frame of this.retryable.values()) this.send(frame);
    this.startPing();
    this.emit("open", msg);
  }

  startPing() {
    this.stopPing();
    this.pingTimer = window.setInterval(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      if (this.pongDeadline && Date.now() > this.pongDeadline) {
        // No answer to the last ping: the connection is dead even if the socket says open.
        this.ws.close(4000, "no pong");
        return;
      }
      if (!this.pongDeadline) this.pongDeadline = Date.now() + 15000;
      this.send({ type: "ping", ref: newRef("ping") });
    }, 20000);
  }

  stopPing() {
    if (this.pingTimer) window.clearInterval(this.pingTimer);
    this.pingTimer = null;
    this.pongDeadline = null;
  }

  /** Sends a frame now; false when offline (the caller decides what to show). */
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Sends a frame that is safe to repeat with the same ref (buy, bid): retried on reconnect. */
  sendRetryable(frame) {
    this.retryable.set(frame.ref, frame);
    return this.send(frame);
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

  sendJoin(session, pos) {
    const frame = { type: "join", session };
    if (pos) frame.since = { epoch: pos.epoch, offset: pos.offset };
    this.send(frame);
  }

  join(session) {
    if (!this.rooms.has(session)) this.rooms.set(session, null);
    if (this.online) this.sendJoin(session, this.rooms.get(session));
  }

  leave(session) {
    this.rooms.delete(session);
    this.send({ type: "leave", session });
  }

  feed(on) {
    this.feedOn = on;
    this.send({ type: "feed", on });
  }
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
