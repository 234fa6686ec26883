"""Offers, orders, auctions, bids and the webhook outbox in PostgreSQL.

Every function takes a connection and runs its own transaction. Decisions come from
`livecart.core.commerce`; the counters are changed by conditional single-statement updates
that mirror `apply_buy` / `apply_release` / `apply_end`, so a concurrent writer can never
push a counter past its bound. Lock order, where a transaction takes several row locks:
order → offer → product; batches lock offers and products in id order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from ..auth import Identity
from ..core import commerce as rules
from ..core.commerce import Auction, AuctionState, BidAccepted, Offer, OfferState, Order
from ..ids import new_id
from ..protocol import Failure

_json = msgspec.json.Encoder()

# Namespaces of the two-key advisory locks (a key space of their own in PostgreSQL).
_LOCK_BUY = 0x4C430001  # (offer, user): serialises one buyer's purchases of one offer
_LOCK_AUCTION = 0x4C430002  # session: one open auction per session


# NOTIFY channel: ids of open offers that got units back, sent on commit to every node so
# that each reopens its sold-out gate (payload: comma-separated offer ids).
STOCK_RETURNED = "livecart_stock_returned"


async def notify_returned(conn: Any, offer_ids: list[str]) -> None:
    """Within the returning transaction: PostgreSQL delivers it only if that commits."""
    chunk: list[str] = []
    for offer_id in offer_ids:
        chunk.append(offer_id)
        if len(chunk) == 200:  # payloads must stay under 8000 bytes
            await conn.execute("SELECT pg_notify($1, $2)", STOCK_RETURNED, ",".join(chunk))
            chunk = []
    if chunk:
        await conn.execute("SELECT pg_notify($1, $2)", STOCK_RETURNED, ",".join(chunk))


def at(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


# ---------------------------------------------------------------- rows → objects

_OFFER_COLS = (
    "f.id, f.session, f.product, f.price_cents, f.currency, f.quantity, f.remaining, "
    "f.per_user_limit, f.starts_at, f.ends_at, f.status, f.returned"
)

_ORDER_SELECT = """
SELECT o.id, o.user_id, o.offer, f.session, f.product, o.qty, o.unit_cents, o.total_cents,
       o.currency, o.status, o.expires_at, o.created_at, o.updated_at, s.creator
