"""Selling in a show (SPEC §13) in PostgreSQL: claim words, waitlists and bundles.

Returned units go through one function, `give_back`: cancel and expiry both call it inside
their transaction. It puts the units back on their offers (or product stock once an offer
ended) and, on an open offer, serves its waitlist first, in `seq` order, under the offer's row
lock, so that however many nodes return units at once, no waiter is ever served before one
who joined earlier.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ...failure import Failure
from ...ids import new_id
from ...protocol import WaitlistPlace
from ...runtime.db import Connection, Executor, iso
from .. import rules as rules
from ..rules import Order
from .outbox import enqueue_webhook, notify_returned, notify_users
from .rows import ORDER_SELECT, at, offer_state, order_from_row

# NOTIFY channel: an order a waitlist was served, for whichever node the waiter is on
# (payload: `{"user", "ref", "order"}` as JSON, one notice per order).
WAITLIST_SERVED = "livecart_waitlist_served"

# The buyers' advisory-lock namespace of the purchase path (`store.purchases._LOCK_BUY`).
_LOCK_BUY = 0x4C430001

_json = msgspec.json.Encoder()


# ---------------------------------------------------------------- claim words


async def claim_words(conn: Executor, session_id: str, now: float) -> dict[str, str]:
    """Claim key → offer id of the session's open offers that have a claim word."""
    rows = await conn.fetch(
        "SELECT id, claim_key FROM offers WHERE session = $1 AND status = 'open' "
        "AND ends_at > $2 AND claim_key IS NOT NULL",
        session_id,
        at(now),
    )
    return {r["claim_key"]: r["id"] for r in rows}


# ---------------------------------------------------------------- waitlists


class Place(msgspec.Struct):
    """A user's place on an offer's waitlist: `position` counts the waiters up to and
    including this one (1 = next served) while waiting, else None."""

    offer: str
    status: str  # waiting | served | dropped
    position: int | None
    ref: str
    order: str | None


async def _place(conn: Executor, offer_id: str, user: str) -> Place | None:
    row = await conn.fetchrow(
        "SELECT w.status, w.ref, w.order_id, CASE WHEN w.status = 'waiting' THEN "
        "(SELECT count(*) FROM waitlist x WHERE x.offer = w.offer AND x.status = 'waiting' "
        "AND x.seq <= w.seq) END AS position "
        "FROM waitlist w WHERE w.offer = $1 AND w.user_id = $2",
        offer_id,
        user,
    )
    if row is None:
        return None
    return Place(offer_id, row["status"], row["position"], row["ref"], row["order_id"])


async def waitlist_place(conn: Executor, offer_id: str, user: str) -> Place:
    place = await _place(conn, offer_id, user)
    if place is None:
        raise Failure("not_found", "you are not on this offer's waitlist")
    return place


