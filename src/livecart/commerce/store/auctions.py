"""Auctions: one running lot per session, bids totally ordered by the auction's row lock,
buy-now, and the close that hands the winner a reserved order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ...auth import Identity
from ...failure import Failure
from ...ids import new_id
from ...protocol import Outbid
from ...runtime.db import Connection, Executor, iso
from .. import rules as rules
from ..rules import Auction, BidAccepted, EndReason, Order
from .offers import check_listing
from .outbox import enqueue_webhook, notify_user, notify_users
from .rows import AUCTION_COLS, ORDER_SELECT, at, auction_from_row, auction_state, order_from_row

# Namespace of the two-key advisory lock per session (a key space of its own in PostgreSQL).
_LOCK_AUCTION = 0x4C430002  # session: one running auction per session


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
    """Takes one unit of the product for the lot; it comes back if nobody wins it. A
    scheduled auction (`starts_in_s > 0`) is running from now on (pre-bids) and opens at
    `opens_at`; its `ends_at` is `opens_at + duration_s`."""
    table = rules.validate_auction(terms)
    opens_at = now + terms.starts_in_s
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
            "mode, ends_at, increments, buy_now_cents, reserve_cents, opens_at, announced_open) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
            f"RETURNING {AUCTION_COLS}",
            new_id("auc"),
            session_id,
            product_id,
            terms.start_cents,
            table[0][1],
            terms.mode,
            at(opens_at + terms.duration_s),
            [list(r) for r in table],
            terms.buy_now_cents,
            terms.reserve_cents,
            at(opens_at),
            terms.starts_in_s <= 0,
        )
    return auction_from_row(row, 0, now)


async def opened_auctions(conn: Executor, now: float) -> list[Auction]:
    """Scheduled auctions that opened since the last pass, each returned once (to announce)."""
    rows = await conn.fetch(
        "UPDATE auctions a SET announced_open = true "
        "WHERE a.status = 'open' AND NOT a.announced_open AND a.opens_at <= $1 "
        f"RETURNING {AUCTION_COLS}",
        at(now),
    )
    return [auction_from_row(r, await _bid_count(conn, r["id"]), now) for r in rows]


async def get_auction(conn: Executor, auction_id: str, now: float) -> Auction | None:
    row = await conn.fetchrow(f"SELECT {AUCTION_COLS} FROM auctions a WHERE a.id = $1", auction_id)
    return None if row is None else auction_from_row(row, await _bid_count(conn, auction_id), now)


async def open_auction(conn: Executor, session_id: str, now: float) -> Auction | None:
    """The session's running auction (open, or scheduled and taking pre-bids)."""
    row = await conn.fetchrow(
        f"SELECT {AUCTION_COLS} FROM auctions a WHERE a.session = $1 AND a.status = 'open' "
        "ORDER BY a.ends_at DESC LIMIT 1",
        session_id,
    )
    return None if row is None else auction_from_row(row, await _bid_count(conn, row["id"]), now)


# After the auction's row lock (a statement of its own, so that bids committed while we
# waited are seen), in one round trip: the number of bids, the session's status and the
# batch's refs already used by their bidders (their bids, to answer again).
_AFTER_LOCK = """
SELECT (SELECT coalesce(max(seq), 0) FROM bids WHERE auction = $1) AS bids,
       (SELECT status FROM sessions WHERE id = $2) AS live,
       (SELECT jsonb_agg(jsonb_build_object(
                   'user_id', e.user_id, 'ref', e.ref, 'seq', e.seq,
                   'amount_cents', e.amount_cents, 'max_cents', e.max_cents,
                   'price_cents', e.price_cents, 'leader', e.leader))
        FROM bids e JOIN unnest($3::text[], $4::text[]) AS r(user_id, ref)
          ON e.user_id = r.user_id AND e.ref = r.ref
        WHERE e.auction = $1) AS earlier
"""
# The batch's accepted bids and the auction they leave, in one statement.
_RECORD_BIDS = """
WITH bid AS (
    INSERT INTO bids (auction, seq, user_id, amount_cents, ref, at, max_cents, price_cents,
                      leader, video_at)
    SELECT $1, * FROM unnest($2::int[], $3::text[], $4::bigint[], $5::text[],
                             $6::timestamptz[], $7::bigint[], $8::bigint[], $9::text[],
                             $10::float8[])
)
UPDATE auctions SET current_cents = $11, leader = $12, ends_at = $13, leader_max_cents = $14,
                    leader_at = $15
WHERE id = $1
"""


@dataclass(slots=True)
class BidRequest:
    user: str
    amount_cents: int
    ref: str
    session_id: str | None = None
    max_cents: int | None = None
    video_at: float | None = None


@dataclass(slots=True)
class BidOutcome:
    bid: BidAccepted
    session: str
    replay: bool
    extended: bool
    outbid: str | None = None  # the previous leader, when this bid took the lead from them
    reserve_met: bool = True


