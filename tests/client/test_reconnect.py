"""Reconnect and resume through a proxy that cuts every socket mid-stream (SPEC §14): every
chat message reaches the viewer exactly once and in offset order, and the sender's retries
with the same ref publish nothing twice."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from livecart_client import LivecartClient, messages

from ..e2e.harness import ServerProcess, live_session, token
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