async def join_waitlist(
    conn: Connection,
    user: str,
    offer_id: str,
    ref: str,
    now: float,
    *,
    session_id: str | None = None,
) -> Place:
    """Take a place at the end of a sold-out open offer's waitlist. Joining again while
    waiting answers the same place (whatever the ref). The offer's row lock orders joins
    against the units being served, so a join never misses a unit returned meanwhile."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT f.quantity, f.remaining, f.per_user_limit, f.status, f.ends_at, f.returned, "
            "f.session, s.status AS session_status FROM offers f "
            "JOIN sessions s ON s.id = f.session WHERE f.id = $1 FOR UPDATE OF f",
            offer_id,
        )
        if row is None or (session_id is not None and row["session"] != session_id):
            raise Failure("not_found", "no such offer in this session")
        state = offer_state(row)
        earlier = await _place(conn, offer_id, user)
        if earlier is not None and earlier.status == "waiting" and rules.offer_open_at(state, now):
            return earlier
        holds = await conn.fetchval(
            "SELECT coalesce(sum(qty), 0) FROM orders WHERE offer = $1 AND user_id = $2 "
            "AND status IN ('reserved', 'paid')",
            offer_id,
            user,
        )
        rules.decide_waitlist(
            state,
            user_holds=holds,
            session_live=row["session_status"] == "live",
            now=now,
        )
        used = await conn.fetchval(
            "SELECT 1 FROM orders WHERE user_id = $1 AND idempotency_key = $2", user, ref
        )
        if used is not None:
            raise Failure("duplicate", "this ref was used for an order; pick another")
        # A waiter served or dropped earlier may wait again: a new place at the end.
        await conn.execute(
            "INSERT INTO waitlist (offer, user_id, ref, at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (offer, user_id) DO UPDATE SET ref = EXCLUDED.ref, "
            "seq = nextval(pg_get_serial_sequence('waitlist', 'seq')), status = 'waiting', "
            "order_id = NULL, at = EXCLUDED.at",
            offer_id,
            user,
            ref,
            at(now),
        )
        place = await _place(conn, offer_id, user)
        assert place is not None
        await notify_users(
            conn, [(user, WaitlistPlace(row["session"], offer_id, "waiting", place.position))]
        )
    return place


@dataclass(slots=True)
class Served:
    """A returned unit that went to a waiter: the reserved order and the waitlist ref."""

    user: str
    ref: str
    order: Order


@dataclass(slots=True)
class GivenBack:
    """What `give_back` did to one offer."""

    session: str
    offer: str
    qty: int  # units given back to it
    offer_status: rules.OfferStatus
    remaining: int  # the offer's remaining afterwards
    to_product: int  # units that went on to product stock (the offer had ended)
    served: list[Served] = field(default_factory=list)


async def give_back(
    conn: Executor, per_offer: dict[str, int], now: float, *, reservation_ttl_s: float
) -> list[GivenBack]:
    """THE way units come back (a cancelled or expired order), inside the caller's
    transaction: each offer gets its units back (locked in id order); an ended offer passes
    them on to product stock; an open one serves its waitlist first (`serve_waitlist`) and
    tells every node what is left (`notify_returned`)."""
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
    out: list[GivenBack] = []
    per_product: dict[str, int] = {}
    for f in sorted(offers, key=lambda r: r["id"]):
        back = GivenBack(f["session"], f["id"], f["q"], f["status"], f["remaining"], 0)
        if f["status"] == "ended":
            back.to_product = f["q"]
            per_product[f["product"]] = per_product.get(f["product"], 0) + f["q"]
        else:
            back.served = await serve_waitlist(conn, f["id"], now, reservation_ttl_s)
            back.remaining -= len(back.served)
        out.append(back)
    await notify_returned(conn, [b.offer for b in out if b.offer_status == "open" and b.remaining])
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
    return out


async def serve_waitlist(conn: Executor, offer_id: str, now: float, ttl: float) -> list[Served]:
    """Hand the open offer's remaining units to its waiters in `seq` order, one unit each, as
    reserved orders keyed by their waitlist ref. The offer's row is locked by the caller.

    A waiter whose unit would pass the per-user limit, or whose ref was used for another
    order meanwhile, is dropped (told nothing: the place shows `dropped`). A waiter whose own
    purchase of this offer is being decided at this instant (its buyer lock is taken) keeps
    the place and is passed over for this unit only, since that purchase could not see the
    order."""
    offer = await conn.fetchrow(
        "SELECT f.id, f.quantity, f.remaining, f.per_user_limit, f.status, f.ends_at, "
        "f.returned, f.session, f.product, f.price_cents, f.currency, "
        "s.status AS session_status "
        "FROM offers f JOIN sessions s ON s.id = f.session WHERE f.id = $1",
        offer_id,
    )
    state = offer_state(offer)
    live = offer["session_status"] == "live"
    if not rules.may_serve_waiter(state, user_holds=0, session_live=live, now=now):
        return []
    served: list[Served] = []
    gone: list[tuple[str, str, int]] = []
    left = state.remaining
    after = -1  # waiters are read in pages, in `seq` order, while units are left
    while left > 0:
        page = await conn.fetch(
            "SELECT user_id, ref, seq FROM waitlist WHERE offer = $1 AND status = 'waiting' "
            "AND seq > $2 ORDER BY seq LIMIT $3 FOR UPDATE",
            offer_id,
            after,
            left + 16,
        )
        if not page:
            break
        after = page[-1]["seq"]
        left = await _serve_page(conn, offer, state, live, page, left, now, ttl, served, gone)
    if served:
        await conn.execute(
            "UPDATE offers SET remaining = remaining - $2 WHERE id = $1", offer_id, len(served)
        )
    await tell_moved(conn, offer_id, offer["session"], gone)
    return served


async def tell_moved(
    conn: Executor, offer_id: str, session_id: str, gone: list[tuple[str, str, int]]
) -> None:
    """Within the transaction that took waiters `gone` (user, `served` or `dropped`, seq)
    off the offer's waitlist: each of them, then every waiter behind the first of them (their
    positions moved up), hears its place (`WaitlistPlace`, via `notify_users`: on commit, in
    order, on the node holding the user's connections). Waiters ahead hear nothing."""
    if not gone:
        return
    first = min(seq for _, _, seq in gone)
    behind = await conn.fetch(
        "SELECT user_id, position FROM (SELECT user_id, seq, "
        "row_number() OVER (ORDER BY seq) AS position FROM waitlist "
        "WHERE offer = $1 AND status = 'waiting') w WHERE seq > $2 ORDER BY seq",
        offer_id,
        first,
    )
    messages: list[tuple[str, Any]] = [
        (user, WaitlistPlace(session_id, offer_id, status))
        for user, status, _ in sorted(gone, key=lambda g: g[2])
    ]
    messages += [
        (r["user_id"], WaitlistPlace(session_id, offer_id, "waiting", r["position"]))
        for r in behind
    ]
    await notify_users(conn, messages)


async def _serve_page(
    conn: Executor,
    offer: Any,
    state: rules.OfferState,
    live: bool,
    waiters: list[Any],
    left: int,
    now: float,
    ttl: float,
    served: list[Served],
    gone: list[tuple[str, str, int]],
) -> int:
    """Serve `waiters` (in order) while units are `left`; returns the units still left.
    Each waiter served or dropped is added to `gone` (user, status, seq)."""
    offer_id = offer["id"]
    for w in waiters:
        if left == 0:
            break
        user = w["user_id"]
        free = await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1, hashtext($2 || chr(31) || $3))",
            _LOCK_BUY,
            offer_id,
            user,
        )
        if not free:
            continue
        holds = await conn.fetchval(
            "SELECT coalesce(sum(qty), 0) FROM orders WHERE offer = $1 AND user_id = $2 "
            "AND status IN ('reserved', 'paid')",
            offer_id,
            user,
        )
        current = msgspec.structs.replace(state, remaining=left)
        order_id = None
        if rules.may_serve_waiter(current, user_holds=holds, session_live=live, now=now):
            order_id = await conn.fetchval(
                "INSERT INTO orders (id, user_id, offer, qty, unit_cents, total_cents, currency, "
                "status, idempotency_key, created_at, expires_at, updated_at) "
                "VALUES ($1, $2, $3, 1, $4, $4, $5, 'reserved', $6, $7, $8, $7) "
                "ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING id",
                new_id("ord"),
                user,
                offer_id,
                offer["price_cents"],
                offer["currency"],
                w["ref"],
                at(now),
                at(now + ttl),
            )
        await conn.execute(
            "UPDATE waitlist SET status = $3, order_id = $4 WHERE offer = $1 AND user_id = $2",
            offer_id,
            user,
            "dropped" if order_id is None else "served",
            order_id,
        )
        gone.append((user, "dropped" if order_id is None else "served", w["seq"]))
        if order_id is None:
            continue
        left -= 1
        order = Order(
            id=order_id,
            user=user,
            offer=offer_id,
            session=offer["session"],
            product=offer["product"],
            qty=1,
            unit_cents=offer["price_cents"],
            total_cents=offer["price_cents"],
            currency=offer["currency"],
            status="reserved",
            expires_at=iso(at(now + ttl)),
            created_at=iso(at(now)),
            updated_at=iso(at(now)),
        )
        await enqueue_webhook(
            conn, "order.reserved", {**msgspec.to_builtins(order), "waitlist": w["ref"]}, now
        )
        notice = {"user": user, "ref": w["ref"], "order": msgspec.to_builtins(order)}
        await conn.execute(
            "SELECT pg_notify($1, $2)", WAITLIST_SERVED, _json.encode(notice).decode()
        )
        served.append(Served(user, w["ref"], order))
    return left


