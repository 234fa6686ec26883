"""Selling in a show (SPEC §13) in the service: claim by comment, waitlists, bundles.

A claim is a purchase like any other: the gateway finds the offer (`claim_offer`) and buys one
unit through the one purchase path (`Node.start_buy` → `reserve`) with the idempotency key
`claim:<offer>` (`rules.claim_ref`): one claim per buyer per offer, every §6 rule holds.
Waitlists are served where units come back (`store.give_back`); the orders they make are
announced on every node by a PostgreSQL notice (`store.WAITLIST_SERVED`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import msgspec

from ..auth import Identity
from ..failure import Failure
from ..limits import ID_MAX_CHARS
from . import rules as rules
from . import store as store
from .base import CommerceBase

log = logging.getLogger("livecart.commerce")


class SellingService(CommerceBase):
    # ------------------------------------------------------------ claim by comment

    async def claim_offer(self, session_id: str, text: str) -> str | None:
        """The open offer of the session whose claim word `text` is (after the chat
        normaliser), or None. Most messages are answered without I/O: too long to be one,
        or the session's claim words are known (one shared read, refreshed on offer events)."""
        key = rules.claim_candidate(text)
        return None if key is None else await self.claimed_offer(session_id, key)

    async def claimed_offer(self, session_id: str, key: str) -> str | None:
        """`claim_offer` for a message already in its claim form (`rules.claim_candidate`)."""
        claims = await asyncio.shield(self.claims_in(session_id))
        return claims.get(key)

    # ------------------------------------------------------------ waitlists

    async def join_waitlist(
        self, who: Identity, offer_id: str, ref: str, *, session_id: str | None = None
    ) -> store.Place:
        """A place on a sold-out open offer's waitlist (the same place when already waiting).

        Raises unauthorized (guest), forbidden (minor), not_found, offer_closed, not_live,
        bad_frame (units are left: buy instead; ref out of range), limit_reached (the buyer
        holds the per-user limit), duplicate (the ref names an order), unavailable."""
        rules.require_buyer(who)
        if not 1 <= len(ref) <= ID_MAX_CHARS:
            raise Failure("bad_frame", "ref must be 1-64 characters")
        now = self._clock()
        place = await self._db(
            lambda c: store.join_waitlist(c, who.sub, offer_id, ref, now, session_id=session_id)
        )
        self.stats["waitlist_joined"] += 1
        return place

    async def waitlist_place(self, who: Identity, offer_id: str) -> store.Place:
        """The caller's place on the offer's waitlist. Raises unauthorized, not_found."""
        if who.is_guest:
            raise Failure("unauthorized", "sign in first")
        return await self._db(lambda c: store.waitlist_place(c, offer_id, who.sub))

    def _served(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """A waitlist was served on some node: tell the waiter's connections on this one."""
        if self.on_served is None:
            return
        try:
            notice = msgspec.json.decode(payload)
            self.on_served(notice["user"], notice["ref"], notice["order"])
        except Exception:
            log.exception("waitlist notice failed")

    # ------------------------------------------------------------ bundles

    async def bundles(self, who: Identity) -> list[store.Bundle]:
        """The caller's bundles (one per session bought in). Raises unauthorized."""
        if who.is_guest:
            raise Failure("unauthorized", "sign in first")
        return await self._db(lambda c: store.bundles_of(c, who.sub))

    async def close_due_bundles(self, limit: int = 20) -> int:
        """Close the bundles of ended sessions (one `bundle.closed` webhook each); returns
        how many sessions were closed."""
        count = 0
        while count < limit:
            found = await self._db(functools.partial(store.close_due_bundles, now=self._clock()))
            if found is None:
                break
            count += 1
            if found:
                self.stats["bundles_closed"] += len(found)
                self._webhooks_written()
        return count
