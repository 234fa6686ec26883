"""Selling in a show (SPEC §13) against real PostgreSQL: claim words, waitlists served first
and in order where units come back, bundles closed once with one webhook each; and a
property test against a reference model: stock is conserved across offers, claims,
waitlists, expiries, cancels and ends, and a waitlist never serves out of order."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from livecart import auth
from livecart.auth import Identity
from livecart.commerce import CommerceService
from livecart.commerce.rules import claim_ref
from livecart.protocol import Failure
from tests.commerce.test_commerce_store import (
    Clock,
    Room,
    World,
    assert_invariant,
    ledger,
    service,
    stock_of,
    world,
)

TTL = 60.0


@pytest.fixture(autouse=True)
async def outbox_left_alone(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """The outbox rows these tests write (hundreds, from the property test) are not for any
    receiver: marked delivered afterwards, so that a later test's deliverer, which drains
    the whole shared table, is not slowed down by them."""
    before = await pool.fetchval("SELECT coalesce(max(id), 0) FROM webhook_outbox")
    yield
    await pool.execute(
        "UPDATE webhook_outbox SET delivered_at = now() WHERE id > $1 AND delivered_at IS NULL",
        before,
    )


async def held(pool: asyncpg.Pool, product: str) -> int:
    """Units of the product held now: by open offers (remaining, not yet returned) and by
    orders that reserve or paid for them."""
    return int(
        await pool.fetchval(
            "SELECT coalesce((SELECT sum(remaining - returned) FROM offers WHERE product = $1), 0)"
            " + coalesce((SELECT sum(o.qty) FROM orders o JOIN offers f ON f.id = o.offer "
            "WHERE f.product = $1 AND o.status IN ('reserved', 'paid')), 0)",
            product,
        )
    )


async def conserved(pool: asyncpg.Pool, w: World, initial: int) -> None:
    assert await stock_of(pool, w.product) + await held(pool, w.product) == initial


async def refused(code: str, call: Any) -> None:
    with pytest.raises(Failure) as caught:
        await call
    assert caught.value.code == code, caught.value.message


# ---------------------------------------------------------------- claim words


async def test_a_claim_word_is_shown_and_normalised(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    svc = service(pool, Room())
    offer = await svc.open_offer(
        w.creator, w.session, w.product, 100, 2, 1, 600, claim_word="  SOLD  "
    )
    assert offer.claim_word == "SOLD"
    assert (await svc.get_offer(offer.id)).claim_word == "SOLD"
    assert (await svc.open_offers(w.session))[0]["claim_word"] == "SOLD"
    # What a viewer may type: the chat normaliser's look-alikes, case and leetspeak fold.
    for typed in ("sold", "S0LD", "ｓｏｌｄ", "ѕold"):
        assert await svc.claim_offer(w.session, typed) == offer.id, typed
    for typed in ("sold!", "so ld please", "mine"):
        assert await svc.claim_offer(w.session, typed) is None, typed


async def test_bad_claim_words_change_nothing(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    svc = service(pool, Room())
    for word in ("\u0301\u0302", "\u200b", "   ", "x" * 33, ""):
        await refused(
            "bad_frame",
            svc.open_offer(w.creator, w.session, w.product, 100, 2, 1, 600, claim_word=word),
        )
    assert await stock_of(pool, w.product) == 10
    assert await pool.fetchval("SELECT count(*) FROM offers WHERE session = $1", w.session) == 0


async def test_two_open_offers_cannot_share_a_claim_word(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    svc = service(pool, Room())
    first = await svc.open_offer(w.creator, w.session, w.product, 100, 2, 1, 600, claim_word="mine")
    await refused(
        "duplicate",
        svc.open_offer(w.creator, w.session, w.product, 100, 2, 1, 600, claim_word="M1NE"),
    )
    assert await stock_of(pool, w.product) == 8  # the refused offer took nothing
    await svc.end_offer(w.creator, first.id)
    svc.claims_changed(w.session)
    second = await svc.open_offer(
        w.creator, w.session, w.product, 100, 2, 1, 600, claim_word="mine"
    )
    assert await svc.claim_offer(w.session, "mine") == second.id


async def test_a_claim_is_one_purchase_per_buyer(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    svc = service(pool, Room())
    offer = await svc.open_offer(w.creator, w.session, w.product, 100, 2, 2, 600, claim_word="+1")
    a = w.viewer("a")
    first = await svc.buy(a, offer.id, 1, claim_ref(offer.id), session_id=w.session)
    again = await svc.buy(a, offer.id, 1, claim_ref(offer.id), session_id=w.session)
    assert again.id == first.id  # the same claim twice is one order
    await refused("forbidden", svc.buy(w.viewer("kid", minor=True), offer.id, 1, "claim:x"))
    assert_invariant(await ledger(pool, offer.id))
    assert (await ledger(pool, offer.id))["reserved"] == 1


# ---------------------------------------------------------------- waitlists


async def sold_out_offer(
    pool: asyncpg.Pool, svc: CommerceService, w: World, quantity: int = 1, limit: int = 1
) -> tuple[str, list[str]]:
    offer = await svc.open_offer(w.creator, w.session, w.product, 100, quantity, limit, 600)
    orders = []
    for i in range(quantity):
        order = await svc.buy(w.viewer(f"buyer{i}"), offer.id, 1, "b")
        orders.append(order.id)
    return offer.id, orders


async def test_a_waitlist_on_an_offer_with_units_left_changes_nothing(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    svc = service(pool, Room())
    offer = await svc.open_offer(w.creator, w.session, w.product, 100, 2, 1, 600)
    await refused("bad_frame", svc.join_waitlist(w.viewer("a"), offer.id, "w1"))
    assert await pool.fetchval("SELECT count(*) FROM waitlist WHERE offer = $1", offer.id) == 0
    await refused("unauthorized", svc.join_waitlist(auth.guest("g"), offer.id, "w1"))
    await refused("forbidden", svc.join_waitlist(w.viewer("kid", minor=True), offer.id, "w1"))
    await refused("not_found", svc.join_waitlist(w.viewer("a"), "off_nope", "w1"))
    await svc.end_offer(w.creator, offer.id)
    await refused("offer_closed", svc.join_waitlist(w.viewer("a"), offer.id, "w1"))
    assert await pool.fetchval("SELECT count(*) FROM waitlist WHERE offer = $1", offer.id) == 0


async def test_returned_units_serve_the_waitlist_first_in_order(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    room = Room()
    svc = service(pool, room)
    told: list[tuple[str, str, dict[str, Any]]] = []
    svc.on_served = lambda user, ref, order: told.append((user, ref, order))
    offer_id, orders = await sold_out_offer(pool, svc, w, quantity=2)
    a, b, c = w.viewer("a"), w.viewer("b"), w.viewer("c")
    assert (await svc.join_waitlist(a, offer_id, "wa")).position == 1
    assert (await svc.join_waitlist(b, offer_id, "wb")).position == 2
    assert (await svc.join_waitlist(a, offer_id, "other")).position == 1  # same place
    assert (await svc.join_waitlist(c, offer_id, "wc")).position == 3
    # A buy now is still sold out: nothing came back.
    await refused("sold_out", svc.buy(c, offer_id, 1, "cb"))

    await svc.cancel(w.viewer("buyer0"), orders[0])
    mine = await svc.waitlist_place(a, offer_id)
    assert (mine.status, mine.position) == ("served", None)
    served = await pool.fetchrow(
        "SELECT user_id, idempotency_key, status, expires_at > now() AS later FROM orders "
        "WHERE id = $1",
        mine.order,
    )
    assert (served["user_id"], served["idempotency_key"], served["status"]) == (
        a.sub,
        "wa",
        "reserved",
    )
    assert served["later"]
    assert (await svc.waitlist_place(b, offer_id)).position == 1
    assert (await svc.waitlist_place(c, offer_id)).position == 2
    assert await pool.fetchval("SELECT remaining FROM offers WHERE id = $1", offer_id) == 0
    # The buy path replays the served order for its ref, as for any order.
    assert (await svc.buy(a, offer_id, 1, "wa")).id == mine.order
    hooks = await pool.fetch(
        "SELECT payload FROM webhook_outbox WHERE topic = 'order.reserved' "
        "AND payload->'data'->>'id' = $1",
        mine.order,
    )
    assert [h["payload"]["data"]["waitlist"] for h in hooks] == ["wa"]
    assert room.kinds("sold", w.session)[-1] == {"offer": offer_id, "qty": 1}
    assert_invariant(await ledger(pool, offer_id))


async def test_expired_units_serve_waiters_with_their_own_expiry(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    clock = Clock()
    svc = service(pool, Room(), clock, reservation_ttl_s=TTL)
    offer_id, _ = await sold_out_offer(pool, svc, w, quantity=2)
    waiters = [w.viewer(f"w{i}") for i in range(3)]
    for i, who in enumerate(waiters):
        assert (await svc.join_waitlist(who, offer_id, f"ref{i}")).position == i + 1
    clock.advance(TTL + 1)
    await svc.expire_due()
    places = [await svc.waitlist_place(who, offer_id) for who in waiters]
    assert [p.status for p in places] == ["served", "served", "waiting"]
    assert places[2].position == 1
    expiry = await pool.fetchval(
        "SELECT min(expires_at) FROM orders WHERE id = ANY($1::text[])",
        [p.order for p in places[:2]],
    )
    assert abs(expiry.timestamp() - (clock.now + TTL)) < 1
    # Their reservations expire in turn and serve the last waiter.
    clock.advance(TTL + 1)
    await svc.expire_due()
    assert (await svc.waitlist_place(waiters[2], offer_id)).status == "served"
    assert await pool.fetchval("SELECT remaining FROM offers WHERE id = $1", offer_id) == 1
    await conserved(pool, w, 10)


async def test_ending_an_offer_drops_its_waiters(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=10)
    svc = service(pool, Room())
    offer_id, orders = await sold_out_offer(pool, svc, w)
    a = w.viewer("a")
    await svc.join_waitlist(a, offer_id, "wa")
    await svc.end_offer(w.creator, offer_id)
    assert (await svc.waitlist_place(a, offer_id)).status == "dropped"
    await svc.cancel(w.creator, orders[0])  # goes to product stock now
    assert await stock_of(pool, w.product) == 10
    await refused("not_found", svc.waitlist_place(w.viewer("b"), offer_id))


# ---------------------------------------------------------------- bundles


async def test_bundles_close_once_with_one_webhook(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=20)
    svc = service(pool, Room())
    first = await svc.open_offer(w.creator, w.session, w.product, 150, 5, 5, 600)
    second = await svc.open_offer(w.creator, w.session, w.product, 300, 5, 5, 600)
    a, b = w.viewer("a"), w.viewer("b")
    o1 = await svc.buy(a, first.id, 2, "a1")
    o2 = await svc.buy(a, second.id, 1, "a2")
    gone = await svc.buy(b, first.id, 1, "b1")
    await svc.cancel(b, gone.id)
    (bundle,) = [x for x in await svc.bundles(a) if x.session == w.session]
    assert bundle.status == "open"
    assert [o.id for o in bundle.orders] == [o1.id, o2.id]
    assert bundle.total_cents == 2 * 150 + 300
    assert await svc.bundles(b) == []  # a cancelled order ships nothing
    await refused("unauthorized", svc.bundles(auth.guest("g")))

    await pool.execute(
        "UPDATE sessions SET status = 'ended', ended_at = now() WHERE id = $1", w.session
    )
    for _ in range(3):  # every pass (any node) after the first finds nothing to close
        while await svc.close_due_bundles():
            pass
    (closed,) = [x for x in await svc.bundles(a) if x.session == w.session]
    assert (closed.status, closed.id, closed.total_cents) == ("closed", bundle.id, 600)
    hooks = await pool.fetch(
        "SELECT payload FROM webhook_outbox WHERE topic = 'bundle.closed' "
        "AND payload->'data'->>'session' = $1",
        w.session,
    )
    assert len(hooks) == 1
    data = hooks[0]["payload"]["data"]
    assert (data["id"], data["user"], data["total_cents"], data["creator"]) == (
        bundle.id,
        a.sub,
        600,
        w.creator.sub,
    )
    assert [o["id"] for o in data["orders"]] == [o1.id, o2.id]


# ---------------------------------------------------------------- the property


@dataclass
class ModelOrder:
    user: int
    key: str
    qty: int
    status: str = "reserved"


@dataclass
class Model:
    """The reference: SPEC §6 and §13 for one offer, one step at a time."""

    quantity: int
    limit: int
    remaining: int
    open: bool = True
    orders: list[ModelOrder] = field(default_factory=list)
    waiting: deque[tuple[int, str]] = field(default_factory=deque)
    served: list[tuple[int, str]] = field(default_factory=list)

    def holds(self, user: int) -> int:
        return sum(o.qty for o in self.orders if o.user == user and o.status in HOLD)

    def find(self, user: int, key: str) -> ModelOrder | None:
        return next((o for o in self.orders if (o.user, o.key) == (user, key)), None)

    def buy(self, user: int, qty: int, key: str) -> str:
        if self.find(user, key) is not None:
            return "replay"
        if not self.open:
            return "offer_closed"
        if self.remaining < qty:
            return "sold_out"
        if self.holds(user) + qty > self.limit:
            return "limit_reached"
        self.remaining -= qty
        self.orders.append(ModelOrder(user, key, qty))
        return "order"

    def wait(self, user: int, ref: str) -> str | int:
        if not self.open:
            return "offer_closed"
        mine = [i for i, (u, _) in enumerate(self.waiting) if u == user]
        if mine:
            return mine[0] + 1
        if self.remaining > 0:
            return "bad_frame"
        if self.holds(user) + 1 > self.limit:
            return "limit_reached"
        if self.find(user, ref) is not None:
            return "duplicate"
        self.waiting.append((user, ref))
        return len(self.waiting)

    def give_back(self, qty: int) -> None:
        self.remaining += qty
        if not self.open:
            return
        while self.waiting and self.remaining > 0:
            user, ref = self.waiting.popleft()
            if self.holds(user) + 1 > self.limit or self.find(user, ref) is not None:
                continue  # dropped
            self.remaining -= 1
            self.orders.append(ModelOrder(user, ref, 1))
            self.served.append((user, ref))

    def release(self, order: ModelOrder, status: str) -> None:
        order.status = status
        self.give_back(order.qty)

    def expire_all(self) -> None:
        due = [o for o in self.orders if o.status == "reserved"]
        for o in due:
            o.status = "expired"
        self.give_back(sum(o.qty for o in due))

    def end(self) -> None:
        self.open = False
        self.waiting.clear()


HOLD = ("reserved", "paid")
USERS = st.integers(0, 3)
KEYS = st.sampled_from(["r1", "r2", "r3"])
WAIT = st.tuples(st.just("wait"), USERS, KEYS)
RETURN = st.tuples(st.just("cancel"), st.integers(0, 7))
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("buy"), USERS, st.integers(1, 2), KEYS),
        st.tuples(st.just("claim"), USERS),
        WAIT,
        WAIT,  # twice: waiters pile up while the offer is sold out
        RETURN,
        RETURN,
        st.tuples(st.just("confirm"), st.integers(0, 7)),
        st.tuples(st.just("expire")),
        st.tuples(st.just("end")),
    ),
    max_size=24,
)
ADMIN = Identity(sub="admin", name="admin", role="admin")


async def outcome(call: Any) -> Any:
    try:
        return await call
    except Failure as exc:
        return exc.code


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(quantity=st.integers(1, 3), limit=st.integers(1, 2), steps=STEPS)
# Always tried: two waiters, then a cancel and an expiry each serve the first one waiting.
@example(
    quantity=1,
    limit=1,
    steps=[
        ("buy", 0, 1, "r1"),
        ("wait", 1, "r1"),
        ("wait", 2, "r2"),
        ("wait", 3, "r3"),
        ("cancel", 0),
        ("expire",),
        ("claim", 0),
        ("wait", 0, "r2"),
        ("cancel", 0),
    ],
)
async def test_stock_is_conserved_and_waitlists_serve_in_order(
    pool: asyncpg.Pool, quantity: int, limit: int, steps: list[tuple[Any, ...]]
) -> None:
    initial = 5
    w = await world(pool, stock=initial)
    clock = Clock()
    svc = service(pool, Room(), clock, reservation_ttl_s=TTL)
    offer = await svc.open_offer(
        w.creator, w.session, w.product, 100, quantity, limit, 86_400, claim_word="mine"
    )
    model = Model(quantity, limit, quantity)
    users = [w.viewer(f"u{i}") for i in range(4)]
    ids: dict[tuple[int, str], str] = {}  # model order → order id
    for step in steps:
        if step[0] in ("buy", "claim"):
            u = step[1]
            qty, key = (step[2], step[3]) if step[0] == "buy" else (1, claim_ref(offer.id))
            expected = model.buy(u, qty, key)
            got = await outcome(svc.buy(users[u], offer.id, qty, key, session_id=w.session))
            if expected in ("order", "replay"):
                assert not isinstance(got, str), (step, got)
                assert ids.setdefault((u, key), got.id) == got.id
            else:
                assert got == expected, step
        elif step[0] == "wait":
            u, ref = step[1], step[2]
            expected_place = model.wait(u, ref)
            got = await outcome(svc.join_waitlist(users[u], offer.id, ref))
            if isinstance(expected_place, int):
                assert not isinstance(got, str), (step, got)
                assert got.position == expected_place, step
            else:
                assert got == expected_place, step
        elif step[0] in ("cancel", "confirm"):
            live = [o for o in model.orders if o.status in HOLD]
            if not live:
                continue
            target = live[step[1] % len(live)]
            order_id = ids[(target.user, target.key)]
            if step[0] == "cancel":
                await svc.cancel(ADMIN, order_id)
                model.release(target, "cancelled")
            elif target.status == "reserved":
                await svc.confirm(ADMIN, order_id)
                target.status = "paid"
        elif step[0] == "expire":
            clock.advance(TTL + 1)
            await svc.expire_due()
            model.expire_all()
        elif step[0] == "end" and model.open:
            await svc.end_offer(w.creator, offer.id)
            model.end()
        # Orders the waitlist made: known by their keys.
        for row in await pool.fetch(
            "SELECT id, user_id, idempotency_key FROM orders WHERE offer = $1", offer.id
        ):
            u = int(row["user_id"].split("-")[0][1:])
            ids.setdefault((u, row["idempotency_key"]), row["id"])
        await conserved(pool, w, initial)
        assert_invariant(await ledger(pool, offer.id))
        # The orders are exactly the model's: the waiters served (keyed by their waitlist
        # ref) are the ones the model serves, first come first served, skipping the dropped.
        rows = await pool.fetch(
            "SELECT user_id, idempotency_key, status, qty FROM orders WHERE offer = $1 "
            "ORDER BY user_id, idempotency_key",
            offer.id,
        )
        assert sorted((users[o.user].sub, o.key, o.status, o.qty) for o in model.orders) == [
            (r["user_id"], r["idempotency_key"], r["status"], r["qty"]) for r in rows
        ], step


async def test_concurrent_returns_on_many_nodes_serve_the_earliest_waiters(
    pool: asyncpg.Pool,
) -> None:
    """Ten cancels at once, each on its own service and connection (as ten nodes would), on
    an offer with twenty waiters: exactly the ten who joined first are served."""
    w = await world(pool, stock=10)
    svc = service(pool, Room())
    offer_id, orders = await sold_out_offer(pool, svc, w, quantity=10)
    waiters = [w.viewer(f"w{i:02d}") for i in range(20)]
    for i, who in enumerate(waiters):
        assert (await svc.join_waitlist(who, offer_id, f"ref{i}")).position == i + 1
    nodes = [service(pool, Room()) for _ in orders]
    await asyncio.gather(
        *(
            node.cancel(w.viewer(f"buyer{i}"), order)
            for i, (node, order) in enumerate(zip(nodes, orders, strict=True))
        )
    )
    places = [await svc.waitlist_place(who, offer_id) for who in waiters]
    assert [p.status for p in places] == ["served"] * 10 + ["waiting"] * 10
    assert [p.position for p in places[10:]] == list(range(1, 11))
    assert_invariant(await ledger(pool, offer_id))
    assert await pool.fetchval("SELECT remaining FROM offers WHERE id = $1", offer_id) == 0
    await conserved(pool, w, 10)
