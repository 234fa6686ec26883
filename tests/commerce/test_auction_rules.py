"""Auction rules of SPEC §11 without a database: increment tables, proxy bids against a
brute-force reference, reserve, buy-now, scheduled auctions, video-time judging."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.commerce import rules as rules
from livecart.commerce.rules import (
    DEFAULT_INCREMENTS,
    EXTEND_WINDOW_S,
    AuctionState,
    AuctionTerms,
    Increments,
)
from livecart.protocol import Failure

from .auction_reference import RefBid, RefState, ref_step, run_reference

NOW = 1_000.0


def auction(**kw: object) -> AuctionState:
    base: dict[str, object] = {
        "start_cents": 100,
        "current_cents": None,
        "leader": None,
        "mode": "extend",
        "ends_at": NOW + 600,
        "status": "open",
        "increments": ((None, 10),),
    }
    base.update(kw)
    return msgspec.convert(base, AuctionState)


def place(
    a: AuctionState,
    user: str,
    amount: int,
    max_cents: int | None = None,
    *,
    now: float = NOW,
    video_at: float | None = None,
) -> rules.BidResult:
    return rules.decide_bid(
        a, user=user, amount_cents=amount, max_cents=max_cents, now=now, video_at=video_at
    )


# ---------------------------------------------------------------- increment tables


def test_default_table_is_ebay_like_and_steps_apply_below_each_bound() -> None:
    assert rules.validate_increments([list(r) for r in DEFAULT_INCREMENTS]) == DEFAULT_INCREMENTS
    assert rules.step_at(DEFAULT_INCREMENTS, 0) == 5
    assert rules.step_at(DEFAULT_INCREMENTS, 99) == 5
    assert rules.step_at(DEFAULT_INCREMENTS, 100) == 25
    assert rules.step_at(DEFAULT_INCREMENTS, 2_499) == 50
    assert rules.step_at(DEFAULT_INCREMENTS, 10_000_000) == 10_000
    # A table whose last row has a bound: its step goes on past it.
    assert rules.step_at(((100, 5), (1000, 50)), 5000) == 50


@pytest.mark.parametrize(
    "table",
    [
        [],
        [[100, 5], [100, 10]],  # not strictly ascending
        [[200, 5], [100, 10]],
        [[100, 0]],  # step <= 0
        [[100, -5]],
        [[None, 5], [100, 10]],  # only the last may be open
        [[100, 10], [None, 5]],  # steps never decrease
        [[0, 5]],
        [[100]],
        [[100, 5, 1]],
        "100",
        [["100", 5]],
        [[100, 5.5]],
        [[100, True]],
        [[100, 5]] * 40,
    ],
)
def test_bad_tables_are_refused(table: object) -> None:
    with pytest.raises(Failure) as refused:
        rules.validate_increments(table)
    assert refused.value.code == "bad_frame"


def terms(**kw: object) -> AuctionTerms:
    base: dict[str, object] = {"start_cents": 1000, "duration_s": 60.0, "mode": "extend"}
    base.update(kw)
    return AuctionTerms(**base)  # type: ignore[arg-type]


def test_auction_terms_pick_the_table() -> None:
    assert rules.validate_auction(terms()) == DEFAULT_INCREMENTS
    assert rules.validate_auction(terms(min_increment_cents=7)) == ((None, 7),)
    assert rules.validate_auction(terms(increments=[[500, 10], [None, 20]])) == (
        (500, 10),
        (None, 20),
    )
    assert rules.validate_auction(terms(buy_now_cents=1000, reserve_cents=1000)) is not None


@pytest.mark.parametrize(
    "changes",
    [
        {"buy_now_cents": 999},  # under the start
        {"reserve_cents": -1},
        {"buy_now_cents": 2000, "reserve_cents": 2001},  # reserve above buy-now
        {"increments": [[100, 5]], "min_increment_cents": 5},  # both
        {"min_increment_cents": 0},
        {"starts_in_s": -1},
        {"starts_in_s": 8 * 86_400},
        {"duration_s": 0},
        {"mode": "dutch"},
        {"increments": [[100, 5], [50, 10]]},
    ],
)
def test_bad_auction_terms(changes: dict[str, object]) -> None:
    with pytest.raises(Failure) as refused:
        rules.validate_auction(terms(**changes))
    assert refused.value.code == "bad_frame"


# ---------------------------------------------------------------- proxy bids


def test_proxy_answers_with_the_least_leading_amount() -> None:
    a = auction()
    r = place(a, "ann", 100, 500)
    assert (r.auction.current_cents, r.auction.leader, r.leading, r.outbid) == (100, "ann", True, None)
    # bob bids manually: ann's proxy answers one step above him.
    r = place(r.auction, "bob", 200)
    assert (r.auction.current_cents, r.auction.leader, r.leading) == (210, "ann", False)
    # bob with a max above ann's: he leads at her max plus one step.
    r = place(r.auction, "bob", 220, 800)
    assert (r.auction.current_cents, r.auction.leader, r.leading, r.outbid) == (
        510,
        "bob",
        True,
        "ann",
    )
    # cat's max equal to bob's: the earlier (bob) keeps the lead at the max.
    r = place(r.auction, "cat", 520, 800)
    assert (r.auction.current_cents, r.auction.leader, r.leading) == (800, "bob", False)


def test_between_two_proxies_the_price_is_capped_at_the_higher_max() -> None:
    r = place(auction(), "ann", 100, 505)
    r = place(r.auction, "bob", 110, 500)
    assert (r.auction.current_cents, r.auction.leader) == (505, "ann")  # 500 + 10 > 505


def test_equal_maxes_rank_by_video_time() -> None:
    r = place(auction(), "ann", 100, 500, video_at=NOW - 1)
    # bob's bid arrived later but was seen earlier in his (more delayed) picture.
    r = place(r.auction, "bob", 110, 500, video_at=NOW - 5)
    assert (r.auction.current_cents, r.auction.leader, r.outbid) == (500, "bob", "ann")


def test_leader_raising_keeps_the_lead_and_the_higher_max() -> None:
    r = place(auction(), "ann", 100, 300)
    r = place(r.auction, "ann", 150)  # a manual raise by the leader
    assert (r.auction.current_cents, r.auction.leader_max_cents) == (150, 300)
    r = place(r.auction, "bob", 160, 300)
    assert (r.auction.current_cents, r.auction.leader) == (300, "ann")


def test_too_low_states_the_minimum_and_max_below_amount_is_bad() -> None:
    r = place(auction(), "ann", 100)
    with pytest.raises(Failure) as refused:
        place(r.auction, "bob", 109)
    assert refused.value.code == "bid_too_low"
    assert refused.value.min_cents == 110 and "110" in refused.value.message
    with pytest.raises(Failure) as refused:
        place(r.auction, "bob", 200, 150)
    assert refused.value.code == "bad_frame"


USERS = st.sampled_from(["ann", "bob", "cat", "dan"])


@st.composite
def tables(draw: st.DrawFn) -> Increments:
    bounds = sorted(draw(st.sets(st.integers(1, 3000), max_size=4)))
    steps = sorted(draw(st.lists(st.integers(1, 200), min_size=len(bounds) + 1,
                                 max_size=len(bounds) + 1)))  # fmt: skip
    rows: list[tuple[int | None, int]] = [(b, s) for b, s in zip(bounds, steps, strict=False)]
    if draw(st.booleans()) or not rows:  # an open last row, or a last bound
        rows.append((None, steps[-1]))
    return rules.validate_increments(rows)


@settings(max_examples=400, deadline=None)
@given(
    table=tables(),
    start=st.integers(0, 500),
    reserve=st.none() | st.integers(0, 3000),
    moves=st.lists(
        st.tuples(
            USERS,
            st.integers(-30, 300),  # amount above (or below) the minimum at that moment
            st.none() | st.integers(0, 800),  # how far the max is above the amount
            st.sampled_from([0.0, 1.0, 2.0, 3.0]),  # video time: ties are common
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_any_interleaving_of_proxy_and_manual_bids_matches_the_reference(
    table: Increments,
    start: int,
    reserve: int | None,
    moves: list[tuple[str, int, int | None, float]],
) -> None:
    a = auction(start_cents=start, increments=table, reserve_cents=reserve)
    bids: list[RefBid] = []
    engine: list[RefState | None] = []
    for user, delta, extra, video_at in moves:
        amount = max(0, rules.minimum_bid(a) + delta)
        top = None if extra is None else amount + extra
        bids.append(RefBid(user, amount, top, video_at))
        try:
            r = place(a, user, amount, top, now=NOW, video_at=NOW - 10 + video_at)
        except Failure as refused:
            assert refused.code == "bid_too_low"
            engine.append(None)
            continue
        assert r.auction.current_cents is not None and r.auction.leader_max_cents is not None
        assert a.current_cents is None or r.auction.current_cents > a.current_cents
        assert r.auction.current_cents <= r.auction.leader_max_cents
        assert r.leading == (r.auction.leader == user)
        assert r.outbid == (a.leader if a.leader not in (None, r.auction.leader) else None)
        a = r.auction
        engine.append(RefState(a.current_cents, a.leader))
    assert engine == run_reference(start, [*table], reserve, bids)


@given(table=tables(), price=st.integers(0, 5000))
def test_reference_step_agrees(table: Increments, price: int) -> None:
    assert rules.step_at(table, price) == ref_step([*table], price)


# ---------------------------------------------------------------- reserve and buy-now


def test_reserve_is_met_by_a_max_at_once_and_never_shown() -> None:
    a = auction(reserve_cents=400)
    r = place(a, "ann", 100)
    assert not rules.reserve_met(r.auction)
    assert rules.auction_outcome(r.auction) is None
    assert rules.end_reason(r.auction) == "reserve_not_met"
    r = place(r.auction, "bob", 110, 1000)  # a max above the reserve bids the reserve
    assert (r.auction.current_cents, r.auction.leader) == (400, "bob")
    assert rules.reserve_met(r.auction) and rules.end_reason(r.auction) == "time"
    assert rules.auction_outcome(r.auction) == ("bob", 400)
    assert rules.end_reason(auction()) == "no_bids"
    assert rules.reserve_met(auction())  # no reserve: met


def test_buy_now_while_no_bid_reached_it() -> None:
    a = auction(buy_now_cents=500)
    assert rules.decide_buy_now(a, now=NOW) == 500
    r = place(a, "ann", 490)
    assert rules.decide_buy_now(r.auction, now=NOW) == 500
    r = place(r.auction, "bob", 500)
    with pytest.raises(Failure) as refused:
        rules.decide_buy_now(r.auction, now=NOW)
    assert refused.value.code == "auction_closed"
    with pytest.raises(Failure) as refused:
        rules.decide_buy_now(auction(), now=NOW)
    assert refused.value.code == "bad_frame"
    with pytest.raises(Failure) as refused:
        rules.decide_buy_now(auction(buy_now_cents=500, ends_at=NOW), now=NOW)
    assert refused.value.code == "auction_closed"


# ---------------------------------------------------------------- time: scheduled, video time


def test_scheduled_takes_pre_bids_without_extending() -> None:
    a = auction(opens_at=NOW + 60, ends_at=NOW + 65)
    assert rules.shown_status(a, NOW) == "scheduled"
    assert rules.shown_status(a, NOW + 60) == "open"
    r = place(a, "ann", 100)  # a pre-bid
    assert r.auction.ends_at == NOW + 65  # the extend rule runs once it is open
    r = place(r.auction, "bob", 110, now=NOW + 61)
    assert r.auction.ends_at == NOW + 61 + EXTEND_WINDOW_S
    assert rules.shown_status(msgspec.structs.replace(a, status="ended"), NOW) == "ended"


def test_bids_are_judged_at_video_time_and_extend_on_it() -> None:
    a = auction(ends_at=NOW)

    def late(video_at: float | None, *, mode: str = "extend") -> rules.BidResult:
        return rules.decide_bid(
            msgspec.structs.replace(a, mode=mode),
            user="ann",
            amount_cents=100,
            now=NOW + 2,  # arrived 2 s after the end, inside a 5 s settle grace
            video_at=video_at,
            settle_grace_s=5,
        )

    # Seen 3 s before the end: taken, and the end moves to video time + 10 s.
    assert late(NOW - 3).auction.ends_at == NOW - 3 + EXTEND_WINDOW_S
    for video_at in (NOW, None):  # seen at the end, or no video time (judged now): too late
        with pytest.raises(Failure) as refused:
            late(video_at)
        assert refused.value.code == "auction_closed"
    # A video time in the future counts as now.
    assert rules.judged_at(NOW, NOW + 50) == NOW
    # Sudden death: no extension on video time either.
    assert late(NOW - 1, mode="sudden_death").auction.ends_at == NOW


def test_settle_grace_holds_the_close_and_bounds_late_bids() -> None:
    a = auction(ends_at=NOW)
    assert not rules.auction_due(a, NOW + 4, settle_grace_s=5)
    assert rules.auction_due(a, NOW + 5, settle_grace_s=5)
    assert rules.auction_due(a, NOW)
    with pytest.raises(Failure) as refused:  # past end + grace: settled, whatever video time
        rules.decide_bid(
            a, user="x", amount_cents=100, now=NOW + 6, video_at=NOW - 9, settle_grace_s=5
        )
    assert refused.value.code == "auction_closed"
    r = rules.decide_bid(
        a, user="x", amount_cents=100, now=NOW + 4, video_at=NOW - 1, settle_grace_s=5
    )
    assert r.leading