FROM orders o JOIN offers f ON f.id = o.offer JOIN sessions s ON s.id = f.session
"""

_AUCTION_COLS = (
    "a.id, a.session, a.product, a.start_cents, a.min_increment_cents, a.current_cents, "
    "a.leader, a.mode, a.ends_at, a.status, a.winner_order"
)


def offer_from_row(row: Any) -> Offer:
    return Offer(
        id=row["id"],
        session=row["session"],
        product=row["product"],
        price_cents=row["price_cents"],
        currency=row["currency"],
        quantity=row["quantity"],
        remaining=row["remaining"],
        per_user_limit=row["per_user_limit"],
        starts_at=_iso(row["starts_at"]),
        ends_at=_iso(row["ends_at"]),
        status=row["status"],
    )


def offer_state(row: Any) -> OfferState:
    return OfferState(
        quantity=row["quantity"],
        remaining=row["remaining"],
        per_user_limit=row["per_user_limit"],
        status=row["status"],
        ends_at=row["ends_at"].timestamp(),
        returned=row["returned"],
    )


def order_from_row(row: Any) -> Order:
    return Order(
        id=row["id"],
        user=row["user_id"],
        offer=row["offer"],
        session=row["session"],
        product=row["product"],
        qty=row["qty"],
        unit_cents=row["unit_cents"],
        total_cents=row["total_cents"],
        currency=row["currency"],
        status=row["status"],
        expires_at=_iso(row["expires_at"]),
        created_at=_iso(row["created_at"]),
        updated_at=_iso(row["updated_at"]),
    )


def auction_from_row(row: Any, bids: int) -> Auction:
    return Auction(
        id=row["id"],
        session=row["session"],
        product=row["product"],
        start_cents=row["start_cents"],
        min_increment_cents=row["min_increment_cents"],
        current_cents=row["current_cents"],
        leader=row["leader"],
        mode=row["mode"],
        ends_at=_iso(row["ends_at"]),
        status=row["status"],
        bids=bids,
        winner_order=row["winner_order"],
    )


def auction_state(row: Any, bids: int) -> AuctionState:
    return AuctionState(
        start_cents=row["start_cents"],
        min_increment_cents=row["min_increment_cents"],
        current_cents=row["current_cents"],
        leader=row["leader"],
        mode=row["mode"],
        ends_at=row["ends_at"].timestamp(),
        status=row["status"],
        bids=bids,
    )


# ---------------------------------------------------------------- webhook outbox

_ENQUEUE = "INSERT INTO webhook_outbox (event_id, topic, payload) VALUES ($1, $2, $3::jsonb)"


def webhook_event(topic: str, data: Any, now: float) -> tuple[str, str, dict[str, Any]]:
    """(event id, topic, payload) in the Standard Webhooks payload shape."""
    payload = {"type": topic, "timestamp": _iso(at(now)), "data": msgspec.to_builtins(data)}
    return new_id("msg"), topic, payload


async def enqueue_webhook(conn: Any, topic: str, data: Any, now: float) -> str:
    """Call inside the transaction that makes the change the event reports."""
    event_id, topic, payload = webhook_event(topic, data, now)
    await conn.execute(_ENQUEUE, event_id, topic, payload)
    return event_id


# ---------------------------------------------------------------- offers


async def _session_for_listing(conn: Any, session_id: str, product_id: str) -> Any:
    return await conn.fetchrow(
        "SELECT s.creator, s.status, EXISTS (SELECT 1 FROM session_products sp "
        "WHERE sp.session = s.id AND sp.product = $2) AS showcased "
        "FROM sessions s WHERE s.id = $1",
        session_id,
        product_id,
    )


async def _check_listing(conn: Any, who: Identity, session_id: str, product_id: str) -> None:
    row = await _session_for_listing(conn, session_id, product_id)
    if row is None:
        raise Failure("not_found", "no such session")
    rules.require_manager(who, row["creator"])
    if row["status"] != "live":
        raise Failure("not_live", "the session is not live")
    if not row["showcased"]:
        raise Failure("not_found", "the product is not in this session's showcase")


async def open_offer(
    conn: Any,
    who: Identity,
    session_id: str,
    product_id: str,
    terms: rules.OfferTerms,
    now: float,
) -> Offer:
    rules.validate_offer(terms)
    async with conn.transaction():
        await _check_listing(conn, who, session_id, product_id)
        product = await conn.fetchrow(
            "UPDATE products SET stock = stock - $2, updated_at = $3 "
            "WHERE id = $1 AND stock >= $2 RETURNING currency",
            product_id,
            terms.quantity,
            at(now),
        )
        if product is None:
            stock = await conn.fetchval("SELECT stock FROM products WHERE id = $1", product_id)
            raise Failure("sold_out", f"the product has {stock or 0} in stock")
        row = await conn.fetchrow(
            "INSERT INTO offers AS f (id, session, product, price_cents, currency, quantity, "
            "remaining, per_user_limit, starts_at, ends_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9) "
            f"RETURNING {_OFFER_COLS}",
            new_id("off"),
            session_id,
            product_id,
            terms.price_cents,
            product["currency"],
            terms.quantity,
            terms.per_user_limit,
            at(now),
            at(now + terms.duration_s),
        )
    return offer_from_row(row)


async def get_offer(conn: Any, offer_id: str) -> Offer | None:
    row = await conn.fetchrow(f"SELECT {_OFFER_COLS} FROM offers f WHERE f.id = $1", offer_id)
    return None if row is None else offer_from_row(row)


async def open_offers(conn: Any, session_id: str, now: float) -> list[Offer]:
    rows = await conn.fetch(
        f"SELECT {_OFFER_COLS} FROM offers f WHERE f.session = $1 AND f.status = 'open' "
        "AND f.ends_at > $2 ORDER BY f.starts_at, f.id",
        session_id,
        at(now),
    )
    return [offer_from_row(r) for r in rows]


async def remaining_of(conn: Any, offer_ids: list[str]) -> list[tuple[str, str, int]]:
    """(session, offer, remaining) of those offers that are still open."""
    rows = await conn.fetch(
        "SELECT session, id, remaining FROM offers WHERE id = ANY($1::text[]) AND status = 'open'",
        offer_ids,
    )
    return [(r["session"], r["id"], r["remaining"]) for r in rows]


@dataclass(slots=True)
class Observation:
    """A committed view of an offer's counters for the sold-out gate; `buyers` is read in the
    same snapshot and is only present when the offer had nothing left."""

    status: rules.OfferStatus
    remaining: int
    ends_at: float
    buyers: frozenset[str] | None


@dataclass(slots=True)
class Ended:
    offer: Offer
    reason: str
    returned: int
    observation: Observation


_BUYERS = "SELECT coalesce(array_agg(DISTINCT user_id), '{}') FROM orders WHERE offer = $1"


async def _end_locked(conn: Any, offer_id: str, now: float, reason: str) -> Ended | None:
    """Open → ended, unsold units back to product stock. Within a transaction."""
    row = await conn.fetchrow(
        "UPDATE offers AS f SET status = 'ended', returned = f.remaining, "
        "ends_at = least(f.ends_at, $2) WHERE f.id = $1 AND f.status = 'open' "
        f"RETURNING {_OFFER_COLS}",
        offer_id,
        at(now),
    )
    if row is None:
        return None
    if row["returned"]:
        await conn.execute(
            "UPDATE products SET stock = stock + $2, updated_at = $3 WHERE id = $1",
            row["product"],
            row["returned"],
            at(now),
        )
    offer = offer_from_row(row)
    await enqueue_webhook(
        conn,
        "offer.ended",
        {**msgspec.to_builtins(offer), "reason": reason, "returned": row["returned"]},
        now,
    )
    # Ended offers take no new orders, so this set of buyers is final.
    buyers = frozenset(await conn.fetchval(_BUYERS, offer_id))
    observation = Observation("ended", row["remaining"], row["ends_at"].timestamp(), buyers)
    return Ended(offer, reason, row["returned"], observation)


async def offer_creator(conn: Any, offer_id: str) -> tuple[str, str] | None:
    """(session, creator) of an offer."""
    row = await conn.fetchrow(
        "SELECT f.session, s.creator FROM offers f JOIN sessions s ON s.id = f.session "
        "WHERE f.id = $1",
        offer_id,
    )
    return None if row is None else (row["session"], row["creator"])


async def end_offer(
    conn: Any, who: Identity, offer_id: str, now: float
) -> tuple[Offer, Ended | None]:
    """End an offer by hand; ending an ended offer changes nothing."""
    owner = await offer_creator(conn, offer_id)
    if owner is None:
        raise Failure("not_found", "no such offer")
    rules.require_manager(who, owner[1])
    async with conn.transaction():
        ended = await _end_locked(conn, offer_id, now, "ended_by_creator")
    if ended is not None:
        return ended.offer, ended
    offer = await get_offer(conn, offer_id)
    assert offer is not None
    return offer, None


async def end_due_offer(conn: Any, now: float) -> Ended | None:
    """End one offer that is past its end or whose session is no longer live."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT f.id, f.ends_at, s.status AS session_status FROM offers f "
            "JOIN sessions s ON s.id = f.session "
            "WHERE f.status = 'open' AND (f.ends_at <= $1 OR s.status <> 'live') "
            "ORDER BY f.ends_at LIMIT 1 FOR UPDATE OF f SKIP LOCKED",
            at(now),
        )
        if row is None:
            return None
        reason = rules.offer_end_reason(
            now=now, ends_at=row["ends_at"].timestamp(), session_status=row["session_status"]
        )
        return await _end_locked(conn, row["id"], now, reason or "time")


