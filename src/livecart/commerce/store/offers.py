"""Offers: opening (stock taken from the product), reading, and ending (unsold units back
to product stock, once), by hand or by the background pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from ...auth import Identity
from ...failure import Failure
from ...ids import new_id
from ...runtime.db import Connection, Executor
from .. import rules as rules
from ..rules import Offer
from .outbox import enqueue_webhook
from .rows import OFFER_COLS, at, offer_from_row
from .selling import tell_moved


async def _session_for_listing(conn: Executor, session_id: str, product_id: str) -> Any:
    return await conn.fetchrow(
        "SELECT s.creator, s.status, EXISTS (SELECT 1 FROM session_products sp "
        "WHERE sp.session = s.id AND sp.product = $2) AS showcased "
        "FROM sessions s WHERE s.id = $1",
        session_id,
        product_id,
    )


async def check_listing(conn: Executor, who: Identity, session_id: str, product_id: str) -> None:
    row = await _session_for_listing(conn, session_id, product_id)
    if row is None:
        raise Failure("not_found", "no such session")
    rules.require_manager(who, row["creator"])
    if row["status"] != "live":
        raise Failure("not_live", "the session is not live")
    if not row["showcased"]:
        raise Failure("not_found", "the product is not in this session's showcase")


async def open_offer(
    conn: Connection,
    who: Identity,
    session_id: str,
    product_id: str,
    terms: rules.OfferTerms,
    now: float,
) -> Offer:
    rules.validate_offer(terms)
    word = None if terms.claim_word is None else terms.claim_word.strip()
    key = None if word is None else rules.claim_key(word)
    try:
        return await _open_offer(conn, who, session_id, product_id, terms, now, word, key)
    except asyncpg.UniqueViolationError:
        raise Failure(
            "duplicate", "another open offer of this session has the same claim word"
        ) from None


async def _open_offer(
    conn: Connection,
    who: Identity,
    session_id: str,
    product_id: str,
    terms: rules.OfferTerms,
    now: float,
    word: str | None,
    key: str | None,
) -> Offer:
    async with conn.transaction():
        await check_listing(conn, who, session_id, product_id)
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
            "remaining, per_user_limit, starts_at, ends_at, claim_word, claim_key) "
            "VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11) "
            f"RETURNING {OFFER_COLS}",
            new_id("off"),
            session_id,
            product_id,
            terms.price_cents,
            product["currency"],
            terms.quantity,
            terms.per_user_limit,
            at(now),
            at(now + terms.duration_s),
            word,
            key,
        )
    return offer_from_row(row)


async def get_offer(conn: Executor, offer_id: str) -> Offer | None:
    row = await conn.fetchrow(f"SELECT {OFFER_COLS} FROM offers f WHERE f.id = $1", offer_id)
    return None if row is None else offer_from_row(row)


async def open_offers(conn: Executor, session_id: str, now: float) -> list[Offer]:
    rows = await conn.fetch(
        f"SELECT {OFFER_COLS} FROM offers f WHERE f.session = $1 AND f.status = 'open' "
        "AND f.ends_at > $2 ORDER BY f.starts_at, f.id",
        session_id,
        at(now),
    )
    return [offer_from_row(r) for r in rows]


async def remaining_of(conn: Executor, offer_ids: list[str]) -> list[tuple[str, str, int]]:
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


BUYERS = "SELECT coalesce(array_agg(DISTINCT user_id), '{}') FROM orders WHERE offer = $1"


async def _end_locked(conn: Executor, offer_id: str, now: float, reason: str) -> Ended | None:
    """Open → ended, unsold units back to product stock. Within a transaction."""
    row = await conn.fetchrow(
        "UPDATE offers AS f SET status = 'ended', returned = f.remaining, "
        "ends_at = least(f.ends_at, $2) WHERE f.id = $1 AND f.status = 'open' "
        f"RETURNING {OFFER_COLS}",
        offer_id,
        at(now),
    )
    if row is None:
        return None
    # Nobody waits for an ended offer (SPEC §13): its waiters' places show `dropped`, and
    # each waiter is told so.
    dropped = await conn.fetch(
        "UPDATE waitlist SET status = 'dropped' WHERE offer = $1 AND status = 'waiting' "
        "RETURNING user_id, seq",
        offer_id,
    )
    await tell_moved(
        conn, offer_id, row["session"], [(r["user_id"], "dropped", r["seq"]) for r in dropped]
    )
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
    buyers = frozenset(await conn.fetchval(BUYERS, offer_id))
    observation = Observation("ended", row["remaining"], row["ends_at"].timestamp(), buyers)
    return Ended(offer, reason, row["returned"], observation)


async def offer_creator(conn: Executor, offer_id: str) -> tuple[str, str] | None:
    """(session, creator) of an offer."""
    row = await conn.fetchrow(
        "SELECT f.session, s.creator FROM offers f JOIN sessions s ON s.id = f.session "
        "WHERE f.id = $1",
        offer_id,
    )
    return None if row is None else (row["session"], row["creator"])


async def end_offer(
    conn: Connection, who: Identity, offer_id: str, now: float
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


async def end_due_offer(conn: Connection, now: float, grace_s: float = 0.0) -> Ended | None:
    """End one offer that is past its end by `grace_s` (the settle grace of video time, in
    which buys made at an earlier video time still count) or whose session is no longer
    live."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT f.id, f.ends_at, s.status AS session_status FROM offers f "
            "JOIN sessions s ON s.id = f.session "
            "WHERE f.status = 'open' AND (f.ends_at <= $1 OR s.status <> 'live') "
            "ORDER BY f.ends_at LIMIT 1 FOR UPDATE OF f SKIP LOCKED",
            at(now - grace_s),
        )
        if row is None:
            return None
        reason = rules.offer_end_reason(
            now=now - grace_s,
            ends_at=row["ends_at"].timestamp(),
            session_status=row["session_status"],
        )
        return await _end_locked(conn, row["id"], now, reason or "time")
