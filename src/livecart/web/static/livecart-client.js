// @livecart/client: the livecart WebSocket protocol (SPEC §5) with positions, recovery and
// retries done once. A plain ES module with no dependency in browsers; in Node without a
// global WebSocket it loads the `ws` package. Types: index.d.ts (and protocol.d.ts, generated
// from the server's protocol). A copy of this file is served to the pages as
// /static/livecart-client.js (kept identical by a test).

/** A refusal from the server: `code` is a SPEC §5 error code. */
export class LivecartError extends Error {
  constructor(code, message, msg = {}) {
    super(message || code);
    this.name = "LivecartError";
    this.code = code;
    this.ref = msg.ref;
    this.retryAfterMs = msg.retry_after_ms;
    this.reply = msg;
  }
}

class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  /** Calls `handler(message)` for every message of `type` ("*": all); returns an unsubscribe. */
  on(type, handler) {
    let set = this._handlers.get(type);
    if (!set) this._handlers.set(type, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  off(type, handler) {
    const set = this._handlers.get(type);
    if (set) set.delete(handler);
  }

  _emit(type, msg, all = true) {
    for (const key of all ? [type, "*"] : [type]) {
      const set = this._handlers.get(key);
      if (!set) continue;
      for (const fn of [...set]) {
        try {
          fn(msg);
        } catch (exc) {
          // A broken handler must not stop the others nor the connection.
          console.error("livecart: a handler for", type, "failed", exc);
        }
      }
    }
  }
}

let counter = 0;

/** A client-chosen ref (1–64 characters), unique per process or page. */
export function newRef(prefix = "r") {
  counter += 1;
  const rand = Math.random().toString(36).slice(2, 10);
  return `${prefix}-${Date.now().toString(36)}-${counter}-${rand}`.slice(0, 64);
}

/** A JWT's `exp` in ms (unverified; the server verifies), or null. */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part + "===".slice((part.length + 3) % 4))).exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** `http(s)://host[/ws]` or `ws(s)://host[/ws]` → the WebSocket endpoint. The token goes in
 * an `auth` frame (SPEC §10), never in the URL, where logs and proxies would keep it. */
function endpoint(url) {
  const u = new URL(url);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws";
  u.searchParams.delete("token");
  return u.toString();
}

const OPEN = 1; // WebSocket.OPEN
// Frames judged at the viewer's video time, which say when the viewer pressed.
const PRESSED = new Set(["bid", "buy", "buy_now"]);

/**
 * One joined session: its events in offset order, each once. `on(type, handler)` takes room
 * log events (`chat`, `offer`, `bid`…), coalesced state (`viewers`, `likes`, `stock`), the
 * room's personal messages (`muted`, `chat_sampled`, `error` of a join), `joined` and
 * `resync` (a rejoin that could not resume: use `state`).
 */
export class Room extends Emitter {
  constructor(client, id) {
    super();
    this.client = client;
    this.id = id;
    this.epoch = null;
    this.offset = null; // the newest offset delivered (or taken from a snapshot)
    this.state = null;
    this.syncing = true; // a join is on its way: log events wait for `joined`
    this.delayMs = null; // the video delay last reported with `delay()`
  }

  get position() {
    return this.epoch === null ? null : { epoch: this.epoch, offset: this.offset };
  }

  _join() {
    const frame = { type: "join", session: this.id };
    if (this.epoch !== null) frame.since = { epoch: this.epoch, offset: this.offset };
    this.syncing = true;
    return this.client.send(frame);
  }

  _joined(msg) {
    const before = this.position;
    if (!msg.recovered || before === null) this.offset = msg.offset;
    this.epoch = msg.epoch;
    this.state = msg.state;
    this.syncing = false;
    // A new connection starts at delay 0: report it again.
    if (this.delayMs !== null) this.post("delay", { ms: this.delayMs });
    this._emit("joined", msg);
    if (before !== null && !msg.recovered) {
      this._emit("resync", {
        session: this.id, epoch: msg.epoch, offset: msg.offset, state: msg.state,
        previous: before, newEpoch: before.epoch !== msg.epoch, joined: msg,
      });
    }
  }

