"""Frame types the client has no method for work through `room.send`: a giveaway (SPEC §13)
entered with `enter`, its room events delivered as their generated Structs, the winner's
order arriving as an `order` nobody waited for."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from livecart_client import LivecartClient, LivecartError, messages

from ..e2e.harness import ServerProcess, live_session, token


async def test_enter_a_giveaway_with_the_generic_send(node: ServerProcess) -> None:
    live = await live_session(node.url, creator="sdk-give-host")
    sid = live["session"]["id"]
    client = LivecartClient(node.ws_url, token=token("sdk-give-viewer"))
    events: list[Any] = []
    orders: list[Any] = []
    try:
        await client.connect()
        room = await client.join(sid)
        room.on("*", events.append)
        client.on("order", orders.append)
        async with httpx.AsyncClient(base_url=node.url) as http:
            r = await http.post(
                f"/api/sessions/{sid}/giveaways",
                headers=live["headers"],
                json={
                    "product_id": live["product"]["id"],
                    "winners": 1,
                    "duration_s": 2,
                    "eligibility": "viewers",
                },
            )
            assert r.status_code == 201, r.text
            giveaway = r.json()
        async with asyncio.timeout(10):
            while not any(isinstance(e, messages.GiveawayEvent) for e in events):
                await asyncio.sleep(0.05)
        ack = await room.send("enter", giveaway=giveaway["id"])
        assert isinstance(ack, messages.Ack) and ack.ref.startswith("enter-")
        with pytest.raises(LivecartError) as missing:
            await room.send("enter", giveaway="no-such-giveaway")
        assert missing.value.code == "not_found"

        async with asyncio.timeout(20):
            while not any(isinstance(e, messages.GiveawayEnded) for e in events):
                await asyncio.sleep(0.05)
        ended = next(e for e in events if isinstance(e, messages.GiveawayEnded))
        assert ended.winners == ["sdk-give-viewer"] and ended.offset <= room.offset
        async with asyncio.timeout(10):
            while not orders:
                await asyncio.sleep(0.05)
        assert orders[0].order["user"] == "sdk-give-viewer"
        assert orders[0].order["total_cents"] == 0
    finally:
        await client.close()