# ---------------------------------------------------------------- buying

# A batch of purchases of one offer, in one transaction: the buyers' advisory locks (in key
# order, so batches cannot deadlock each other), then one snapshot with the offer row locked,
# the decisions in `core.commerce`, then one write.
_LOCK_BUYERS = """
SELECT pg_advisory_xact_lock($1, k)
FROM (SELECT DISTINCT hashtext($2 || chr(31) || u) AS k FROM unnest($3::text[]) AS u
      ORDER BY 1) AS keys
"""

# The offer row is locked here, so `remaining` is current and stays so until commit; the
# buyers' orders cannot change under their advisory locks.
_BATCH_SNAPSHOT = """
WITH f AS (
    SELECT f.id, f.session, f.product, f.price_cents, f.currency, f.quantity, f.remaining,
           f.per_user_limit, f.status, f.ends_at, f.returned, s.status AS session_status
    FROM offers f JOIN sessions s ON s.id = f.session
    WHERE f.id = $1
    FOR UPDATE OF f
)
SELECT f.*, a.i,
       (SELECT id FROM orders WHERE user_id = a.u AND idempotency_key = a.r) AS existing,
       (SELECT coalesce(sum(qty), 0) FROM orders
         WHERE offer = f.id AND user_id = a.u AND status IN ('reserved', 'paid')) AS holds
FROM f, unnest($2::text[], $3::text[]) WITH ORDINALITY AS a(u, r, i)
ORDER BY a.i
"""

