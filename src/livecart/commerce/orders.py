"""Orders in the service: reading, payment confirmation, cancelling, expiry."""

from __future__ import annotations

import functools

from ..auth import Identity
from ..failure import Failure
from . import rules as rules
from . import store as store
from .base import CommerceBase
from .rules import Order


class OrderService(CommerceBase):
    # ------------------------------------------------------------ orders

    async def get_order(self, who: Identity, order_id: str) -> Order:
        """The buyer, the session's creator or an admin. Raises unauthorized, not_found,
        forbidden, unavailable."""
        if who.is_guest:
            raise Failure("unauthorized", "sign in first")
        found = await self._db(lambda c: store.get_order(c, order_id))
        if found is None:
            raise Failure("not_found", "no such order")
        order, creator = found
        if not rules.may_view_order(who, buyer=order.user, creator=creator):
            raise Failure("forbidden", "not your order")
        return order

    async def list_orders(self, who: Identity, *, limit: int = 100) -> list[Order]:
        """The caller's own orders, newest first. Raises unauthorized, unavailable."""
        if who.is_guest:
            raise Failure("unauthorized", "sign in first")
        limit = max(1, min(limit, 500))
        return await self._db(lambda c: store.list_orders(c, who.sub, limit))

    async def confirm(self, who: Identity, order_id: str) -> Order:
        """Payment captured: reserved → paid (admin only; repeating it is harmless). Raises
        unauthorized, forbidden, not_found, offer_closed (cancelled or expired), unavailable."""
        now = self._clock()
        order, changed = await self._db(lambda c: store.confirm(c, who, order_id, now))
        if changed:
            self._webhooks_written()
        return order

    async def cancel(self, who: Identity, order_id: str) -> Order:
        """Cancel: the buyer while reserved, the session's creator or an admin while reserved
        or paid. The units go back to the offer if it is open (its waitlist first), else to
        product stock; an auction's unit goes to the next bidder as a second chance
        (`store.return_units`). Cancelling a cancelled or expired order returns it
        unchanged. Raises unauthorized, forbidden, not_found, unavailable."""
        now = self._clock()
        order, releases, changed = await self._db(
            lambda c: store.cancel(
                c,
                who,
                order_id,
                now,
                reservation_ttl_s=self.reservation_ttl_s,
                chance_ttl_s=self.second_chance_ttl_s,
            )
        )
        self._released(releases)
        if changed:
            self._webhooks_written()
        return order

    async def expire_due(self, batch: int = 200) -> int:
        """Expire reserved orders past `expires_at`; returns how many. Safe on every node."""
        total = 0
        while True:
            now = self._clock()
            count, releases = await self._db(
                functools.partial(
                    store.expire_due,
                    now=now,
                    limit=batch,
                    reservation_ttl_s=self.reservation_ttl_s,
                    chance_ttl_s=self.second_chance_ttl_s,
                )
            )
            if count:
                self._webhooks_written()
            self._released(releases)
            total += count
            if count < batch:
                break
        self.stats["orders_expired"] += total
        return total
