"""Rows to objects: the column lists the commerce store selects, and one mapper,
`from_row`, that converts a row by name with `msgspec.convert`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from ..rules import Auction, AuctionState, Offer, OfferState, Order

S = TypeVar("S", bound=msgspec.Struct)


def at(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


OFFER_COLS = (
    "f.id, f.session, f.product, f.price_cents, f.currency, f.quantity, f.remaining, "
    "f.per_user_limit, f.starts_at, f.ends_at, f.status, f.returned"
)

ORDER_SELECT = """
SELECT o.id, o.user_id AS "user", o.offer, f.session, f.product, o.qty, o.unit_cents,
       o.total_cents, o.currency, o.status, o.expires_at, o.created_at, o.updated_at, s.creator
FROM orders o JOIN offers f ON f.id = o.offer JOIN sessions s ON s.id = f.session
"""

AUCTION_COLS = (
    "a.id, a.session, a.product, a.start_cents, a.min_increment_cents, a.current_cents, "
    "a.leader, a.mode, a.ends_at, a.status, a.winner_order"
)


def from_row(
    row: Any,
    into: type[S],
    *,
    iso_times: tuple[str, ...] = (),
    epoch_times: tuple[str, ...] = (),
    **extra: Any,
) -> S:
    """`row` (a record or mapping) as an `into`, field by column name; columns `into` has no
    field for are ignored. Timestamps become ISO 8601 strings (`iso_times`) or POSIX seconds
    (`epoch_times`), as the objects carry them; `extra` sets fields the row lacks."""
    data = dict(row)
    for name in iso_times:
        data[name] = iso(data[name])
    for name in epoch_times:
        data[name] = data[name].timestamp()
    if extra:
        data.update(extra)
    return msgspec.convert(data, into)


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
