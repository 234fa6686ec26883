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
from ..protocol import RoomEvent
from . import rules as rules
from . import store as store
from .emitter import Emitter, Publish
from .locks import KeyedLocks
from .rules import Order
from .webhooks import WebhookDeliverer

log = logging.getLogger("livecart.commerce")

T = TypeVar("T")

# Coalesced `stock {offer, remaining}` for a session; synchronous, called after each commit.
OnStock = Callable[[str, str, int], None]
# A personal message (encoded) for every connection of one user on this node.
Tell = Callable[[str, bytes], None]

DEFAULT_SECOND_CHANCE_TTL_S = 300.0


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

    __slots__ = ("future", "qty", "ref", "session_id", "who")

    def __init__(
        self,
        who: Identity,
        qty: int,
        ref: str,
        session_id: str | None,
        future: asyncio.Future[Order],
    ) -> None:
        self.who = who
        self.qty = qty
        self.ref = ref
        self.session_id = session_id
        self.future = future


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
        second_chance_ttl_s: float = DEFAULT_SECOND_CHANCE_TTL_S,
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
        # Auctions settle this long after `ends_at` (wall clock), so that bids judged at a
        # video time before the end, delivered late, still count (SPEC §12).
        self.settle_grace_s = settle_grace_s
        self._clock = clock
        self._sweep_interval_s = sweep_interval_s
        self._stock_interval_s = stock_interval_s
        self._op_timeout_s = op_timeout_s
        # Offers whose remaining changed here since the last stock report: offer → session.
        self._stock_dirty: dict[str, str] = {}
        # One bid per auction in flight on this node, so `bid` events leave in seq order.
        self._bid_locks = KeyedLocks()
        self.gate = rules.SoldOutGate(gate_ttl_s)
        # Purchases of one offer in flight at once on this node (they contend for one row);
        # the others wait in the offer's queue, each as a future (no task per attempt).
        self._admit = max(2, min(8, pool.get_max_size() // 2))
        self._waiting: dict[str, deque[Attempt]] = {}
        self._admitting: dict[str, int] = {}
        self._admitters: set[asyncio.Task[None]] = set()
        self.deliverer: WebhookDeliverer | None = (
            WebhookDeliverer(pool, webhook_url, webhook_secret) if webhook_url else None
        )
        self._tasks: list[asyncio.Task[None]] = []
        # Counters for metrics: attempts answered by the gate, orders reserved, …
        self.stats: dict[str, int] = {
            "buy_attempts": 0,
            "gate_refusals": 0,
            "orders_reserved": 0,
            "orders_expired": 0,
            "bids_accepted": 0,
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
            self.gate.observe(
                offer_id,
                status=seen.status,
                remaining=seen.remaining,
                ends_at=seen.ends_at,
                buyers=seen.buyers,
                now=self._clock(),
                stamp=stamp,
            )

    def _released(self, releases: list[store.Release]) -> None:
        for r in releases:
            if r.offer_status == "open":
                self.gate.reopen(r.offer)
                self.stock_changed(r.session, r.offer)
        if releases:
            self._webhooks_written()
