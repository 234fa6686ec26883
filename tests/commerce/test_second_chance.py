"""Second chance (SPEC §11) against real PostgreSQL: the chain down the bidders when an
auction's order expires or is cancelled, acceptance (idempotent, only by the bidder offered,
never after the chance lapsed), the books of the hidden offer at every step, the webhooks,
and the personal message delivered by NOTIFY."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from livecart.auth import guest
from livecart.commerce import CommerceService
from livecart.commerce import store as store
from livecart.protocol import Failure
from tests.commerce.test_commerce_store import (
    ADMIN,
    Clock,
    Room,
    World,
    assert_invariant,
    ledger,
    service,
    stock_of,
    world,
)

TTL = 60.0  # reservation
CHANCE_TTL = 30.0


async def closed_auction(
    svc: CommerceService, clock: Clock, w: World, bids: list[tuple[str, int]]
) -> str:
    """An auction with these bids (user name, amount) in order, closed."""
    auction = await svc.create_auction(w.creator, w.session, w.product, 500, 50, 30, "extend")
    for i, (name, amount) in enumerate(bids):
        await svc.bid(w.viewer(name), auction.id, amount, f"r{i}")
    clock.advance(31)
    assert await svc.close_due_auctions() >= 1
    return auction.id


async def refused(code: str, call: Any) -> None:
    with pytest.raises(Failure) as caught:
        await call
    assert caught.value.code == code, caught.value.message


async def hooks(pool: asyncpg.Pool, topic: str, auction: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT payload FROM webhook_outbox WHERE topic = $1 "
        "AND payload->'data'->>'auction' = $2 ORDER BY id",
        topic,
        auction,
    )
    return [r["payload"]["data"] for r in rows]


class Inbox:
    """Personal messages as a node hears them: LISTEN on the channel the store NOTIFYs."""

    def __init__(self) -> None:
        self.told: list[tuple[str, dict[str, Any]]] = []

    def tell(self, user: str, data: bytes) -> None:
        self.told.append((user, json.loads(data)))

    async def wait_for(
        self, user: str, count: int, kind: str = "second_chance"
    ) -> list[dict[str, Any]]:
        for _ in range(200):
            mine = [m for u, m in self.told if u == user and m["type"] == kind]
            if len(mine) >= count:
                return mine
            await asyncio.sleep(0.01)
        raise AssertionError(f"{user} was told {self.told}")


async def test_chain_down_the_bidders_then_back_to_stock(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=1)
    clock = Clock()
    inbox = Inbox()
    svc = service(
        pool,
        Room(),
        clock,
        reservation_ttl_s=TTL,
        second_chance_ttl_s=CHANCE_TTL,
        tell=inbox.tell,
    )
    listener = await pool.acquire()
    await listener.add_listener(store.PERSONAL, svc._personal_message)
    try:
        a, b, c, d = (w.viewer(n) for n in "abcd")
        # b's highest bid (750) counts, not its latest; d wins at 800.
        auction = await closed_auction(
            svc, clock, w, [("a", 500), ("b", 600), ("c", 700), ("b", 750), ("d", 800)]
        )
        assert await stock_of(pool, w.product) == 0
        won = (await svc.list_orders(d))[0]
        assert [h["id"] for h in await hooks(pool, "order.reserved", auction)] == [won.id]

        # Nothing is offered while the winner's order holds the unit.
        await refused("forbidden", svc.accept_second_chance(b, auction, "k"))

        # The winner's order expires: b, the runner-up by highest bid, is offered 750.
        clock.advance(TTL + 1)
        await svc.expire_due()
        [told] = await inbox.wait_for(b.sub, 1)
        assert told["type"] == "second_chance"
        assert (told["session"], told["auction"], told["amount_cents"]) == (w.session, auction, 750)
        chance = await svc.second_chance_of(b, auction)
        assert (chance.status, chance.amount_cents, chance.expires_at) == (
            "offered",
            750,
            told["expires_at"],
        )
        offered = await hooks(pool, "auction.second_chance", auction)
        assert [(h["user"], h["round"], h["amount_cents"]) for h in offered] == [(b.sub, 1, 750)]
        books = await ledger(pool, won.offer)
        assert_invariant(books)
        assert (books["remaining"], books["returned"]) == (1, 0)  # held for the chain
        assert await stock_of(pool, w.product) == 0

        # Only b may take it; the winner, other bidders, guests and minors may not.
        await refused("forbidden", svc.accept_second_chance(c, auction, "k"))
        await refused("forbidden", svc.accept_second_chance(d, auction, "k"))
        await refused("forbidden", svc.accept_second_chance(w.viewer("e"), auction, "k"))
        await refused("unauthorized", svc.accept_second_chance(guest("g1"), auction, "k"))
        await refused("not_found", svc.accept_second_chance(b, "auc_nope", "k"))
        await refused(
            "not_found", svc.accept_second_chance(b, auction, "k", session_id="ses_other")
        )
        await refused("bad_frame", svc.accept_second_chance(b, auction, ""))
        assert (await ledger(pool, won.offer))["remaining"] == 1  # refusals changed nothing

        # b lets it lapse: c (700) is next, and b can no longer take it.
        clock.advance(CHANCE_TTL)
        assert await svc.lapse_due_chances() >= 1
        [told] = await inbox.wait_for(c.sub, 1)
        assert told["amount_cents"] == 700
        assert (await svc.second_chance_of(b, auction)).status == "lapsed"
        await refused("auction_closed", svc.accept_second_chance(b, auction, "k"))

        # c accepts: a reserved order at 700 on the same hidden offer; again → the same order.
        order = await svc.accept_second_chance(c, auction, "k1")
        assert (order.user, order.qty, order.unit_cents, order.status) == (
            c.sub,
            1,
            700,
            "reserved",
        )
        assert order.offer == won.offer
        again = await svc.accept_second_chance(c, auction, "k2")
        assert again.id == order.id
        assert (await svc.second_chance_of(c, auction)).order == order.id
        books = await ledger(pool, won.offer)
        assert_invariant(books)
        assert (books["remaining"], books["reserved"]) == (0, 1)
        reserved = await hooks(pool, "order.reserved", auction)
        assert [(h["id"], h.get("second_chance")) for h in reserved] == [
            (won.id, None),
            (order.id, True),
        ]

        # c cancels: a (500) is offered, lets it lapse, and nobody is left: back to stock.
        await svc.cancel(c, order.id)
        [told] = await inbox.wait_for(a.sub, 1)
        assert told["amount_cents"] == 500
        assert_invariant(await ledger(pool, won.offer))
        clock.advance(CHANCE_TTL)
        assert await svc.lapse_due_chances() >= 1
        books = await ledger(pool, won.offer)
        assert_invariant(books)
        assert (books["remaining"], books["returned"]) == (1, 1)
        assert await stock_of(pool, w.product) == 1
        await refused("auction_closed", svc.accept_second_chance(a, auction, "k"))
        offered = await hooks(pool, "auction.second_chance", auction)
        assert [h["user"] for h in offered] == [b.sub, c.sub, a.sub]
        # Nobody was told twice, and the winner never.
        ours = [(u, m) for u, m in inbox.told if u in {a.sub, b.sub, c.sub, d.sub}]
        chances = [u for u, m in ours if m["type"] == "second_chance"]
        assert sorted(chances) == sorted([a.sub, b.sub, c.sub])
        # Each lead lost in the bidding was told too: a to b, b to c, c to b, b to d.
        outbids = [(u, m["amount_cents"]) for u, m in ours if m["type"] == "outbid"]
        assert sorted(outbids) == sorted([(a.sub, 600), (b.sub, 700), (c.sub, 750), (b.sub, 800)])
    finally:
        await listener.remove_listener(store.PERSONAL, svc._personal_message)
        await pool.release(listener)


async def test_winner_cancels_and_a_double_accept_makes_one_order(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=1)
    clock = Clock()
    svc = service(pool, Room(), clock, reservation_ttl_s=TTL, second_chance_ttl_s=CHANCE_TTL)
    a, b = w.viewer("a"), w.viewer("b")
    auction = await closed_auction(svc, clock, w, [("a", 500), ("b", 550)])
    won = (await svc.list_orders(b))[0]
    await svc.cancel(b, won.id)
    assert (await svc.second_chance_of(a, auction)).amount_cents == 500

    orders = await asyncio.gather(
        *(svc.accept_second_chance(a, auction, f"k{i}") for i in range(5))
    )
    assert len({o.id for o in orders}) == 1
    count = await pool.fetchval(
        "SELECT count(*) FROM orders WHERE offer = $1 AND user_id = $2", won.offer, a.sub
    )
    assert count == 1
    assert_invariant(await ledger(pool, won.offer))

    # The second-chance order is confirmed and then refunded by the seller: nobody is left
    # (the winner is never offered), so the unit returns to stock.
    await svc.confirm(ADMIN, orders[0].id)
    await svc.cancel(w.creator, orders[0].id)
    books = await ledger(pool, won.offer)
    assert_invariant(books)
    assert (books["remaining"], books["returned"]) == (1, 1)
    assert await stock_of(pool, w.product) == 1
    await refused("forbidden", svc.accept_second_chance(b, auction, "k"))


async def test_an_auction_without_other_bidders_returns_the_unit(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=1)
    clock = Clock()
    svc = service(pool, Room(), clock, reservation_ttl_s=TTL, second_chance_ttl_s=CHANCE_TTL)
    # One bidder, bidding twice: nobody else to offer it to.
    await closed_auction(svc, clock, w, [("a", 500), ("a", 600)])
    won = (await svc.list_orders(w.viewer("a")))[0]
    clock.advance(TTL + 1)
    await svc.expire_due()
    assert await stock_of(pool, w.product) == 1
    assert_invariant(await ledger(pool, won.offer))


async def test_proxy_bids_count_at_their_public_price_and_the_reserve_holds(
    pool: asyncpg.Pool,
) -> None:
    """A proxy bidder is offered the highest price bid for them in public, never their max;
    bidders under the hidden reserve are never offered the unit."""
    clock = Clock()
    svc = service(pool, Room(), clock, reservation_ttl_s=TTL, second_chance_ttl_s=CHANCE_TTL)

    async def run(
        reserve: int | None, bids: list[tuple[str, int, int | None]]
    ) -> tuple[World, str, list[str]]:
        w = await world(pool, stock=1)
        made = await svc.create_auction(
            w.creator, w.session, w.product, 500, 50, 30, "extend", reserve_cents=reserve
        )
        for i, (name, amount, top) in enumerate(bids):
            await svc.bid(w.viewer(name), made.id, amount, f"r{i}", max_cents=top)
        clock.advance(31)
        assert await svc.close_due_auctions() >= 1
        won = (await svc.list_orders(w.viewer("c")))[0]
        clock.advance(TTL + 1)
        await svc.expire_due()
        offered = [
            n
            for n in "ab"
            if await pool.fetchval(
                "SELECT 1 FROM second_chances WHERE auction = $1 AND user_id = $2",
                made.id,
                w.viewer(n).sub,
            )
        ]
        assert_invariant(await ledger(pool, won.offer))
        return w, made.id, offered

    # a: 500 with a max of 1000; b's 600 is met by a's proxy at 650; c's 1200 leads.
    w, auction, offered = await run(None, [("a", 500, 1000), ("b", 600, None), ("c", 1200, None)])
    assert offered == ["a"]
    assert (await svc.second_chance_of(w.viewer("a"), auction)).amount_cents == 650

    # Reserve 800: c's 900 meets it, a's 600 and b's 700 do not.
    w, auction, offered = await run(800, [("a", 600, None), ("b", 700, None), ("c", 900, None)])
    assert offered == []
    assert await stock_of(pool, w.product) == 1


async def test_two_nodes_sweeping_at_once_run_each_chain_in_order(pool: asyncpg.Pool) -> None:
    """Two services (as two nodes) expire orders and lapse chances at the same time over
    many auctions: every chain offers its bidders one at a time, highest first, each once,
    and every unit ends back in stock with the books balanced."""
    clock = Clock()
    nodes = [
        service(pool, Room(), clock, reservation_ttl_s=TTL, second_chance_ttl_s=CHANCE_TTL)
        for _ in range(2)
    ]
    lots: list[tuple[World, str]] = []
    for _ in range(8):
        w = await world(pool, stock=1)
        made = await nodes[0].create_auction(
            w.creator, w.session, w.product, 500, 50, 30, "sudden_death"
        )
        for i, (name, amount) in enumerate([("a", 500), ("b", 600), ("c", 700), ("d", 800)]):
            await nodes[i % 2].bid(w.viewer(name), made.id, amount, f"r{i}")
        lots.append((w, made.id))
    clock.advance(31)
    while await nodes[0].close_due_auctions():
        pass
    clock.advance(TTL + 1)
    for _ in range(4):  # the winner's expiry, then three lapses, both nodes racing
        await asyncio.gather(*(n.expire_due() for n in nodes))
        await asyncio.gather(*(n.lapse_due_chances() for n in nodes))
        for _w, auction in lots:
            open_now = await pool.fetchval(
                "SELECT count(*) FROM second_chances WHERE auction = $1 AND status = 'offered'",
                auction,
            )
            assert open_now <= 1
        clock.advance(CHANCE_TTL)
    for w, auction in lots:
        rows = await pool.fetch(
            "SELECT round, user_id, amount_cents, status FROM second_chances "
            "WHERE auction = $1 ORDER BY round",
            auction,
        )
        assert [(r["round"], r["user_id"], r["amount_cents"], r["status"]) for r in rows] == [
            (1, w.viewer("c").sub, 700, "lapsed"),
            (2, w.viewer("b").sub, 600, "lapsed"),
            (3, w.viewer("a").sub, 500, "lapsed"),
        ]
        assert await stock_of(pool, w.product) == 1
        offer = await pool.fetchval("SELECT id FROM offers WHERE auction = $1", auction)
        books = await ledger(pool, offer)
        assert_invariant(books)
        assert (books["remaining"], books["returned"]) == (1, 1)