def _replayed(auction_id: str, user: str, ends_at: str, e: Any) -> BidAccepted:
    price = e["price_cents"]
    return BidAccepted(
        auction=auction_id,
        seq=e["seq"],
        user=user,
        amount_cents=e["amount_cents"] if price is None else price,
        ends_at=ends_at,
        leading=e["leader"] in (None, user),
        leader=e["leader"] or user,
        max_cents=e["max_cents"],
    )


async def bid_many(
    conn: Connection,
    auction_id: str,
    requests: list[BidRequest],
    now: float,
    *,
    settle_grace_s: float = 0.0,
) -> list[BidOutcome | Failure]:
    """Apply bids in the given order in one transaction, under the auction's row lock (bids
    on one auction are totally ordered by it); one outcome per request, a refusal as a
    `Failure`. Idempotent per (auction, user, ref): a ref already used (or used earlier in
    this batch) answers the accepted bid again."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {AUCTION_COLS} FROM auctions a WHERE a.id = $1 FOR UPDATE", auction_id
        )
        if row is None:
            return [Failure("not_found", "no such auction in this session") for _ in requests]
        seen = await conn.fetchrow(
            _AFTER_LOCK,
            auction_id,
            row["session"],
            [r.user for r in requests],
            [r.ref for r in requests],
        )
        earlier = {(e["user_id"], e["ref"]): e for e in seen["earlier"] or ()}
        state = auction_state(row, seen["bids"])
        first = state
        done: dict[tuple[str, str], BidAccepted] = {}
        out: list[BidOutcome | Failure] = []
        cols: list[list[Any]] = [[] for _ in range(9)]
        for r in requests:
            if r.session_id is not None and row["session"] != r.session_id:
                out.append(Failure("not_found", "no such auction in this session"))
                continue
            key = (r.user, r.ref)
            if key in earlier:
                again = _replayed(auction_id, r.user, iso(at(state.ends_at)), earlier[key])
                out.append(BidOutcome(again, row["session"], replay=True, extended=False))
                continue
            if key in done:
                out.append(BidOutcome(done[key], row["session"], replay=True, extended=False))
                continue
            judged = rules.judged_at(now, r.video_at)
            try:
                if state.status == "open" and judged < state.ends_at and seen["live"] != "live":
                    raise Failure("not_live", "the session is not live")
                result = rules.decide_bid(
                    state,
                    user=r.user,
                    amount_cents=r.amount_cents,
                    now=now,
                    max_cents=r.max_cents,
                    video_at=r.video_at,
                    settle_grace_s=settle_grace_s,
                )
            except Failure as refused:
                out.append(refused)
                continue
            before, state = state, result.auction
            assert state.current_cents is not None and state.leader is not None
            for col, value in zip(
                cols,
                (
                    state.bids,
                    r.user,
                    r.amount_cents,
                    r.ref,
                    at(now),
                    r.max_cents,
                    state.current_cents,
                    state.leader,
                    judged,
                ),
                strict=True,
            ):
                col.append(value)
            accepted = BidAccepted(
                auction=auction_id,
                seq=state.bids,
                user=r.user,
                amount_cents=state.current_cents,
                ends_at=iso(at(state.ends_at)),
                leading=result.leading,
                leader=state.leader,
                max_cents=r.max_cents,
            )
            done[key] = accepted
            out.append(
                BidOutcome(
                    accepted,
                    row["session"],
                    replay=False,
                    extended=state.ends_at != before.ends_at,
                    outbid=result.outbid,
                    reserve_met=rules.reserve_met(state),
                )
            )
        if state is not first:
            await conn.execute(
                _RECORD_BIDS,
                auction_id,
                *cols,
                state.current_cents,
                state.leader,
                at(state.ends_at),
                state.leader_max_cents,
                state.leader_at,
            )
            # Whoever lost the lead hears it on every node they are connected to.
            await notify_users(
                conn,
                [
                    (o.outbid, Outbid(o.session, auction_id, o.bid.amount_cents))
                    for o in out
                    if isinstance(o, BidOutcome) and o.outbid is not None
                ],
            )
    return out


async def reserve_unit(
    conn: Executor,
    *,
    user: str,
    offer: str,
    session: str,
    product: str,
    price: int,
    currency: str,
    key: str,
    now: float,
    reservation_ttl_s: float,
) -> Order:
    """Write `user`'s reserved order for the one unit of `offer` at `price` (an auction's
    winner, or a second chance taken), idempotent under `key`."""
    order = Order(
        id=new_id("ord"),
        user=user,
        offer=offer,
        session=session,
        product=product,
        qty=1,
        unit_cents=price,
        total_cents=price,
        currency=currency,
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
        user,
        offer,
        price,
        currency,
        key,
        at(now),
        at(now + reservation_ttl_s),
    )
    return order


async def _award(
    conn: Connection,
    row: Any,
    *,
    winner: str,
    price: int,
    key: str,
    now: float,
    reservation_ttl_s: float,
) -> Order:
    """The winner's reserved order at `price`, hung on a hidden, already ended 1-unit offer
    (the unit is the one the auction took from stock), with its `order.reserved` webhook."""
    r = row
    offer_id = new_id("off")
    await conn.execute(
        "INSERT INTO offers (id, session, product, price_cents, currency, quantity, "
        "remaining, per_user_limit, starts_at, ends_at, status, auction) "
        "VALUES ($1, $2, $3, $4, $5, 1, 0, 1, $6, $6, 'ended', $7)",
        offer_id,
        r["session"],
        r["product"],
        price,
        r["currency"],
        at(now),
        r["id"],
    )
    order = await reserve_unit(
        conn,
        user=winner,
        offer=offer_id,
        session=str(r["session"]),
        product=str(r["product"]),
        price=price,
        currency=str(r["currency"]),
        key=key,
        now=now,
        reservation_ttl_s=reservation_ttl_s,
    )
    await enqueue_webhook(
        conn, "order.reserved", {**msgspec.to_builtins(order), "auction": r["id"]}, now
    )
    return order


@dataclass(slots=True)
class Closed:
    auction: Auction
    order: Order | None
    reason: EndReason
    outbid: str | None = None  # buy-now: the leader it took the lot from


async def buy_now(
    conn: Connection,
    user: str,
    auction_id: str,
    ref: str,
    now: float,
    *,
    reservation_ttl_s: float,
    session_id: str | None = None,
    video_at: float | None = None,
    settle_grace_s: float = 0.0,
) -> tuple[Closed, bool]:
    """End the auction at its buy-now price with a reserved order for `user`. Idempotent
    per (user, ref) like any order: returns (the outcome, whether it is a replay)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {AUCTION_COLS}, p.currency FROM auctions a "
            "JOIN products p ON p.id = a.product WHERE a.id = $1 FOR UPDATE OF a",
            auction_id,
        )
        if row is None or (session_id is not None and row["session"] != session_id):
            raise Failure("not_found", "no such auction in this session")
        bids = await _bid_count(conn, auction_id)
        existing = await conn.fetchval(
            "SELECT id FROM orders WHERE user_id = $1 AND idempotency_key = $2", user, ref
        )
        if existing is not None:
            if existing != row["winner_order"]:
                raise Failure("duplicate", "this ref was used for another order")
            order = order_from_row(await conn.fetchrow(ORDER_SELECT + " WHERE o.id = $1", existing))
            return Closed(auction_from_row(row, bids, now), order, "buy_now"), True
        state = auction_state(row, bids)
        live = await conn.fetchval("SELECT status FROM sessions WHERE id = $1", row["session"])
        price = rules.decide_buy_now(
            state, now=now, video_at=video_at, settle_grace_s=settle_grace_s
        )
        if live != "live":
            raise Failure("not_live", "the session is not live")
        order = await _award(
            conn,
            row,
            winner=user,
            price=price,
            key=ref,
            now=now,
            reservation_ttl_s=reservation_ttl_s,
        )
        closed = await conn.fetchrow(
            "UPDATE auctions a SET status = 'ended', winner_order = $2, current_cents = $3, "
            "leader = $4, leader_max_cents = NULL, end_reason = 'buy_now' WHERE a.id = $1 "
            f"RETURNING {AUCTION_COLS}",
            auction_id,
            order.id,
            price,
            user,
        )
        outbid = state.leader if state.leader not in (None, user) else None
        if outbid is not None:
            await notify_user(conn, outbid, Outbid(row["session"], auction_id, price))
    return Closed(auction_from_row(closed, bids, now), order, "buy_now", outbid), False


