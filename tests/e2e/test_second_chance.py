"""Second chance end to end (SPEC §11), on two real nodes sharing PostgreSQL and Redis, with
short reservation and second-chance TTLs: the winner's order expires, the runner-up is
offered the unit and lets it lapse, the next bidder takes it (over WebSocket, then again
over REST: the same order), cancels it, the last bidder lets it lapse and the unit is back in
stock. Bidders sit on both nodes, so every `second_chance` crosses nodes at least once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..conftest import redis_url_or_skip
from .harness import Client, ServerProcess, cluster, headers, live_session, token

RESERVATION_TTL_S = 2.0
CHANCE_TTL_S = 4.0  # long enough for a loaded machine to answer in time


@pytest.fixture(scope="module")
def pair(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    redis_url = redis_url_or_skip()
    env = {
        "REDIS_URL": redis_url,
        "LIVECART_RESERVATION_TTL_S": str(RESERVATION_TTL_S),
        "LIVECART_SECOND_CHANCE_TTL_S": str(CHANCE_TTL_S),
        # Settling waits for the slowest picture: 1 s keeps the chain quick here.
        "LIVECART_MAX_VIEWER_DELAY_MS": "1000",
    }
    with cluster(database_url, tmp_path_factory, 2, name="chance", env=env) as procs:
        yield procs


async def bidders(pair: list[ServerProcess], sid: str, names: str, tag: str) -> dict[str, Client]:
    """One connected, joined client per name, alternating between the two nodes."""
    out: dict[str, Client] = {}
    for i, name in enumerate(names):
        c = await Client.connect(pair[i % 2], token(f"{name}-{tag}"))
        await c.send({"type": "join", "session": sid})
        await c.expect("joined")
        out[name] = c
    return out


async def stock(http: httpx.AsyncClient, product: str) -> int:
    r = await http.get(f"/api/products/{product}")
    return int(r.json()["stock"])


async def test_second_chance_chain_with_expiries(pair: list[ServerProcess]) -> None:
    a_node = pair[0]
    live = await live_session(a_node.url, creator="chance-creator")
    sid, product = live["session"]["id"], live["product"]["id"]
    tag = sid[-6:]
    clients = await bidders(pair, sid, "abcd", tag)
    a, b, c, d = (clients[n] for n in "abcd")
    h = {n: headers(token(f"{n}-{tag}")) for n in "abcd"}
    try:
        async with httpx.AsyncClient(base_url=a_node.url) as http:
            before = await stock(http, product)
            r = await http.post(
                f"/api/sessions/{sid}/auctions",
                headers=live["headers"],
                json={
                    "product_id": product,
                    "start_cents": 500,
                    "min_increment_cents": 50,
                    "duration_s": 3,
                    "mode": "sudden_death",
                },
            )
            assert r.status_code == 201, r.text
            auction = r.json()["id"]
            for i, (who, amount) in enumerate([(a, 500), (b, 600), (c, 700), (d, 800)]):
                await who.send(
                    {
                        "type": "bid",
                        "session": sid,
                        "auction": auction,
                        "amount_cents": amount,
                        "ref": f"b{i}",
                    }
                )
                await who.expect("ack", ref=f"b{i}")
            ended = await d.expect("auction_ended", timeout=30, auction=auction)
            assert (ended["winner"], ended["amount_cents"]) == (f"d-{tag}", 800)
            [won] = (await http.get("/api/me/orders", headers=h["d"])).json()
            assert won["status"] == "reserved"
            assert await stock(http, product) == before - 1

            # The winner does not pay: the runner-up (c, 700) is offered the unit.
            offered = await c.expect("second_chance", timeout=RESERVATION_TTL_S + 20)
            assert (offered["session"], offered["auction"], offered["amount_cents"]) == (
                sid,
                auction,
                700,
            )
            assert (await http.get(f"/api/orders/{won['id']}", headers=h["d"])).json()[
                "status"
            ] == "expired"

            # A malformed accept is refused as such and changes nothing.
            await c.send({"type": "accept", "session": sid, "auction": auction})
            assert (await c.expect("error"))["code"] == "bad_frame"
            await c.send({"type": "accept", "session": sid, "auction": "", "ref": "x0"})
            assert (await c.expect("error", ref="x0"))["code"] == "bad_frame"

            # Nobody else may take it, over either protocol.
            await a.send({"type": "accept", "session": sid, "auction": auction, "ref": "x1"})
            refused = await a.expect("error", ref="x1")
            assert refused["code"] == "forbidden"
            r = await http.post(
                f"/api/auctions/{auction}/second-chance",
                headers=h["d"],
                json={"idempotency_key": "x2"},
            )
            assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")

            # c lets it lapse: b (600, on the other node) is next; c is too late now.
            offered = await b.expect("second_chance", timeout=CHANCE_TTL_S + 20)
            assert offered["amount_cents"] == 600
            r = await http.post(
                f"/api/auctions/{auction}/second-chance",
                headers=h["c"],
                json={"idempotency_key": "late"},
            )
            assert (r.status_code, r.json()["error"]["code"]) == (409, "auction_closed")

            # b takes it over WebSocket; taking it again over REST answers the same order.
            await b.send({"type": "accept", "session": sid, "auction": auction, "ref": "t1"})
            taken = (await b.expect("order", ref="t1"))["order"]
            assert (taken["user"], taken["unit_cents"], taken["status"]) == (
                f"b-{tag}",
                600,
                "reserved",
            )
            r = await http.post(
                f"/api/auctions/{auction}/second-chance",
                headers=h["b"],
                json={"idempotency_key": "t2"},
            )
            assert r.status_code == 201 and r.json()["id"] == taken["id"]
            mine = (await http.get(f"/api/auctions/{auction}/second-chance", headers=h["b"])).json()
            assert (mine["status"], mine["order"]) == ("accepted", taken["id"])
            assert await stock(http, product) == before - 1

            # b cancels: a (500) is offered, lets it lapse, nobody is left: back in stock.
            r = await http.post(f"/api/orders/{taken['id']}/cancel", headers=h["b"])
            assert r.json()["status"] == "cancelled"
            offered = await a.expect("second_chance", timeout=20)
            assert offered["amount_cents"] == 500
            for _ in range(300):  # the lapse: CHANCE_TTL_S and a sweep
                if await stock(http, product) == before:
                    break
                await asyncio.sleep(0.1)
            assert await stock(http, product) == before
            mine = (await http.get(f"/api/auctions/{auction}/second-chance", headers=h["a"])).json()
            assert mine["status"] == "lapsed"
            # The winner was never offered a chance, and nobody was offered twice.
            for who in (a, b, c, d):
                extra: list[dict[str, Any]] = [
                    m for m in await who.drain(0.2) if m.get("type") == "second_chance"
                ]
                assert extra == []
            r = await http.get(f"/api/auctions/{auction}/second-chance", headers=h["d"])
            assert r.status_code == 404
    finally:
        for cl in clients.values():
            await cl.close()


async def test_winner_cancels_and_the_runner_up_accepts_over_rest(
    pair: list[ServerProcess],
) -> None:
    node = pair[1]
    live = await live_session(node.url, creator="chance-creator2")
    sid, product = live["session"]["id"], live["product"]["id"]
    tag = sid[-6:]
    clients = await bidders(pair, sid, "ab", tag)
    h = {n: headers(token(f"{n}-{tag}")) for n in "ab"}
    try:
        async with httpx.AsyncClient(base_url=node.url) as http:
            r = await http.post(
                f"/api/sessions/{sid}/auctions",
                headers=live["headers"],
                json={
                    "product_id": product,
                    "start_cents": 1000,
                    "min_increment_cents": 100,
                    "duration_s": 3,
                    "mode": "sudden_death",
                },
            )
            auction = r.json()["id"]
            for i, (name, amount) in enumerate([("a", 1000), ("b", 1200)]):
                await clients[name].send(
                    {
                        "type": "bid",
                        "session": sid,
                        "auction": auction,
                        "amount_cents": amount,
                        "ref": f"b{i}",
                    }
                )
                await clients[name].expect("ack", ref=f"b{i}")
            await clients["b"].expect("auction_ended", timeout=30, auction=auction)
            [won] = (await http.get("/api/me/orders", headers=h["b"])).json()
            r = await http.post(f"/api/orders/{won['id']}/cancel", headers=h["b"])
            assert r.json()["status"] == "cancelled"
            offered = await clients["a"].expect("second_chance", timeout=20)
            assert offered["amount_cents"] == 1000
            r = await http.post(
                f"/api/auctions/{auction}/second-chance",
                headers=h["a"],
                json={"idempotency_key": "k"},
            )
            assert r.status_code == 201, r.text
            order = r.json()
            assert (order["unit_cents"], order["status"], order["offer"]) == (
                1000,
                "reserved",
                won["offer"],
            )
            # Bad bodies change nothing.
            r = await http.post(
                f"/api/auctions/{auction}/second-chance", headers=h["a"], json={"x": 1}
            )
            assert r.status_code == 400
            r = await http.post(
                f"/api/auctions/{auction}/second-chance", json={"idempotency_key": "k"}
            )
            assert r.status_code == 401
            mine = (await http.get("/api/me/orders", headers=h["a"])).json()
            assert [o["id"] for o in mine] == [order["id"]]
    finally:
        for cl in clients.values():
            await cl.close()
