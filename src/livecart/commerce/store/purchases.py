"""Purchases: a batch of buy attempts of one offer decided and written in one transaction
(the path every flash-sale purchase takes)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import msgspec

from ...failure import Failure
from ...ids import new_id
from ...runtime.db import Connection, Executor, iso
from .. import rules as rules
from ..rules import Order
from .offers import BUYERS, Observation
from .outbox import webhook_event
from .rows import ORDER_SELECT, at, offer_state, order_from_row

_json = msgspec.json.Encoder()

# Namespace of the buyers' two-key advisory locks (a key space of their own in PostgreSQL).
_LOCK_BUY = 0x4C430001  # (offer, user): serialises one buyer's purchases of one offer

# A batch of purchases of one offer, in one transaction: the buyers' advisory locks (in key
# order, so batches cannot deadlock each other), then one snapshot with the offer row locked,
# the decisions in `commerce.rules`, then one write.
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
    WHERE id = $1 AND status = 'open' AND ends_at > $13 AND remaining >= $2
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
    video_at: float | None = None  # the buyer's video time (SPEC §12); None: now


@dataclass(slots=True)
class BuyOutcome:
    order: Order | None = None
    replay: bool = False  # the order existed: a retry of the same (user, ref)
    failure: Failure | None = None


async def _replay(conn: Executor, order_id: str, offer_id: str) -> BuyOutcome:
    row = await conn.fetchrow(ORDER_SELECT + " WHERE o.id = $1", order_id)
    order = order_from_row(row)
    if order.offer != offer_id:
        return BuyOutcome(failure=Failure("duplicate", "this ref was used for another order"))
    return BuyOutcome(order=order, replay=True)


@dataclass(slots=True)
class BatchOutcome:
    outcomes: list[BuyOutcome]  # one per request, in order
    observation: Observation | None = None  # the offer as this batch left it (committed)


async def buy_many(
    conn: Connection,
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
    conn: Executor,
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
    earliest = now  # the earliest time a new order was judged at
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
            seen = rules.judged_at(now, request.video_at)
            try:
                rules.decide_buy(
                    state, qty=request.qty, user_holds=held, session_live=live, now=seen
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
                    expires_at=iso(at(now + ttl)),
                    created_at=iso(at(now)),
                    updated_at=iso(at(now)),
                )
                new.append(order)
                refs.append(request.ref)
                placed[key] = order
                earliest = min(earliest, seen)
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
            at(earliest),
        )
        if written is None or written["remaining"] != state.remaining:
            raise AssertionError("the locked offer changed under its lock")  # pragma: no cover
        if written["buyers"] is not None:
            buyers = frozenset(written["buyers"]) | {o.user for o in new}
    elif state.remaining == 0 or state.status == "ended":
        buyers = frozenset(await conn.fetchval(BUYERS, offer_id))
    observation = Observation(state.status, state.remaining, state.ends_at, buyers)
    return BatchOutcome(outcomes, observation)