# ---------------------------------------------------------------- bundles


def bundle_id(session_id: str, user: str) -> str:
    """The same before and after the bundle closes, on every node."""
    digest = hashlib.sha256(f"{session_id}\x1f{user}".encode()).hexdigest()[:20]
    return "bun_" + digest


class Bundle(msgspec.Struct, kw_only=True):
    """A buyer's orders in one session (SPEC §13): those that hold units (reserved or paid),
    as they stood when the session ended once `closed`."""

    id: str
    session: str
    user: str
    orders: list[Order]
    total_cents: int
    currency: str
    status: str  # open | closed
    closed_at: str | None = None


def _bundle(session_id: str, user: str, orders: list[Order]) -> Bundle:
    return Bundle(
        id=bundle_id(session_id, user),
        session=session_id,
        user=user,
        orders=orders,
        total_cents=sum(o.total_cents for o in orders),
        currency=orders[0].currency if orders else "",
        status="open",
    )


async def bundles_of(conn: Executor, user: str, limit: int = 100) -> list[Bundle]:
    """The buyer's bundles, newest session first: closed ones as they were closed, open ones
    (their session has not ended, or is still being closed) from the orders now."""
    closed = await conn.fetch(
        "SELECT id, session, user_id, orders, total_cents, currency, closed_at FROM bundles "
        "WHERE user_id = $1 ORDER BY closed_at DESC LIMIT $2",
        user,
        limit,
    )
    out = [
        Bundle(
            id=r["id"],
            session=r["session"],
            user=r["user_id"],
            orders=msgspec.convert(r["orders"], list[Order]),
            total_cents=r["total_cents"],
            currency=r["currency"],
            status="closed",
            closed_at=iso(r["closed_at"]),
        )
        for r in closed
    ]
    done = {b.session for b in out}
    rows = await conn.fetch(
        ORDER_SELECT + " WHERE o.user_id = $1 AND o.status IN ('reserved', 'paid') "
        "AND NOT EXISTS (SELECT 1 FROM bundles b WHERE b.session = f.session "
        "AND b.user_id = o.user_id) ORDER BY o.created_at, o.id LIMIT 1000",
        user,
    )
    per_session: dict[str, list[Order]] = {}
    for r in rows:
        if r["session"] not in done:
            per_session.setdefault(r["session"], []).append(order_from_row(r))
    opened = [_bundle(s, user, orders) for s, orders in per_session.items()]
    opened.sort(key=lambda b: b.orders[-1].created_at, reverse=True)
    return (opened + out)[:limit]


