"""The state and plumbing every part of `CommerceService` shares: the pool runner with its
error mapping, the sold-out gate, the room-event emitter and the stock reports."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from ..auth import Identity
from ..failure import ErrorCode, Failure
from ..protocol import RoomEvent, Sold
from . import rules as rules
from . import store as store
from .emitter import Emitter, Publish
from .locks import KeyedLocks
from .rules import Order
from .webhooks import WebhookDeliverer

log = logging.getLogger("livecart.commerce")

T = TypeVar("T")

# How long a session's claim words are trusted without an offer event (a backstop: offer
# events invalidate them on every node).
CLAIMS_TTL_S = 5.0

# Coalesced `stock {offer, remaining}` for a session; synchronous, called after each commit.
OnStock = Callable[[str, str, int], None]
# A personal message (encoded) for every connection of one user on this node.
Tell = Callable[[str, bytes], None]


# ---------------------------------------------------------------- error mapping

# Transient: the transaction was rolled back whole and may simply run again.
_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
# The database cannot answer now; the outcome of an in-flight commit is unknown to us.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def unavailable(exc: BaseException) -> Failure:
    log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    return Failure(
        "unavailable", "the store is unavailable; retry with the same ref", retry_after_ms=1000
    )


class Attempt:
    """A purchase waiting for its turn at the database."""

    __slots__ = ("future", "qty", "ref", "session_id", "video_at", "who")

    def __init__(
        self,
        who: Identity,
        qty: int,
        ref: str,
        session_id: str | None,
        future: asyncio.Future[Order],
        video_at: float | None = None,
    ) -> None:
        self.who = who
        self.qty = qty
        self.ref = ref
        self.session_id = session_id
        self.future = future
        self.video_at = video_at  # the buyer's video time (None: judged now)


class CommerceBase:
    """What the offer, purchase, order and auction parts of the service share."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        publish: Publish,
        on_stock: OnStock,
        reservation_ttl_s: float = rules.DEFAULT_RESERVATION_TTL_S,
        clock: Callable[[], float] = time.time,
        webhook_url: str = "",
        webhook_secret: str = "",
        sweep_interval_s: float = 0.5,
        stock_interval_s: float = 0.1,
        gate_ttl_s: float = 1.0,
        op_timeout_s: float = 10.0,
        second_chance_ttl_s: float = rules.DEFAULT_SECOND_CHANCE_TTL_S,
        tell: Tell | None = None,
        settle_grace_s: float = 0.0,
    ) -> None:
        if reservation_ttl_s <= 0:
            raise ValueError("reservation_ttl_s must be positive")
        if second_chance_ttl_s <= 0:
            raise ValueError("second_chance_ttl_s must be positive")
        if settle_grace_s < 0:
            raise ValueError("settle_grace_s must not be negative")
        self._pool = pool
        self._on_stock = on_stock
        self._emitter = Emitter(publish)
        self.reservation_ttl_s = reservation_ttl_s
        self.second_chance_ttl_s = second_chance_ttl_s
        self._tell = tell
        # Auctions settle, and ended offers give their unsold units back, this long after
        # `ends_at` (wall clock), so that buys and bids judged at a video time before the end,
        # arriving late, still count (SPEC §12).
        self.settle_grace_s = settle_grace_s
        self._clock = clock
        self._sweep_interval_s = sweep_interval_s
        self._stock_interval_s = stock_interval_s
        self._op_timeout_s = op_timeout_s
        # Offers whose remaining changed here since the last stock report: offer → session.
        self._stock_dirty: dict[str, str] = {}
        # One batch of bids (or a buy-now) per auction in flight on this node, so that its
        # room events leave in seq order; the bids waiting for their turn, per auction.
        self._bid_locks = KeyedLocks()
        self._bid_queues: dict[str, deque[Any]] = {}
        self._bid_drainers: dict[str, asyncio.Task[None]] = {}
        self.gate = rules.SoldOutGate(gate_ttl_s)
        # Purchases of one offer in flight at once on this node (they contend for one row);
        # the others wait in the offer's queue, each as a future (no task per attempt).
        self._admit = max(2, min(8, pool.get_max_size() // 2))
        self._waiting: dict[str, deque[Attempt]] = {}
        self._admitting: dict[str, int] = {}
        self._admitters: set[asyncio.Task[None]] = set()
        # Per offer, the units asked for by its batches at the database now, and its
        # remaining units as last committed here (its opening, or a batch's observation).
        # Once the batches in flight ask for all that is left, the offer's other lanes stay
        # off the database: their attempts wait for the answer that decides them (usually
        # the gate's sold_out) instead of queueing on the offer's row behind those batches.
        self._in_flight: dict[str, int] = {}
        self._known_left: dict[str, int] = {}
        self.deliverer: WebhookDeliverer | None = (
            WebhookDeliverer(pool, webhook_url, webhook_secret) if webhook_url else None
        )
        self._tasks: list[asyncio.Task[None]] = []
        # SPEC §13: per session, (trusted until, the read of its claim words).
        self._claims: dict[str, tuple[float, asyncio.Future[dict[str, str]]]] = {}
        # An order served from a waitlist, on any node: (user, waitlist ref, order) for the
        # gateway to tell that user's connections here.
        self.on_served: Callable[[str, str, dict[str, Any]], None] | None = None
        # Counters for metrics: attempts answered by the gate, orders reserved, …
        self.stats: dict[str, int] = {
            "buy_attempts": 0,
            "gate_refusals": 0,
            "orders_reserved": 0,
            "orders_expired": 0,
            "bids_accepted": 0,
            "claims": 0,
            "waitlist_joined": 0,
            "waitlist_served": 0,
            "bundles_closed": 0,
        }

    # ------------------------------------------------------------ plumbing

    async def _db(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run `op` on a pooled connection; deadlocks are retried, outages become
        `unavailable`, `Failure` passes through."""
        for attempt in range(4):
            try:
                async with asyncio.timeout(self._op_timeout_s), self._pool.acquire() as conn:
                    return await op(conn)
            except Failure:
                raise
            except _RETRYABLE as exc:
                if attempt == 3:
                    raise unavailable(exc) from exc
                await asyncio.sleep(0.01 * (attempt + 1))
            except _UNAVAILABLE as exc:
                raise unavailable(exc) from exc
        raise AssertionError("unreachable")

    def _emit(self, event: RoomEvent) -> asyncio.Future[int | None]:
        return self._emitter.emit(event)

    def _judged_at(self, video_at: float | None) -> float:
        """The time a buy is judged at: the buyer's video time, never later than now."""
        return rules.judged_at(self._clock(), video_at)

    def _gated(self, code: ErrorCode) -> Failure:
        self.stats["gate_refusals"] += 1
        return Failure(code, "sold out" if code == "sold_out" else "this offer has ended")

    def stock_changed(self, session: str, offer: str) -> None:
        """Read the offer's remaining stock on the next sweep and send `stock` to viewers
        here (also called for sales made on other nodes, seen as `sold` events)."""
        self._stock_dirty[offer] = session

    def _webhooks_written(self) -> None:
        if self.deliverer is not None:
            self.deliverer.wake()

    def _observe(
        self, offer_id: str, seen: store.Observation | None, stamp: int | None = None
    ) -> None:
        if seen is not None:
            self._learn_left(offer_id, seen.remaining if seen.status == "open" else None)
            self.gate.observe(
                offer_id,
                status=seen.status,
                remaining=seen.remaining,
                ends_at=seen.ends_at,
                buyers=seen.buyers,
                now=self._clock(),
                stamp=stamp,
            )

    def _learn_left(self, offer_id: str, remaining: int | None) -> None:
        """Record the offer's remaining units as committed here; None forgets them (units
        came back, or the offer ended). A stale figure only delays attempts (they still go
        to the database or the gate), it never decides one."""
        if remaining is None or remaining <= 0:
            self._known_left.pop(offer_id, None)  # the gate answers a sold-out offer
            return
        if len(self._known_left) >= 10_000 and offer_id not in self._known_left:
            self._known_left.clear()
        self._known_left[offer_id] = remaining

    def _enough_in_flight(self, offer_id: str) -> bool:
        """The offer's batches at the database already ask for every unit known left."""
        flying = self._in_flight.get(offer_id, 0)
        left = self._known_left.get(offer_id)
        return flying > 0 and left is not None and flying >= left

    def _released(self, releases: list[store.Release]) -> None:
        """After units came back (`store.give_back`): the gate, stock reports, a `sold` event
        per unit a waiter was served (the waiter hears of it by the served notice)."""
        for r in releases:
            if r.offer_status == "open":
                self._learn_left(r.offer, None)
                self.gate.reopen(r.offer)
                self.stock_changed(r.session, r.offer)
            for served in r.served:
                self.stats["orders_reserved"] += 1
                self.stats["waitlist_served"] += 1
                self._emit(Sold(r.session, r.offer, served.order.qty))
        if releases:
            self._webhooks_written()

    # ------------------------------------------------------------ claim words (SPEC §13)

    def claims_changed(self, session_id: str) -> None:
        """An offer of the session opened or ended (here or, seen as its event, elsewhere):
        the next claim lookup reads the session's claim words again."""
        self._claims.pop(session_id, None)

    def claims_in(self, session_id: str) -> asyncio.Future[dict[str, str]]:
        """Claim key → offer id of the session's open offers: one read shared by every
        lookup until an offer event or `CLAIMS_TTL_S` passes."""
        now = self._clock()
        cached = self._claims.get(session_id)
        if cached is not None and now < cached[0]:
            return cached[1]
        read = asyncio.ensure_future(
            self._db(lambda c: store.claim_words(c, session_id, self._clock()))
        )
        self._claims[session_id] = (now + CLAIMS_TTL_S, read)
        read.add_done_callback(lambda f: self._claim_read(session_id, f))
        return read

    def _claim_read(self, session_id: str, read: asyncio.Future[dict[str, str]]) -> None:
        if read.cancelled() or read.exception() is not None:
            cached = self._claims.get(session_id)
            if cached is not None and cached[1] is read:
                del self._claims[session_id]
