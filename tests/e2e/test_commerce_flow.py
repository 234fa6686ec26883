"""A flash offer over the real WebSocket path: offer, buy, sold, stock, retries."""

from __future__ import annotations

import httpx

from .harness import Client, ServerProcess, headers, live_session, open_offer, token


async def test_offer_buy_sold_and_stock_reach_viewers(server: ServerProcess) -> None:
    s = await live_session(server.url, creator="seller")
    sid = s["session"]["id"]
    buyer = await Client.connect(server, token("buyer1"))
    watcher = await Client.connect(server, token("watcher1"))
    for c in (buyer, watcher):
        await c.send({"type": "join", "session": sid})
        await c.expect("joined")
    offer = await open_offer(server.url, s, price_cents=999, quantity=3, per_user_limit=2)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert offer["remaining"] == 3
        event = await watcher.expect("offer")
        assert event["id"] == offer["id"] and "offset" in event
        await buyer.send(
            {"type": "buy", "session": sid, "offer": offer["id"], "qty": 2, "ref": "b1"}
        )
        order = (await buyer.expect("order", ref="b1"))["order"]
        assert order["status"] == "reserved" and order["total_cents"] == 1998
        sold = await watcher.expect("sold")
        assert sold["qty"] == 2 and "user" not in sold
        stock = await watcher.expect("stock", offer=offer["id"])
        assert stock["remaining"] == 1
        # A retry with the same ref returns the same order and takes nothing more.
        await buyer.send(
            {"type": "buy", "session": sid, "offer": offer["id"], "qty": 2, "ref": "b1"}
        )
        again = (await buyer.expect("order", ref="b1"))["order"]
        assert again["id"] == order["id"]
        await buyer.send(
            {"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": "b2"}
        )
        assert (await buyer.expect("error", ref="b2"))["code"] == "limit_reached"
        # REST buys take the same path; a guest is refused.
        r = await http.post(
            "/api/orders", json={"offer_id": offer["id"], "qty": 1, "idempotency_key": "k"}
        )
        assert r.status_code == 401
        h = headers(token("rest-buyer"))
        r = await http.post(
            "/api/orders",
            headers=h,
            json={"offer_id": offer["id"], "qty": 1, "idempotency_key": "k1"},
        )
        assert r.status_code == 201 and r.json()["status"] == "reserved"
        r = await http.post(
            "/api/orders",
            headers=headers(token("late-buyer")),
            json={"offer_id": offer["id"], "qty": 1, "idempotency_key": "k2"},
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == "sold_out"
        minor = headers(token("kid", minor=True))
        r = await http.post(
            "/api/orders",
            headers=minor,
            json={"offer_id": offer["id"], "qty": 1, "idempotency_key": "k3"},
        )
        assert r.status_code == 403
        mine = (await http.get("/api/me/orders", headers=headers(token("buyer1")))).json()
        assert [o["id"] for o in mine] == [order["id"]]
        # A late joiner sees the offer with what remains.
        late = await Client.connect(server, token("late"))
        await late.send({"type": "join", "session": sid})
        offers = (await late.expect("joined"))["state"]["offers"]
        assert [(o["id"], o["remaining"]) for o in offers] == [(offer["id"], 0)]
        # Cancelling returns the units to the open offer.
        r = await http.post(f"/api/orders/{order['id']}/cancel", headers=headers(token("buyer1")))
        assert r.json()["status"] == "cancelled"
        assert (await watcher.expect("stock", offer=offer["id"], remaining=2))["remaining"] == 2
        r = await http.get(f"/api/sessions/{sid}/stats", headers=s["headers"])
        figures = r.json()
        assert figures["orders"] == 1 and figures["units"] == 1  # buyer1's order was cancelled
        assert figures["revenue_cents"] == 999 and figures["buyers"] == 1
        assert figures["viewers"] == 3
        r = await http.get(f"/api/sessions/{sid}/stats", headers=headers(token("buyer1")))
        assert r.status_code == 403
    for c in (buyer, watcher, late):
        await c.close()