  /** A log event: false when it was already delivered or cannot be yet (a gap: rejoin). */
  _event(msg, sampled) {
    if (this.syncing || this.offset === null || msg.offset <= this.offset) return false;
    if (msg.offset > this.offset + 1 && !sampled) {
      // A missing offset: resume from the last one delivered; the server replays the rest.
      this._join();
      return false;
    }
    this.offset = msg.offset;
    this._emit(msg.type, msg);
    return true;
  }

  /** Sends `{type, session, ...fields, ref}` and resolves with the reply (see `request`). A
   * `bid`, `buy` or `buy_now` says when its viewer pressed (`video_at`) once a delay was
   * reported. */
  send(type, fields = {}, options) {
    const frame = { type, session: this.id, ...fields };
    if (PRESSED.has(type) && frame.video_at === undefined) {
      const pressed = this.videoAt();
      if (pressed !== null) frame.video_at = pressed;
    }
    return this.client.request(frame, options);
  }

  /** Reports how far this viewer's picture is behind the studio (ms, from the player's
   * program-date-time; SPEC §12), again after every re-join. From now on bids and buys carry
   * the picture time they were made at. False when offline (sent with the next join). */
  delay(ms) {
    this.delayMs = ms;
    return this.post("delay", { ms });
  }

  /** The picture time now (epoch ms on the server's clock), null without a delay. */
  videoAt() {
    return this.delayMs === null ? null : Math.round(this.client.now()) - this.delayMs;
  }

  /** Sends `{type, session, ...fields}` without waiting for a reply; false when offline. */
  post(type, fields = {}) {
    return this.client.send({ type, session: this.id, ...fields });
  }

  /** Resolves with the message's offset; refusals (`held`, `muted`…) reject. */
  async chat(text, options) {
    return (await this.send("chat", { text }, options)).offset;
  }

  /** Resolves with the order; a refusal rejects with a LivecartError (`sold_out`…). */
  async buy(offer, qty = 1, options) {
    return (await this.send("buy", { offer, qty }, options)).order;
  }

  /** A bid (with `max`: a proxy bid up to that amount); resolves with the ack. */
  bid(auction, amount, { max, ...options } = {}) {
    const fields = { auction, amount_cents: amount };
    if (max !== undefined && max !== null) fields.max_cents = max;
    return this.send("bid", fields, options);
  }

  like(count = 1) {
    return this.post("like", { count });
  }

  signal(name, product) {
    return this.post("signal", product ? { name, product } : { name });
  }

  report(offset, reason, options) {
    return this.send("report", { offset, reason }, options);
  }

  /** Stops receiving this session's events. */
  leave() {
    this.client.leave(this.id);
  }
}

/**
 * One connection to a livecart node that multiplexes the joined sessions and the feed.
 * Options: `token`, `getToken` (async; called before the token expires and when the server
 * says it did), `WebSocket` (a constructor), `backoff` ({minMs, maxMs}), `retries` (of an
 * `unavailable` request), `pingMs`, `refreshLeadMs`.
 * Events: every server message by type (and "*"), plus `open` (each hello of a new
 * connection), `offline` ({code, reason, retryInMs}) and `unauthorized` (4001, no token left).
 */
