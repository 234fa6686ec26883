"""Orders: reading, payment confirmation, cancelling and the expiry of reservations, whose
units come back through `return_units`: an auction's unit goes on to its next bidder (second
chance), any other order's to the offer while it is open (its waitlist first), else to the
product."""

from __future__ import annotations

import msgspec

from ...auth import Identity
from ...failure import Failure
from ...runtime.db import Connection, Executor, iso
from .. import rules as rules
from ..rules import Order
from . import chances
from .outbox import ENQUEUE, enqueue_webhook, webhook_event
from .rows import ORDER_SELECT, at, order_from_row
from .selling import GivenBack, give_back


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


# What a cancel or an expiry gave back to one offer (and the waiters it served).
Release = GivenBack


async def cancel(
    conn: Connection,
    who: Identity,
    order_id: str,
    now: float,
    *,
    reservation_ttl_s: float = rules.DEFAULT_RESERVATION_TTL_S,
    chance_ttl_s: float = rules.DEFAULT_SECOND_CHANCE_TTL_S,
) -> tuple[Order, list[Release], bool]:
    """(the order, what went back to offers, whether it changed now)."""
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
        order = msgspec.structs.replace(order, status="cancelled", updated_at=iso(at(now)))
        await enqueue_webhook(
            conn, "order.cancelled", {**msgspec.to_builtins(order), "by": who.sub}, now
        )
        releases = await return_units(
            conn,
            [(order, row["auction"])],
            now,
            reservation_ttl_s=reservation_ttl_s,
            chance_ttl_s=chance_ttl_s,
        )
    return order, releases, True


async def expire_due(
    conn: Connection,
    now: float,
    limit: int = 200,
    *,
    reservation_ttl_s: float = rules.DEFAULT_RESERVATION_TTL_S,
    chance_ttl_s: float = rules.DEFAULT_SECOND_CHANCE_TTL_S,
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
        releases = await return_units(
            conn,
            [(o, r["auction"]) for o, r in zip(orders, rows, strict=True)],
            now,
            reservation_ttl_s=reservation_ttl_s,
            chance_ttl_s=chance_ttl_s,
        )
    return len(orders), releases


async def return_units(
    conn: Executor,
    orders: list[tuple[Order, str | None]],
    now: float,
    *,
    reservation_ttl_s: float,
    chance_ttl_s: float,
) -> list[Release]:
    """The one place where the units of cancelled or expired orders come back, inside the
    transaction that cancelled or expired them. `orders` pairs each order with its auction
    (None for an offer's order).

    - An auction's order passes its unit down the auction's bidders (second chance,
      `chances.auction_order_back`); it reaches product stock when nobody is left.
    - Any other order's units go to its offer (`selling.give_back`: the waitlist first while
      the offer is open, else product stock); one `Release` per such offer."""
    per_offer: dict[str, int] = {}
    for order, auction in orders:
        if auction is not None:
            await chances.auction_order_back(conn, order, auction, now, chance_ttl_s)
        else:
            per_offer[order.offer] = per_offer.get(order.offer, 0) + order.qty
    if not per_offer:
        return []
    return await give_back(conn, per_offer, now, reservation_ttl_s=reservation_ttl_s)
