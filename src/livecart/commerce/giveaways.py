"""Giveaways in the service (SPEC §13): opening, entries batched per giveaway on each node,
and the draw past the end (a sweep duty, at most once across nodes)."""

from __future__ import annotations

import asyncio
import functools
import itertools
from typing import Any

import msgspec

from ..auth import Identity
from ..failure import Failure
from ..protocol import GiveawayEnded, GiveawayEvent
from . import draw as rules
from . import store as store
from .base import CommerceBase, unavailable
from .draw import Giveaway
from .rules import Order

# Entries of one giveaway written per transaction at most; those that arrive while one is
# being written wait for the next (so a crowd costs a few transactions, not one each).
ENTRY_BATCH_MAX = 500


class GiveawayService(CommerceBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Entries waiting for their batch, per (giveaway, session): user → its answer.
        self._entering: dict[tuple[str, str], dict[str, asyncio.Future[None]]] = {}
        # When entries close, per giveaway seen here (-inf once drawn): later entries are
        # refused without a round trip.
        self._entries_close: dict[str, float] = {}
        self.stats["giveaway_entries"] = 0
        self.stats["giveaways_drawn"] = 0

    # ------------------------------------------------------------ giveaways

    async def create_giveaway(
        self,
        who: Identity,
        session_id: str,
        product_id: str,
        winners: int,
        duration_s: float,
        eligibility: str = "viewers",
    ) -> Giveaway:
        """Open a giveaway of `winners` units of a showcased product (taken from stock now).
        One open giveaway per session. Raises unauthorized, forbidden (not the creator or an
        admin), not_found, not_live, sold_out (stock short), duplicate (one is running),
        bad_frame (terms out of range), unavailable."""
        terms = rules.GiveawayTerms(winners=winners, duration_s=duration_s, eligibility=eligibility)
        now = self._clock()
        giveaway = await self._db(
            lambda c: store.create_giveaway(c, who, session_id, product_id, terms, now)
        )
        fields = msgspec.structs.asdict(giveaway)
        for hidden in ("entries", "seed", "entrants", "drawn"):
            del fields[hidden]
        await self._emit(GiveawayEvent(**fields))
        return giveaway

    async def get_giveaway(self, giveaway_id: str) -> Giveaway:
        giveaway = await self._db(lambda c: store.get_giveaway(c, giveaway_id))
        if giveaway is None:
            raise Failure("not_found", "no such giveaway")
        return giveaway

    async def open_giveaway(self, session_id: str) -> dict[str, Any] | None:
        """The session's open giveaway for the join snapshot (no seed), or None."""
        giveaway = await self._db(lambda c: store.open_giveaway(c, session_id))
        if giveaway is None:
            return None
        return {
            k: v
            for k, v in msgspec.to_builtins(giveaway).items()
            if k not in ("seed", "entrants", "drawn")
        }

    def enter(self, who: Identity, giveaway_id: str, *, session_id: str) -> asyncio.Future[None]:
        """Enter a giveaway: a future done once the entry is committed (entering again is the
        same entry). Presence in the session is the caller's to check. Raises (or the future
        does) unauthorized (guest), forbidden (minor; not a buyer in this session for a
        "buyers" giveaway), not_found, not_live, offer_closed (ended), unavailable."""
        rules.require_entrant(who)
        closes = self._entries_close.get(giveaway_id)
        if closes is not None and self._clock() >= closes:
            raise Failure("offer_closed", "this giveaway has ended")
        key = (giveaway_id, session_id)
        waiting = self._entering.get(key)
        if waiting is None:
            waiting = self._entering[key] = {}
            task = asyncio.create_task(self._write_entries(key), name="giveaway-entries")
            self._admitters.add(task)
            task.add_done_callback(self._admitters.discard)
        fut = waiting.get(who.sub)
        if fut is None:  # the same user twice in one batch: one entry, one answer for both
            fut = waiting[who.sub] = asyncio.get_running_loop().create_future()
        return fut

    async def _write_entries(self, key: tuple[str, str]) -> None:
        giveaway_id, session_id = key
        waiting = self._entering[key]
        futures: list[asyncio.Future[None]] = []
        try:
            while waiting:
                users = list(itertools.islice(waiting, ENTRY_BATCH_MAX))
                futures = [waiting.pop(u) for u in users]
                try:
                    batch = await self._db(
                        functools.partial(
                            store.enter_many,
                            giveaway_id=giveaway_id,
                            session_id=session_id,
                            users=users,
                            now=self._clock(),
                        )
                    )
                except Failure as exc:
                    _answer(futures, exc)
                    continue
                except Exception as exc:
                    _answer(futures, unavailable(exc))
                    continue
                if batch.ends_at is not None:
                    ended = batch.status != "open"
                    self._entries_close[giveaway_id] = float("-inf") if ended else batch.ends_at
                entered = 0
                for user, fut in zip(users, futures, strict=True):
                    refusal = batch.refusals.get(user)
                    entered += refusal is None
                    _answer([fut], refusal)
                self.stats["giveaway_entries"] += entered
        except asyncio.CancelledError:
            # In flight (its outcome unknown) or not yet written: a retry with the same ref is
            # safe either way, entering being idempotent.
            _answer(
                [*futures, *waiting.values()],
                Failure("unavailable", "the server is stopping; retry", retry_after_ms=1000),
            )
            raise
        finally:
            if self._entering.get(key) is waiting:
                del self._entering[key]

    async def draw_due_giveaways(self, limit: int = 100) -> int:
        """Draw giveaways past their end (or whose session ended); returns how many. Safe on
        every node at once: each is drawn by exactly one."""
        count = 0
        while count < limit:
            now = self._clock()
            drawn = await self._db(
                functools.partial(
                    store.draw_due_giveaway, now=now, reservation_ttl_s=self.reservation_ttl_s
                )
            )
            if drawn is None:
                break
            g = drawn.giveaway
            self._entries_close[g.id] = float("-inf")
            self._emit(
                GiveawayEnded(
                    g.session, g.id, g.drawn or [], g.seed or "", g.entries, drawn.returned
                )
            )
            self._webhooks_written()
            self.stats["giveaways_drawn"] += 1
            count += 1
        if len(self._entries_close) > 10_000:
            self._entries_close.clear()  # only a shortcut: the database answers the same
        return count

    async def prize_orders(self, giveaway_id: str, users: list[str]) -> list[Order]:
        """The orders this giveaway gave these users, as they are now."""
        return await self._db(lambda c: store.prize_orders(c, giveaway_id, users))


def _answer(futures: list[asyncio.Future[None]], refusal: Failure | None) -> None:
    for fut in futures:
        if fut.done():
            continue
        if refusal is None:
            fut.set_result(None)
        else:
            fut.set_exception(refusal)
