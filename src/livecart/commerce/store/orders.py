"""Orders: reading, payment confirmation, cancelling and the expiry of reservations, which
give their units back to the offer while it is open, else to the product."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from ...auth import Identity
from ...failure import Failure
from ...runtime.db import Connection, Executor, iso
from .. import rules as rules
from ..rules import Order
from . import chances
from .outbox import ENQUEUE, enqueue_webhook, notify_returned, webhook_event
from .rows import ORDER_SELECT, at, order_from_row


async def get_order(conn: Executor, order_id: str) -> tuple[Order, str] | None:
    """(order, creator of its session)."""
    row = await conn.fetchrow(ORDER_SELECT + " WHERE o.id = $1", order_id)
    return None if row is None else (order_from_row(row), row["creator"])


async def list_orders(conn: Executor, user: str, limit: int) -> list[Order]:
    rows = await conn.fetch(
        ORDER_SELECT + " WHERE o.user_id = $1 ORDER BY o.created_at DESC, o.id LIMIT $2",
        user,
        limit,
    )
    return [order_from_row(r) for r in rows]


async def confirm(conn: Connection, who: Identity, order_id: str, now: float) -> tuple[Order, bool]:
    rules.require_confirmer(who)
    async with conn.transaction():
        row = await conn.fetchrow(ORDER_SELECT + " WHERE o.id = $1 FOR UPDATE OF o", order_id)
        if row is None:
            raise Failure("not_found", "no such order")
        order = order_from_row(row)
        if not rules.decide_confirm(order.status):
            return order, False
        await conn.execute(
            "UPDATE orders SET status = 'paid', updated_at = $2 WHERE id = $1", order_id, at(now)
        )
        order = msgspec.structs.replace(order, status="paid", updated_at=iso(at(now)))
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


async def cancel(
    conn: Connection, who: Identity, order_id: str, now: float, *, chance_ttl_s: float
) -> tuple[Order, list[Release], bool]:
    """(the order, units released to offers, whether it changed now)."""
    async with conn.transaction():
        row = await conn.fetchrow(ORDER_SELECT + " WHERE o.id = $1 FOR UPDATE OF o", order_id)
        if row is None:
            raise Failure("not_found", "no such order")
        order = order_from_row(row)
        rules.may_cancel(who, buyer=order.user, creator=row["creator"], status=order.status)
        if order.status not in rules.HOLDING:
            return order, [], False
        await conn.execute(
            "UPDATE orders SET status = 'cancelled', updated_at = $2 WHERE id = $1",
            order_id,
            at(now),
        )
        releases = await return_units(conn, [(order, row["auction"])], now, chance_ttl_s)
        order = msgspec.structs.replace(order, status="cancelled", updated_at=iso(at(now)))
        await enqueue_webhook(
            conn, "order.cancelled", {**msgspec.to_builtins(order), "by": who.sub}, now
        )
    return order, releases, True


async def expire_due(
    conn: Connection, now: float, limit: int = 200, *, chance_ttl_s: float
) -> tuple[int, list[Release]]:
    """Expire up to `limit` reserved orders past `expires_at`: (how many, releases per offer).
    Safe to run on every node at once: rows another node holds are skipped."""
    async with conn.transaction():
        rows = await conn.fetch(
            ORDER_SELECT + " WHERE o.status = 'reserved' AND o.expires_at <= $1 "
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
        releases = await return_units(
            conn, [(o, r["auction"]) for o, r in zip(orders, rows, strict=True)], now, chance_ttl_s
        )
        stamp = iso(at(now))
        events = [
            webhook_event(
                "order.expired",
                msgspec.structs.replace(o, status="expired", updated_at=stamp),
                now,
            )
            for o in orders
        ]
        await conn.executemany(ENQUEUE, events)
    return len(orders), releases


async def return_units(
    conn: Executor, orders: list[tuple[Order, str | None]], now: float, chance_ttl_s: float
) -> list[Release]:
    """The one place where the units of cancelled or expired orders come back, inside the
    transaction that cancelled or expired them. `orders` pairs each order with its auction
    (None for an offer's order).

    - An auction's order passes its unit down the auction's bidders (second chance, see
      `chances.auction_order_back`); it reaches product stock when nobody is left.
    - Any other order gives its units to the offer while it is open, else to the product;
      returns one `Release` per such offer."""
    plain: list[Order] = []
    for order, auction in orders:
        if auction is not None:
            await chances.auction_order_back(conn, order, auction, now, chance_ttl_s)
        else:
            plain.append(order)
    return await _back_to_offers(conn, plain, now)


async def _back_to_offers(conn: Executor, orders: list[Order], now: float) -> list[Release]:
    if not orders:
        return []
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
    return [
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
