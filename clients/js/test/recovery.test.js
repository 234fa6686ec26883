// Recovery the SDK cannot do by replaying: a node restart (a new epoch: `resync` with the
// fresh snapshot), and a database outage (`unavailable`, retried with the same ref, also
// across a reconnect, until one order exists).
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { LivecartClient } from "../src/index.js";
import { CHATTY, Node, Proxy, liveSession, openOffer, rest, sleep, token, until } from "./helpers.js";

const FAST = { backoff: { minMs: 20, maxMs: 300 } };
const cleanup = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

test("a restarted node starts a new epoch: resync with the fresh snapshot, then live events", async () => {
  const node = await new Node({ env: CHATTY }).start();
  cleanup.push(() => node.dispose());
  const live = await liveSession(node, "sdk-epoch-host");
  const sid = live.session.id;
  const viewer = new LivecartClient(node.wsUrl, { ...FAST, token: token("sdk-epoch-viewer") });
  cleanup.push(() => viewer.close());
  await viewer.connect();
  const room = viewer.join(sid);
  const chats = [];
  const resyncs = [];
  room.on("chat", (m) => chats.push(m.text));
  room.on("resync", (r) => resyncs.push(r));
  await until(() => room.position !== null, "joined");
  const before = room.position;

  const producer = new LivecartClient(node.wsUrl, { ...FAST, token: token("sdk-epoch-producer") });
  cleanup.push(() => producer.close());
  await producer.connect();
  const proom = producer.join(sid);
  for (const text of ["one", "two", "three"]) await proom.chat(text);
  await until(() => chats.length === 3, "three messages");

  await node.restart(); // the memory bus: history and epoch are gone with the process
  await until(() => resyncs.length === 1, "resync", 30000);
  const r = resyncs[0];
  assert.equal(r.session, sid);
  assert.equal(r.newEpoch, true);
  assert.notEqual(r.epoch, before.epoch);
  assert.deepEqual(r.previous, { epoch: before.epoch, offset: before.offset + 3 });
  assert.equal(r.state.status, "live");
  assert.ok(r.offset >= before.offset + 3, "offsets never go back across epochs");
  assert.deepEqual(room.position, { epoch: r.epoch, offset: r.offset });
  // The snapshot carries the recent chat from the archive; live events follow the new epoch.
  assert.ok(r.state.chat.some((c) => c.text === "three"), JSON.stringify(r.state.chat));
  await until(() => producer.ready, "the producer back");
  await proom.chat("four");
  await until(() => chats.length === 4, "a live message after the resync");
  assert.deepEqual(chats, ["one", "two", "three", "four"]);
});

test("huge-room chat sampling: announced holes are not gaps, nothing is repeated or rejoined", async () => {
  const node = await new Node({ env: { ...CHATTY, LIVECART_CHAT_DISPLAY_BUDGET: "5" } }).start();
  cleanup.push(() => node.dispose());
  const live = await liveSession(node, "sdk-sampled-host");
  const sid = live.session.id;
  const viewer = new LivecartClient(node.wsUrl, { ...FAST, token: token("sdk-sampled-viewer") });
  cleanup.push(() => viewer.close());
  await viewer.connect();
  const room = viewer.join(sid);
  const offsets = [];
  let skipped = 0;
  let joins = 0;
  let offers = 0;
  room.on("chat", (m) => offsets.push(m.offset));
  room.on("chat_sampled", (m) => { skipped += m.skipped; });
  room.on("joined", () => { joins += 1; });
  room.on("offer", () => { offers += 1; });
  await until(() => room.position !== null, "joined");
  const producer = new LivecartClient(node.wsUrl, { ...FAST, token: token("sdk-sampled-producer") });
  cleanup.push(() => producer.close());
  await producer.connect();
  const proom = producer.join(sid);
  const N = 100;
  for (let i = 0; i < N; i += 20) {
    const batch = [];
    for (let j = i; j < i + 20; j += 1) batch.push(proom.chat(`s${j}`));
    if (i === 40) batch.push(openOffer(node, live, { quantity: 2 }));
    await Promise.all(batch);
  }
  await until(() => offsets.length + skipped >= N, `${N} messages shown or announced as skipped`);
  await sleep(300);
  assert.ok(skipped > 0, "the room was sampled");
  assert.equal(offsets.length + skipped, N);
  for (let i = 1; i < offsets.length; i += 1) assert.ok(offsets[i] > offsets[i - 1], "in order, once");
  assert.equal(joins, 1, "no rejoin for announced holes");
  assert.equal(offers, 1, "non-chat events are never sampled");
});

test("unavailable is retried with the same ref, across a reconnect, into one order", async (t) => {
  const dbUrl = process.env.LIVECART_TEST_DATABASE_URL;
  if (!dbUrl) {
    t.skip("needs LIVECART_TEST_DATABASE_URL (a PostgreSQL server to put a proxy in front of)");
    return;
  }
  const db = new URL(dbUrl);
  const pg = await new Proxy(Number(db.port || 5432), db.hostname).listen();
  cleanup.push(() => pg.close());
  db.host = `127.0.0.1:${pg.port}`;
  const node = await new Node({ env: CHATTY, databaseUrl: db.toString() }).start();
  cleanup.push(() => node.dispose());
  const live = await liveSession(node, "sdk-db-host");
  const offer = await openOffer(node, live, { quantity: 5 });
  const wsProxy = await new Proxy(node.port).listen();
  cleanup.push(() => wsProxy.close());
  const buyer = new LivecartClient(`ws://127.0.0.1:${wsProxy.port}/ws`, { ...FAST, token: token("sdk-db-buyer") });
  cleanup.push(() => buyer.close());
  await buyer.connect();
  const room = buyer.join(live.session.id);
  await until(() => room.position !== null, "joined");

  const refusals = [];
  let opens = 0;
  buyer.on("open", () => { opens += 1; });
  buyer.on("error", (m) => {
    if (m.code !== "unavailable" || m.ref === undefined) return; // (a rejoin may fail too)
    refusals.push(m);
    if (refusals.length === 1) {
      wsProxy.cut(); // the retry goes out on the next connection
      setTimeout(() => pg.up(), 300);
    }
  });
  pg.down(); // the database is unreachable: purchases answer `unavailable`
  const order = await room.buy(offer.id, 1);
  assert.ok(refusals.length >= 1, "the server said unavailable at least once");
  assert.ok(refusals.every((m) => m.ref === refusals[0].ref), "always the same ref");
  assert.ok(refusals[0].retry_after_ms > 0);
  assert.ok(opens >= 1, "the retry crossed a reconnect");
  assert.equal(order.status, "reserved");
  await until(() => !room.syncing, "the session rejoined once the database is back");
  const mine = await rest(node, "GET", "/api/me/orders", token("sdk-db-buyer"));
  assert.equal(mine.status, 200, JSON.stringify(mine.body));
  const orders = (Array.isArray(mine.body) ? mine.body : mine.body.orders || mine.body.items).filter((o) => o.offer === offer.id);
  assert.equal(orders.length, 1, JSON.stringify(orders));
  assert.equal(orders[0].id, order.id);
});
