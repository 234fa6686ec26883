// What no healthy node does on purpose, played by a scripted peer over a real socket: a hole
// in the offsets makes the SDK rejoin from the last offset it delivered, and a repeated
// offset is dropped. (The real-node cases are in client.test.js and recovery.test.js.)
import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocketServer } from "ws";

import { LivecartClient } from "../src/index.js";
import { until } from "./helpers.js";

const STATE = { status: "live", pinned: null, offers: [], auction: null, viewers: 1, likes: 0, slow: 0, chat: [] };
const chat = (offset) => ({ type: "chat", session: "s1", offset, user: "u", name: "u", text: `m${offset}`, at: 0 });

test("a gap makes the SDK rejoin with since; repeats are dropped", async () => {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((r) => wss.once("listening", r));
  const joins = [];
  wss.on("connection", (ws) => {
    const send = (...msgs) => ws.send(JSON.stringify(msgs));
    send({ type: "hello", user: "guest-1", role: "guest", server_time: 0, limits: {}, node: "scripted" });
    ws.on("message", (data) => {
      const frame = JSON.parse(String(data));
      if (frame.type !== "join") return;
      joins.push(frame.since || null);
      if (!frame.since) {
        send({ type: "joined", session: "s1", epoch: "e1", offset: 0, recovered: false, state: STATE });
        send(chat(1), chat(2), chat(2)); // a repeat
        send(chat(4)); // 3 is missing
        send(chat(5)); // arrives while the rejoin is on its way: dropped, replayed later
      } else {
        send({ type: "joined", session: "s1", epoch: "e1", offset: 5, recovered: true, state: STATE },
          chat(3), chat(4), chat(5));
        send(chat(6));
      }
    });
  });
  const client = new LivecartClient(`ws://127.0.0.1:${wss.address().port}/ws`);
  await client.connect();
  const room = client.join("s1");
  const got = [];
  const resyncs = [];
  room.on("chat", (m) => got.push(m.offset));
  room.on("resync", (r) => resyncs.push(r));
  await until(() => got.length >= 6, "six messages");
  assert.deepEqual(got, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(joins, [null, { epoch: "e1", offset: 2 }]);
  assert.equal(resyncs.length, 0);
  assert.deepEqual(room.position, { epoch: "e1", offset: 6 });
  await client.close();
  await new Promise((r) => wss.close(r));
});