# Take the units, record the orders and their webhooks; with the row locked and the
# decisions made on its current value the condition always holds, it only guards.
_BATCH_WRITE = """
WITH taken AS (
    UPDATE offers SET remaining = remaining - $2
    WHERE id = $1 AND status = 'open' AND ends_at > $7 AND remaining >= $2
    RETURNING remaining
), placed AS (
    INSERT INTO orders (id, user_id, offer, qty, unit_cents, total_cents, currency, status,
                        idempotency_key, created_at, expires_at, updated_at)
    SELECT o.id, o.u, $1, o.q, $5::bigint, o.q * $5::bigint, $6, 'reserved', o.r, $7, $8, $7
    FROM taken, unnest($3::text[], $4::text[], $9::int[], $10::text[]) AS o(id, u, q, r)
), hook AS (
    INSERT INTO webhook_outbox (event_id, topic, payload)
    SELECT w.e, 'order.reserved', w.p::jsonb
    FROM taken, unnest($11::text[], $12::text[]) AS w(e, p)
)
SELECT remaining,
       CASE WHEN remaining = 0 THEN
         (SELECT coalesce(array_agg(DISTINCT user_id), '{}') FROM orders WHERE offer = $1)
       END AS buyers
FROM taken
"""


@dataclass(slots=True)
class BuyRequest:
    user: str
    qty: int
    ref: str
    session: str | None = None  # the session the buyer is in, when it says (else any)


@dataclass(slots=True)
class BuyOutcome:
    order: Order | None = None
    replay: bool = False  # the order existed: a retry of the same (user, ref)
    failure: Failure | None = None


async def _replay(conn: Any, order_id: str, offer_id: str) -> BuyOutcome:
    row = await conn.fetchrow(_ORDER_SELECT + " WHERE o.id = $1", order_id)
    order = order_from_row(row)
    if order.offer != offer_id:
        return BuyOutcome(failure=Failure("duplicate", "this ref was used for another order"))
    return BuyOutcome(order=order, replay=True)


@dataclass(slots=True)
class BatchOutcome:
    outcomes: list[BuyOutcome]  # one per request, in order
    observation: Observation | None = None  # the offer as this batch left it (committed)


async def buy_many(
    conn: Any,
    offer_id: str,
    requests: list[BuyRequest],
    now: float,
    *,
    reservation_ttl_s: float,
) -> BatchOutcome:
    """Reserve for each request in order, idempotently per (user, ref), in one transaction
    that commits before this returns. A request decides against the offer as the requests
    before it left it, so a batch behaves exactly like the same purchases one by one."""
    for attempt in range(2):
        try:
            async with conn.transaction():
                return await _buy_many_in_tx(conn, offer_id, requests, now, reservation_ttl_s)
        except asyncpg.UniqueViolationError:
            # A (user, ref) committed for another offer meanwhile; the next pass sees it.
            if attempt:
                raise
    raise AssertionError("unreachable")