async def close_due_auction(
    conn: Connection, now: float, reservation_ttl_s: float, settle_grace_s: float = 0.0
) -> Closed | None:
    """Settle one auction `settle_grace_s` past its end: the winner gets a reserved order at
    the final price; without bids, or below the reserve, the lot goes back to stock."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {AUCTION_COLS}, p.currency FROM auctions a "
            "JOIN products p ON p.id = a.product "
            "WHERE a.status = 'open' AND a.ends_at <= $1 "
            "ORDER BY a.ends_at LIMIT 1 FOR UPDATE OF a SKIP LOCKED",
            at(now - settle_grace_s),
        )
        if row is None:
            return None
        bids = await _bid_count(conn, row["id"])
        state = auction_state(row, bids)
        if not rules.auction_due(state, now, settle_grace_s):
            return None
        outcome = rules.auction_outcome(state)
        reason = rules.end_reason(state)
        order: Order | None = None
        if outcome is None:
            await return_unit(conn, row["product"], now)
        else:
            winner, price = outcome
            order = await _award(
                conn,
                row,
                winner=winner,
                price=price,
                key="auction:" + row["id"],
                now=now,
                reservation_ttl_s=reservation_ttl_s,
            )
        closed = await conn.fetchrow(
            "UPDATE auctions a SET status = 'ended', winner_order = $2, end_reason = $3 "
            f"WHERE a.id = $1 RETURNING {AUCTION_COLS}",
            row["id"],
            None if order is None else order.id,
            reason,
        )
    return Closed(auction_from_row(closed, bids, now), order, reason)


async def return_unit(conn: Executor, product_id: str, now: float) -> None:
    """An auction's unit that nobody takes goes back to product stock."""
    await conn.execute(
        "UPDATE products SET stock = stock + 1, updated_at = $2 WHERE id = $1",
        product_id,
        at(now),
    )
