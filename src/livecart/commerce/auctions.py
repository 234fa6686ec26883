"""Auctions in the service (SPEC §6, §11): opening or scheduling, bids and proxy bids in
seq order per node, buy-now, settling past the end (plus `settle_grace_s`)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from typing import Any

import msgspec

from ..auth import Identity
from ..failure import Failure
from ..limits import ID_MAX_CHARS, MAX_CENTS
from ..protocol import AuctionEnded, AuctionEvent, BidEvent
from . import rules as rules
from . import store as store
from .base import CommerceBase, unavailable
from .rules import Auction, BidAccepted, Order

log = logging.getLogger("livecart.commerce")

# Bids on one auction that go to PostgreSQL together, at most (one transaction).
BID_BATCH_MAX = 64


class AuctionService(CommerceBase):
    # ------------------------------------------------------------ auctions

    async def create_auction(
        self,
        who: Identity,
        session_id: str,
        product_id: str,
        start_cents: int,
        min_increment_cents: int | None,
        duration_s: float,
        mode: str = "extend",
        *,
        increments: object = None,
        buy_now_cents: int | None = None,
        reserve_cents: int | None = None,
        starts_in_s: float = 0.0,
    ) -> Auction:
        """Open (or schedule, `starts_in_s > 0`) an auction for one unit of a showcased
        product (taken from stock, returned when nobody wins it). One running auction per
        session. Without `increments` nor `min_increment_cents` the default table applies.
        Raises unauthorized, forbidden, not_found, not_live, sold_out (no stock), duplicate
        (an auction is running), bad_frame, unavailable."""
        terms = rules.AuctionTerms(
            start_cents=start_cents,
            min_increment_cents=min_increment_cents,
            duration_s=duration_s,
            mode=mode,
            increments=increments,
            buy_now_cents=buy_now_cents,
            reserve_cents=reserve_cents,
            starts_in_s=starts_in_s,
        )
        rules.validate_auction(terms)  # before any I/O: bad input changes nothing
        now = self._clock()
        auction = await self._db(
            lambda c: store.create_auction(c, who, session_id, product_id, terms, now)
        )
        await self._emit(AuctionEvent(**msgspec.structs.asdict(auction)))
        return auction

    async def get_auction(self, auction_id: str) -> Auction:
        now = self._clock()
        auction = await self._db(lambda c: store.get_auction(c, auction_id, now))
        if auction is None:
            raise Failure("not_found", "no such auction")
        return auction

    async def open_auction(self, session_id: str) -> dict[str, Any] | None:
        """The session's running auction for the join snapshot, or None."""
        now = self._clock()
        auction = await self._db(lambda c: store.open_auction(c, session_id, now))
        return None if auction is None else msgspec.to_builtins(auction)

    async def bid(
        self,
        who: Identity,
        auction_id: str,
        amount_cents: int,
        ref: str,
        *,
        session_id: str | None = None,
        max_cents: int | None = None,
        video_at: float | None = None,
    ) -> BidAccepted:
        """Place a bid, with `max_cents` a proxy bid; bids on one auction are totally
        ordered. `video_at` is the video time the bidder saw (None: now): the bid counts if
        it is before the end. Idempotent per (auction, user, ref). Raises unauthorized
        (guest), forbidden (minor), not_found, not_live, auction_closed, bid_too_low (with
        `min_cents`), bad_frame (amount, max or ref out of range), unavailable."""
        rules.require_buyer(who)
        rules.require_within("amount_cents", amount_cents, 0, MAX_CENTS)
        if max_cents is not None:
            rules.require_within("max_cents", max_cents, 0, MAX_CENTS)
            if max_cents < amount_cents:
                raise Failure("bad_frame", "max_cents must be at least amount_cents")
        if not 1 <= len(ref) <= ID_MAX_CHARS:
            raise Failure("bad_frame", "ref must be 1-64 characters")
        fut: asyncio.Future[BidAccepted] = asyncio.get_running_loop().create_future()
        request = store.BidRequest(who.sub, amount_cents, ref, session_id, max_cents, video_at)
        queue = self._bid_queues.setdefault(auction_id, deque())
        queue.append((request, fut))
        if auction_id not in self._bid_drainers:
            self._bid_drainers[auction_id] = asyncio.create_task(
                self._drain_bids(auction_id, queue), name="commerce-bids"
            )
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self._op_timeout_s)
        except TimeoutError as exc:  # it may still be taken: a retry with the ref tells
            raise unavailable(exc) from exc

    async def _drain_bids(
        self, auction_id: str, queue: deque[tuple[store.BidRequest, asyncio.Future[BidAccepted]]]
    ) -> None:
        """The auction's waiting bids go to PostgreSQL together (one transaction per batch,
        in arrival order); this node's `bid` events leave in seq order, each batch's after
        its commit and before the next batch's (and before a buy-now's end)."""
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), BID_BATCH_MAX))]
                requests = [r for r, _ in batch]
                try:
                    async with self._bid_locks.hold(auction_id):
                        now = self._clock()
                        outcomes = await self._db(
                            functools.partial(
                                store.bid_many,
                                auction_id=auction_id,
                                requests=requests,
                                now=now,
                                settle_grace_s=self.settle_grace_s,
                            )
                        )
                        for outcome in outcomes:
                            if isinstance(outcome, Failure) or outcome.replay:
                                continue
                            b = outcome.bid
                            self.stats["bids_accepted"] += 1
                            self._emit(
                                BidEvent(
                                    outcome.session,
                                    auction_id,
                                    b.amount_cents,
                                    b.leader,
                                    b.seq,
                                    b.ends_at,
                                    outcome.reserve_met,
                                    outcome.outbid,
                                )
                            )
                except Exception as exc:
                    failure = exc if isinstance(exc, Failure) else unavailable(exc)
                    if not isinstance(exc, Failure):
                        log.exception("bids on %s failed", auction_id)
                    outcomes = [failure for _ in batch]
                for (_, fut), outcome in zip(batch, outcomes, strict=True):
                    if fut.done():
                        continue
                    if isinstance(outcome, Failure):
                        fut.set_exception(outcome)
                    else:
                        fut.set_result(outcome.bid)
        finally:
            self._bid_drainers.pop(auction_id, None)
            if not queue:
                self._bid_queues.pop(auction_id, None)
            else:  # cancelled with bids still waiting: they cannot be taken now
                while queue:
                    _, fut = queue.popleft()
                    if not fut.done():
                        fut.set_exception(Failure("unavailable", "retry with the same ref"))

    async def buy_now(
        self,
        who: Identity,
        auction_id: str,
        ref: str,
        *,
        session_id: str | None = None,
        video_at: float | None = None,
    ) -> Order:
        """Take the lot at the buy-now price: the auction ends (`auction_ended` with reason
        `buy_now`) and the buyer gets a reserved order. Allowed while the auction takes bids
        and no bid has reached the buy-now price. Idempotent per (user, ref), like a buy.
        Raises unauthorized, forbidden, not_found, not_live, auction_closed, duplicate (the
        ref named another order), bad_frame (no buy-now price), unavailable."""
        rules.require_buyer(who)
        if not 1 <= len(ref) <= ID_MAX_CHARS:
            raise Failure("bad_frame", "ref must be 1-64 characters")
        try:
            async with asyncio.timeout(self._op_timeout_s), self._bid_locks.hold(auction_id):
                now = self._clock()
                closed, replay = await self._db(
                    lambda c: store.buy_now(
                        c,
                        who.sub,
                        auction_id,
                        ref,
                        now,
                        reservation_ttl_s=self.reservation_ttl_s,
                        session_id=session_id,
                        video_at=video_at,
                        settle_grace_s=self.settle_grace_s,
                    )
                )
                if not replay:
                    self._ended(closed)
        except TimeoutError as exc:
            raise unavailable(exc) from exc
        assert closed.order is not None
        if not replay:
            self.stats["orders_reserved"] += 1
        return closed.order

    def _ended(self, closed: store.Closed) -> None:
        auction = closed.auction
        self._emit(
            AuctionEnded(
                auction.session,
                auction.id,
                auction.leader if closed.order is not None else None,
                auction.current_cents if closed.order is not None else None,
                closed.reason,
                closed.outbid,
            )
        )
        if closed.order is not None:
            self._webhooks_written()

    async def announce_opened_auctions(self) -> int:
        """Scheduled auctions that reached `opens_at`: an `auction` event (status open) each,
        so viewers' snapshots and pages switch from pre-bids to bidding."""
        now = self._clock()
        opened = await self._db(functools.partial(store.opened_auctions, now=now))
        for auction in opened:
            self._emit(AuctionEvent(**msgspec.structs.asdict(auction)))
        return len(opened)

    async def close_due_auctions(self, limit: int = 100) -> int:
        """Settle auctions `settle_grace_s` past `ends_at`: the winner gets a reserved order;
        without bids or below the reserve the lot returns to stock. Returns how many."""
        count = 0
        while count < limit:
            now = self._clock()
            closed = await self._db(
                functools.partial(
                    store.close_due_auction,
                    now=now,
                    reservation_ttl_s=self.reservation_ttl_s,
                    settle_grace_s=self.settle_grace_s,
                )
            )
            if closed is None:
                break
            self._ended(closed)
            count += 1
        return count
