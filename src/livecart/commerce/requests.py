"""REST request bodies of commerce (`POST` offers, orders, auctions), bounded by the rules'
own limits."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from ..limits import ID_MAX_CHARS, MAX_BUY_QTY, MAX_CENTS, MAX_QUANTITY
from ..text import line_meta
from . import rules as rules

_ID = Annotated[str, line_meta(1, ID_MAX_CHARS)]
_CENTS = Annotated[int, Meta(ge=0, le=MAX_CENTS)]
_DURATION = Annotated[int, Meta(ge=1, le=rules.MAX_DURATION_S)]


# ---------------------------------------------------------------- REST request bodies


class OfferCreate(Struct, forbid_unknown_fields=True):
    """`POST /api/sessions/{id}/offers`"""

    product_id: _ID
    price_cents: _CENTS
    quantity: Annotated[int, Meta(ge=1, le=MAX_QUANTITY)]
    per_user_limit: Annotated[int, Meta(ge=1, le=MAX_QUANTITY)] = 1
    duration_s: _DURATION = 300


class OrderCreate(Struct, forbid_unknown_fields=True):
    """`POST /api/orders`"""

    offer_id: _ID
    qty: Annotated[int, Meta(ge=1, le=MAX_BUY_QTY)]
    idempotency_key: _ID


class AuctionCreate(Struct, forbid_unknown_fields=True):
    """`POST /api/sessions/{id}/auctions`"""

    product_id: _ID
    start_cents: _CENTS
    min_increment_cents: Annotated[int, Meta(ge=1, le=MAX_CENTS)]
    duration_s: _DURATION
    mode: Literal["extend", "sudden_death"] = "extend"


class SecondChanceAccept(Struct, forbid_unknown_fields=True):
    """`POST /api/auctions/{id}/second-chance`"""

    idempotency_key: _ID
