"""Judging at video time (SPEC §12) against real PostgreSQL: a buy or a bid counts at the
buyer's video time, within the settle grace after the end; stock rules hold throughout and
unsold units (or the auction's lot) are settled only after the grace."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import pytest

from livecart.protocol import Failure
from tests.commerce.test_commerce_store import (
    Clock,
    Room,
    assert_invariant,
    ledger,
    service,
    settle,
    stock_of,
    world,
)

GRACE_S = 15.0


async def test_an_ended_offer_takes_buys_made_before_its_end_in_video_time(
    pool: asyncpg.Pool,
) -> None:
    w = await world(pool, stock=10)
    room = Room()
    clock = Clock()
    svc = service(pool, room, clock, settle_grace_s=GRACE_S)
    offer = await svc.open_offer(w.creator, w.session, w.product, 100, 5, 2, 60)
    end = datetime.fromisoformat(offer.ends_at).timestamp()
    clock.now = end + 1  # wall T+1

    with pytest.raises(Failure) as late:  # no delay: judged now, after the end
        await svc.buy(w.viewer("zero"), offer.id, 1, "r1")
    assert late.value.code == "offer_closed"
    with pytest.raises(Failure) as early_but_late:  # 0.5 s behind: video T+0.5
        await svc.buy(w.viewer("near"), offer.id, 1, "r1", video_at=clock.now - 0.5)
    assert early_but_late.value.code == "offer_closed"

    clock.now = end + 5  # a viewer 8 s behind buys at wall T+5, video T-3
    order = await svc.buy(w.viewer("eight"), offer.id, 1, "r1", video_at=clock.now - 8)
    assert order.status == "reserved"
    # A video time "ahead of now" counts as now, never later.
    with pytest.raises(Failure) as ahead:
        await svc.buy(w.viewer("ahead"), offer.id, 1, "r1", video_at=clock.now + 100)
    assert ahead.value.code == "offer_closed"
    # Per-buyer limits hold as ever.
    await svc.buy(w.viewer("eight"), offer.id, 1, "r2", video_at=clock.now - 8)
    with pytest.raises(Failure) as limit:
        await svc.buy(w.viewer("eight"), offer.id, 1, "r3", video_at=clock.now - 8)
    assert limit.value.code == "limit_reached"

    # Within the grace the offer is not settled: its unsold units stay with it.
    await svc.end_due_offers()  # (other tests' offers on this database may be due)
    led = await ledger(pool, offer.id)
    assert (led["remaining"], led["returned"]) == (3, 0)
    assert_invariant(led)
    assert await stock_of(pool, w.product) == 5

    clock.now = end + GRACE_S + 0.1  # the grace is over: settled, units back once
    assert await svc.end_due_offers() >= 1
    led = await ledger(pool, offer.id)
    assert (led["remaining"], led["returned"]) == (3, 3)
    assert_invariant(led)
    assert await stock_of(pool, w.product) == 8
    with pytest.raises(Failure) as settled:  # nothing counts any more, whatever its video time
        await svc.buy(w.viewer("fifteen"), offer.id, 1, "r1", video_at=end - 1)
    assert settled.value.code == "offer_closed"
    await settle()
    assert [e["offer"] for e in room.kinds("offer_ended", w.session)] == [offer.id]


async def test_video_time_never_beats_stock(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=1)
    clock = Clock()
    svc = service(pool, Room(), clock, settle_grace_s=GRACE_S)
    offer = await svc.open_offer(w.creator, w.session, w.product, 100, 1, 1, 60)
    await svc.buy(w.viewer("a"), offer.id, 1, "r")
    with pytest.raises(Failure) as sold:  # an earlier video time does not take a sold unit
        await svc.buy(w.viewer("b"), offer.id, 1, "r", video_at=clock.now - 10)
    assert sold.value.code == "sold_out"
    assert_invariant(await ledger(pool, offer.id))


async def test_auction_takes_bids_before_its_end_in_video_time_and_settles_after_grace(
    pool: asyncpg.Pool,
) -> None:
    w = await world(pool, stock=1)
    room = Room()
    clock = Clock()
    svc = service(pool, room, clock, settle_grace_s=GRACE_S)
    auction = await svc.create_auction(w.creator, w.session, w.product, 500, 50, 20, "sudden_death")
    end = datetime.fromisoformat(auction.ends_at).timestamp()
    clock.now = end + 1
    with pytest.raises(Failure) as late:
        await svc.bid(w.viewer("zero"), auction.id, 500, "r")
    assert late.value.code == "auction_closed"
    clock.now = end + 5
    bid = await svc.bid(w.viewer("eight"), auction.id, 500, "r", video_at=clock.now - 8)
    assert bid.amount_cents == 500
    await svc.close_due_auctions()
    await settle()
    assert auction.id not in {e["auction"] for e in room.kinds("auction_ended")}, "grace"
    clock.now = end + GRACE_S + 0.1
    assert await svc.close_due_auctions() >= 1
    await settle()
    ended = {e["auction"]: e for e in room.kinds("auction_ended")}
    assert ended[auction.id]["winner"] == w.viewer("eight").sub


async def test_the_extend_rule_runs_on_video_time(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=1)
    clock = Clock()
    svc = service(pool, Room(), clock, settle_grace_s=GRACE_S)
    auction = await svc.create_auction(w.creator, w.session, w.product, 500, 50, 20, "extend")
    end = datetime.fromisoformat(auction.ends_at).timestamp()
    clock.now = end + 2  # video T-3 for a viewer 5 s behind: a bid in the last 10 s
    bid = await svc.bid(w.viewer("five"), auction.id, 500, "r", video_at=clock.now - 5)
    assert datetime.fromisoformat(bid.ends_at).timestamp() == pytest.approx(end - 3 + 10)
