"""Second chance in the service (SPEC §11): taking a chance, lapsing unanswered ones, and
telling the offered bidder on whichever node holds their connections."""

from __future__ import annotations

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
from .rules import Order, SecondChanceView

log = logging.getLogger("livecart.commerce")


class _Personal(msgspec.Struct):
    user: str
    message: msgspec.Raw


_personal = msgspec.json.Decoder(_Personal)


class ChanceService(CommerceBase):
    # ------------------------------------------------------------ second chance

    async def accept_second_chance(
        self, who: Identity, auction_id: str, ref: str, *, session_id: str | None = None
    ) -> Order:
        """Take the second chance offered to the caller: a reserved order at its amount.
        Idempotent per (user, auction): accepting again returns the same order, whatever the
        ref. Raises unauthorized (guest), forbidden (minor, or no chance offered to the
        caller), not_found, auction_closed (the chance lapsed), bad_frame, unavailable."""
        rules.require_buyer(who)
        if not 1 <= len(ref) <= ID_MAX_CHARS:
            raise Failure("bad_frame", "ref must be 1-64 characters")
        now = self._clock()
        order, made = await self._db(
            lambda c: store.accept(
                c, who.sub, auction_id, now, self.reservation_ttl_s, session_id=session_id
            )
        )
        if made:
            self.stats["orders_reserved"] += 1
            self._webhooks_written()
        return order

    async def second_chance_of(self, who: Identity, auction_id: str) -> SecondChanceView:
        """The caller's own chance on an auction (offered, accepted or lapsed). Raises
        unauthorized, not_found (none for the caller), unavailable."""
        if who.is_guest:
            raise Failure("unauthorized", "sign in first")
        found = await self._db(lambda c: store.chance_of(c, who.sub, auction_id))
        if found is None:
            raise Failure("not_found", "no second chance on this auction for you")
        return found

    async def lapse_due_chances(self, limit: int = 100) -> int:
        """Pass on chances left unanswered past `expires_at`. Safe on every node."""
        count = 0
        while count < limit:
            done = await self._db(
                functools.partial(
                    store.lapse_due_chance, now=self._clock(), ttl_s=self.second_chance_ttl_s
                )
            )
            if not done:
                break
            count += 1
        if count:
            self._webhooks_written()
        return count

    def _personal_message(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        """NOTIFY from any node's commit: a personal message for a user, sent to their
        connections here (each node sends to its own)."""
        if self._tell is None:
            return
        try:
            notice = _personal.decode(payload)
        except msgspec.DecodeError:
            log.warning("unreadable personal notice dropped")
            return
        self._tell(notice.user, bytes(notice.message))
