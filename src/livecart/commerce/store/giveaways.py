"""Giveaways: opening (units taken from product stock), entries (a batch per transaction,
idempotent per (giveaway, user)), and the draw that hands each winner a reserved order at
price 0, at most once whatever number of nodes sweep.

Entries and the draw exclude each other through the giveaway's row: a batch of entries holds
it `FOR SHARE` while it checks that the giveaway is open and inserts, the draw holds it
`FOR UPDATE`, so no entry commits after the entrant list was read for the draw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ...auth import Identity
from ...failure import Failure
from ...ids import new_id
from ...runtime.db import Connection, Executor, iso
from .. import draw as rules
from ..draw import PRIZE_KEY, Giveaway
from ..rules import Order
from .offers import check_listing
from .outbox import ENQUEUE, enqueue_webhook, webhook_event
from .rows import ORDER_SELECT, at, order_from_row

# Namespace of the two-key advisory lock per session (a key space of its own in PostgreSQL).
_LOCK_GIVEAWAY = 0x4C430003  # session: one open giveaway per session

GIVEAWAY_COLS = (
    "g.id, g.session, g.product, g.winners, g.eligibility, g.ends_at, g.status, g.commitment"
)


def _public(row: Any, *, entries: int = 0) -> Giveaway:
    return Giveaway(
        id=row["id"],
        session=row["session"],
        product=row["product"],
        winners=row["winners"],
        eligibility=row["eligibility"],
        ends_at=iso(row["ends_at"]),
        status=row["status"],
        commitment=row["commitment"],
        entries=entries,
    )


async def create_giveaway(
    conn: Connection,
    who: Identity,
    session_id: str,
    product_id: str,
    terms: rules.GiveawayTerms,
    now: float,
) -> Giveaway:
    """Takes `winners` units of the product; one open giveaway per session."""
    rules.validate_giveaway(terms)
    seed = rules.new_seed()
    async with conn.transaction():
        await check_listing(conn, who, session_id, product_id)
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_GIVEAWAY, session_id
        )
        running = await conn.fetchval(
            "SELECT id FROM giveaways WHERE session = $1 AND status = 'open'", session_id
        )
        if running is not None:
            raise Failure("duplicate", f"giveaway {running} is still running in this session")
        taken = await conn.fetchval(
            "UPDATE products SET stock = stock - $2, updated_at = $3 "
            "WHERE id = $1 AND stock >= $2 RETURNING stock",
            product_id,
            terms.winners,
            at(now),
        )
        if taken is None:
            stock = await conn.fetchval("SELECT stock FROM products WHERE id = $1", product_id)
            raise Failure("sold_out", f"the product has {stock or 0} in stock")
        row = await conn.fetchrow(
            "INSERT INTO giveaways AS g (id, session, product, winners, eligibility, seed, "
            "commitment, created_at, ends_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            f"RETURNING {GIVEAWAY_COLS}",
            new_id("gwy"),
            session_id,
            product_id,
            terms.winners,
            terms.eligibility,
            seed,
            rules.commitment(seed),
            at(now),
            at(now + terms.duration_s),
        )
    return _public(row)


async def get_giveaway(conn: Executor, giveaway_id: str) -> Giveaway | None:
    """The giveaway; once ended with its seed, entrants (sorted) and winners."""
    row = await conn.fetchrow(
        f"SELECT {GIVEAWAY_COLS}, g.seed, g.drawn FROM giveaways g WHERE g.id = $1", giveaway_id
    )
    if row is None:
        return None
    if row["status"] != "ended":
        entries = await conn.fetchval(
            "SELECT count(*) FROM giveaway_entries WHERE giveaway = $1", giveaway_id
        )
        return _public(row, entries=entries)
    entrants = await conn.fetchval(
        "SELECT coalesce(array_agg(user_id ORDER BY user_id), '{}') FROM giveaway_entries "
        "WHERE giveaway = $1",
        giveaway_id,
    )
    return msgspec.structs.replace(
        _public(row, entries=len(entrants)),
        seed=row["seed"],
        entrants=list(entrants),
        drawn=list(row["drawn"] or []),
    )


async def open_giveaway(conn: Executor, session_id: str) -> Giveaway | None:
    row = await conn.fetchrow(
        f"SELECT {GIVEAWAY_COLS} FROM giveaways g WHERE g.session = $1 AND g.status = 'open' "
        "ORDER BY g.ends_at DESC LIMIT 1",
        session_id,
    )
    if row is None:
        return None
    entries = await conn.fetchval(
        "SELECT count(*) FROM giveaway_entries WHERE giveaway = $1", row["id"]
    )
    return _public(row, entries=entries)


# ---------------------------------------------------------------- entries


@dataclass(slots=True)
class EntryBatch:
    """The outcome of a batch: a refusal per user (None: entered, or had entered before), and
    the giveaway's terms as read under its lock (None when it does not exist)."""

    refusals: dict[str, Failure | None]
    status: str | None = None
    ends_at: float | None = None


