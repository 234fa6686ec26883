"""Offers in the service: opening, ending (by hand and past their end), reading."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from ..auth import Identity
from ..failure import Failure
from ..protocol import OfferEnded, OfferEvent
from . import rules as rules
from . import store as store
from .base import CommerceBase
from .rules import Offer


class OfferService(CommerceBase):
    # ------------------------------------------------------------ offers

    async def open_offer(
        self,
        who: Identity,
        session_id: str,
        product_id: str,
        price_cents: int,
        quantity: int,
        per_user_limit: int,
        duration_s: float,
        *,
        claim_word: str | None = None,
    ) -> Offer:
        """Open a flash offer, taking `quantity` from product stock in the same transaction.

        Raises unauthorized, forbidden (not the creator/admin), not_found (session, or product
        not in its showcase), not_live, sold_out (stock short), bad_frame (terms out of
        range, a claim word that normalises to nothing), duplicate (an open offer of the
        session has the same claim word), unavailable."""
        terms = rules.OfferTerms(
            price_cents=price_cents,
            quantity=quantity,
            per_user_limit=per_user_limit,
            duration_s=duration_s,
            claim_word=claim_word,
        )
        now = self._clock()
        offer = await self._db(
            lambda c: store.open_offer(c, who, session_id, product_id, terms, now)
        )
        self._learn_left(offer.id, offer.remaining)
        await self._emit(OfferEvent(**msgspec.structs.asdict(offer)))
        self.claims_changed(session_id)
        return offer

    async def end_offer(self, who: Identity, offer_id: str) -> Offer:
        """End an offer now; its unsold units go back to product stock exactly once. Ending an
        ended offer returns it unchanged. Raises unauthorized, forbidden, not_found,
        unavailable."""
        now = self._clock()
        offer, ended = await self._db(lambda c: store.end_offer(c, who, offer_id, now))
        if ended is not None:
            self._after_end(ended)
        return offer

    async def get_offer(self, offer_id: str) -> Offer:
        offer = await self._db(lambda c: store.get_offer(c, offer_id))
        if offer is None:
            raise Failure("not_found", "no such offer")
        return offer

    async def open_offers(self, session_id: str) -> list[dict[str, Any]]:
        """Open offers of a session with their remaining stock, for the join snapshot."""
        now = self._clock()
        offers = await self._db(lambda c: store.open_offers(c, session_id, now))
        return [msgspec.to_builtins(o) for o in offers]

    def _after_end(self, ended: store.Ended) -> None:
        self.claims_changed(ended.offer.session)
        self._observe(ended.offer.id, ended.observation)
        self._emit(OfferEnded(ended.offer.session, ended.offer.id, ended.reason, ended.returned))
        self._webhooks_written()

    async def end_due_offers(self, limit: int = 100) -> int:
        """End offers past `ends_at` or in sessions no longer live; returns how many."""
        count = 0
        while count < limit:
            now = self._clock()
            ended = await self._db(
                functools.partial(store.end_due_offer, now=now, grace_s=self.settle_grace_s)
            )
            if ended is None:
                break
            self._after_end(ended)
            count += 1
        return count
