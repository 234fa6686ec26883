// Real livecart nodes for the SDK's tests: `python -m livecart serve` in a child process on
// the database LIVECART_TEST_DATABASE_URL names (the pytest wrapper makes a fresh one; without
// it the node starts its embedded PostgreSQL), tokens signed with the tests' secret, REST
// helpers and a TCP proxy that can cut every connection going through it.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const SECRET = "sdk-test-secret-" + "x".repeat(32);
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const PYTHON = process.env.LIVECART_PYTHON || join(ROOT, ".venv", "bin", "python");

/** A livecart node; `restart()` keeps its port (and data dir), so URLs stay valid. */
export class Node {
  constructor({ env = {}, databaseUrl = process.env.LIVECART_TEST_DATABASE_URL || "" } = {}) {
    this.env = env;
    this.databaseUrl = databaseUrl;
    this.dataDir = mkdtempSync(join(tmpdir(), "livecart-sdk-"));
    this.port = 0;
    this.output = [];
  }

  async start(timeoutMs = 60000) {
    const args = ["-m", "livecart", "serve", "--host", "127.0.0.1", "--port", String(this.port),
      "--data-dir", this.dataDir];
    const env = { ...process.env, LIVECART_JWT_SECRET: SECRET, ...this.env };
    delete env.REDIS_URL; // the memory bus: a restart starts a new epoch
    if (this.databaseUrl) args.push("--database-url", this.databaseUrl);
    else delete env.DATABASE_URL;
    const proc = spawn(PYTHON, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    let buffered = "";
    const ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("node not ready:\n" + this.output.join(""))), timeoutMs);
      const onData = (chunk) => {
        const text = chunk.toString();
        this.output.push(text);
        buffered += text;
        const m = /livecart ready on (\S+)/.exec(buffered);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      };
      proc.stdout.on("data", onData);
      proc.stderr.on("data", onData);
      proc.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`node exited (${code}):\n` + this.output.join("")));
      });
    });
    this.url = await ready;
    this.port = Number(new URL(this.url).port);
    return this;
  }

  get wsUrl() {
    return this.url.replace("http://", "ws://") + "/ws";
  }

  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill("SIGTERM");
    const t = setTimeout(() => proc.kill("SIGKILL"), 20000);
    await exited;
    clearTimeout(t);
  }

  async restart() {
    await this.stop();
    return this.start();
  }

  async dispose() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** An HS256 token for `sub` signed with the tests' secret. */
export function token(sub, role = "viewer", ttlS = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64({ alg: "HS256", typ: "JWT" }) + "." + b64({ sub, name: sub, role, iat: now, exp: now + ttlS });
  return head + "." + createHmac("sha256", SECRET).update(head).digest("base64url");
}

/** REST call; returns {status, body}. */
export async function rest(node, method, path, tok, body) {
  const headers = { accept: "application/json" };
  if (tok) headers.authorization = `Bearer ${tok}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(node.url + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** A live session of `creator` with one product; returns {session, product, creatorToken}. */
export async function liveSession(node, creator) {
  const tok = token(creator, "creator");
  const ok = (r) => {
    if (r.status >= 300) throw new Error(`HTTP ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const product = ok(await rest(node, "POST", "/api/products", tok,
    { title: "Ceramic mug", price_cents: 1500, stock: 100, category: "home" }));
  const session = ok(await rest(node, "POST", "/api/sessions", tok, { title: "SDK show", category: "home" }));
  ok(await rest(node, "POST", `/api/sessions/${session.id}/products`, tok, { product_id: product.id }));
  ok(await rest(node, "POST", `/api/sessions/${session.id}/start`, tok));
  return { session, product, creatorToken: tok };
}

export async function openOffer(node, live, { quantity, perUserLimit = 1, priceCents = 900 }) {
  const r = await rest(node, "POST", `/api/sessions/${live.session.id}/offers`, live.creatorToken, {
    product_id: live.product.id, price_cents: priceCents, quantity, per_user_limit: perUserLimit,
    duration_s: 600,
  });
  if (r.status !== 201) throw new Error(`offer: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/**
 * A TCP proxy to `port`: `cut()` destroys every connection going through it (both ends, no
 * close frame: what a dropped network looks like); `down()` also refuses new ones until `up()`;
 * `upDelayMs` holds what the client sends that long (a slow way up, in order).
 */
export class Proxy {
  constructor(targetPort, targetHost = "127.0.0.1") {
    this.targetPort = targetPort;
    this.targetHost = targetHost;
    this.sockets = new Set();
    this.refusing = false;
    this.cuts = 0;
    this.upDelayMs = 0;
    this.server = net.createServer((client) => {
      if (this.refusing) {
        client.destroy();
        return;
      }
      const upstream = net.connect(this.targetPort, this.targetHost);
      for (const [a, b] of [[client, upstream], [upstream, client]]) {
        this.sockets.add(a);
        a.on("error", () => b.destroy());
        a.on("close", () => {
          this.sockets.delete(a);
          b.destroy();
        });
        if (a === client) {
          a.on("data", (chunk) => {
            if (this.upDelayMs) setTimeout(() => b.write(chunk), this.upDelayMs);
            else b.write(chunk);
          });
        } else {
          a.pipe(b);
        }
      }
    });
  }

  listen() {
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => {
      this.port = this.server.address().port;
      resolve(this);
    }));
  }

  cut() {
    this.cuts += 1;
    for (const s of this.sockets) s.destroy();
  }

  down() {
    this.refusing = true;
    this.cut();
  }

  up() {
    this.refusing = false;
  }

  close() {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves when `predicate()` holds (polled), rejects after `ms` with `what`. */
export async function until(predicate, what, ms = 15000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Settings that let one producer send many chat messages quickly. */
export const CHATTY = {
  LIVECART_CHAT_RATE_PER_S: "1000",
  LIVECART_CHAT_BURST: "1000",
  LIVECART_FLOOD_FRAMES: "100000",
};
