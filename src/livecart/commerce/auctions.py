"""Auctions in the service: opening, bids in seq order per node, closing past the end."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import msgspec

from ..auth import Identity
from ..failure import Failure
from ..limits import ID_MAX_CHARS, MAX_CENTS
from ..protocol import AuctionEnded, AuctionEvent, BidEvent
from . import rules as rules
from . import store as store
from .base import CommerceBase, unavailable
from .rules import Auction, BidAccepted


class AuctionService(CommerceBase):
    # ------------------------------------------------------------ auctions

    async def create_auction(
        self,
        who: Identity,
        session_id: str,
        product_id: str,
        start_cents: int,
        min_increment_cents: int,
        duration_s: float,
        mode: str = "extend",
    ) -> Auction:
        """Open an auction for one unit of a showcased product (taken from stock, returned
        when nobody bids). One open auction per session. Raises unauthorized, forbidden,
        not_found, not_live, sold_out (no stock), duplicate (an auction is running),
        bad_frame, unavailable."""
        terms = rules.AuctionTerms(
            start_cents=start_cents,
            min_increment_cents=min_increment_cents,
            duration_s=duration_s,
            mode=mode,
        )
        now = self._clock()
        auction = await self._db(
            lambda c: store.create_auction(c, who, session_id, product_id, terms, now)
        )
        await self._emit(AuctionEvent(**msgspec.structs.asdict(auction)))
        return auction

    async def get_auction(self, auction_id: str) -> Auction:
        auction = await self._db(lambda c: store.get_auction(c, auction_id))
        if auction is None:
            raise Failure("not_found", "no such auction")
        return auction

    async def open_auction(self, session_id: str) -> dict[str, Any] | None:
        """The session's open auction for the join snapshot, or None."""
        auction = await self._db(lambda c: store.open_auction(c, session_id))
        return None if auction is None else msgspec.to_builtins(auction)

    async def bid(
        self,
        who: Identity,
        auction_id: str,
        amount_cents: int,
        ref: str,
        *,
        session_id: str | None = None,
        video_at: float | None = None,
    ) -> BidAccepted:
        """Place a bid; bids on one auction are totally ordered. Idempotent per (auction,
        user, ref). Raises unauthorized (guest), forbidden (minor), not_found, not_live,
        auction_closed, bid_too_low, bad_frame (amount or ref out of range), unavailable."""
        rules.require_buyer(who)
        rules.require_within("amount_cents", amount_cents, 0, MAX_CENTS)
        if not 1 <= len(ref) <= ID_MAX_CHARS:
            raise Failure("bad_frame", "ref must be 1-64 characters")
        try:
            async with asyncio.timeout(self._op_timeout_s), self._bid_locks.hold(auction_id):
                now = self._judged_at(video_at)  # the bidder's video time (SPEC §12)
                outcome = await self._db(
                    lambda c: store.bid(
                        c, who.sub, auction_id, amount_cents, ref, now, session_id=session_id
                    )
                )
                if not outcome.replay:
                    # Queued under the lock: this node's bid events leave in seq order.
                    b = outcome.bid
                    self._emit(
                        BidEvent(
                            outcome.session, auction_id, b.amount_cents, b.user, b.seq, b.ends_at
                        )
                    )
        except TimeoutError as exc:
            raise unavailable(exc) from exc
        if not outcome.replay:
            self.stats["bids_accepted"] += 1
        return outcome.bid

    async def close_due_auctions(self, limit: int = 100) -> int:
        """Close auctions past `ends_at`; the winner gets a reserved order. Returns how many."""
        count = 0
        while count < limit:
            now = self._clock()
            closed = await self._db(
                functools.partial(
                    store.close_due_auction,
                    now=now,
                    reservation_ttl_s=self.reservation_ttl_s,
                    grace_s=self.settle_grace_s,
                )
            )
            if closed is None:
                break
            auction = closed.auction
            self._emit(
                AuctionEnded(auction.session, auction.id, auction.leader, auction.current_cents)
            )
            if closed.order is not None:
                self._webhooks_written()
            count += 1
        return count
