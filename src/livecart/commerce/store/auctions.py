"""Auctions: one open lot per session, bids totally ordered by the auction's row lock, and
the close that hands the winner a reserved order."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from ...auth import Identity
from ...failure import Failure
from ...ids import new_id
from ...runtime.db import Connection, Executor, iso
from .. import rules as rules
from ..rules import Auction, BidAccepted, Order
from .offers import check_listing
from .outbox import enqueue_webhook
from .rows import AUCTION_COLS, at, auction_from_row, auction_state

# Namespace of the two-key advisory lock per session (a key space of its own in PostgreSQL).
_LOCK_AUCTION = 0x4C430002  # session: one open auction per session


async def _bid_count(conn: Executor, auction_id: str) -> int:
    return int(
        await conn.fetchval("SELECT coalesce(max(seq), 0) FROM bids WHERE auction = $1", auction_id)
    )


async def create_auction(
    conn: Connection,
    who: Identity,
    session_id: str,
    product_id: str,
    terms: rules.AuctionTerms,
    now: float,
) -> Auction:
    """Takes one unit of the product for the lot; it comes back if nobody bids."""
    rules.validate_auction(terms)
    async with conn.transaction():
        await check_listing(conn, who, session_id, product_id)
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
            f"RETURNING {AUCTION_COLS}",
            new_id("auc"),
            session_id,
            product_id,
            terms.start_cents,
            terms.min_increment_cents,
            terms.mode,
            at(now + terms.duration_s),
        )
    return auction_from_row(row, 0)


async def get_auction(conn: Executor, auction_id: str) -> Auction | None:
    row = await conn.fetchrow(f"SELECT {AUCTION_COLS} FROM auctions a WHERE a.id = $1", auction_id)
    return None if row is None else auction_from_row(row, await _bid_count(conn, auction_id))


async def open_auction(conn: Executor, session_id: str) -> Auction | None:
    row = await conn.fetchrow(
        f"SELECT {AUCTION_COLS} FROM auctions a WHERE a.session = $1 AND a.status = 'open' "
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
    conn: Connection,
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
            f"SELECT {AUCTION_COLS} FROM auctions a WHERE a.id = $1 FOR UPDATE", auction_id
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
                ends_at=iso(row["ends_at"]),
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
        ends_at=iso(at(after.ends_at)),
    )
    return BidOutcome(
        accepted, row["session"], replay=False, extended=after.ends_at != state.ends_at
    )


@dataclass(slots=True)
class Closed:
    auction: Auction
    order: Order | None


async def close_due_auction(
    conn: Connection, now: float, reservation_ttl_s: float
) -> Closed | None:
    """Close one auction past its end: the winner gets a reserved order at the final price,
    hung on a hidden, already ended 1-unit offer; without bids the lot goes back to stock."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {AUCTION_COLS}, p.currency FROM auctions a "
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
                "remaining, per_user_limit, starts_at, ends_at, status, auction) "
                "VALUES ($1, $2, $3, $4, $5, 1, 0, 1, $6, $6, 'ended', $7)",
                offer_id,
                row["session"],
                row["product"],
                price,
                row["currency"],
                row["ends_at"],
                row["id"],
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
                expires_at=iso(at(now + reservation_ttl_s)),
                created_at=iso(at(now)),
                updated_at=iso(at(now)),
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
            f"RETURNING {AUCTION_COLS}",
            row["id"],
            None if order is None else order.id,
        )
    return Closed(auction_from_row(closed, bids), order)