async def _buy_many_in_tx(
    conn: Any,
    offer_id: str,
    requests: list[BuyRequest],
    now: float,
    ttl: float,
) -> BatchOutcome:
    users = [r.user for r in requests]
    await conn.execute(_LOCK_BUYERS, _LOCK_BUY, offer_id, users)
    rows = await conn.fetch(_BATCH_SNAPSHOT, offer_id, users, [r.ref for r in requests])
    missing = Failure("not_found", "no such offer in this session")
    if not rows:
        return BatchOutcome([BuyOutcome(failure=missing) for _ in requests])
    first = rows[0]
    state = offer_state(first)
    live = first["session_status"] == "live"
    holds: dict[str, int] = {}
    # This batch's new orders by (user, ref): a repeat is their retry. A refusal leaves no
    # row, so a repeat of a refused request is decided again, as it would be one by one.
    placed: dict[tuple[str, str], Order] = {}
    outcomes: list[BuyOutcome] = []
    new: list[Order] = []
    refs: list[str] = []  # of `new`
    for request, row in zip(requests, rows, strict=True):
        key = (request.user, request.ref)
        if request.session is not None and request.session != first["session"]:
            outcomes.append(BuyOutcome(failure=missing))
            continue
        earlier = placed.get(key)
        if earlier is not None:  # the same purchase twice in one batch: the same order
            outcomes.append(BuyOutcome(earlier, replay=True))
            continue
        if row["existing"] is not None:
            outcome = await _replay(conn, row["existing"], offer_id)
        else:
            held = holds.setdefault(request.user, row["holds"])
            try:
                rules.decide_buy(
                    state, qty=request.qty, user_holds=held, session_live=live, now=now
                )
            except Failure as refusal:
                refusal.__traceback__ = None
                outcome = BuyOutcome(failure=refusal)
            else:
                state = rules.apply_buy(state, request.qty)
                holds[request.user] = held + request.qty
                order = Order(
                    id=new_id("ord"),
                    user=request.user,
                    offer=offer_id,
                    session=first["session"],
                    product=first["product"],
                    qty=request.qty,
                    unit_cents=first["price_cents"],
                    total_cents=first["price_cents"] * request.qty,
                    currency=first["currency"],
                    status="reserved",
                    expires_at=_iso(at(now + ttl)),
                    created_at=_iso(at(now)),
                    updated_at=_iso(at(now)),
                )
                new.append(order)
                refs.append(request.ref)
                placed[key] = order
                outcome = BuyOutcome(order=order)
        outcomes.append(outcome)
    buyers = None
    if new:
        events = [webhook_event("order.reserved", o, now) for o in new]
        written = await conn.fetchrow(
            _BATCH_WRITE,
            offer_id,
            sum(o.qty for o in new),
            [o.id for o in new],
            [o.user for o in new],
            first["price_cents"],
            first["currency"],
            at(now),
            at(now + ttl),
            [o.qty for o in new],
            refs,
            [e[0] for e in events],
            [_json.encode(e[2]).decode() for e in events],
        )
        if written is None or written["remaining"] != state.remaining:
            raise AssertionError("the locked offer changed under its lock")  # pragma: no cover
        if written["buyers"] is not None:
            buyers = frozenset(written["buyers"]) | {o.user for o in new}
    elif state.remaining == 0 or state.status == "ended":
        buyers = frozenset(await conn.fetchval(_BUYERS, offer_id))
    observation = Observation(state.status, state.remaining, state.ends_at, buyers)
    return BatchOutcome(outcomes, observation)


# ---------------------------------------------------------------- orders


async def get_order(conn: Any, order_id: str) -> tuple[Order, str] | None:
    """(order, creator of its session)."""
    row = await conn.fetchrow(_ORDER_SELECT + " WHERE o.id = $1", order_id)
    return None if row is None else (order_from_row(row), row["creator"])


async def list_orders(conn: Any, user: str, limit: int) -> list[Order]:
    rows = await conn.fetch(
        _ORDER_SELECT + " WHERE o.user_id = $1 ORDER BY o.created_at DESC, o.id LIMIT $2",
        user,
        limit,
    )
    return [order_from_row(r) for r in rows]


