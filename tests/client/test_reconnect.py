"""Reconnect and resume through a proxy that cuts every socket mid-stream (SPEC §14): every
chat message reaches the viewer exactly once and in offset order, and the sender's retries
with the same ref publish nothing twice; purchases cut mid-flight make one order each."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from livecart_client import LivecartClient, messages

from ..e2e.harness import ServerProcess, headers, live_session, open_offer, token
from .proxy import Proxy

N = 120


async def test_every_message_once_and_in_order_while_sockets_are_cut(node: ServerProcess) -> None:
    live = await live_session(node.url, creator="sdk-cut-host")
    sid = live["session"]["id"]
    proxy = await Proxy(node.port).start()
    viewer = LivecartClient(proxy.ws_url, token=token("sdk-cut-viewer"), reconnect_max_s=0.5)
    sender = LivecartClient(proxy.ws_url, token=token("sdk-cut-sender"), reconnect_max_s=0.5)
    seen: list[Any] = []
    done = asyncio.Event()
    resyncs: list[Any] = []
    offline: list[Any] = []
    opened: list[Any] = []
    viewer.on("offline", offline.append)
    viewer.on("open", opened.append)
    try:
        await viewer.connect()
        await sender.connect()
        room = await viewer.join(sid)
        start = room.offset

        def on_chat(event: Any) -> None:
            seen.append(event)
            if event.text == f"n{N - 1}":
                done.set()

        room.on("chat", on_chat)
        room.on("resync", resyncs.append)
        out = await sender.join(sid)

        async def cutter() -> None:
            rnd = random.Random(17)
            while True:
                await asyncio.sleep(rnd.uniform(0.05, 0.3))
                proxy.cut()

        cutting = asyncio.create_task(cutter())
        acked: dict[str, int] = {}
        try:
            for i in range(N):
                acked[f"n{i}"] = await out.chat(f"n{i}")
                await asyncio.sleep(0.01)
        finally:
            cutting.cancel()
        await asyncio.wait_for(done.wait(), 60)
        await asyncio.sleep(0.3)  # anything late (a duplicate) would show now

        texts = [e.text for e in seen]
        assert texts == [f"n{i}" for i in range(N)], texts
        offsets = [e.offset for e in seen]
        assert offsets == list(range(start + 1, start + N + 1)), offsets
        assert all(isinstance(e, messages.ChatEvent) for e in seen)
        assert {e.text: e.offset for e in seen} == acked, "each ack names the delivered offset"
        assert resyncs == [], "a resume inside the history window is not a resync"
        assert proxy.cuts > 5 and viewer.connections > 3 and sender.connections > 3, (
            proxy.cuts,
            viewer.connections,
            sender.connections,
        )
        assert room.offset == start + N
        assert len(opened) == viewer.connections and len(offline) >= viewer.connections - 1
        assert all(0 < o.retry_in_ms <= 500 for o in offline), "backoff within its bounds"
    finally:
        await viewer.close()
        await sender.close()
        await proxy.close()


async def test_purchases_cut_mid_flight_are_resent_with_their_ref_and_count_once(
    node: ServerProcess,
) -> None:
    """Each `buy` whose connection is cut before its answer goes out again on the next
    connection with the same ref: every call gets its order, and the store holds exactly
    those orders, one per call."""
    live = await live_session(node.url, creator="sdk-cut-shop")
    offer = await open_offer(node.url, live, price_cents=500, quantity=40, per_user_limit=40)
    proxy = await Proxy(node.port).start()
    buyer = LivecartClient(proxy.ws_url, token=token("sdk-cut-buyer"), reconnect_max_s=0.3)

    async def stored_orders() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=node.url) as http:
            r = await http.get("/api/me/orders", headers=headers(token("sdk-cut-buyer")))
        body = r.json()
        return list(body if isinstance(body, list) else body.get("orders", []))

    try:
        await buyer.connect()
        room = await buyer.join(live["session"]["id"])

        # Each purchase has its socket cut a moment after it is sent: before the node reads
        # it, while it is handled, or after the answer left.
        rnd = random.Random(5)
        orders = []
        for _ in range(25):
            buying = asyncio.create_task(room.buy(offer["id"], 1))
            await asyncio.sleep(rnd.uniform(0.0, 0.01))
            proxy.cut()
            orders.append(await asyncio.wait_for(buying, 30))
        assert buyer.connections > 10, buyer.connections
        assert len({o["id"] for o in orders}) == 25, "one order per call, none twice"
        assert sorted(o["id"] for o in await stored_orders()) == sorted(o["id"] for o in orders)

        # An answer lost for certain: the order is made, its `order` never arrives, the
        # socket is cut; the client sends the buy again with its ref and gets that order.
        sent: list[str] = []
        real_send = buyer._send

        async def spy(frame: dict[str, Any]) -> bool:
            if frame.get("type") == "buy":
                sent.append(frame["ref"])
            return await real_send(frame)

        buyer._send = spy  # type: ignore[method-assign]
        await buyer.ping()  # connected again after the last cut (a muted handshake never ends)
        proxy.mute_down = True
        buying = asyncio.create_task(room.buy(offer["id"], 1))
        async with asyncio.timeout(20):
            while len(await stored_orders()) < 26:
                await asyncio.sleep(0.05)
        assert not buying.done()
        proxy.cut()
        proxy.mute_down = False
        late = await asyncio.wait_for(buying, 20)
        assert len(sent) >= 2 and len(set(sent)) == 1, sent
        assert {o["id"] for o in await stored_orders()} == {o["id"] for o in [*orders, late]}
    finally:
        await buyer.close()
        await proxy.close()
