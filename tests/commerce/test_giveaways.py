"""Giveaways against real PostgreSQL: units taken at creation, entries (batched, idempotent,
eligibility), the draw exactly once across services, prize orders at price 0 that expire back
to stock, and the webhooks and room events."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from livecart.auth import Identity, guest
from livecart.commerce import CommerceService, draw
from livecart.protocol import Failure

from .test_commerce_store import (
    ADMIN,
    Clock,
    Room,
    assert_invariant,
    ledger,
    service,
    settle,
    stock_of,
    world,
)


async def _enter(svc: CommerceService, who: Identity, giveaway: str, *, session_id: str) -> None:
    await svc.enter(who, giveaway, session_id=session_id)


async def _refused(code: str, aw: object) -> None:
    with pytest.raises(Failure) as refused:
        await aw  # type: ignore[misc]
    assert refused.value.code == code, refused.value.message


async def test_giveaway_lifecycle(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=5)
    room = Room()
    clock = Clock()
    svc = service(pool, room, clock, reservation_ttl_s=300)
    other = w.viewer("someone")
    await _refused("forbidden", svc.create_giveaway(other, w.session, w.product, 1, 60))
    g = await svc.create_giveaway(w.creator, w.session, w.product, 3, 60, "viewers")
    assert (g.winners, g.status, g.seed, g.entrants) == (3, "open", None, None)
    assert len(g.commitment) == 64
    assert await stock_of(pool, w.product) == 2
    await _refused("duplicate", svc.create_giveaway(ADMIN, w.session, w.product, 1, 60))
    assert await stock_of(pool, w.product) == 2

    viewers = [w.viewer(f"v{i}") for i in range(10)]
    # Concurrent entries, each user twice: one entry each, every one acknowledged.
    await asyncio.gather(
        *[svc.enter(v, g.id, session_id=w.session) for v in viewers + viewers]
    )
    await _refused("unauthorized", _enter(svc, guest("c1"), g.id, session_id=w.session))
    await _refused("forbidden", _enter(svc, w.viewer("kid", minor=True), g.id, session_id=w.session))
    await _refused("not_found", _enter(svc, viewers[0], "gwy_nope", session_id=w.session))
    await _refused("not_found", _enter(svc, viewers[0], g.id, session_id="ses_other"))
    seen = await svc.get_giveaway(g.id)
    assert (seen.entries, seen.seed, seen.entrants) == (10, None, None)
    assert (await svc.open_giveaway(w.session) or {})["entries"] == 10

    assert await svc.draw_due_giveaways() == 0  # not yet
    clock.advance(61)
    await _refused("offer_closed", _enter(svc, w.viewer("late"), g.id, session_id=w.session))
    assert await svc.draw_due_giveaways() == 1
    assert await svc.draw_due_giveaways() == 0  # at most once
    done = await svc.get_giveaway(g.id)
    assert done.status == "ended" and done.seed is not None and done.entrants is not None
    assert draw.commitment(done.seed) == g.commitment
    assert sorted(done.entrants) == sorted(v.sub for v in viewers)
    assert done.drawn == draw.draw(done.seed, done.entrants, 3)
    assert await svc.open_giveaway(w.session) is None
    await _refused("offer_closed", _enter(svc, viewers[0], g.id, session_id=w.session))

    orders = await svc.prize_orders(g.id, done.drawn)
    assert sorted(o.user for o in orders) == sorted(done.drawn)
    for o in orders:
        assert (o.qty, o.unit_cents, o.total_cents, o.status) == (1, 0, 0, "reserved")
    assert_invariant(await ledger(pool, orders[0].offer))
    await settle()
    assert room.kinds("giveaway", w.session)[0]["commitment"] == g.commitment
    assert "seed" not in room.kinds("giveaway", w.session)[0]
    assert room.kinds("giveaway_ended", w.session) == [
        {"giveaway": g.id, "winners": done.drawn, "seed": done.seed, "entrants": 10, "returned": 0}
    ]
    hooks = await pool.fetch(
        "SELECT topic, payload FROM webhook_outbox WHERE payload->'data'->>'giveaway' = $1 "
        "OR payload->'data'->>'id' = $1 ORDER BY id",
        g.id,
    )
    assert sorted(h["topic"] for h in hooks) == ["giveaway.ended"] + ["order.reserved"] * 3

    # Unpaid prizes expire: the units go back to product stock.
    assert await stock_of(pool, w.product) == 2
    await svc.cancel(w.creator, orders[0].id)
    assert await stock_of(pool, w.product) == 3
    clock.advance(301)
    await svc.expire_due()
    assert await stock_of(pool, w.product) == 5
    assert_invariant(await ledger(pool, orders[0].offer))


async def test_fewer_entrants_than_winners_return_units(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    room = Room()
    clock = Clock()
    svc = service(pool, room, clock)
    g = await svc.create_giveaway(w.creator, w.session, w.product, 5, 10)
    await svc.enter(w.viewer("a"), g.id, session_id=w.session)
    await svc.enter(w.viewer("b"), g.id, session_id=w.session)
    assert await stock_of(pool, w.product) == 5
    clock.advance(10)
    assert await svc.draw_due_giveaways() == 1
    done = await svc.get_giveaway(g.id)
    assert sorted(done.drawn or []) == sorted([w.viewer("a").sub, w.viewer("b").sub])
    assert await stock_of(pool, w.product) == 8  # 2 held by the winners, 3 returned
    await settle()
    assert room.kinds("giveaway_ended", w.session)[0]["returned"] == 3

    # Nobody entered: every unit returns, no order, no hidden offer.
    g2 = await svc.create_giveaway(w.creator, w.session, w.product, 4, 10)
    assert await stock_of(pool, w.product) == 4
    clock.advance(10)
    assert await svc.draw_due_giveaways() == 1
    assert await stock_of(pool, w.product) == 8
    assert (await svc.get_giveaway(g2.id)).drawn == []


async def test_buyers_eligibility_and_creation_refusals(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    room = Room()
    clock = Clock()
    svc = service(pool, room, clock)
    offer = await svc.open_offer(w.creator, w.session, w.product, 100, 2, 1, 600)
    buyer, payer, window = w.viewer("buyer"), w.viewer("payer"), w.viewer("window")
    await svc.reserve(buyer, offer.id, 1, "r1")
    paid = await svc.reserve(payer, offer.id, 1, "r1")
    await svc.confirm(ADMIN, paid.id)

    for winners, duration, eligibility in ((0, 60, "buyers"), (101, 60, "buyers"),
                                           (1, 0, "buyers"), (1, 60, "friends")):  # fmt: skip
        await _refused(
            "bad_frame",
            svc.create_giveaway(w.creator, w.session, w.product, winners, duration, eligibility),
        )
    await _refused("sold_out", svc.create_giveaway(w.creator, w.session, w.product, 9, 60))
    assert await stock_of(pool, w.product) == 8
    g = await svc.create_giveaway(w.creator, w.session, w.product, 2, 60, "buyers")
    await svc.enter(buyer, g.id, session_id=w.session)
    await svc.enter(payer, g.id, session_id=w.session)
    await _refused("forbidden", _enter(svc, window, g.id, session_id=w.session))
    assert (await svc.get_giveaway(g.id)).entries == 2

    # The session ends: the giveaway is drawn at once with who entered.
    await pool.execute("UPDATE sessions SET status = 'ended' WHERE id = $1", w.session)
    assert await svc.draw_due_giveaways() == 1
    done = await svc.get_giveaway(g.id)
    assert sorted(done.drawn or []) == sorted([buyer.sub, payer.sub])


async def test_draw_happens_once_across_services(pool: asyncpg.Pool) -> None:
    """Several nodes sweep at once: each giveaway is drawn once, one set of orders."""
    w = await world(pool, stock=3)
    clock = Clock()
    rooms = [Room() for _ in range(4)]
    nodes = [service(pool, r, clock) for r in rooms]
    g = await nodes[0].create_giveaway(w.creator, w.session, w.product, 2, 5)
    await asyncio.gather(
        *[n.enter(w.viewer(f"u{i}"), g.id, session_id=w.session) for i, n in enumerate(nodes)]
    )
    clock.advance(5)
    drawn = await asyncio.gather(*[n.draw_due_giveaways() for n in nodes])
    assert sum(drawn) == 1
    await settle()
    assert sum(len(r.kinds("giveaway_ended", w.session)) for r in rooms) == 1
    count = await pool.fetchval(
        "SELECT count(*) FROM orders WHERE idempotency_key = $1", draw.PRIZE_KEY + g.id
    )
    assert count == 2


# ---------------------------------------------------------------- stock is conserved

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(1, 4)),
        st.tuples(st.just("enter"), st.integers(0, 5)),
        st.tuples(st.just("draw"), st.just(0)),
        st.tuples(st.just("cancel"), st.integers(0, 3)),
        st.tuples(st.just("expire"), st.just(0)),
    ),
    max_size=14,
)


async def _held(pool: asyncpg.Pool, product: str) -> int:
    """Units of the product held by open giveaways and by live orders."""
    return int(
        await pool.fetchval(
            "SELECT (SELECT coalesce(sum(winners), 0) FROM giveaways "
            "        WHERE product = $1 AND status = 'open') + "
            "       (SELECT coalesce(sum(o.qty), 0) FROM orders o JOIN offers f ON f.id = o.offer "
            "        WHERE f.product = $1 AND o.status IN ('reserved', 'paid'))",
            product,
        )
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
# Fewer entrants than winners, a cancelled prize, an expired one, then a second giveaway.
@example(ops=[("create", 3), ("enter", 0), ("enter", 1), ("draw", 0), ("cancel", 0),
              ("expire", 0), ("create", 4), ("enter", 2), ("draw", 0)])  # fmt: skip
async def test_stock_is_conserved_through_giveaways(
    pool: asyncpg.Pool, ops: list[tuple[str, int]]
) -> None:
    """Creating, entering, drawing, cancelling and expiring in any order: product stock plus
    the units held (open giveaways, reserved or paid prizes) stays the initial stock, every
    prize offer keeps its §6 invariant, and every draw matches its seed and entrants."""
    initial = 6
    w = await world(pool, stock=initial)
    clock = Clock()
    svc = service(pool, Room(), clock, reservation_ttl_s=60)
    opened: list[str] = []
    for op, arg in ops:
        if op == "create":
            try:
                g = await svc.create_giveaway(w.creator, w.session, w.product, arg, 5)
                opened.append(g.id)
            except Failure as refused:
                assert refused.code in ("duplicate", "sold_out")
        elif op == "enter" and opened:
            try:
                await svc.enter(w.viewer(f"p{arg}"), opened[-1], session_id=w.session)
            except Failure as refused:
                assert refused.code == "offer_closed"
        elif op == "draw":
            clock.advance(5)
            await svc.draw_due_giveaways()
        elif op == "cancel" and opened:
            prizes = await pool.fetch(
                "SELECT id FROM orders WHERE idempotency_key = ANY($1::text[]) ORDER BY id",
                [draw.PRIZE_KEY + g for g in opened],
            )
            if arg < len(prizes):
                await svc.cancel(w.creator, prizes[arg]["id"])
        elif op == "expire":
            clock.advance(61)
            await svc.expire_due()
        assert await stock_of(pool, w.product) + await _held(pool, w.product) == initial, op
    for gid in opened:
        g = await svc.get_giveaway(gid)
        if g.status == "ended":
            assert g.seed is not None and g.entrants is not None
            assert g.drawn == draw.draw(g.seed, g.entrants, g.winners)
            offer = await pool.fetchval("SELECT offer FROM giveaways WHERE id = $1", gid)
            if offer is not None:
                assert_invariant(await ledger(pool, offer))