async def close_due_bundles(conn: Connection, now: float) -> list[Bundle] | None:
    """Close the bundles of one ended session whose bundles are still open: each buyer with
    an order holding units gets one `bundles` row and one `bundle.closed` webhook, written in
    one transaction (the row's key makes it once, whatever nodes sweep at once). None when
    no session waits."""
    async with conn.transaction():
        session_id = await conn.fetchval(
            "SELECT id FROM sessions WHERE status = 'ended' AND bundles_open "
            "ORDER BY ended_at NULLS FIRST LIMIT 1 FOR UPDATE SKIP LOCKED"
        )
        if session_id is None:
            return None
        owner = await conn.fetchval("SELECT creator FROM sessions WHERE id = $1", session_id)
        rows = await conn.fetch(
            ORDER_SELECT + " WHERE f.session = $1 AND o.status IN ('reserved', 'paid') "
            "ORDER BY o.user_id, o.created_at, o.id",
            session_id,
        )
        per_user: dict[str, list[Order]] = {}
        for r in rows:
            per_user.setdefault(r["user"], []).append(order_from_row(r))
        closed: list[Bundle] = []
        for user, orders in per_user.items():
            bundle = _bundle(session_id, user, orders)
            bundle.status = "closed"
            bundle.closed_at = iso(at(now))
            inserted = await conn.fetchval(
                "INSERT INTO bundles (session, user_id, id, orders, total_cents, currency, "
                "closed_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7) "
                "ON CONFLICT DO NOTHING RETURNING id",
                session_id,
                user,
                bundle.id,
                msgspec.to_builtins(bundle.orders),
                bundle.total_cents,
                bundle.currency,
                at(now),
            )
            if inserted is None:
                continue
            data: dict[str, Any] = {**msgspec.to_builtins(bundle), "creator": owner}
            await enqueue_webhook(conn, "bundle.closed", data, now)
            closed.append(bundle)
        await conn.execute("UPDATE sessions SET bundles_open = false WHERE id = $1", session_id)
    return closed


__all__ = [
    "WAITLIST_SERVED",
    "Bundle",
    "GivenBack",
    "Place",
    "Served",
    "bundle_id",
    "bundles_of",
    "claim_words",
    "close_due_bundles",
    "give_back",
    "join_waitlist",
    "serve_waitlist",
    "tell_moved",
    "waitlist_place",
]
