// Livecart next to a video player: chat, the pinned product, a buy button. Type-checked by
// the test suite (`npm run typecheck`); run it against a node with a session id and a token.
import { LivecartClient, LivecartError, type ChatEvent, type ChatTombstone } from "@livecart/client";

declare const process: { argv: string[] }; // Node (no @types/node needed)
const [url = "ws://127.0.0.1:8000/ws", session = "", token] = process.argv.slice(2);
const client = new LivecartClient(url, { token, getToken: async () => token ?? "" });
client.on("error", (e) => console.warn("server says", e.code, e.message));
client.on("offline", ({ retryInMs }) => console.log(`offline, again in ${retryInMs} ms`));
await client.connect();

const room = client.join(session);
const show = (m: ChatEvent | ChatTombstone) =>
  console.log("removed" in m && m.removed ? `#${m.offset} (removed)` : `#${m.offset} ${"name" in m ? m.name : ""}: ${"text" in m ? m.text : ""}`);
room.on("joined", (j) => j.state.chat.forEach((c) => console.log("earlier:", c)));
room.on("chat", show);
room.on("resync", ({ state }) => console.log("fresh snapshot,", state.offers.length, "offers"));
room.on("pinned", (p) => console.log("pinned", p.product));
room.on("stock", (s) => console.log(`offer ${s.offer}: ${s.remaining} left`));
room.on("giveaway", (g) => console.log("a giveaway until", g.ends_at)); // typed from protocol.py
room.on("outbid", (m) => console.log("a type added later arrives untyped:", m.type));

const offset: number = await room.chat("hello from the player");
console.log("my message is #" + offset);
const offer = room.state?.offers[0];
if (offer) {
  try {
    const order = await room.buy(String(offer.id), 1);
    console.log("reserved", order.id);
  } catch (e) {
    if (e instanceof LivecartError && e.code === "sold_out") console.log("too late");
    else throw e;
  }
}
await room.send("delay", { ms: 4000 }).catch(() => {});
await client.close();
