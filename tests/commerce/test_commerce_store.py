"""Commerce against real PostgreSQL: offers, purchases under contention, orders, expiry,
auctions, and the outbox rows written with each change."""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

from livecart.auth import Identity
from livecart.catalog import store as catalog
from livecart.catalog.models import ProductCreate, SessionCreate
from livecart.commerce import BUY_BATCH_MAX, CommerceService
from livecart.commerce.rules import Offer, Order
from livecart.protocol import Failure, RoomEvent
from livecart.runtime.db import connect_pool

from ..conftest import Clock as Clock  # imported from here by the other commerce tests


class Room:
    """Stands in for the gateway: records published events and stock callbacks."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.stock: list[tuple[str, str, int]] = []

    async def publish(self, event: RoomEvent) -> int:
        body: dict[str, Any] = msgspec.to_builtins(event)
        kind, session = body.pop("type"), body.pop("session")
        self.events.append((session, kind, body))
        return len(self.events)

    def on_stock(self, session: str, offer: str, remaining: int) -> None:
        self.stock.append((session, offer, remaining))

    def kinds(self, kind: str, session: str | None = None) -> list[dict[str, Any]]:
        """Bodies of one kind (sweeps on the shared database may touch other tests' rows)."""
        return [b for s, k, b in self.events if k == kind and session in (None, s)]


class World:
    def __init__(self, creator: Identity, session: str, product: str, tag: str) -> None:
        self.creator = creator
        self.session = session
        self.product = product
        self.tag = tag

    def viewer(self, name: str, *, minor: bool = False) -> Identity:
        return Identity(sub=f"{name}-{self.tag}", name=name, role="viewer", minor=minor)


ADMIN = Identity(sub="admin", name="admin", role="admin")


async def world(pool: asyncpg.Pool, *, stock: int = 100, status: str = "live") -> World:
    tag = secrets.token_hex(4)
    creator = Identity(sub=f"creator-{tag}", name="creator", role="creator")
    product = await catalog.create_product(
        pool, creator.sub, ProductCreate(title="sneakers", price_cents=5000, stock=stock)
    )
    session = await catalog.create_session(pool, creator.sub, SessionCreate(title="drop"))
    await catalog.add_to_showcase(pool, session.id, product.id)
    await pool.execute("UPDATE sessions SET status = $2 WHERE id = $1", session.id, status)
    return World(creator, session.id, product.id, tag)


def service(
    pool: asyncpg.Pool, room: Room, clock: Clock | None = None, **kw: Any
) -> CommerceService:
    return CommerceService(
        pool, publish=room.publish, on_stock=room.on_stock, clock=clock or time.time, **kw
    )


async def settle() -> None:
    """Let the per-session event publisher run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def stock_of(pool: asyncpg.Pool, product: str) -> int:
    return int(await pool.fetchval("SELECT stock FROM products WHERE id = $1", product))


async def ledger(pool: asyncpg.Pool, offer: str) -> dict[str, int]:
    row = await pool.fetchrow(
        "SELECT f.quantity, f.remaining, f.returned, "
        "coalesce(sum(o.qty) FILTER (WHERE o.status = 'reserved'), 0) AS reserved, "
        "coalesce(sum(o.qty) FILTER (WHERE o.status = 'paid'), 0) AS paid "
        "FROM offers f LEFT JOIN orders o ON o.offer = f.id WHERE f.id = $1 "
        "GROUP BY f.quantity, f.remaining, f.returned",
        offer,
    )
    return dict(row)


def assert_invariant(led: dict[str, int]) -> None:
    assert led["remaining"] >= 0
    assert led["remaining"] + led["reserved"] + led["paid"] == led["quantity"], led


async def topics_for(pool: asyncpg.Pool, order_or_offer_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT topic FROM webhook_outbox WHERE payload->'data'->>'id' = $1 ORDER BY id",
        order_or_offer_id,
    )
    return [r["topic"] for r in rows]


# ---------------------------------------------------------------- the flash sale


async def test_flash_sale_under_contention(pool: asyncpg.Pool) -> None:
    """1,000 concurrent attempts from 300 buyers on 50 units, limit 2, with duplicate retries."""
    w = await world(pool, stock=80)
    room = Room()
    svc = service(pool, room)
    offer = await svc.open_offer(w.creator, w.session, w.product, 1999, 50, 2, 600)
    assert await stock_of(pool, w.product) == 30

    rng = random.Random(20240601)
    users = [w.viewer(f"u{i}") for i in range(300)]
    attempts: list[tuple[Identity, str, int]] = []
    for i in range(1000):
        if attempts and rng.random() < 0.3:
            attempts.append(rng.choice(attempts))  # a retry: same user, same ref, same qty
        else:
            attempts.append((rng.choice(users), f"ref-{i}", rng.choice((1, 1, 1, 2))))

    async def attempt(who: Identity, ref: str, qty: int) -> Order | str:
        while True:
            try:
                return await svc.buy(who, offer.id, qty, ref, session_id=w.session)
            except Failure as failure:
                if failure.code != "unavailable":
                    return failure.code
                await asyncio.sleep(0.05)  # retry later with the same ref, as told

    results = await asyncio.gather(*(attempt(*a) for a in attempts))

    codes = Counter(r if isinstance(r, str) else "order" for r in results)
    # Most late attempts waited for a pooled connection and were answered by the gate.
    assert svc.stats["gate_refusals"] > 0
    assert set(codes) <= {"order", "sold_out", "limit_reached"}, codes
    by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (who, ref, _), result in zip(attempts, results, strict=True):
        if isinstance(result, Order):
            assert result.user == who.sub and result.status == "reserved"
            by_key[(who.sub, ref)].add(result.id)
    assert all(len(ids) == 1 for ids in by_key.values()), "a retry got a different order"

    led = await ledger(pool, offer.id)
    assert led["remaining"] == 0 and led["reserved"] == 50, led
    assert_invariant(led)
    per_user = await pool.fetch(
        "SELECT user_id, sum(qty) AS n FROM orders WHERE offer = $1 GROUP BY user_id", offer.id
    )
    assert per_user and max(r["n"] for r in per_user) <= 2
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE offer = $1", offer.id) == len(
        by_key
    )

    # Every original ref retried after the sell-out gets its own order back.
    for (sub, ref), ids in by_key.items():
        who = Identity(sub=sub, name="u", role="viewer")
        qty = next(q for u, r, q in attempts if u.sub == sub and r == ref)
        again = await svc.buy(who, offer.id, qty, ref)
        assert again.id == next(iter(ids))

    # Latecomers are turned away by the in-process gate, without the database.
    before = svc.stats["gate_refusals"]
    for i in range(20):
        with pytest.raises(Failure) as refused:
            await svc.buy(w.viewer(f"late{i}"), offer.id, 1, f"late-{i}")
        assert refused.value.code == "sold_out"
    assert svc.stats["gate_refusals"] - before >= 19

    await settle()
    sold = room.kinds("sold")
    assert sum(e["qty"] for e in sold) == 50
    assert all(set(e) == {"offer", "qty"} for e in sold), "sold must not reveal the buyer"
    await svc.report_stock()
    assert room.stock[-1] == (w.session, offer.id, 0)
    assert await pool.fetchval(
        "SELECT count(*) FROM webhook_outbox WHERE topic = 'order.reserved' "
        "AND payload->'data'->>'offer' = $1",
        offer.id,
    ) == len(by_key)
    await svc.stop()


async def test_a_burst_past_the_stock_waits_for_the_batch_that_asks_for_it(
    pool: asyncpg.Pool,
) -> None:
    """Once the batches at the database ask for every unit left, the offer's other attempts
    stay off the database and are answered by the gate when that batch commits."""
    w = await world(pool, stock=50)
    svc = service(pool, Room())
    assert svc._admit >= 2  # several lanes could take the burst to the database
    offer = await svc.open_offer(w.creator, w.session, w.product, 100, 50, 1, 600)
    attempts = 500

    async def attempt(i: int) -> str:
        try:
            await svc.buy(w.viewer(f"u{i}"), offer.id, 1, f"r{i}", session_id=w.session)
        except Failure as failure:
            return failure.code
        return "order"

    results = Counter(await asyncio.gather(*(attempt(i) for i in range(attempts))))
    assert results == {"order": 50, "sold_out": attempts - 50}, results
    # One batch (BUY_BATCH_MAX attempts) went to the database; the rest met the gate.
    assert svc.stats["gate_refusals"] == attempts - BUY_BATCH_MAX
    assert not svc._in_flight and offer.id not in svc._known_left
    led = await ledger(pool, offer.id)
    assert led["remaining"] == 0 and led["reserved"] == 50, led
    assert_invariant(led)
    # A unit that comes back is bought again: the figure does not hold attempts back.
    order = await pool.fetchval(
        "SELECT id FROM orders WHERE offer = $1 AND status = 'reserved' LIMIT 1", offer.id
    )
    owner = await pool.fetchval("SELECT user_id FROM orders WHERE id = $1", order)
    await svc.cancel(Identity(sub=owner, name="u", role="viewer"), order)
    again = await svc.buy(w.viewer("late"), offer.id, 1, "late", session_id=w.session)
    assert again.status == "reserved"
    await svc.stop()


async def test_gate_reopens_when_stock_returns(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=2)
    svc = service(pool, Room())
    offer = await svc.open_offer(w.creator, w.session, w.product, 100, 2, 2, 600)
    order = await svc.buy(w.viewer("a"), offer.id, 2, "r1")
    with pytest.raises(Failure, match="sold out"):
        await svc.buy(w.viewer("b"), offer.id, 1, "r1")
    assert offer.id in svc.gate
    await svc.cancel(w.viewer("a"), order.id)
    bought = await svc.buy(w.viewer("b"), offer.id, 1, "r2")
    assert bought.status == "reserved"
    assert_invariant(await ledger(pool, offer.id))


# ---------------------------------------------------------------- offers


async def test_open_offer_rules(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=5)
    room = Room()
    svc = service(pool, room)
    other = Identity(sub="someone-else", name="x", role="creator")
    cases: list[tuple[Identity, str, str, int, str]] = [
        (other, w.session, w.product, 1, "forbidden"),
        (w.viewer("v"), w.session, w.product, 1, "forbidden"),
        (w.creator, "ses_missing", w.product, 1, "not_found"),
        (w.creator, w.session, "prd_missing", 1, "not_found"),
        (w.creator, w.session, w.product, 6, "sold_out"),
        (w.creator, w.session, w.product, 0, "bad_frame"),
    ]
    for who, session, product, qty, code in cases:
        with pytest.raises(Failure) as refused:
            await svc.open_offer(who, session, product, 100, qty, 1, 60)
        assert refused.value.code == code, (who.sub, session, product, qty)
    assert await stock_of(pool, w.product) == 5, "a refused offer must not take stock"

    idle = await world(pool, stock=5, status="scheduled")
    with pytest.raises(Failure) as refused:
        await svc.open_offer(idle.creator, idle.session, idle.product, 100, 1, 1, 60)
    assert refused.value.code == "not_live"

    offer = await svc.open_offer(ADMIN, w.session, w.product, 100, 5, 1, 60)
    assert (offer.quantity, offer.remaining, offer.currency) == (5, 5, "USD")
    assert await stock_of(pool, w.product) == 0
    snapshot = await svc.open_offers(w.session)
    assert [o["id"] for o in snapshot] == [offer.id] and snapshot[0]["remaining"] == 5
    published = room.kinds("offer")
    assert published[0]["id"] == offer.id and "session" not in published[0]


async def test_offer_end_returns_remaining_exactly_once(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=30)
    room = Room()
    clock = Clock()
    svc = service(pool, room, clock)
    offer = await svc.open_offer(w.creator, w.session, w.product, 100, 10, 5, 60)
    order = await svc.buy(w.viewer("a"), offer.id, 3, "r")
    assert await stock_of(pool, w.product) == 20

    with pytest.raises(Failure) as refused:
        await svc.end_offer(w.viewer("a"), offer.id)
    assert refused.value.code == "forbidden"

    clock.advance(61)  # the end is due too: hand and sweeper race for it
    results = await asyncio.gather(
        *(svc.end_offer(w.creator, offer.id) for _ in range(5)),
        *(svc.end_due_offers() for _ in range(3)),
    )
    assert await stock_of(pool, w.product) == 27
    ended = results[0]
    assert isinstance(ended, Offer) and ended.status == "ended" and ended.remaining == 7
    led = await ledger(pool, offer.id)
    assert led["returned"] == 7
    assert_invariant(led)
    await settle()
    assert [e["offer"] for e in room.kinds("offer_ended", w.session)] == [offer.id]
    assert await topics_for(pool, offer.id) == ["offer.ended"]

    with pytest.raises(Failure) as refused:
        await svc.buy(w.viewer("b"), offer.id, 1, "r")
    assert refused.value.code == "offer_closed"
    # A retry of the order placed before the end still gets that order.
    assert (await svc.buy(w.viewer("a"), offer.id, 3, "r")).id == order.id

    # Units of an order cancelled after the end go straight back to product stock.
    await svc.cancel(w.creator, order.id)
    assert await stock_of(pool, w.product) == 30
    led = await ledger(pool, offer.id)
    assert led["returned"] == 10
    assert_invariant(led)
    assert await svc.open_offers(w.session) == []


async def test_offers_end_with_their_session(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=4)
    room = Room()
    svc = service(pool, room)
    offer = await svc.open_offer(w.creator, w.session, w.product, 100, 4, 1, 600)
    await pool.execute("UPDATE sessions SET status = 'ended' WHERE id = $1", w.session)
    with pytest.raises(Failure) as refused:
        await svc.buy(w.viewer("a"), offer.id, 1, "r")
    assert refused.value.code == "not_live"
    assert await svc.end_due_offers() >= 1
    assert await stock_of(pool, w.product) == 4
    await settle()
    assert room.kinds("offer_ended", w.session) == [
        {
            "offer": offer.id,
            "reason": "session_ended",
            "returned": 4,
        }
    ]


# ---------------------------------------------------------------- buying


async def test_buy_refusals(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    clock = Clock()
    svc = service(pool, Room(), clock)
    offer = await svc.open_offer(w.creator, w.session, w.product, 250, 5, 2, 30)
    guest = Identity(sub="guest-1", name="guest", role="guest")

    async def code(who: Identity, offer_id: str, qty: int, ref: str, **kw: Any) -> str:
        with pytest.raises(Failure) as refused:
            await svc.buy(who, offer_id, qty, ref, **kw)
        return refused.value.code

    assert await code(guest, offer.id, 1, "r") == "unauthorized"
    assert await code(w.viewer("kid", minor=True), offer.id, 1, "r") == "forbidden"
    assert await code(w.viewer("a"), "off_missing", 1, "r") == "not_found"
    assert await code(w.viewer("a"), offer.id, 1, "r", session_id="ses_other") == "not_found"
    assert await code(w.viewer("a"), offer.id, 6, "r") == "sold_out"
    assert await code(w.viewer("a"), offer.id, 3, "r") == "limit_reached"
    first = await svc.buy(w.viewer("a"), offer.id, 2, "r")
    assert (first.unit_cents, first.total_cents, first.qty) == (250, 500, 2)
    assert await code(w.viewer("a"), offer.id, 1, "r2") == "limit_reached"

    other = await svc.open_offer(w.creator, w.session, w.product, 100, 1, 1, 30)
    assert await code(w.viewer("a"), other.id, 1, "r") == "duplicate"

    await svc.cancel(w.viewer("a"), first.id)  # cancelled orders do not count to the limit
    assert (await svc.buy(w.viewer("a"), offer.id, 2, "r3")).status == "reserved"

    clock.advance(31)
    assert await code(w.viewer("b"), offer.id, 1, "r") == "offer_closed"
    # Expiry times and money are exact in the order.
    placed = datetime.fromisoformat(first.created_at)
    assert datetime.fromisoformat(first.expires_at) - placed == timedelta(seconds=600)


async def test_unavailable_when_the_database_is_gone(database_url: str) -> None:
    lonely = await connect_pool(database_url, min_size=1, max_size=1)
    svc = service(lonely, Room())
    await lonely.close()
    with pytest.raises(Failure) as refused:
        await svc.buy(Identity(sub="u", name="u", role="viewer"), "off_x", 1, "r")
    assert refused.value.code == "unavailable" and refused.value.retry_after_ms


# ---------------------------------------------------------------- orders


async def test_order_visibility_and_confirm(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    svc = service(pool, Room())
    offer = await svc.open_offer(w.creator, w.session, w.product, 300, 5, 5, 60)
    buyer = w.viewer("buyer")
    order = await svc.buy(buyer, offer.id, 2, "r")

    assert (await svc.get_order(buyer, order.id)).id == order.id
    assert (await svc.get_order(w.creator, order.id)).id == order.id
    assert (await svc.get_order(ADMIN, order.id)).id == order.id
    for who, code in (
        (w.viewer("nosy"), "forbidden"),
        (Identity(sub="creator-x", name="c", role="creator"), "forbidden"),
        (Identity(sub="guest-9", name="g", role="guest"), "unauthorized"),
    ):
        with pytest.raises(Failure) as refused:
            await svc.get_order(who, order.id)
        assert refused.value.code == code
    with pytest.raises(Failure, match="no such order"):
        await svc.get_order(buyer, "ord_missing")
    assert [o.id for o in await svc.list_orders(buyer)] == [order.id]

    for who in (buyer, w.creator):
        with pytest.raises(Failure) as refused:
            await svc.confirm(who, order.id)
        assert refused.value.code == "forbidden"
    paid = await svc.confirm(ADMIN, order.id)
    assert paid.status == "paid"
    assert (await svc.confirm(ADMIN, order.id)).status == "paid"  # a repeated capture
    with pytest.raises(Failure) as refused:
        await svc.cancel(buyer, order.id)
    assert refused.value.code == "forbidden"
    assert_invariant(await ledger(pool, offer.id))

    refunded = await svc.cancel(w.creator, paid.id)
    assert refunded.status == "cancelled"
    assert (await svc.cancel(w.creator, paid.id)).status == "cancelled"  # idempotent
    led = await ledger(pool, offer.id)
    assert led["remaining"] == 5
    assert_invariant(led)
    with pytest.raises(Failure) as refused:
        await svc.confirm(ADMIN, order.id)
    assert refused.value.code == "offer_closed"
    assert await topics_for(pool, order.id) == ["order.reserved", "order.paid", "order.cancelled"]


async def test_cancel_permissions(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    room = Room()
    svc = service(pool, room)
    offer = await svc.open_offer(w.creator, w.session, w.product, 300, 5, 5, 60)
    order = await svc.buy(w.viewer("buyer"), offer.id, 2, "r")
    with pytest.raises(Failure) as refused:
        await svc.cancel(w.viewer("stranger"), order.id)
    assert refused.value.code == "forbidden"
    cancelled = await svc.cancel(w.viewer("buyer"), order.id)
    assert cancelled.status == "cancelled"
    await svc.report_stock()
    assert room.stock[-1] == (w.session, offer.id, 5)
    assert_invariant(await ledger(pool, offer.id))


async def test_reservations_expire(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    room = Room()
    clock = Clock()
    svc = service(pool, room, clock, reservation_ttl_s=120)
    offer = await svc.open_offer(w.creator, w.session, w.product, 300, 4, 4, 3600)
    kept = await svc.buy(w.viewer("a"), offer.id, 1, "r")
    lapsed = await svc.buy(w.viewer("b"), offer.id, 3, "r")
    await svc.confirm(ADMIN, kept.id)
    assert await svc.expire_due() == 0
    clock.advance(121)
    assert await svc.expire_due() >= 1
    assert (await svc.get_order(ADMIN, lapsed.id)).status == "expired"
    assert (await svc.get_order(ADMIN, kept.id)).status == "paid"
    led = await ledger(pool, offer.id)
    assert led["remaining"] == 3
    assert_invariant(led)
    await svc.report_stock()
    assert room.stock[-1] == (w.session, offer.id, 3)
    assert await topics_for(pool, lapsed.id) == ["order.reserved", "order.expired"]
    assert (await svc.buy(w.viewer("b"), offer.id, 3, "r")).status == "expired"  # same ref


async def test_expiry_frees_stock_held_by_a_crashed_node(pool: asyncpg.Pool) -> None:
    """A node committed an order and died before answering: the row alone drives expiry."""
    w = await world(pool, stock=10)
    clock = Clock()
    first = service(pool, Room(), clock)
    offer = await first.open_offer(w.creator, w.session, w.product, 300, 6, 6, 3600)
    past = datetime.now(UTC) - timedelta(seconds=5)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE offers SET remaining = remaining - 4 WHERE id = $1", offer.id)
        await conn.execute(
            "INSERT INTO orders (id, user_id, offer, qty, unit_cents, total_cents, currency, "
            "status, idempotency_key, created_at, expires_at) "
            "VALUES ('ord_crash_' || $2, 'ghost', $1, 4, 300, 1200, 'USD', 'reserved', 'k', "
            "$3, $3)",
            offer.id,
            w.tag,
            past,
        )
    assert_invariant(await ledger(pool, offer.id))
    restarted = service(pool, Room())  # a fresh node with the real clock
    await restarted.start()
    try:
        for _ in range(50):
            if (await ledger(pool, offer.id))["remaining"] == 6:
                break
            await asyncio.sleep(0.1)
    finally:
        await restarted.stop()
    led = await ledger(pool, offer.id)
    assert led["remaining"] == 6 and led["reserved"] == 0
    assert_invariant(led)
    status = await pool.fetchval("SELECT status FROM orders WHERE id = 'ord_crash_' || $1", w.tag)
    assert status == "expired"


async def test_expiry_on_several_nodes_at_once(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=200)
    clock = Clock()
    nodes = [service(pool, Room(), clock, reservation_ttl_s=10) for _ in range(4)]
    offer = await nodes[0].open_offer(w.creator, w.session, w.product, 300, 200, 1, 3600)
    await asyncio.gather(
        *(nodes[i % 4].buy(w.viewer(f"u{i}"), offer.id, 1, "r") for i in range(150))
    )
    clock.advance(11)
    counts = await asyncio.gather(*(n.expire_due(batch=7) for n in nodes))
    assert sum(counts) >= 150  # other tests' due orders may be swept too
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM orders WHERE offer = $1 AND status = 'expired'", offer.id
        )
        == 150
    )
    led = await ledger(pool, offer.id)
    assert led["remaining"] == 200
    assert_invariant(led)


# ---------------------------------------------------------------- auctions


async def test_auction_bids_are_totally_ordered(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=3)
    room = Room()
    svc = service(pool, room)
    auction = await svc.create_auction(w.creator, w.session, w.product, 1000, 100, 300, "extend")
    assert await stock_of(pool, w.product) == 2
    with pytest.raises(Failure) as refused:
        await svc.create_auction(w.creator, w.session, w.product, 1000, 100, 300, "extend")
    assert refused.value.code == "duplicate"
    assert (await svc.open_auction(w.session) or {}).get("id") == auction.id

    rng = random.Random(5)
    bidders = [w.viewer(f"b{i}") for i in range(60)]
    amounts = [1000 + 50 * rng.randrange(0, 60) for _ in bidders]

    async def place(who: Identity, amount: int) -> Any:
        try:
            return await svc.bid(who, auction.id, amount, "ref", session_id=w.session)
        except Failure as failure:
            return failure.code

    results = await asyncio.gather(*(place(b, a) for b, a in zip(bidders, amounts, strict=True)))
    accepted = [r for r in results if not isinstance(r, str)]
    assert {r for r in results if isinstance(r, str)} <= {"bid_too_low"}
    rows = await pool.fetch(
        "SELECT seq, user_id, amount_cents FROM bids WHERE auction = $1 ORDER BY seq", auction.id
    )
    assert (
        [r["seq"] for r in rows] == list(range(1, len(rows) + 1)) == sorted(r.seq for r in accepted)
    )
    assert rows[0]["amount_cents"] >= 1000
    for before, after in itertools.pairwise(rows):
        assert after["amount_cents"] >= before["amount_cents"] + 100
    state = await svc.get_auction(auction.id)
    assert state.current_cents == rows[-1]["amount_cents"] and state.leader == rows[-1]["user_id"]
    assert state.bids == len(rows)

    # A retried bid is the same bid, even once it is no longer high enough.
    first = rows[0]
    who = Identity(sub=first["user_id"], name="b", role="viewer")
    again = await svc.bid(who, auction.id, first["amount_cents"], "ref")
    assert again.seq == 1
    await settle()
    assert [e["seq"] for e in room.kinds("bid")] == [r["seq"] for r in rows]


async def test_auction_extension_close_and_winner_order(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=2)
    room = Room()
    clock = Clock()
    svc = service(pool, room, clock, reservation_ttl_s=300)
    start = clock.now
    auction = await svc.create_auction(w.creator, w.session, w.product, 500, 50, 30, "extend")

    with pytest.raises(Failure) as refused:
        await svc.bid(w.viewer("kid", minor=True), auction.id, 600, "r")
    assert refused.value.code == "forbidden"
    with pytest.raises(Failure) as refused:
        await svc.bid(w.viewer("a"), auction.id, 499, "r")
    assert refused.value.code == "bid_too_low"

    first = await svc.bid(w.viewer("a"), auction.id, 500, "r1")
    assert datetime.fromisoformat(first.ends_at).timestamp() == pytest.approx(start + 30)
    clock.advance(25)
    late = await svc.bid(w.viewer("b"), auction.id, 560, "r1")
    assert datetime.fromisoformat(late.ends_at).timestamp() == pytest.approx(clock.now + 10)
    with pytest.raises(Failure) as refused:
        await svc.bid(w.viewer("a"), auction.id, 600, "r2")  # needs 560 + 50
    assert refused.value.code == "bid_too_low"

    clock.advance(9)  # past the original end, inside the extension
    assert await svc.close_due_auctions() == 0
    await svc.bid(w.viewer("a"), auction.id, 610, "r3")
    clock.advance(11)
    with pytest.raises(Failure) as refused:
        await svc.bid(w.viewer("b"), auction.id, 700, "r2")
    assert refused.value.code == "auction_closed"
    assert await svc.close_due_auctions() == 1
    assert await svc.open_auction(w.session) is None

    orders = await svc.list_orders(w.viewer("a"))
    assert len(orders) == 1
    won = orders[0]
    assert (won.qty, won.unit_cents, won.total_cents, won.status) == (1, 610, 610, "reserved")
    assert (await svc.get_auction(auction.id)).winner_order == won.id
    await settle()
    assert room.kinds("auction_ended", w.session) == [
        {"auction": auction.id, "winner": w.viewer("a").sub, "amount_cents": 610, "reason": "time"}
    ]
    assert await topics_for(pool, won.id) == ["order.reserved"]
    assert_invariant(await ledger(pool, won.offer))

    # The winner does not pay: the runner-up gets a second chance; unanswered, the unit goes
    # back to product stock (the chain itself: tests/commerce/test_second_chance.py).
    assert await stock_of(pool, w.product) == 1
    clock.advance(301)
    await svc.expire_due()
    assert await stock_of(pool, w.product) == 1
    assert (await svc.second_chance_of(w.viewer("b"), auction.id)).amount_cents == 560
    assert_invariant(await ledger(pool, won.offer))
    clock.advance(svc.second_chance_ttl_s)
    assert await svc.lapse_due_chances() >= 1
    assert await stock_of(pool, w.product) == 2
    assert_invariant(await ledger(pool, won.offer))


async def test_sudden_death_and_unsold_lot(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=1)
    room = Room()
    clock = Clock()
    svc = service(pool, room, clock)
    auction = await svc.create_auction(w.creator, w.session, w.product, 500, 50, 20, "sudden_death")
    assert await stock_of(pool, w.product) == 0
    clock.advance(19)
    bid = await svc.bid(w.viewer("a"), auction.id, 500, "r")
    assert datetime.fromisoformat(bid.ends_at) == datetime.fromisoformat(auction.ends_at)

    # With nobody bidding, the lot returns to stock.
    w2 = await world(pool, stock=1)
    quiet = await svc.create_auction(w2.creator, w2.session, w2.product, 500, 50, 5, "extend")
    clock.advance(6)
    assert await svc.close_due_auctions() >= 2
    assert await stock_of(pool, w2.product) == 1
    await settle()
    ended = {e["auction"]: e for e in room.kinds("auction_ended")}
    assert ended[quiet.id] == {
        "auction": quiet.id,
        "winner": None,
        "amount_cents": None,
        "reason": "no_bids",
    }
    assert ended[auction.id]["amount_cents"] == 500


async def test_a_return_on_another_node_reopens_the_gate(pool: asyncpg.Pool) -> None:
    """Node A learned 'sold out'; node B cancels an order: A's gate hears of it by NOTIFY at
    once (its time-based re-check is set far away here, so only the notification can help)."""
    w = await world(pool, stock=1)
    node_a = service(pool, Room(), gate_ttl_s=3600)
    node_b = service(pool, Room(), gate_ttl_s=3600)
    await node_a.start()
    try:
        offer = await node_a.open_offer(w.creator, w.session, w.product, 100, 1, 1, 600)
        order = await node_a.buy(w.viewer("a"), offer.id, 1, "r")
        with pytest.raises(Failure, match="sold out"):
            await node_a.buy(w.viewer("b"), offer.id, 1, "r")
        assert offer.id in node_a.gate
        await node_b.cancel(w.viewer("a"), order.id)
        for _ in range(100):
            if offer.id not in node_a.gate:
                break
            await asyncio.sleep(0.02)
        assert (await node_a.buy(w.viewer("b"), offer.id, 1, "r")).status == "reserved"
    finally:
        await node_a.stop()