export class LivecartClient extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.endpoint = endpoint(url); // a bad URL throws here, not on every reconnect
    this.options = {
      backoff: { minMs: 250, maxMs: 15000 }, retries: 10, pingMs: 20000, pongMs: 15000,
      refreshLeadMs: 60000, ...options,
    };
    this.options.backoff = { minMs: 250, maxMs: 15000, ...options.backoff };
    this.token = options.token || "";
    this.rooms = new Map();
    this.pending = new Map(); // ref -> request awaiting its reply
    this.ws = null;
    this.ready = false;
    this.stopped = true;
    this.attempt = 0;
    this.feedOn = false;
    this.hello = null;
    this.clockOffsetMs = 0; // the server's clock minus ours, from the last `hello`
    this._timers = new Set();
    this._waiters = [];
    this._authWaiter = null;
  }

  /** The time on the server's clock (epoch ms), as its last `hello` told it. */
  now() {
    return Date.now() + this.clockOffsetMs;
  }

  /** Connects (and keeps reconnecting); resolves with the first `hello`. */
  connect() {
    const first = new Promise((resolve, reject) => {
      if (this.ready) resolve(this.hello);
      else this._waiters.push({ resolve, reject });
    });
    if (this.stopped) {
      this.stopped = false;
      this._open();
    }
    return first;
  }

  /** Joins a session (now, and again after every reconnect); events come to the room. */
  join(session) {
    let room = this.rooms.get(session);
    if (!room) {
      room = new Room(this, session);
      this.rooms.set(session, room);
      if (this.ready) room._join();
    }
    return room;
  }

  leave(session) {
    if (this.rooms.delete(session)) this.send({ type: "leave", session });
  }

  /** The personal feed and trending (`feed` / `trending` events), kept across reconnects. */
  feed(on = true) {
    this.feedOn = on;
    this.send({ type: "feed", on });
  }

  /** Sends a frame now; false when offline (nothing is queued). */
  send(frame) {
    const ws = this.ws;
    if (!this.ready || !ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Sends a frame with a `ref` (its own, made here when missing) and resolves with the reply
   * that carries it (`ack`, `order`…). `error` and `held` reject with a LivecartError; an
   * `unavailable` one is retried with the same ref after `retry_after_ms` (refs are
   * idempotency keys), and an unanswered frame is sent again after a reconnect.
   */
  request(frame, { retries = this.options.retries } = {}) {
    const ref = frame.ref || newRef(frame.type);
    const req = { frame: { ...frame, ref }, retries, tries: 0, timer: null };
    const promise = new Promise((resolve, reject) => {
      req.resolve = resolve;
      req.reject = reject;
    });
    this.pending.set(ref, req);
    this.send(req.frame);
    return promise;
  }

  /** Sends a fresh token on the open connection; resolves with the new `hello`. */
  auth(token) {
    const adopt = () => {
      this.token = token; // kept for reconnects only once the server took it
      this._scheduleRefresh();
    };
    if (!this.ready) {
      adopt(); // offline: the next connection signs in with it
      return Promise.resolve(this.hello);
    }
    return new Promise((resolve, reject) => {
      if (this._authWaiter) this._authWaiter.reject(new LivecartError("superseded"));
      this._authWaiter = { resolve: (hello) => { adopt(); resolve(hello); }, reject };
      this.send({ type: "auth", token });
    });
  }

  /** Closes for good; pending requests reject with code `closed`. */
  async close() {
    this.stopped = true;
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    this._stopPing();
    const failure = new LivecartError("closed", "the client was closed");
    for (const req of this.pending.values()) req.reject(failure);
    this.pending.clear();
    for (const w of this._waiters.splice(0)) w.reject(failure);
    if (this._authWaiter) this._authWaiter.reject(failure);
    this._authWaiter = null;
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    if (ws && ws.readyState <= OPEN) {
      await new Promise((resolve) => {
        const done = setTimeout(resolve, 1000);
        ws.onclose = () => {
          clearTimeout(done);
          resolve();
        };
        ws.close(1000);
      });
    }
  }

  // ---------------------------------------------------------------- connection

  _later(fn, ms) {
    const t = setTimeout(() => {
      this._timers.delete(t);
      fn();
    }, ms);
    this._timers.add(t);
    return t;
  }

  async _open() {
    let ws, WS;
    try {
      WS = this.options.WebSocket || globalThis.WebSocket || (await import("ws")).default;
    } catch {
      // Nothing to connect with (Node without the `ws` package): say so, do not spin.
      this.stopped = true;
      const failure = new LivecartError("unavailable", "no WebSocket: install the ws package");
      for (const w of this._waiters.splice(0)) w.reject(failure);
      this._emit("failure", failure, false);
      return;
    }
    try {
      if (this.options.getToken && (!this.token || this._expiresWithin(5000))) {
        this.token = await this.options.getToken();
      }
      if (this.stopped) return;
      ws = new WS(this.endpoint);
    } catch (exc) {
      this._emit("failure", exc, false);
      this._reconnect(1006, String(exc));
      return;
    }
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (this.ws === ws) this._frame(typeof ev.data === "string" ? ev.data : String(ev.data));
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this._closed(ev.code, ev.reason);
    };
    ws.onopen = () => {
      // Signed in by the first frame: the server greets a guest at once, then the user.
      this._signing = Boolean(this.token);
      if (this._signing) ws.send(JSON.stringify({ type: "auth", token: this.token }));
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  _closed(code, reason) {
    this.ws = null;
    this.ready = false;
    if (this._authWaiter) this._authWaiter.reject(new LivecartError("unavailable", "the connection dropped"));
    this._authWaiter = null;
    this._stopPing();
    for (const room of this.rooms.values()) room.syncing = true;
    if (this.stopped) return;
    if (code === 4001) {
      if (this.options.getToken && !this._refused) {
        this._refused = true;
        this.token = "";
        this._reconnect(code, reason, 0);
        return;
      }
      this.stopped = true;
      const failure = new LivecartError("unauthorized", reason || "the token was refused");
      for (const w of this._waiters.splice(0)) w.reject(failure);
      this._emit("unauthorized", { code, reason }, false);
      return;
    }
    this._reconnect(code, reason);
  }

  _reconnect(code, reason, wait) {
    if (wait === undefined) {
      // Exponential backoff with jitter; a server going away (1001) is a planned restart.
      const { minMs, maxMs } = this.options.backoff;
      const base = code === 4008 ? Math.max(minMs, 5000) : minMs;
      const cap = Math.min(maxMs, base * 2 ** Math.min(this.attempt, 16));
      wait = Math.round(cap / 2 + (Math.random() * cap) / 2);
    }
    this.attempt += 1;
    this._emit("offline", { code, reason, retryInMs: wait }, false);
    this._later(() => {
      if (!this.stopped && !this.ws) this._open();
    }, wait);
  }

  _frame(data) {
    let messages;
    try {
      messages = JSON.parse(data);
    } catch {
      return;
    }
    if (!Array.isArray(messages)) messages = [messages];
    // Huge-room chat sampling leaves announced holes in a frame: not a gap.
    const sampled = new Set();
    for (const m of messages) if (m && m.type === "chat_sampled") sampled.add(m.session);
    for (const msg of messages) {
      if (msg && typeof msg.type === "string") this._message(msg, sampled);
    }
  }

  _message(msg, sampled) {
    const { type, session, ref } = msg;
    const room = typeof session === "string" ? this.rooms.get(session) : undefined;
    if (type === "hello") {
      if (!this._hello(msg)) return;
    } else if (type === "pong") {
      this._pongDue = null;
    } else if (type === "joined") {
      if (room) room._joined(msg);
    } else if (room && Number.isInteger(msg.offset) && ref === undefined) {
      if (!room._event(msg, sampled.has(session))) return; // seen before, or a gap
      this._emit(type, msg);
      return;
    } else if (type === "error" && ref === undefined) {
      this._error(msg);
    }
    if (ref !== undefined && this.pending.has(ref)) this._reply(this.pending.get(ref), msg);
    if (room && type !== "joined") room._emit(type, msg);
    this._emit(type, msg);
  }

  /** False for the guest greeting that precedes our `auth` answer (not passed on). */
  _hello(msg) {
    if (this._signing) {
      if (msg.role === "guest") return false;
      this._signing = false;
    }
    this.hello = msg;
    if (Number.isInteger(msg.server_time) && msg.server_time > 0) {
      this.clockOffsetMs = msg.server_time - Date.now();
    }
    this._refused = false;
    if (this._authWaiter) {
      this._authWaiter.resolve(msg);
      this._authWaiter = null;
    }
    if (this.ready) return true; // a refreshed token
    this.ready = true;
    this.attempt = 0;
    for (const room of this.rooms.values()) room._join();
    if (this.feedOn) this.send({ type: "feed", on: true });
    for (const req of this.pending.values()) if (!req.timer) this.send(req.frame);
    this._startPing();
    this._scheduleRefresh();
    for (const w of this._waiters.splice(0)) w.resolve(msg);
    this._emit("open", msg, false);
    return true;
  }

  _error(msg) {
    if (this._signing && msg.code === "unauthorized") {
      // The token of our first frame was refused: as a 4001 close would be.
      this._signing = false;
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close(1000);
      this._closed(4001, msg.message);
      return;
    }
    if (msg.code === "unauthorized" || msg.code === "forbidden") {
      if (this._authWaiter) {
        this._authWaiter.reject(new LivecartError(msg.code, msg.message, msg));
        this._authWaiter = null;
      } else if (msg.code === "unauthorized" && this.options.getToken && this.ready) {
        this._refresh(); // the token in force expired
      }
    }
    const room = this.rooms.get(msg.session);
    if (msg.code === "unavailable") {
      // A join that failed for now (the error may not say which): join again shortly.
      const waiting = [...this.rooms.values()].filter((r) => r.syncing && (!room || r === room));
      this._later(() => {
        for (const r of waiting) if (r.syncing && this.ready && this.rooms.get(r.id) === r) r._join();
      }, msg.retry_after_ms ?? 1000);
    } else if (room && room.syncing && this.ready) {
      // A join refused (not_found, limit_reached…): it is not tried again by itself.
      room.syncing = false;
    }
  }

  _reply(req, msg) {
    if (msg.type === "error" && msg.code === "unavailable" && req.tries < req.retries) {
      req.tries += 1;
      const wait = msg.retry_after_ms ?? Math.min(8000, 250 * 2 ** req.tries);
      req.timer = this._later(() => {
        req.timer = null;
        if (this.pending.get(req.frame.ref) === req) this.send(req.frame);
      }, wait);
      return;
    }
    this.pending.delete(req.frame.ref);
    if (msg.type === "error" || msg.type === "held") {
      req.reject(new LivecartError(msg.type === "held" ? "held" : msg.code, msg.message || msg.reason, msg));
    } else {
      req.resolve(msg);
    }
  }

  // ---------------------------------------------------------------- token and keepalive

  _expiresWithin(ms) {
    const exp = this.token ? tokenExpiry(this.token) : null;
    return exp !== null && exp - Date.now() < ms;
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    this._timers.delete(this._refreshTimer);
    const exp = this.token ? tokenExpiry(this.token) : null;
    if (!this.options.getToken || exp === null || this.stopped) return;
    const left = exp - Date.now();
    if (left < 2000) return; // too late to refresh ahead: the server's `unauthorized` will ask
    const lead = Math.min(this.options.refreshLeadMs, left / 2);
    this._refreshTimer = this._later(() => this._refresh(), Math.max(0, left - lead));
  }

  async _refresh() {
    try {
      const token = await this.options.getToken();
      if (token && !this.stopped) await this.auth(token);
    } catch (exc) {
      this._emit("failure", exc, false);
    }
  }

  _startPing() {
    this._stopPing();
    this._pingTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws || ws.readyState !== OPEN) return;
      if (this._pongDue && Date.now() > this._pongDue) {
        ws.close(4000, "no pong"); // the connection is dead even if the socket says open
        return;
      }
      if (!this._pongDue) this._pongDue = Date.now() + this.options.pongMs;
      this.send({ type: "ping", ref: newRef("ping") });
    }, this.options.pingMs);
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    this._pongDue = null;
  }
}
