"""Row mapping of the commerce store (`commerce.store.rows`) on rows PostgreSQL returns:
by column name, extra columns ignored, timestamps as the objects carry them."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest

from livecart.commerce.rules import Auction, AuctionState, Offer, OfferState, Order
from livecart.commerce.store import rows

_OFFER_ROW = """
SELECT 'off_x' AS id, 'ses_x' AS session, 'prd_x' AS product, 500::bigint AS price_cents,
       'EUR' AS currency, 10 AS quantity, 4 AS remaining, 2 AS per_user_limit,
       timestamptz '2026-01-02 03:04:05.5+00' AS starts_at,
       timestamptz '2026-01-02 04:09:05+01' AS ends_at, $1::text AS status, 3 AS returned,
       'creator-x' AS creator, 'live' AS session_status
"""


async def test_offer_row_maps_by_name_with_iso_and_epoch_times(pool: asyncpg.Pool) -> None:
    row = await pool.fetchrow(_OFFER_ROW, "ended")
    assert rows.offer_from_row(row) == Offer(
        id="off_x",
        session="ses_x",
        product="prd_x",
        price_cents=500,
        currency="EUR",
        quantity=10,
        remaining=4,
        per_user_limit=2,
        starts_at="2026-01-02T03:04:05.500000+00:00",
        ends_at="2026-01-02T03:09:05+00:00",
        status="ended",
    )
    assert rows.offer_state(row) == OfferState(
        quantity=10,
        remaining=4,
        per_user_limit=2,
        status="ended",
        ends_at=datetime(2026, 1, 2, 3, 9, 5, tzinfo=UTC).timestamp(),
        returned=3,
    )


async def test_a_row_outside_the_type_is_refused(pool: asyncpg.Pool) -> None:
    row = await pool.fetchrow(_OFFER_ROW, "paused")
    with pytest.raises(msgspec.ValidationError):
        rows.offer_from_row(row)


async def test_order_and_auction_rows(pool: asyncpg.Pool) -> None:
    order_row = await pool.fetchrow(
        """SELECT 'ord_x' AS id, 'u1' AS "user", 'off_x' AS offer, 'ses_x' AS session,
                  'prd_x' AS product, 2 AS qty, 500::bigint AS unit_cents,
                  1000::bigint AS total_cents, 'EUR' AS currency, 'reserved' AS status,
                  timestamptz '2026-01-02 03:14:05+00' AS expires_at,
                  timestamptz '2026-01-02 03:04:05+00' AS created_at,
                  timestamptz '2026-01-02 03:04:05.25+00' AS updated_at, 'c' AS creator"""
    )
    order = rows.order_from_row(order_row)
    assert isinstance(order, Order)
    assert (order.user, order.qty, order.total_cents) == ("u1", 2, 1000)
    assert order.expires_at == "2026-01-02T03:14:05+00:00"
    assert order.updated_at == "2026-01-02T03:04:05.250000+00:00"

    auction_row = await pool.fetchrow(
        """SELECT 'auc_x' AS id, 'ses_x' AS session, 'prd_x' AS product,
                  100::bigint AS start_cents, 10::bigint AS min_increment_cents,
                  NULL::bigint AS current_cents, NULL::text AS leader, 'extend' AS mode,
                  timestamptz '2026-01-02 03:04:05+00' AS ends_at, 'open' AS status,
                  NULL::text AS winner_order, NULL::jsonb AS increments,
                  NULL::bigint AS buy_now_cents, 500::bigint AS reserve_cents,
                  NULL::timestamptz AS opens_at, NULL::bigint AS leader_max_cents,
                  NULL::float8 AS leader_at, NULL::text AS end_reason"""
    )
    # A row from before increment tables: a flat table of its step; the reserve stays hidden.
    assert rows.auction_from_row(auction_row, 0, now=0.0) == Auction(
        id="auc_x",
        session="ses_x",
        product="prd_x",
        start_cents=100,
        min_increment_cents=10,
        current_cents=None,
        leader=None,
        mode="extend",
        ends_at="2026-01-02T03:04:05+00:00",
        status="open",
        bids=0,
        increments=[[None, 10]],
        reserve_met=False,
    )
    assert rows.auction_state(auction_row, 7) == AuctionState(
        start_cents=100,
        increments=((None, 10),),
        reserve_cents=500,
        current_cents=None,
        leader=None,
        mode="extend",
        ends_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp(),
        status="open",
        bids=7,
    )
