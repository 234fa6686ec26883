"""Purchases and bids through the client: an order comes back as the order, a refusal raises
`LivecartError` with the SPEC §5 code, a ref given twice is one order, and `unavailable` is
retried with the same ref until the store is back; once a delay is reported, a bid says when
its viewer pressed, so one made just before the end in the picture counts over a slow link."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from livecart.runtime.db import EmbeddedPostgres, migrate
from livecart_client import LivecartClient, LivecartError

from ..e2e.harness import ServerProcess, live_session, open_auction, open_offer, token
from .proxy import Proxy


async def test_orders_and_refusals_with_their_codes(node: ServerProcess) -> None:
    live = await live_session(node.url, creator="sdk-buy-host")
    sid = live["session"]["id"]
    offer = await open_offer(node.url, live, price_cents=900, quantity=2, per_user_limit=1)
    first = LivecartClient(node.ws_url, token=token("sdk-buyer-1"))
    second = LivecartClient(node.ws_url, token=token("sdk-buyer-2"))
    guest = LivecartClient(node.ws_url)
    try:
        for c in (first, second, guest):
            await c.connect()
        room = await first.join(sid)
        stock: list[Any] = []
        room.on("stock", stock.append)

        order = await room.buy(offer["id"], 1, ref="sdk-buy-a")
        assert order["status"] == "reserved" and order["qty"] == 1
        assert order["offer"] == offer["id"] and order["user"] == "sdk-buyer-1"
        again = await room.buy(offer["id"], 1, ref="sdk-buy-a")
        assert again["id"] == order["id"], "one ref, one order"

        with pytest.raises(LivecartError) as over:
            await room.buy(offer["id"], 1)
        assert over.value.code == "limit_reached"
        with pytest.raises(LivecartError) as bad:
            await room.buy(offer["id"], 0)
        assert bad.value.code == "bad_frame" and bad.value.ref
        with pytest.raises(LivecartError) as missing:
            await room.buy("no-such-offer", 1)
        assert missing.value.code == "not_found"

        # Not joined: a room handle of the second buyer, after joining it.
        other = await second.join(sid)
        assert (await other.buy(offer["id"], 1))["qty"] == 1
        with pytest.raises(LivecartError) as gone:
            await other.buy(offer["id"], 1)
        assert gone.value.code in ("sold_out", "limit_reached")
        with pytest.raises(LivecartError) as sold:
            await (await guest.join(sid)).buy(offer["id"], 1)
        assert sold.value.code == "unauthorized"

        async with asyncio.timeout(5):
            while not any(s.remaining == 0 for s in stock):
                await asyncio.sleep(0.05)
        assert room.stock[offer["id"]] == 0

        # An auction: a bid below the start is refused with its code, a good one acked.
        auction = await open_auction(
            node.url, live, start_cents=1000, min_increment_cents=100, duration_s=60, mode="extend"
        )
        with pytest.raises(LivecartError) as low:
            await room.bid(auction["id"], 10)
        assert low.value.code == "bid_too_low"
        ack = await room.bid(auction["id"], 1000)
        assert ack.ref
    finally:
        for c in (first, second, guest):
            await c.close()


async def test_unavailable_is_retried_with_the_same_ref_until_the_store_is_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Outside pytest's base temp: other pytest runs on the machine reset its mode to 0700,
    # which the embedded server's own user could then no longer enter.
    home = tempfile.mkdtemp(prefix="livecart-sdk-pg-")
    os.chmod(home, 0o755)
    pg = EmbeddedPostgres(home)
    url = await pg.astart()
    await migrate(url)
    node = ServerProcess(url, str(tmp_path / "node")).start()
    client = LivecartClient(node.ws_url, token=token("sdk-retry-buyer"), retry_for_s=60)
    try:
        live = await live_session(node.url, creator="sdk-retry-host")
        sid = live["session"]["id"]
        offer = await open_offer(node.url, live, price_cents=100, quantity=5, per_user_limit=1)
        await client.connect()
        room = await client.join(sid)
        retries: list[Any] = []
        client.on("retry", retries.append)
        await pg.astop()
        buying = asyncio.create_task(room.buy(offer["id"], 1, ref="sdk-retry"))
        await asyncio.sleep(3)  # refused `unavailable` meanwhile, and retried
        assert not buying.done()
        assert retries and {r.ref for r in retries} == {"sdk-retry"}
        assert {r.code for r in retries} == {"unavailable"}
        await pg.astart()
        order = await asyncio.wait_for(buying, 40)
        assert order["status"] == "reserved" and order["qty"] == 1
        # The retries used one ref: one order, and the same ref again answers it.
        async with httpx.AsyncClient(base_url=node.url) as http:
            mine = (
                await http.get(
                    "/api/me/orders", headers={"authorization": f"Bearer {token('sdk-retry-buyer')}"}
                )
            ).json()
        orders = mine if isinstance(mine, list) else mine.get("orders", mine.get("items", []))
        assert [o["id"] for o in orders] == [order["id"]], orders
        assert (await room.buy(offer["id"], 1, ref="sdk-retry"))["id"] == order["id"]
    finally:
        await client.close()
        node.kill()
        await pg.astop()
        shutil.rmtree(home, ignore_errors=True)


async def test_a_bid_says_when_its_viewer_pressed_once_a_delay_is_reported(
    node: ServerProcess,
) -> None:
    """2 s behind, over a link that takes 400 ms up: a bid 150 ms before the end in the
    picture arrives 250 ms after it by arrival minus delay, and still counts, because the
    client fills `video_at` (the server gives back up to `trip_allowance_ms` of trip)."""
    live = await live_session(node.url, creator="sdk-pressed-host")
    sid = live["session"]["id"]
    proxy = await Proxy(node.port).start()
    proxy.up_delay_s = 0.4
    client = LivecartClient(proxy.ws_url, token=token("sdk-pressed-viewer"))
    try:
        await client.connect()
        room = await client.join(sid)
        assert room.video_at() is None  # no delay reported: bids say nothing
        await room.delay(2_000)
        pressed = room.video_at()
        assert pressed is not None and abs(pressed - (time.time() - 2.0) * 1000) < 1_000
        await asyncio.sleep(2.6)  # the delay in force climbs to 2 s
        auction = await open_auction(
            node.url, live, start_cents=500, min_increment_cents=10, duration_s=2, mode="sudden_death"
        )
        ends = datetime.fromisoformat(auction["ends_at"]).timestamp()
        await asyncio.sleep(ends + 2.0 - 0.15 - time.time())
        ack = await room.bid(auction["id"], 500)
        assert ack.ref  # an ack: taken (a refusal raises auction_closed)
        assert time.time() - 2.0 > ends, "by arrival minus delay it came after the end"
    finally:
        await client.close()
        await proxy.close()
