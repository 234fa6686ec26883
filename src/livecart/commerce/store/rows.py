"""Rows to objects: the column lists the commerce store selects, and the commerce objects
made from them by `runtime.db.from_row` (by name, with `msgspec.convert`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ...runtime.db import from_row, iso
from ..rules import (
    Auction,
    AuctionState,
    Increments,
    Offer,
    OfferState,
    Order,
    flat_increments,
    reserve_met,
    shown_status,
    step_at,
)


def at(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


OFFER_COLS = (
    "f.id, f.session, f.product, f.price_cents, f.currency, f.quantity, f.remaining, "
    "f.per_user_limit, f.starts_at, f.ends_at, f.status, f.returned, f.claim_word"
)

ORDER_SELECT = """
SELECT o.id, o.user_id AS "user", o.offer, f.session, f.product, o.qty, o.unit_cents,
       o.total_cents, o.currency, o.status, o.expires_at, o.created_at, o.updated_at, s.creator,
       f.auction
FROM orders o JOIN offers f ON f.id = o.offer JOIN sessions s ON s.id = f.session
"""

AUCTION_COLS = (
    "a.id, a.session, a.product, a.start_cents, a.min_increment_cents, a.current_cents, "
    "a.leader, a.mode, a.ends_at, a.status, a.winner_order, a.increments, a.buy_now_cents, "
    "a.reserve_cents, a.opens_at, a.leader_max_cents, a.leader_at, a.end_reason"
)


def offer_from_row(row: Any) -> Offer:
    return from_row(row, Offer, iso_times=("starts_at", "ends_at"))


def offer_state(row: Any) -> OfferState:
    return from_row(row, OfferState, epoch_times=("ends_at",))


def order_from_row(row: Any) -> Order:
    return from_row(row, Order, iso_times=("expires_at", "created_at", "updated_at"))


def _increments(row: Any) -> Increments:
    table = row["increments"]
    if table is None:  # an auction from before tables: its flat step
        return flat_increments(row["min_increment_cents"])
    return tuple((up_to, step) for up_to, step in table)


def auction_state(row: Any, bids: int) -> AuctionState:
    return from_row(
        row,
        AuctionState,
        epoch_times=("ends_at", "opens_at"),
        bids=bids,
        increments=_increments(row),
    )


def auction_from_row(row: Any, bids: int, now: float) -> Auction:
    """The auction as clients see it at `now`: the reserve and the leader's max left out."""
    state = auction_state(row, bids)
    price = state.start_cents if state.current_cents is None else state.current_cents
    return Auction(
        id=row["id"],
        session=row["session"],
        product=row["product"],
        start_cents=state.start_cents,
        min_increment_cents=step_at(state.increments, price),
        current_cents=state.current_cents,
        leader=state.leader,
        mode=state.mode,
        ends_at=iso(row["ends_at"]),
        # `now` as the database would store it (microseconds), like `opens_at`.
        status=shown_status(state, at(now).timestamp()),
        bids=bids,
        winner_order=row["winner_order"],
        increments=[[up_to, step] for up_to, step in state.increments],
        buy_now_cents=state.buy_now_cents,
        reserve_met=reserve_met(state),
        opens_at=None if row["opens_at"] is None else iso(row["opens_at"]),
        reason=row["end_reason"],
    )
