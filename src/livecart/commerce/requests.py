"""REST request bodies of commerce (`POST` offers, orders, auctions), bounded by the rules'
own limits."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from ..limits import ID_MAX_CHARS, MAX_BUY_QTY, MAX_CENTS, MAX_QUANTITY
from ..text import line_meta
from . import draw as draw
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
    # SPEC §13: 1-32 characters after trimming, and something left after normalisation.
    claim_word: Annotated[str, line_meta(1, 2 * rules.CLAIM_WORD_MAX_CHARS)] | None = None


class OrderCreate(Struct, forbid_unknown_fields=True):
    """`POST /api/orders`"""

    offer_id: _ID
    qty: Annotated[int, Meta(ge=1, le=MAX_BUY_QTY)]
    idempotency_key: _ID


_POSITIVE_CENTS = Annotated[int, Meta(ge=1, le=MAX_CENTS)]
# `[[up_to_cents | null, step_cents], ...]`; ascending order is checked by the rules.
_INCREMENTS = Annotated[
    list[Annotated[list[_POSITIVE_CENTS | None], Meta(min_length=2, max_length=2)]],
    Meta(min_length=1, max_length=rules.MAX_INCREMENT_ROWS),
]


class AuctionCreate(Struct, forbid_unknown_fields=True):
    """`POST /api/sessions/{id}/auctions` (SPEC §4, §11). Give `increments` or
    `min_increment_cents` (a flat table), or neither (the default table)."""

    product_id: _ID
    start_cents: _CENTS
    duration_s: _DURATION
    min_increment_cents: _POSITIVE_CENTS | None = None
    mode: Literal["extend", "sudden_death"] = "extend"
    increments: _INCREMENTS | None = None
    buy_now_cents: _POSITIVE_CENTS | None = None
    reserve_cents: _CENTS | None = None
    starts_in_s: Annotated[int, Meta(ge=0, le=rules.MAX_STARTS_IN_S)] = 0


class SecondChanceAccept(Struct, forbid_unknown_fields=True):
    """`POST /api/auctions/{id}/second-chance`"""

    idempotency_key: _ID


class GiveawayCreate(Struct, forbid_unknown_fields=True):
    """`POST /api/sessions/{id}/giveaways`"""

    product_id: _ID
    winners: Annotated[int, Meta(ge=1, le=draw.MAX_WINNERS)]
    duration_s: Annotated[int, Meta(ge=1, le=draw.MAX_GIVEAWAY_S)]
    eligibility: Literal["viewers", "buyers"] = "viewers"