async def confirm(conn: Any, who: Identity, order_id: str, now: float) -> tuple[Order, bool]:
    rules.require_confirmer(who)
    async with conn.transaction():
        row = await conn.fetchrow(_ORDER_SELECT + " WHERE o.id = $1 FOR UPDATE OF o", order_id)
        if row is None:
            raise Failure("not_found", "no such order")
        order = order_from_row(row)
        if not rules.decide_confirm(order.status):
            return order, False
        await conn.execute(
            "UPDATE orders SET status = 'paid', updated_at = $2 WHERE id = $1", order_id, at(now)
        )
        order = msgspec.structs.replace(order, status="paid", updated_at=_iso(at(now)))
        await enqueue_webhook(conn, "order.paid", order, now)
    return order, True


@dataclass(slots=True)
class Release:
    """Units of one offer given back by cancelled or expired orders."""

    session: str
    offer: str
    qty: int
    offer_status: rules.OfferStatus
    remaining: int  # the offer's remaining afterwards
    to_product: int


_RELEASE_ONE = """
UPDATE offers SET remaining = remaining + $2,
                  returned = returned + CASE WHEN status = 'ended' THEN $2 ELSE 0 END
WHERE id = $1
RETURNING session, product, status, remaining
"""


async def cancel(
    conn: Any, who: Identity, order_id: str, now: float
) -> tuple[Order, Release | None]:
    async with conn.transaction():
        row = await conn.fetchrow(_ORDER_SELECT + " WHERE o.id = $1 FOR UPDATE OF o", order_id)
        if row is None:
            raise Failure("not_found", "no such order")
        order = order_from_row(row)
        rules.may_cancel(who, buyer=order.user, creator=row["creator"], status=order.status)
        if order.status not in rules.HOLDING:
            return order, None
        await conn.execute(
            "UPDATE orders SET status = 'cancelled', updated_at = $2 WHERE id = $1",
            order_id,
            at(now),
        )
        offer = await conn.fetchrow(_RELEASE_ONE, order.offer, order.qty)
        to_product = 0 if offer["status"] == "open" else order.qty
        if not to_product:
            await notify_returned(conn, [order.offer])
        else:
            await conn.execute(
                "UPDATE products SET stock = stock + $2, updated_at = $3 WHERE id = $1",
                offer["product"],
                to_product,
                at(now),
            )
        order = msgspec.structs.replace(order, status="cancelled", updated_at=_iso(at(now)))
        await enqueue_webhook(
            conn, "order.cancelled", {**msgspec.to_builtins(order), "by": who.sub}, now
        )
    release = Release(
        offer["session"], order.offer, order.qty, offer["status"], offer["remaining"], to_product
    )
    return order, release


async def expire_due(conn: Any, now: float, limit: int = 200) -> tuple[int, list[Release]]:
    """Expire up to `limit` reserved orders past `expires_at`: (how many, releases per offer).
    Safe to run on every node at once: rows another node holds are skipped."""
    async with conn.transaction():
        rows = await conn.fetch(
            _ORDER_SELECT + " WHERE o.status = 'reserved' AND o.expires_at <= $1 "
            "ORDER BY o.expires_at LIMIT $2 FOR UPDATE OF o SKIP LOCKED",
            at(now),
            limit,
        )
        if not rows:
            return 0, []
        orders = [order_from_row(r) for r in rows]
        await conn.execute(
            "UPDATE orders SET status = 'expired', updated_at = $2 WHERE id = ANY($1::text[])",
            [o.id for o in orders],
            at(now),
        )
        per_offer: dict[str, int] = {}
        for o in orders:
            per_offer[o.offer] = per_offer.get(o.offer, 0) + o.qty
        ids = sorted(per_offer)
        await conn.execute(
            "SELECT 1 FROM offers WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", ids
        )
        offers = await conn.fetch(
            "UPDATE offers f SET remaining = f.remaining + u.q, "
            "returned = f.returned + CASE WHEN f.status = 'ended' THEN u.q ELSE 0 END "
            "FROM unnest($1::text[], $2::int[]) AS u(id, q) WHERE f.id = u.id "
            "RETURNING f.id, f.session, f.product, f.status, f.remaining, u.q",
            ids,
            [per_offer[i] for i in ids],
        )
        await notify_returned(conn, [f["id"] for f in offers if f["status"] == "open"])
        per_product: dict[str, int] = {}
        for f in offers:
            if f["status"] == "ended":
                per_product[f["product"]] = per_product.get(f["product"], 0) + f["q"]
        if per_product:
            pids = sorted(per_product)
            await conn.execute(
                "SELECT 1 FROM products WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", pids
            )
            await conn.execute(
                "UPDATE products p SET stock = p.stock + u.n, updated_at = $3 "
                "FROM unnest($1::text[], $2::int[]) AS u(id, n) WHERE p.id = u.id",
                pids,
                [per_product[i] for i in pids],
                at(now),
            )
        stamp = _iso(at(now))
        events = [
            webhook_event(
                "order.expired",
                msgspec.structs.replace(o, status="expired", updated_at=stamp),
                now,
            )
            for o in orders
        ]
        await conn.executemany(_ENQUEUE, events)
    return len(orders), [
        Release(
            f["session"],
            f["id"],
            f["q"],
            f["status"],
            f["remaining"],
            0 if f["status"] == "open" else f["q"],
        )
        for f in offers
    ]


