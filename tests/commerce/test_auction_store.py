"""Auctions of SPEC §11 against real PostgreSQL: proxy bids, buy-now, reserve, scheduled
auctions and pre-bids, video-time judging and the settle grace, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import pytest

from livecart.auth import Identity
from livecart.commerce import store
from livecart.protocol import Failure

from .auction_reference import RefBid, RefState, run_reference
from .test_commerce_store import (
    Clock,
    Room,
    assert_invariant,
    ledger,
    service,
    settle,
    stock_of,
    world,
)


@pytest.fixture(autouse=True)
async def no_auction_left_running(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """The database is shared by the run: an auction a test here leaves running would be
    settled by another test's sweep (whose clock runs ahead), so each is ended afterwards."""
    started = await pool.fetchval("SELECT clock_timestamp()")
    yield
    await pool.execute(
        "UPDATE auctions a SET status = 'ended' FROM sessions s "
        "WHERE s.id = a.session AND a.status = 'open' AND s.created_at >= $1",
        started,
    )


@contextlib.asynccontextmanager
async def personal_notices(pool: asyncpg.Pool, user: str) -> AsyncIterator[list[Any]]:
    """The personal messages for `user` that commits NOTIFY to every node (in order)."""
    got: list[Any] = []

    def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        notice = msgspec.json.decode(payload)
        if notice["user"] == user:
            got.append(notice["message"])

    async with pool.acquire() as conn:
        await conn.add_listener(store.PERSONAL, heard)
        try:
            yield got
            await conn.execute("SELECT 1")  # notices committed before this are in
        finally:
            await conn.remove_listener(store.PERSONAL, heard)


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def bid_rows(pool: asyncpg.Pool, auction_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT seq, user_id, ref, amount_cents, max_cents, price_cents, leader, video_at "
        "FROM bids WHERE auction = $1 ORDER BY seq",
        auction_id,
    )


async def code_of(coro: Any) -> str:
    with pytest.raises(Failure) as refused:
        await coro
    return refused.value.code


async def test_proxy_bids_keep_the_max_hidden(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=2)
    room = Room()
    svc = service(pool, room)
    auction = await svc.create_auction(
        w.creator, w.session, w.product, 1000, None, 300, increments=[[5000, 100], [None, 500]]
    )
    assert auction.increments == [[5000, 100], [None, 500]]
    assert (auction.status, auction.min_increment_cents, auction.reserve_met) == ("open", 100, True)
    ann, bob = w.viewer("ann"), w.viewer("bob")

    first = await svc.bid(ann, auction.id, 1000, "a1", max_cents=4321)
    assert (first.amount_cents, first.leading, first.max_cents) == (1000, True, 4321)
    manual = await svc.bid(bob, auction.id, 2000, "b1")
    assert (manual.amount_cents, manual.leading, manual.leader) == (2100, False, ann.sub)
    over = await svc.bid(bob, auction.id, 2200, "b2", max_cents=9876)
    assert (over.amount_cents, over.leading) == (4421, True)
    # A retry is the same bid, answered the same way, whatever happened since.
    again = await svc.bid(ann, auction.id, 1000, "a1", max_cents=4321)
    assert (again.seq, again.amount_cents, again.max_cents) == (1, 1000, 4321)

    state = await svc.get_auction(auction.id)
    assert (state.current_cents, state.leader, state.bids) == (4421, bob.sub, 3)
    assert state.min_increment_cents == 100
    await settle()
    events = room.kinds("bid", w.session)
    assert [(e["amount_cents"], e["user"], e.get("outbid")) for e in events] == [
        (1000, ann.sub, None),
        (2100, ann.sub, None),
        (4421, bob.sub, ann.sub),
    ]
    public = msgspec.json.encode([room.events, msgspec.to_builtins(state)])
    for secret in (b"4321", b"9876", b"max_cents", b"reserve_cents"):
        assert secret not in public
    rows = await bid_rows(pool, auction.id)
    assert [(r["max_cents"], r["price_cents"], r["leader"]) for r in rows] == [
        (4321, 1000, ann.sub),
        (None, 2100, ann.sub),
        (9876, 4421, bob.sub),
    ]

    # Bad input changes nothing.
    assert await code_of(svc.bid(ann, auction.id, 6000, "a2", max_cents=5999)) == "bad_frame"
    with pytest.raises(Failure) as low:
        await svc.bid(ann, auction.id, 4500, "a3")
    assert (low.value.code, low.value.min_cents) == ("bid_too_low", 4521)
    assert len(await bid_rows(pool, auction.id)) == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"increments": [[100, 5], [100, 10]]},
        {"increments": [[100, 0]]},
        {"buy_now_cents": 999},
        {"reserve_cents": -1},
        {"starts_in_s": -5},
    ],
)
async def test_bad_auction_terms_change_nothing(pool: asyncpg.Pool, bad: dict[str, Any]) -> None:
    w = await world(pool, stock=1)
    svc = service(pool, Room())
    creating = svc.create_auction(w.creator, w.session, w.product, 1000, None, 60, **bad)
    assert await code_of(creating) == "bad_frame"
    assert await stock_of(pool, w.product) == 1
    assert await pool.fetchval("SELECT count(*) FROM auctions WHERE session = $1", w.session) == 0