async def enter_many(
    conn: Connection, giveaway_id: str, session_id: str, users: list[str], now: float
) -> EntryBatch:
    """Enter `users` (distinct) in one transaction. Entering twice is one entry."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT g.session, g.status, g.ends_at, g.eligibility, s.status AS session_status "
            "FROM giveaways g JOIN sessions s ON s.id = g.session WHERE g.id = $1 FOR SHARE OF g",
            giveaway_id,
        )
        if row is None or row["session"] != session_id:
            missing = Failure("not_found", "no such giveaway in this session")
            return EntryBatch(dict.fromkeys(users, missing))
        ends_at = row["ends_at"].timestamp()
        batch = EntryBatch({}, row["status"], ends_at)
        if not rules.entry_open(status=row["status"], ends_at=ends_at, now=now):
            closed = Failure("offer_closed", "this giveaway has ended")
            batch.refusals = dict.fromkeys(users, closed)
            return batch
        if row["session_status"] != "live":
            batch.refusals = dict.fromkeys(users, Failure("not_live", "the session is not live"))
            return batch
        eligible = users
        if row["eligibility"] == "buyers":
            buyers = set(
                await conn.fetchval(
                    "SELECT coalesce(array_agg(DISTINCT o.user_id), '{}') FROM orders o "
                    "JOIN offers f ON f.id = o.offer "
                    "WHERE f.session = $1 AND o.user_id = ANY($2::text[]) "
                    "AND o.status IN ('reserved', 'paid') "
                    "AND NOT starts_with(o.idempotency_key, $3)",
                    session_id,
                    users,
                    PRIZE_KEY,
                )
            )
            eligible = [u for u in users if u in buyers]
            refused = Failure("forbidden", "this giveaway is for buyers in this session")
            batch.refusals.update((u, refused) for u in users if u not in buyers)
        if eligible:
            await conn.execute(
                "INSERT INTO giveaway_entries (giveaway, user_id, at) "
                "SELECT $1, u, $3 FROM unnest($2::text[]) AS u ON CONFLICT DO NOTHING",
                giveaway_id,
                eligible,
                at(now),
            )
        batch.refusals.update((u, None) for u in eligible)
    return batch


# ---------------------------------------------------------------- the draw


@dataclass(slots=True)
class Drawn:
    giveaway: Giveaway  # with seed, entrants and winners
    orders: list[Order]  # the winners', in draw order
    returned: int  # units back to product stock


async def draw_due_giveaway(conn: Connection, now: float, reservation_ttl_s: float) -> Drawn | None:
    """Draw one giveaway past its end (or whose session is no longer live): each winner gets a
    reserved order at price 0, hung on a hidden, already ended offer of `len(winners)` units;
    units without a winner go back to product stock."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {GIVEAWAY_COLS}, g.seed, p.currency FROM giveaways g "
            "JOIN sessions s ON s.id = g.session JOIN products p ON p.id = g.product "
            "WHERE g.status = 'open' AND (g.ends_at <= $1 OR s.status <> 'live') "
            "ORDER BY g.ends_at LIMIT 1 FOR UPDATE OF g SKIP LOCKED",
            at(now),
        )
        if row is None:
            return None
        entrants = list(
            await conn.fetchval(
                "SELECT coalesce(array_agg(user_id ORDER BY user_id), '{}') "
                "FROM giveaway_entries WHERE giveaway = $1",
                row["id"],
            )
        )
        winners = rules.draw(row["seed"], entrants, row["winners"])
        returned = row["winners"] - len(winners)
        if returned:
            await conn.execute(
                "UPDATE products SET stock = stock + $2, updated_at = $3 WHERE id = $1",
                row["product"],
                returned,
                at(now),
            )
        offer_id: str | None = None
        orders: list[Order] = []
        if winners:
            offer_id = new_id("off")
            ended_at = min(row["ends_at"], at(now))
            await conn.execute(
                "INSERT INTO offers (id, session, product, price_cents, currency, quantity, "
                "remaining, per_user_limit, starts_at, ends_at, status) "
                "VALUES ($1, $2, $3, 0, $4, $5, 0, 1, $6, $6, 'ended')",
                offer_id,
                row["session"],
                row["product"],
                row["currency"],
                len(winners),
                ended_at,
            )
            stamp, expires = iso(at(now)), iso(at(now + reservation_ttl_s))
            orders = [
                Order(
                    id=new_id("ord"),
                    user=user,
                    offer=offer_id,
                    session=row["session"],
                    product=row["product"],
                    qty=1,
                    unit_cents=0,
                    total_cents=0,
                    currency=row["currency"],
                    status="reserved",
                    expires_at=expires,
                    created_at=stamp,
                    updated_at=stamp,
                )
                for user in winners
            ]
            await conn.execute(
                "INSERT INTO orders (id, user_id, offer, qty, unit_cents, total_cents, currency, "
                "status, idempotency_key, created_at, expires_at, updated_at) "
                "SELECT o.id, o.u, $3, 1, 0, 0, $4, 'reserved', $5, $6, $7, $6 "
                "FROM unnest($1::text[], $2::text[]) AS o(id, u)",
                [o.id for o in orders],
                winners,
                offer_id,
                row["currency"],
                PRIZE_KEY + row["id"],
                at(now),
                at(now + reservation_ttl_s),
            )
            await conn.executemany(
                ENQUEUE,
                [
                    webhook_event(
                        "order.reserved", {**msgspec.to_builtins(o), "giveaway": row["id"]}, now
                    )
                    for o in orders
                ],
            )
        await conn.execute(
            "UPDATE giveaways SET status = 'ended', drawn = $2, offer = $3, returned = $4, "
            "ends_at = least(ends_at, $5) WHERE id = $1",
            row["id"],
            winners,
            offer_id,
            returned,
            at(now),
        )
        giveaway = msgspec.structs.replace(
            _public(row, entries=len(entrants)),
            ends_at=iso(min(row["ends_at"], at(now))),
            status="ended",
            seed=row["seed"],
            entrants=entrants,
            drawn=winners,
        )
        await enqueue_webhook(
            conn,
            "giveaway.ended",
            {
                **msgspec.to_builtins(giveaway),
                "returned": returned,
                "orders": [o.id for o in orders],
            },
            now,
        )
    return Drawn(giveaway, orders, returned)


async def prize_orders(conn: Executor, giveaway_id: str, users: list[str]) -> list[Order]:
    """The orders a giveaway handed to these users (their current state)."""
    rows = await conn.fetch(
        ORDER_SELECT + " WHERE o.idempotency_key = $1 AND o.user_id = ANY($2::text[])",
        PRIZE_KEY + giveaway_id,
        users,
    )
    return [order_from_row(r) for r in rows]