# ---------------------------------------------------------------- auctions


async def _bid_count(conn: Any, auction_id: str) -> int:
    return int(
        await conn.fetchval("SELECT coalesce(max(seq), 0) FROM bids WHERE auction = $1", auction_id)
    )


async def create_auction(
    conn: Any,
    who: Identity,
    session_id: str,
    product_id: str,
    terms: rules.AuctionTerms,
    now: float,
) -> Auction:
    """Takes one unit of the product for the lot; it comes back if nobody bids."""
    rules.validate_auction(terms)
    async with conn.transaction():
        await _check_listing(conn, who, session_id, product_id)
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_AUCTION, session_id
        )
        running = await conn.fetchval(
            "SELECT id FROM auctions WHERE session = $1 AND status = 'open'", session_id
        )
        if running is not None:
            raise Failure("duplicate", f"auction {running} is still running in this session")
        taken = await conn.fetchval(
            "UPDATE products SET stock = stock - 1, updated_at = $2 "
            "WHERE id = $1 AND stock >= 1 RETURNING stock",
            product_id,
            at(now),
        )
        if taken is None:
            raise Failure("sold_out", "the product is out of stock")
        row = await conn.fetchrow(
            "INSERT INTO auctions AS a (id, session, product, start_cents, min_increment_cents, "
            "mode, ends_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            f"RETURNING {_AUCTION_COLS}",
            new_id("auc"),
            session_id,
            product_id,
            terms.start_cents,
            terms.min_increment_cents,
            terms.mode,
            at(now + terms.duration_s),
        )
    return auction_from_row(row, 0)


async def get_auction(conn: Any, auction_id: str) -> Auction | None:
    row = await conn.fetchrow(f"SELECT {_AUCTION_COLS} FROM auctions a WHERE a.id = $1", auction_id)
    return None if row is None else auction_from_row(row, await _bid_count(conn, auction_id))


async def open_auction(conn: Any, session_id: str) -> Auction | None:
    row = await conn.fetchrow(
        f"SELECT {_AUCTION_COLS} FROM auctions a WHERE a.session = $1 AND a.status = 'open' "
        "ORDER BY a.ends_at DESC LIMIT 1",
        session_id,
    )
    return None if row is None else auction_from_row(row, await _bid_count(conn, row["id"]))


@dataclass(slots=True)
class BidOutcome:
    bid: BidAccepted
    session: str
    replay: bool
    extended: bool