async def test_buy_now_ends_the_auction_once(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=1)
    room = Room()
    svc = service(pool, room, reservation_ttl_s=300)
    auction = await svc.create_auction(
        w.creator, w.session, w.product, 1000, 100, 300, buy_now_cents=5000
    )
    assert auction.buy_now_cents == 5000
    ann, bob, cat = w.viewer("ann"), w.viewer("bob"), w.viewer("cat")
    await svc.bid(ann, auction.id, 1000, "a1", max_cents=3000)
    async with personal_notices(pool, ann.sub) as told:
        order = await svc.buy_now(bob, auction.id, "bn1", session_id=w.session)
    # The leader it took the lot from is told, on every node (not only where the room is).
    outbid = {"type": "outbid", "session": w.session, "auction": auction.id, "amount_cents": 5000}
    assert told == [outbid]
    assert (order.user, order.unit_cents, order.status, order.qty) == (bob.sub, 5000, "reserved", 1)
    # Idempotent per (user, ref); anyone else, or any bid, finds it closed.
    assert (await svc.buy_now(bob, auction.id, "bn1")).id == order.id
    assert await code_of(svc.buy_now(cat, auction.id, "c1")) == "auction_closed"
    assert await code_of(svc.bid(cat, auction.id, 9000, "c2")) == "auction_closed"
    ended = await svc.get_auction(auction.id)
    assert (ended.status, ended.reason, ended.winner_order, ended.current_cents) == (
        "ended",
        "buy_now",
        order.id,
        5000,
    )
    await svc.close_due_auctions()  # nothing left to settle for it
    await settle()
    assert room.kinds("auction_ended", w.session) == [
        {
            "auction": auction.id,
            "winner": bob.sub,
            "amount_cents": 5000,
            "reason": "buy_now",
            "outbid": ann.sub,
        }
    ]
    assert await stock_of(pool, w.product) == 0
    assert_invariant(await ledger(pool, order.offer))
    assert [o.id for o in await svc.list_orders(bob)] == [order.id]


async def test_buy_now_is_gone_once_a_bid_reaches_it(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=1)
    svc = service(pool, Room())
    auction = await svc.create_auction(
        w.creator, w.session, w.product, 1000, 100, 300, buy_now_cents=2000
    )
    ann = w.viewer("ann")
    await svc.bid(ann, auction.id, 2000, "a1")
    assert await code_of(svc.buy_now(w.viewer("bob"), auction.id, "b1")) == "auction_closed"
    plain = await svc.create_auction(*(await _other(pool)), 1000, 100, 300)
    assert await code_of(svc.buy_now(ann, plain.id, "x")) == "bad_frame"


async def _other(pool: asyncpg.Pool) -> tuple[Identity, str, str]:
    w = await world(pool, stock=1)
    return w.creator, w.session, w.product


