"""The purchase path: the checks without I/O and the sold-out gate, each offer's queue of
attempts and its lanes to the database, and the batch that reserves them in one
transaction. Nothing here costs a task or a query per attempt the gate refuses."""

from __future__ import annotations

import asyncio
from collections import deque

from ..auth import Identity
from ..failure import Failure
from ..limits import ID_MAX_CHARS, MAX_BUY_QTY
from ..protocol import Sold
from . import rules as rules
from . import store as store
from .base import Attempt, CommerceBase
from .rules import Order

# Purchases of one offer that go to PostgreSQL together, at most (one transaction).
BUY_BATCH_MAX = 64


class PurchaseService(CommerceBase):
    # ------------------------------------------------------------ buying

    def _precheck(
        self, who: Identity, offer_id: str, qty: int, ref: str, video_at: float | None = None
    ) -> None:
        """What a purchase checks before any I/O: who may buy, the numbers, and the sold-out
        gate (most of a flash sale's attempts end here)."""
        rules.require_buyer(who)
        if not 1 <= qty <= MAX_BUY_QTY:
            raise Failure("bad_frame", f"qty must be 1..{MAX_BUY_QTY}")
        if not 1 <= len(ref) <= ID_MAX_CHARS:
            raise Failure("bad_frame", "ref must be 1-64 characters")
        self.stats["buy_attempts"] += 1
        code = self.gate.check(offer_id, who.sub, self._judged_at(video_at))
        if code is not None:
            raise self._gated(code)

    async def buy(
        self,
        who: Identity,
        offer_id: str,
        qty: int,
        ref: str,
        *,
        session_id: str | None = None,
        video_at: float | None = None,
    ) -> Order:
        """Reserve `qty` units (one code path for the `buy` frame and `POST /api/orders`).

        Idempotent per (user, ref): a retry returns the same order, whatever its status or
        the offer's. Returns only after commit. Raises unauthorized (guest), forbidden
        (minor), not_found (offer, or not in `session_id`), offer_closed, not_live, sold_out,
        limit_reached, duplicate (ref already used for another offer), bad_frame (qty or ref
        out of range), unavailable (retry with the same ref).

        `video_at` is the buyer's video time (SPEC §12): the offer is judged as it was then
        (its window, not its stock), while it has not been settled (`settle_grace_s`)."""
        return await self.reserve(who, offer_id, qty, ref, session_id=session_id, video_at=video_at)

    def reserve(
        self,
        who: Identity,
        offer_id: str,
        qty: int,
        ref: str,
        *,
        session_id: str | None = None,
        video_at: float | None = None,
    ) -> asyncio.Future[Order]:
        """`buy` as a future, with no task per attempt: the order, or the refusal as its
        exception. A refusal known without I/O (the sold-out gate, who may buy, the numbers)
        is raised at once instead, so it is answered in the step that read the frame.

        A burst waits in the offer's queue, not on the pool: at most `_admit` attempts of one
        offer are at the database at once, and by the time a waiting attempt's turn comes the
        gate usually knows the answer, so a refusal then costs no database work."""
        self._precheck(who, offer_id, qty, ref, video_at)
        fut: asyncio.Future[Order] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(offer_id)
        if waiting is None:
            waiting = self._waiting[offer_id] = deque()
        waiting.append(Attempt(who, qty, ref, session_id, fut, video_at))
        busy = self._admitting.get(offer_id, 0)
        if busy < self._admit:
            self._admitting[offer_id] = busy + 1
            task = asyncio.get_running_loop().create_task(self._admit_loop(offer_id, waiting))
            self._admitters.add(task)
            task.add_done_callback(self._admitters.discard)
        return fut

    async def _admit_loop(self, offer_id: str, waiting: deque[Attempt]) -> None:
        """One of the offer's `_admit` lanes to the database. It takes what waits, in order:
        attempts the gate refuses by now are answered at once; the others (up to
        BUY_BATCH_MAX) go to PostgreSQL together, one transaction for the lot."""
        batch: list[Attempt] = []
        try:
            while waiting:
                if self._enough_in_flight(offer_id):
                    # A lane at the database takes what waits once its batch is answered.
                    return
                batch = []
                while waiting and len(batch) < BUY_BATCH_MAX:
                    attempt = waiting.popleft()
                    if attempt.future.done():  # the caller gave up
                        continue
                    late = self.gate.check(
                        offer_id, attempt.who.sub, self._judged_at(attempt.video_at)
                    )
                    if late is not None:
                        attempt.future.set_exception(self._gated(late))
                    else:
                        batch.append(attempt)
                if batch:
                    await self._reserve_batch(offer_id, batch)
                batch = []
        except asyncio.CancelledError:
            stopping = Failure("unavailable", "the node is stopping; retry")
            for left in batch + list(waiting):
                if not left.future.done():
                    left.future.set_exception(stopping)
            waiting.clear()
            raise
        finally:
            busy = self._admitting.pop(offer_id, 1) - 1
            if busy:
                self._admitting[offer_id] = busy
            elif not waiting and self._waiting.get(offer_id) is waiting:
                del self._waiting[offer_id]

    async def _reserve_batch(self, offer_id: str, batch: list[Attempt]) -> None:
        """Reserve for `batch` in one transaction and answer every attempt in it."""
        stamp = self.gate.stamp(offer_id)
        requests = [
            store.BuyRequest(a.who.sub, a.qty, a.ref, a.session_id, a.video_at) for a in batch
        ]
        asked = sum(a.qty for a in batch)
        self._in_flight[offer_id] = self._in_flight.get(offer_id, 0) + asked
        try:
            try:
                result = await self._db(
                    lambda conn: store.buy_many(
                        conn,
                        offer_id,
                        requests,
                        self._clock(),
                        reservation_ttl_s=self.reservation_ttl_s,
                    )
                )
            finally:
                flying = self._in_flight.pop(offer_id, asked) - asked
                if flying > 0:
                    self._in_flight[offer_id] = flying
        except Exception as exc:
            for attempt in batch:
                if not attempt.future.done():
                    attempt.future.set_exception(exc)
            return
        self._observe(offer_id, result.observation, stamp)
        for attempt, outcome in zip(batch, result.outcomes, strict=True):
            if outcome.order is None:
                assert outcome.failure is not None
                if not attempt.future.done():
                    attempt.future.set_exception(outcome.failure)
                continue
            order = outcome.order
            if not outcome.replay:
                self.stats["orders_reserved"] += 1
                self._emit(Sold(order.session, offer_id, order.qty))
                self.stock_changed(order.session, offer_id)
            if not attempt.future.done():
                attempt.future.set_result(order)
        if any(o.order is not None and not o.replay for o in result.outcomes):
            self._webhooks_written()
