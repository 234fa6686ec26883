"""Rows to objects: the column lists the commerce store selects, and the commerce objects
made from them by `runtime.db.from_row` (by name, with `msgspec.convert`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ...runtime.db import from_row
from ..rules import Auction, AuctionState, Offer, OfferState, Order


def at(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


OFFER_COLS = (
    "f.id, f.session, f.product, f.price_cents, f.currency, f.quantity, f.remaining, "
    "f.per_user_limit, f.starts_at, f.ends_at, f.status, f.returned"
)

ORDER_SELECT = """
SELECT o.id, o.user_id AS "user", o.offer, f.session, f.product, o.qty, o.unit_cents,
       o.total_cents, o.currency, o.status, o.expires_at, o.created_at, o.updated_at, s.creator,
       f.auction
FROM orders o JOIN offers f ON f.id = o.offer JOIN sessions s ON s.id = f.session
"""

AUCTION_COLS = (
    "a.id, a.session, a.product, a.start_cents, a.min_increment_cents, a.current_cents, "
    "a.leader, a.mode, a.ends_at, a.status, a.winner_order"
)


def offer_from_row(row: Any) -> Offer:
    return from_row(row, Offer, iso_times=("starts_at", "ends_at"))


def offer_state(row: Any) -> OfferState:
    return from_row(row, OfferState, epoch_times=("ends_at",))


def order_from_row(row: Any) -> Order:
    return from_row(row, Order, iso_times=("expires_at", "created_at", "updated_at"))


def auction_from_row(row: Any, bids: int) -> Auction:
    return from_row(row, Auction, iso_times=("ends_at",), bids=bids)


def auction_state(row: Any, bids: int) -> AuctionState:
    return from_row(row, AuctionState, epoch_times=("ends_at",), bids=bids)