async def test_reserve_not_met_returns_the_unit(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=1)
    room = Room()
    clock = Clock()
    svc = service(pool, room, clock)
    auction = await svc.create_auction(
        w.creator, w.session, w.product, 1000, 100, 30, reserve_cents=2500
    )
    assert not auction.reserve_met
    placed = await svc.bid(w.viewer("ann"), auction.id, 1500, "a1")
    assert placed.leading
    clock.advance(31)
    assert await svc.close_due_auctions() >= 1
    ended = await svc.get_auction(auction.id)
    assert (ended.status, ended.reason, ended.winner_order, ended.reserve_met) == (
        "ended",
        "reserve_not_met",
        None,
        False,
    )
    assert await stock_of(pool, w.product) == 1
    assert await svc.list_orders(w.viewer("ann")) == []
    await settle()
    assert room.kinds("auction_ended", w.session) == [
        {"auction": auction.id, "winner": None, "amount_cents": None, "reason": "reserve_not_met"}
    ]
    assert [e["reserve_met"] for e in room.kinds("bid", w.session)] == [False]
    assert b"2500" not in msgspec.json.encode(room.events)


async def test_scheduled_auction_takes_pre_bids(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=1)
    room = Room()
    clock = Clock()
    svc = service(pool, room, clock)
    start = clock.now
    auction = await svc.create_auction(
        w.creator, w.session, w.product, 1000, 100, 20, starts_in_s=60
    )
    assert auction.status == "scheduled"
    assert ts(auction.opens_at or "") == pytest.approx(start + 60)
    assert ts(auction.ends_at) == pytest.approx(start + 80)
    snapshot = await svc.open_auction(w.session)
    assert snapshot is not None and snapshot["status"] == "scheduled"
    pre = await svc.bid(w.viewer("ann"), auction.id, 1000, "a1", max_cents=2000)
    assert ts(pre.ends_at) == pytest.approx(start + 80)
    assert await svc.announce_opened_auctions() == 0
    clock.advance(61)
    assert (await svc.get_auction(auction.id)).status == "open"
    assert await svc.announce_opened_auctions() == 1  # announced once
    assert await svc.announce_opened_auctions() == 0
    await settle()
    assert [(e["id"], e["status"], e["bids"]) for e in room.kinds("auction", w.session)] == [
        (auction.id, "scheduled", 0),
        (auction.id, "open", 1),
    ]
    late = await svc.bid(w.viewer("bob"), auction.id, 1200, "b1")  # 19 s left: no extension
    assert (late.amount_cents, late.leading) == (1300, False)
    clock.advance(14)
    last = await svc.bid(w.viewer("bob"), auction.id, 1400, "b2")  # 5 s left: extended
    assert ts(last.ends_at) == pytest.approx(clock.now + 10)
    await svc.close_due_auctions()
    assert (await svc.get_auction(auction.id)).status == "open"


async def test_video_time_judging_and_settle_grace(pool: asyncpg.Pool) -> None:
    w = await world(pool, stock=1)
    clock = Clock()
    svc = service(pool, Room(), clock, settle_grace_s=8.0)
    start = clock.now
    auction = await svc.create_auction(w.creator, w.session, w.product, 1000, 100, 30)
    clock.advance(33)  # 3 s past the end (wall clock)
    ann = w.viewer("ann")
    assert await code_of(svc.bid(ann, auction.id, 1000, "a0")) == "auction_closed"
    assert await code_of(svc.buy_now(ann, auction.id, "n0")) == "bad_frame"
    seen = await svc.bid(ann, auction.id, 1000, "a1", video_at=start + 27)  # 3 s before the end
    assert ts(seen.ends_at) == pytest.approx(start + 37)  # extended on video time
    await svc.close_due_auctions()  # not before end + grace
    assert (await svc.get_auction(auction.id)).status == "open"
    clock.advance(11)  # now end + 7: still inside the grace
    await svc.close_due_auctions()
    assert (await svc.get_auction(auction.id)).status == "open"
    bob = w.viewer("bob")
    assert await code_of(svc.bid(bob, auction.id, 1100, "b1", video_at=start + 37.5)) == (
        "auction_closed"
    )
    clock.advance(1.5)  # past end + grace
    assert await svc.close_due_auctions() >= 1
    assert (await svc.get_auction(auction.id)).reason == "time"
    won = await svc.list_orders(ann)
    assert [(o.unit_cents, o.status) for o in won] == [(1000, "reserved")]
    rows = await bid_rows(pool, auction.id)
    assert rows[0]["video_at"] == pytest.approx(start + 27)


async def test_concurrent_proxy_and_manual_bids_match_the_reference(pool: asyncpg.Pool) -> None:
    """Several users bid at once, some with a max: whatever order the row lock gives them,
    the log replayed through the brute-force reference gives the same price and leader after
    every bid, and every acknowledged bid is in the log."""
    for seed in range(6):
        await _contest(pool, random.Random(seed))


