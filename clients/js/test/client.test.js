// The SDK against a real livecart node: recovery through a proxy that cuts sockets
// mid-stream, refusals with their SPEC §5 codes, token refresh.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { LivecartClient, LivecartError } from "../src/index.js";
import { CHATTY, Node, Proxy, liveSession, openOffer, rest, sleep, token, until } from "./helpers.js";

const FAST = { backoff: { minMs: 20, maxMs: 200 } };

describe("against one node", () => {
  let node;
  const clients = [];
  const client = (url, options) => {
    const c = new LivecartClient(url, { ...FAST, ...options });
    clients.push(c);
    return c;
  };

  before(async () => {
    node = await new Node({ env: { ...CHATTY, LIVECART_AUTH_GRACE_S: "1", LIVECART_CHAT_DISPLAY_BUDGET: "0" } }).start();
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await node.dispose();
  });

  test("cut sockets mid-stream: every chat message exactly once, in order", async (t) => {
    const live = await liveSession(node, "sdk-host-1");
    const sid = live.session.id;
    const proxy = await new Proxy(node.port).listen();
    t.after(() => proxy.close());
    const viewer = client(`ws://127.0.0.1:${proxy.port}/ws`, { token: token("sdk-viewer-1") });
    let opens = 0;
    viewer.on("open", () => { opens += 1; });
    await viewer.connect();
    const room = viewer.join(sid);
    const got = [];
    const resyncs = [];
    room.on("chat", (m) => got.push(m));
    room.on("resync", (r) => resyncs.push(r));
    await until(() => room.position !== null, "joined");

    const producer = client(node.wsUrl, { token: token("sdk-producer-1") });
    await producer.connect();
    const proom = producer.join(sid);
    const N = 300;
    const cutter = setInterval(() => proxy.cut(), 150);
    const offsets = [];
    try {
      for (let i = 0; i < N; i += 10) {
        if (i > 0 && i % 50 === 0) {
          // However fast the node answers, at least one cut falls between every 50 messages.
          const seen = proxy.cuts;
          await until(() => proxy.cuts > seen, "the next cut", 5000);
        }
        const batch = [];
        for (let j = i; j < i + 10; j += 1) batch.push(proom.chat(`n${j}`));
        offsets.push(...(await Promise.all(batch)));
        await sleep(15);
      }
    } finally {
      clearInterval(cutter);
    }
    await until(() => got.length >= N, `${N} messages (got ${got.length})`, 30000);
    await sleep(300); // anything extra would arrive now
    assert.ok(proxy.cuts >= 5, `cut ${proxy.cuts} times`);
    assert.ok(opens >= 3, `reconnected ${opens - 1} times`);
    assert.deepEqual(got.map((m) => m.text), Array.from({ length: N }, (_, i) => `n${i}`));
    assert.deepEqual(got.map((m) => m.offset), offsets);
    for (let i = 1; i < N; i += 1) assert.equal(got[i].offset, got[i - 1].offset + 1);
    assert.equal(resyncs.length, 0, "every rejoin resumed inside the history window");
  });

  test("a refused buy rejects with the SPEC §5 code; the winner gets the order", async () => {
    const live = await liveSession(node, "sdk-host-2");
    const sid = live.session.id;
    const offer = await openOffer(node, live, { quantity: 1 });
    const [a, b] = [client(node.wsUrl, { token: token("sdk-buyer-a") }), client(node.wsUrl, { token: token("sdk-buyer-b") })];
    await Promise.all([a.connect(), b.connect()]);
    const [ra, rb] = [a.join(sid), b.join(sid)];
    const order = await ra.buy(offer.id, 1);
    assert.equal(order.status, "reserved");
    assert.equal(order.qty, 1);
    const refused = await rb.buy(offer.id, 1).then(() => null, (e) => e);
    assert.ok(refused instanceof LivecartError, String(refused));
    assert.equal(refused.code, "sold_out");
    const bad = await rb.buy(offer.id, 0).then(() => null, (e) => e);
    assert.equal(bad && bad.code, "bad_frame");
    const unknown = await rb.buy("no-such-offer", 1).then(() => null, (e) => e);
    assert.ok(unknown instanceof LivecartError && ["not_found", "offer_closed"].includes(unknown.code), String(unknown));
    // A guest may not buy: the connection stays usable for what guests may do.
    const guest = client(node.wsUrl);
    await guest.connect();
    const g = await guest.join(sid).buy(offer.id, 1).then(() => null, (e) => e);
    assert.equal(g && g.code, "unauthorized");
  });

  test("room events and coalesced state reach room.on; a new frame type goes through send()", async () => {
    const live = await liveSession(node, "sdk-host-3");
    const sid = live.session.id;
    const c = client(node.wsUrl, { token: token("sdk-viewer-3") });
    await c.connect();
    const room = c.join(sid);
    const seen = [];
    for (const t of ["offer", "stock", "sold", "joined"]) room.on(t, (m) => seen.push(t + ":" + m.session));
    await until(() => seen.includes("joined:" + sid), "joined");
    const offer = await openOffer(node, live, { quantity: 3 });
    await room.buy(offer.id, 1);
    await until(() => seen.includes("offer:" + sid) && seen.includes("sold:" + sid) && seen.includes("stock:" + sid), "offer, sold, stock");
    // A type this server does not know: the reply (an error with our ref) comes back by ref.
    const unknown = await room.send("teleport", { to: "mars" }).then(() => null, (e) => e);
    assert.equal(unknown && unknown.code, "unknown_type");
    assert.ok(unknown.ref.startsWith("teleport-"));
  });

  test("once a delay is reported, a bid says when its viewer pressed: taken over a slow link", async () => {
    const live = await liveSession(node, "sdk-host-pressed");
    const sid = live.session.id;
    const proxy = await new Proxy(node.port).listen();
    proxy.upDelayMs = 400; // each frame reaches the node 400 ms after it was sent
    const c = client(`ws://127.0.0.1:${proxy.port}/ws`, { token: token("sdk-pressed") });
    try {
      await c.connect();
      assert.ok(Math.abs(c.now() - Date.now()) < 1000, "the server's clock, from hello");
      const room = c.join(sid);
      await new Promise((resolve) => room.on("joined", resolve));
      assert.equal(room.videoAt(), null, "no delay reported: bids say nothing");
      room.delay(2000);
      assert.ok(Math.abs(room.videoAt() - (c.now() - 2000)) < 50);
      await sleep(2600); // the delay in force climbs to 2 s
      const r = await rest(node, "POST", `/api/sessions/${sid}/auctions`, live.creatorToken, {
        product_id: live.product.id, start_cents: 500, min_increment_cents: 10, duration_s: 2,
        mode: "sudden_death",
      });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      const ends = Date.parse(r.body.ends_at);
      await sleep(ends + 2000 - 150 - Date.now()); // 150 ms before the end in the picture
      const ack = await room.bid(r.body.id, 500);
      assert.equal(ack.type, "ack");
      assert.ok(ack.leading && ack.amount_cents === 500, JSON.stringify(ack));
      assert.ok(Date.now() - 2000 > ends, "by arrival minus delay it came after the end");
    } finally {
      await proxy.close();
    }
  });

  test("the token is refreshed before it expires; without a provider, expiry closes with 4001", async () => {
    const live = await liveSession(node, "sdk-host-4");
    const sid = live.session.id;
    let issued = 0;
    const refreshed = client(node.wsUrl, {
      token: token("sdk-short-1", "viewer", 8), // refreshed 2 s before it expires
      refreshLeadMs: 2000,
      getToken: () => { issued += 1; return token("sdk-short-1", "viewer", 3600); },
    });
    const stale = client(node.wsUrl, { token: token("sdk-short-2", "viewer", 3) });
    const events = { refreshed: [], stale: [] };
    for (const [name, c] of Object.entries({ refreshed, stale })) {
      for (const t of ["hello", "offline", "unauthorized", "error"]) c.on(t, (m) => events[name].push(t + (m.code ? ":" + m.code : "")));
    }
    const started = Date.now();
    await Promise.all([refreshed.connect(), stale.connect()]);
    assert.equal(issued, 0, "a token with 8 s left is used as it is");
    await until(() => events.stale.includes("unauthorized:4001"), "the stale client to be closed", 10000);
    await sleep(8500 - (Date.now() - started)); // past the first token's expiry
    assert.ok(issued >= 1, "the provider was asked");
    assert.ok(events.refreshed.filter((e) => e === "hello").length >= 2, events.refreshed.join());
    assert.ok(!events.refreshed.some((e) => e.startsWith("offline") || e.startsWith("error")), events.refreshed.join());
    assert.ok(events.stale.includes("error:unauthorized"), events.stale.join());
    const offset = await refreshed.join(sid).chat("still here");
    assert.ok(offset >= 1);
    // auth() by hand: a token of another user is refused and changes nothing.
    const other = await refreshed.auth(token("sdk-someone-else")).then(() => null, (e) => e);
    assert.ok(other instanceof LivecartError && other.code === "forbidden", String(other));
    assert.equal(refreshed.token.length > 0 && JSON.parse(atob(refreshed.token.split(".")[1])).sub, "sdk-short-1", "the refused token is not kept");
    const hello = await refreshed.auth(token("sdk-short-1", "viewer", 3600));
    assert.equal(hello.user, "sdk-short-1");
  });

  test("the token goes in the first frame, not the URL; a refused one rejects connect()", async () => {
    const proxy = await new Proxy(node.port).listen();
    const heads = [];
    proxy.server.on("connection", (sock) => sock.once("data", (d) => heads.push(d.toString("latin1").split("\r\n")[0])));
    const good = client(`ws://127.0.0.1:${proxy.port}/ws`, { token: token("sdk-first-frame") });
    const hello = await good.connect();
    assert.equal(hello.user, "sdk-first-frame");
    assert.equal(hello.role, "viewer");
    assert.ok(heads.length >= 1 && heads.every((h) => h === "GET /ws HTTP/1.1"), heads.join());
    const refused = client(node.wsUrl, { token: "not-a-token" });
    const seen = [];
    refused.on("unauthorized", (e) => seen.push(e.code));
    const e = await refused.connect().then(() => null, (x) => x);
    assert.ok(e instanceof LivecartError && e.code === "unauthorized", String(e));
    assert.deepEqual(seen, [4001]);
    let asked = 0;
    const recovers = client(node.wsUrl, { token: "not-a-token", getToken: () => { asked += 1; return token("sdk-provided"); } });
    assert.equal((await recovers.connect()).user, "sdk-provided");
    assert.equal(asked, 1);
    await proxy.close();
  });
});