async def bid(
    conn: Any,
    user: str,
    auction_id: str,
    amount_cents: int,
    ref: str,
    now: float,
    *,
    session_id: str | None = None,
) -> BidOutcome:
    """Bids are totally ordered by the auction's row lock; idempotent per (auction, user, ref)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {_AUCTION_COLS} FROM auctions a WHERE a.id = $1 FOR UPDATE", auction_id
        )
        if row is None or (session_id is not None and row["session"] != session_id):
            raise Failure("not_found", "no such auction in this session")
        # Read after the lock so that earlier bids, committed while we waited, are seen.
        earlier = await conn.fetchrow(
            "SELECT seq, amount_cents FROM bids WHERE auction = $1 AND user_id = $2 AND ref = $3",
            auction_id,
            user,
            ref,
        )
        if earlier is not None:
            accepted = BidAccepted(
                auction=auction_id,
                seq=earlier["seq"],
                user=user,
                amount_cents=earlier["amount_cents"],
                ends_at=_iso(row["ends_at"]),
            )
            return BidOutcome(accepted, row["session"], replay=True, extended=False)
        state = auction_state(row, await _bid_count(conn, auction_id))
        if state.status == "open" and now < state.ends_at:
            live = await conn.fetchval("SELECT status FROM sessions WHERE id = $1", row["session"])
            if live != "live":
                raise Failure("not_live", "the session is not live")
        after = rules.decide_bid(state, user=user, amount_cents=amount_cents, now=now)
        await conn.execute(
            "INSERT INTO bids (auction, seq, user_id, amount_cents, ref, at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            auction_id,
            after.bids,
            user,
            amount_cents,
            ref,
            at(now),
        )
        await conn.execute(
            "UPDATE auctions SET current_cents = $2, leader = $3, ends_at = $4 WHERE id = $1",
            auction_id,
            amount_cents,
            user,
            at(after.ends_at),
        )
    accepted = BidAccepted(
        auction=auction_id,
        seq=after.bids,
        user=user,
        amount_cents=amount_cents,
        ends_at=_iso(at(after.ends_at)),
    )
    return BidOutcome(
        accepted, row["session"], replay=False, extended=after.ends_at != state.ends_at
    )


@dataclass(slots=True)
class Closed:
    auction: Auction
    order: Order | None


async def close_due_auction(conn: Any, now: float, reservation_ttl_s: float) -> Closed | None:
    """Close one auction past its end: the winner gets a reserved order at the final price,
    hung on a hidden, already ended 1-unit offer; without bids the lot goes back to stock."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {_AUCTION_COLS}, p.currency FROM auctions a "
            "JOIN products p ON p.id = a.product "
            "WHERE a.status = 'open' AND a.ends_at <= $1 "
            "ORDER BY a.ends_at LIMIT 1 FOR UPDATE OF a SKIP LOCKED",
            at(now),
        )
        if row is None:
            return None
        bids = await _bid_count(conn, row["id"])
        state = auction_state(row, bids)
        if not rules.auction_due(state, now):
            return None
        outcome = rules.auction_outcome(state)
        order: Order | None = None
        if outcome is None:
            await conn.execute(
                "UPDATE products SET stock = stock + 1, updated_at = $2 WHERE id = $1",
                row["product"],
                at(now),
            )
        else:
            winner, price = outcome
            offer_id = new_id("off")
            await conn.execute(
                "INSERT INTO offers (id, session, product, price_cents, currency, quantity, "
                "remaining, per_user_limit, starts_at, ends_at, status) "
                "VALUES ($1, $2, $3, $4, $5, 1, 0, 1, $6, $6, 'ended')",
                offer_id,
                row["session"],
                row["product"],
                price,
                row["currency"],
                row["ends_at"],
            )
            order = Order(
                id=new_id("ord"),
                user=winner,
                offer=offer_id,
                session=row["session"],
                product=row["product"],
                qty=1,
                unit_cents=price,
                total_cents=price,
                currency=row["currency"],
                status="reserved",
                expires_at=_iso(at(now + reservation_ttl_s)),
                created_at=_iso(at(now)),
                updated_at=_iso(at(now)),
            )
            await conn.execute(
                "INSERT INTO orders (id, user_id, offer, qty, unit_cents, total_cents, currency, "
                "status, idempotency_key, created_at, expires_at, updated_at) "
                "VALUES ($1, $2, $3, 1, $4, $4, $5, 'reserved', $6, $7, $8, $7)",
                order.id,
                winner,
                offer_id,
                price,
                row["currency"],
                "auction:" + row["id"],
                at(now),
                at(now + reservation_ttl_s),
            )
            await enqueue_webhook(
                conn, "order.reserved", {**msgspec.to_builtins(order), "auction": row["id"]}, now
            )
        closed = await conn.fetchrow(
            "UPDATE auctions a SET status = 'ended', winner_order = $2 WHERE a.id = $1 "
            f"RETURNING {_AUCTION_COLS}",
            row["id"],
            None if order is None else order.id,
        )
    return Closed(auction_from_row(closed, bids), order)