async def _contest(pool: asyncpg.Pool, rng: random.Random) -> None:
    w = await world(pool, stock=1)
    svc = service(pool, Room())
    table: list[tuple[int | None, int]] = [(1500, 50), (5000, 100), (None, 250)]
    reserve = rng.choice([None, 3000])
    auction = await svc.create_auction(
        w.creator, w.session, w.product, 1000, None, 300,
        increments=[list(r) for r in table], reserve_cents=reserve,
    )  # fmt: skip
    users = [w.viewer(f"u{i}") for i in range(8)]

    async def one(who: Identity, n: int) -> tuple[Identity, str, Any]:
        await asyncio.sleep(rng.random() * 0.02)
        state = await svc.get_auction(auction.id)
        least = (
            state.start_cents
            if state.current_cents is None
            else state.current_cents + state.min_increment_cents
        )
        amount = least + rng.choice([0, 0, 50, 300])
        top = rng.choice([None, amount + rng.randrange(0, 4000)])
        ref = f"r{n}"
        try:
            return who, ref, await svc.bid(who, auction.id, amount, ref, max_cents=top)
        except Failure as refused:
            assert refused.code == "bid_too_low"  # another bid got in first
            return who, ref, refused

    results = await asyncio.gather(*(one(u, n) for n in range(4) for u in users))
    rows = await bid_rows(pool, auction.id)
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    acked = {(who.sub, ref) for who, ref, r in results if not isinstance(r, Failure)}
    assert acked == {(r["user_id"], r["ref"]) for r in rows}  # acknowledged = logged
    bids = [RefBid(r["user_id"], r["amount_cents"], r["max_cents"], r["video_at"]) for r in rows]
    expected = run_reference(1000, table, reserve, bids)
    assert None not in expected  # the reference takes every logged bid too
    assert expected == [RefState(r["price_cents"], r["leader"]) for r in rows]
    final = await svc.get_auction(auction.id)
    assert RefState(final.current_cents, final.leader) == expected[-1]
    prices = [r["price_cents"] for r in rows]
    assert prices == sorted(set(prices))  # strictly rising


async def test_a_batch_of_bids_is_applied_in_order_in_one_transaction(
    pool: asyncpg.Pool,
) -> None:
    w = await world(pool, stock=1)
    svc = service(pool, Room())
    auction = await svc.create_auction(w.creator, w.session, w.product, 1000, 100, 300)
    ann, bob, cat = (w.viewer(n).sub for n in ("ann", "bob", "cat"))
    requests = [
        store.BidRequest(ann, 1000, "r1", w.session),
        store.BidRequest(bob, 1050, "r1", w.session),  # too low after ann's
        store.BidRequest(ann, 1000, "r1", w.session),  # the same ref again: a replay
        store.BidRequest(cat, 1500, "r1", "ses_elsewhere"),  # not this session's auction
        store.BidRequest(bob, 1100, "r2", w.session, max_cents=2000),
        store.BidRequest(cat, 1300, "r2", w.session),  # bob's proxy answers
    ]
    async with personal_notices(pool, ann) as told, pool.acquire() as conn:
        out = await store.bid_many(conn, auction.id, requests, time.time())
    codes = [o.code if isinstance(o, Failure) else (o.bid.amount_cents, o.bid.leader) for o in out]
    assert codes == [
        (1000, ann),
        "bid_too_low",
        (1000, ann),
        "not_found",
        (1100, bob),
        (1400, bob),
    ]
    assert [getattr(o, "replay", None) for o in out] == [False, None, True, None, False, False]
    assert [getattr(o, "outbid", None) for o in out] == [None, None, None, None, ann, None]
    # With the batch's commit, the one who lost the lead is told (on every node), once.
    assert told == [
        {"type": "outbid", "session": w.session, "auction": auction.id, "amount_cents": 1100}
    ]
    rows = await bid_rows(pool, auction.id)
    assert [(r["seq"], r["user_id"], r["price_cents"]) for r in rows] == [
        (1, ann, 1000),
        (2, bob, 1100),
        (3, cat, 1400),
    ]
    state = await svc.get_auction(auction.id)
    assert (state.current_cents, state.leader, state.bids) == (1400, bob, 3)
