"""Selling in a show (SPEC §13) over real sockets: a claim by comment racing a buy and a
waitlist on the last unit, a cancel serving the waitlist first, waitlist places pushed as
they move, bad input, bundles, and the same across three nodes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from .harness import Client, ServerProcess, headers, live_session, open_offer, token


async def claim_offer(
    base: str, live: dict[str, Any], word: str, *, quantity: int = 1, limit: int = 1
) -> dict[str, Any]:
    return await open_offer(
        base,
        live,
        price_cents=1200,
        quantity=quantity,
        per_user_limit=limit,
        duration_s=120,
        claim_word=word,
    )


async def joined(server: ServerProcess, sub: str, sid: str, **kw: Any) -> Client:
    c = await Client.connect(server, token(sub, **kw))
    await c.send({"type": "join", "session": sid})
    await c.expect("joined")
    return c


async def answer(c: Client, ref: str) -> dict[str, Any]:
    return await c.expect(("order", "error", "ack"), ref=ref)


async def test_a_claim_races_a_buy_and_a_waitlist_on_the_last_unit(
    server: ServerProcess,
) -> None:
    live = await live_session(server.url, creator="claim-host")
    sid = live["session"]["id"]
    claimer = await joined(server, "claim-claimer", sid)
    buyer = await joined(server, "claim-buyer", sid)
    waiter = await joined(server, "claim-waiter", sid)
    watcher = await joined(server, "claim-watcher", sid)
    offer = await claim_offer(server.url, live, "MINE")
    oid = offer["id"]
    event = await watcher.expect("offer", id=oid)
    assert event["claim_word"] == "MINE"  # the watch page shows "type MINE to claim"

    # All three at once: the claim (as chat), the buy, the waitlist.
    await asyncio.gather(
        claimer.send({"type": "chat", "session": sid, "text": "m1ne", "ref": "c1"}),
        buyer.send({"type": "buy", "session": sid, "offer": oid, "qty": 1, "ref": "b1"}),
        waiter.send({"type": "waitlist", "session": sid, "offer": oid, "ref": "w1"}),
    )
    ack = await claimer.expect("ack", ref="c1")
    assert ack["offset"] > 0  # the claim is a chat message all the same
    claimed = await claimer.expect(("order", "error"), ref="c1")
    bought = await buyer.expect(("order", "error"), ref="b1")
    winners = [m for m in (claimed, bought) if m["type"] == "order"]
    assert len(winners) == 1, (claimed, bought)
    loser = bought if claimed["type"] == "order" else claimed
    assert loser["code"] == "sold_out"
    winner = winners[0]["order"]
    winner_client, winner_sub = (
        (claimer, "claim-claimer") if claimed["type"] == "order" else (buyer, "claim-buyer")
    )
    if claimed["type"] == "order":
        assert claimed["order"]["qty"] == 1
    # The waitlist frame may have been handled before the unit was gone: then "units are
    # left" (bad_frame, nothing changed) and the waiter asks again, as the page does.
    place = await waiter.expect(("ack", "error"), ref="w1")
    if place["type"] == "error":
        assert place["code"] == "bad_frame"
        await waiter.send({"type": "waitlist", "session": sid, "offer": oid, "ref": "w2"})
        place = await waiter.expect("ack", ref="w2")
    waiter_ref = place["ref"]
    assert place["position"] == 1
    # The loser waits too, behind.
    loser_client = buyer if winner_client is claimer else claimer
    await loser_client.send({"type": "waitlist", "session": sid, "offer": oid, "ref": "w9"})
    assert (await loser_client.expect("ack", ref="w9"))["position"] == 2
    chat = await watcher.expect("chat", text="m1ne")
    assert chat["user"] == "claim-claimer"

    # The winner cancels: the unit goes to the first waiter, as a reservation of its own.
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.post(
            f"/api/orders/{winner['id']}/cancel", headers=headers(token(winner_sub))
        )
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        served = (await waiter.expect("order", ref=waiter_ref))["order"]
        assert (served["user"], served["offer"], served["status"]) == (
            "claim-waiter",
            oid,
            "reserved",
        )
        me = await http.get(
            f"/api/offers/{oid}/waitlist/me", headers=headers(token("claim-waiter"))
        )
        assert me.json()["status"] == "served" and me.json()["order"] == served["id"]
        other = await http.get(
            f"/api/offers/{oid}/waitlist/me",
            headers=headers(token("claim-claimer" if loser_client is claimer else "claim-buyer")),
        )
        assert other.json()["position"] == 1
        r = await http.get(f"/api/offers/{oid}")
        assert r.json()["remaining"] == 0
    # A buy now is still sold out: the returned unit went to the waitlist.
    await watcher.send({"type": "buy", "session": sid, "offer": oid, "qty": 1, "ref": "late"})
    assert (await watcher.expect("error", ref="late"))["code"] == "sold_out"
    for c in (claimer, buyer, waiter, watcher):
        await c.close()


async def test_claims_follow_every_purchase_rule(server: ServerProcess) -> None:
    live = await live_session(server.url, creator="claim-rules-host")
    sid = live["session"]["id"]
    offer = await claim_offer(server.url, live, "+1", quantity=5, limit=1)
    fan = await joined(server, "claim-fan", sid)
    kid = await joined(server, "claim-kid", sid, minor=True)
    await fan.send({"type": "chat", "session": sid, "text": " +1 ", "ref": "f1"})
    await fan.expect("ack", ref="f1")
    first = (await fan.expect("order", ref="f1"))["order"]
    # A second claim is the same purchase (ref claim:<offer>): the same order, nothing more.
    await fan.send({"type": "chat", "session": sid, "text": "+1 ", "ref": "f2"})
    reply = await fan.expect(("ack", "error"), ref="f2")
    if reply["type"] == "ack":  # not a duplicate text by the chat's normaliser
        assert (await fan.expect("order", ref="f2"))["order"]["id"] == first["id"]
    # Minors chat but cannot buy: the message is published, the claim refused.
    await kid.send({"type": "chat", "session": sid, "text": "+1", "ref": "k1"})
    await kid.expect("ack", ref="k1")
    assert (await kid.expect("error", ref="k1"))["code"] == "forbidden"
    # Plain chat is just chat.
    await fan.send({"type": "chat", "session": sid, "text": "love it", "ref": "f3"})
    await fan.expect("ack", ref="f3")
    assert [m for m in await fan.drain(0.3) if m.get("type") == "order"] == []
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get(f"/api/offers/{offer['id']}")
        assert r.json()["remaining"] == 4
    await fan.close()
    await kid.close()


async def test_bad_input_changes_nothing(server: ServerProcess) -> None:
    live = await live_session(server.url, creator="selling-bad-host")
    sid, pid = live["session"]["id"], live["product"]["id"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        for word in ("\u0301\u0301", "\u200b", "  ", "x" * 40):
            r = await http.post(
                f"/api/sessions/{sid}/offers",
                headers=live["headers"],
                json={"product_id": pid, "price_cents": 100, "quantity": 3, "claim_word": word},
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_frame", (word, r.text)
        product = (await http.get(f"/api/products/{pid}")).json()
        assert product["stock"] == 100
        offer = await claim_offer(server.url, live, "yes", quantity=3)
        viewer = await joined(server, "selling-bad-viewer", sid)
        await viewer.send({"type": "waitlist", "session": sid, "offer": offer["id"], "ref": "w"})
        assert (await viewer.expect("error", ref="w"))["code"] == "bad_frame"
        r = await http.get(
            f"/api/offers/{offer['id']}/waitlist/me", headers=headers(token("selling-bad-viewer"))
        )
        assert r.status_code == 404
        r = await http.get(f"/api/offers/{offer['id']}")
        assert r.json()["remaining"] == 3
        guest = await Client.connect(server)
        await guest.send({"type": "waitlist", "session": sid, "offer": offer["id"], "ref": "g"})
        assert (await guest.expect("error", ref="g"))["code"] == "unauthorized"
        await viewer.close()
        await guest.close()


async def test_bundles_close_when_the_session_ends(server: ServerProcess) -> None:
    live = await live_session(server.url, creator="bundle-host")
    sid = live["session"]["id"]
    offer = await claim_offer(server.url, live, "take", quantity=5, limit=3)
    buyer = await joined(server, "bundle-buyer", sid)
    for ref in ("x1", "x2"):
        await buyer.send(
            {"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": ref}
        )
        await buyer.expect("order", ref=ref)
    h = headers(token("bundle-buyer"))
    async with httpx.AsyncClient(base_url=server.url) as http:
        (bundle,) = [
            b for b in (await http.get("/api/me/bundles", headers=h)).json() if b["session"] == sid
        ]
        assert (bundle["status"], bundle["total_cents"], len(bundle["orders"])) == ("open", 2400, 2)
        assert (await http.get("/api/me/bundles")).status_code == 401
        r = await http.post(f"/api/sessions/{sid}/end", headers=live["headers"])
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while True:
            mine = [
                b
                for b in (await http.get("/api/me/bundles", headers=h)).json()
                if b["session"] == sid
            ]
            if mine and mine[0]["status"] == "closed":
                break
            assert time.monotonic() < deadline, mine
            await asyncio.sleep(0.2)
        assert mine[0]["id"] == bundle["id"] and mine[0]["total_cents"] == 2400
    await buyer.close()


async def test_claims_and_waitlists_across_nodes(nodes: list[ServerProcess]) -> None:
    """The offer opens on node 0; a claim made on node 1 wins the last unit; a waiter on node 2
    is served when the claim is cancelled through node 0."""
    live = await live_session(nodes[0].url, creator="selling-cluster-host")
    sid = live["session"]["id"]
    claimer = await joined(nodes[1], "sc-claimer", sid)
    waiter = await joined(nodes[2], "sc-waiter", sid)
    # Node 1 has read the session's claim words before the offer exists: the offer event
    # must make it read them again.
    await claimer.send({"type": "chat", "session": sid, "text": "hello", "ref": "warm"})
    await claimer.expect("ack", ref="warm")
    offer = await claim_offer(nodes[0].url, live, "GRAB")
    await claimer.expect("offer", id=offer["id"])
    await claimer.send({"type": "chat", "session": sid, "text": "Grab", "ref": "c1"})
    await claimer.expect("ack", ref="c1")
    order = (await claimer.expect("order", ref="c1"))["order"]
    await waiter.send({"type": "waitlist", "session": sid, "offer": offer["id"], "ref": "w1"})
    assert (await waiter.expect("ack", ref="w1"))["position"] == 1
    async with httpx.AsyncClient(base_url=nodes[0].url) as http:
        r = await http.post(
            f"/api/orders/{order['id']}/cancel", headers=headers(token("sc-claimer"))
        )
        assert r.status_code == 200, r.text
    served = (await waiter.expect("order", ref="w1", timeout=10))["order"]
    assert served["user"] == "sc-waiter" and served["offer"] == offer["id"]
    # Its place, pushed on its node: joined at 1, then served.
    for status, position in (("waiting", 1), ("served", None)):
        got = await waiter.expect("waitlist_place", timeout=10)
        assert (got["status"], got["position"]) == (status, position)
    await claimer.close()
    await waiter.close()


async def test_a_waiter_hears_its_place_move_in_order_as_units_return(
    server: ServerProcess,
) -> None:
    """SPEC §13 positions, pushed: each waiter gets `waitlist_place` when it joins, whenever
    a waiter ahead is served, and when its own place ends (served, or dropped when the offer
    ends), in that order; buyers and viewers who do not wait get none."""
    live = await live_session(server.url, creator="place-host")
    sid = live["session"]["id"]
    offer = await open_offer(
        server.url, live, price_cents=900, quantity=2, per_user_limit=1, duration_s=120
    )
    oid = offer["id"]
    buyers = [await joined(server, f"place-buyer{i}", sid) for i in range(2)]
    waiters = [await joined(server, f"place-waiter{i}", sid) for i in range(3)]
    watcher = await joined(server, "place-watcher", sid)
    orders = []
    for i, b in enumerate(buyers):
        await b.send({"type": "buy", "session": sid, "offer": oid, "qty": 1, "ref": f"b{i}"})
        orders.append((await b.expect("order", ref=f"b{i}"))["order"])
    for i, w in enumerate(waiters):
        await w.send({"type": "waitlist", "session": sid, "offer": oid, "ref": f"w{i}"})
        assert (await w.expect("ack", ref=f"w{i}"))["position"] == i + 1

    async with httpx.AsyncClient(base_url=server.url) as http:
        for i, order in enumerate(orders):  # each cancel returns a unit: the next waiter's
            r = await http.post(
                f"/api/orders/{order['id']}/cancel", headers=headers(token(f"place-buyer{i}"))
            )
            assert r.status_code == 200, r.text
            await waiters[i].expect("order", ref=f"w{i}")
        r = await http.post(f"/api/offers/{oid}/end", headers=live["headers"])
        assert r.status_code == 200, r.text

    def place(status: str, position: int | None = None) -> dict[str, Any]:
        return {
            "type": "waitlist_place",
            "session": sid,
            "offer": oid,
            "status": status,
            "position": position,
        }

    expected = [
        [place("waiting", 1), place("served")],
        [place("waiting", 2), place("waiting", 1), place("served")],
        [place("waiting", 3), place("waiting", 2), place("waiting", 1), place("dropped")],
    ]
    for w, want in zip(waiters, expected, strict=True):
        got = [await w.expect("waitlist_place") for _ in want]
        assert got == want
    await asyncio.sleep(0.3)
    for c in (*waiters, *buyers, watcher):
        assert [m for m in await c.drain() if m["type"] == "waitlist_place"] == []
        await c.close()
