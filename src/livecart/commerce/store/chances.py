"""Second chance (SPEC §11): when an auction's order is cancelled or expires, its unit is
offered to the next bidder down instead of going back to stock.

The unit stays on the auction's hidden 1-unit offer (`offers.auction`) while a chance is
open: `remaining` is 1 there, so `remaining + reserved + paid = quantity` holds throughout,
and `returned` (units back in product stock) stays 0 until the chain runs out. Every step
takes the auction's row lock first, so the chain of one auction is totally ordered, like its
bids: the release of an order (order → auction → offer), an acceptance (auction → offer) and
the lapse of an unanswered chance (auction → offer → product).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ...failure import Failure
from ...protocol import SecondChance
from ...runtime.db import Connection, Executor, from_row, iso
from ..rules import Order, SecondChanceView
from .auctions import reserve_unit, return_unit
from .outbox import enqueue_webhook, notify_user
from .rows import ORDER_SELECT, at, order_from_row

# Who is next: every bidder's highest bid, highest first (the earliest bid of that amount
# breaks ties), leaving out the winner, everyone offered before and bids under the hidden
# reserve. A bidder's bids are the amounts they placed and the prices their proxy reached
# while they led, all public in `bid` events; a hidden max is never used.
_NEXT_BIDDER = """
SELECT user_id, amount_cents FROM (
    SELECT DISTINCT ON (user_id) user_id, amount_cents, seq FROM (
        SELECT user_id, amount_cents, seq FROM bids WHERE auction = $1
        UNION ALL
        SELECT leader, price_cents, seq FROM bids
        WHERE auction = $1 AND leader IS NOT NULL AND price_cents IS NOT NULL
    ) placed
    ORDER BY user_id, amount_cents DESC, seq
) best
WHERE user_id <> ALL($2::text[]) AND amount_cents >= $3
ORDER BY amount_cents DESC, seq
LIMIT 1
"""


async def _lock_auction(conn: Executor, auction_id: str) -> Any:
    return await conn.fetchrow(
        "SELECT id, session, product, leader FROM auctions WHERE id = $1 FOR UPDATE", auction_id
    )


async def pass_on(
    conn: Executor, auction_id: str, offer_id: str, now: float, ttl_s: float
) -> str | None:
    """Inside a transaction holding the auction's row lock, with the unit back on the hidden
    offer (`remaining` 1): offer it to the next bidder down (told in person and by webhook
    on commit), or, when none is left, put it back in product stock. Returns the bidder
    offered, if any."""
    auction = await conn.fetchrow(
        "SELECT id, session, product, leader, reserve_cents FROM auctions WHERE id = $1",
        auction_id,
    )
    asked = [
        r["user_id"]
        for r in await conn.fetch(
            "SELECT user_id FROM second_chances WHERE auction = $1", auction_id
        )
    ]
    excluded = [u for u in (auction["leader"], *asked) if u is not None]
    nxt = await conn.fetchrow(_NEXT_BIDDER, auction_id, excluded, auction["reserve_cents"] or 0)
    if nxt is None:
        await conn.execute(
            "UPDATE offers SET returned = returned + 1 WHERE id = $1 AND remaining > returned",
            offer_id,
        )
        await return_unit(conn, auction["product"], now)
        return None
    expires = iso(at(now + ttl_s))
    await conn.execute(
        "INSERT INTO second_chances (auction, user_id, round, offer, amount_cents, offered_at, "
        "expires_at, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'offered')",
        auction_id,
        nxt["user_id"],
        len(asked) + 1,
        offer_id,
        nxt["amount_cents"],
        at(now),
        at(now + ttl_s),
    )
    message = SecondChance(auction["session"], auction_id, nxt["amount_cents"], expires)
    await notify_user(conn, nxt["user_id"], message)
    await enqueue_webhook(
        conn,
        "auction.second_chance",
        {
            "auction": auction_id,
            "session": auction["session"],
            "product": auction["product"],
            "user": nxt["user_id"],
            "round": len(asked) + 1,
            "amount_cents": nxt["amount_cents"],
            "expires_at": expires,
        },
        now,
    )
    return str(nxt["user_id"])


async def auction_order_back(
    conn: Executor, order: Order, auction_id: str, now: float, ttl_s: float
) -> str | None:
    """An auction's order (the winner's or an accepted chance) was cancelled or expired, in
    this transaction: its unit goes back on the hidden offer and on down the chain."""
    await _lock_auction(conn, auction_id)
    await conn.execute(
        "UPDATE offers SET remaining = remaining + $2 WHERE id = $1", order.offer, order.qty
    )
    return await pass_on(conn, auction_id, order.offer, now, ttl_s)


async def accept(
    conn: Connection,
    user: str,
    auction_id: str,
    now: float,
    reservation_ttl_s: float,
    *,
    session_id: str | None = None,
) -> tuple[Order, bool]:
    """Take the chance offered to `user`: (a reserved order at its amount, whether it was
    made now). Accepting again returns the same order. Raises not_found, forbidden (no
    chance for this user), auction_closed (it lapsed)."""
    async with conn.transaction():
        auction = await _lock_auction(conn, auction_id)
        if auction is None or (session_id is not None and auction["session"] != session_id):
            raise Failure("not_found", "no such auction in this session")
        chance = await conn.fetchrow(
            "SELECT offer, amount_cents, expires_at, status, order_id FROM second_chances "
            "WHERE auction = $1 AND user_id = $2",
            auction_id,
            user,
        )
        if chance is None:
            raise Failure("forbidden", "no second chance on this auction is offered to you")
        if chance["status"] == "accepted":
            row = await conn.fetchrow(ORDER_SELECT + " WHERE o.id = $1", chance["order_id"])
            return order_from_row(row), False
        if chance["status"] != "offered" or chance["expires_at"] <= at(now):
            raise Failure("auction_closed", "this second chance has expired")
        offer = await conn.fetchrow(
            "UPDATE offers SET remaining = remaining - 1 WHERE id = $1 AND remaining >= 1 "
            "RETURNING currency",
            chance["offer"],
        )
        if offer is None:  # the books say the unit is not here: refuse, change nothing
            raise Failure("auction_closed", "this second chance is no longer available")
        order = await reserve_unit(
            conn,
            user=user,
            offer=chance["offer"],
            session=auction["session"],
            product=auction["product"],
            price=int(chance["amount_cents"]),
            currency=offer["currency"],
            key="chance:" + auction_id,
            now=now,
            reservation_ttl_s=reservation_ttl_s,
        )
        await conn.execute(
            "UPDATE second_chances SET status = 'accepted', order_id = $3 "
            "WHERE auction = $1 AND user_id = $2",
            auction_id,
            user,
            order.id,
        )
        await enqueue_webhook(
            conn,
            "order.reserved",
            {**msgspec.to_builtins(order), "auction": auction_id, "second_chance": True},
            now,
        )
    return order, True


async def lapse_due_chance(conn: Connection, now: float, ttl_s: float) -> bool:
    """Lapse one unanswered chance past `expires_at` and pass the unit on; False when none is
    due. Safe on every node: an auction another node is working on is skipped."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT c.auction, c.user_id, c.offer FROM second_chances c "
            "JOIN auctions a ON a.id = c.auction "
            "WHERE c.status = 'offered' AND c.expires_at <= $1 "
            "ORDER BY c.expires_at LIMIT 1 FOR UPDATE OF a SKIP LOCKED",
            at(now),
        )
        if row is None:
            return False
        lapsed = await conn.fetchval(  # read again under the auction's lock
            "UPDATE second_chances SET status = 'lapsed' "
            "WHERE auction = $1 AND user_id = $2 AND status = 'offered' AND expires_at <= $3 "
            "RETURNING user_id",
            row["auction"],
            row["user_id"],
            at(now),
        )
        if lapsed is not None:
            await pass_on(conn, row["auction"], row["offer"], now, ttl_s)
    return True


async def chance_of(conn: Executor, user: str, auction_id: str) -> SecondChanceView | None:
    """The caller's own chance on an auction, for a page that reconnects."""
    row = await conn.fetchrow(
        "SELECT c.auction, a.session, c.amount_cents, c.expires_at, c.status, "
        'c.order_id AS "order" FROM second_chances c JOIN auctions a ON a.id = c.auction '
        "WHERE c.auction = $1 AND c.user_id = $2",
        auction_id,
        user,
    )
    return None if row is None else from_row(row, SecondChanceView, iso_times=("expires_at",))
