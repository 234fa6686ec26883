"""CommerceService: the one adapter the WebSocket gateway and the REST routes call for offers,
orders and auctions (SPEC §4–§6). Rules live in `core.commerce`, SQL in `store.commerce`;
this module adds the sold-out gate, room events, the background loops and error mapping.

Every refusal is a `Failure` with a SPEC §5 code. Database trouble (unreachable, timeouts,
exhausted pool) is `unavailable`: the caller retries later with the same ref, which is safe
because purchases and bids are idempotent per ref.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import asyncpg
import msgspec
from msgspec import Meta, Struct

from .auth import Identity
from .core import commerce as rules
from .core.commerce import Auction, BidAccepted, Offer, Order
from .limits import ID_MAX_CHARS, MAX_BUY_QTY, MAX_CENTS, MAX_QUANTITY
from .protocol import (
    AuctionEnded,
    AuctionEvent,
    BidEvent,
    ErrorCode,
    Failure,
    OfferEnded,
    OfferEvent,
    RoomEvent,
    Sold,
    kind_of,
)
from .store import commerce as store
from .text import line_meta
from .webhooks import WebhookDeliverer

log = logging.getLogger("livecart.commerce")

T = TypeVar("T")

# Appends an event to its session's room log and returns its offset (the gateway's publisher).
Publish = Callable[[RoomEvent], Awaitable[int]]
# Coalesced `stock {offer, remaining}` for a session; synchronous, called after each commit.
OnStock = Callable[[str, str, int], None]

_ID = Annotated[str, line_meta(1, ID_MAX_CHARS)]
_CENTS = Annotated[int, Meta(ge=0, le=MAX_CENTS)]
_DURATION = Annotated[int, Meta(ge=1, le=rules.MAX_DURATION_S)]


# ---------------------------------------------------------------- REST request bodies


class OfferCreate(Struct, forbid_unknown_fields=True):
    """`POST /api/sessions/{id}/offers`"""

    product_id: _ID
    price_cents: _CENTS
    quantity: Annotated[int, Meta(ge=1, le=MAX_QUANTITY)]
    per_user_limit: Annotated[int, Meta(ge=1, le=MAX_QUANTITY)] = 1
    duration_s: _DURATION = 300


class OrderCreate(Struct, forbid_unknown_fields=True):
    """`POST /api/orders`"""

    offer_id: _ID
    qty: Annotated[int, Meta(ge=1, le=MAX_BUY_QTY)]
    idempotency_key: _ID


class AuctionCreate(Struct, forbid_unknown_fields=True):
    """`POST /api/sessions/{id}/auctions`"""

    product_id: _ID
    start_cents: _CENTS
    min_increment_cents: Annotated[int, Meta(ge=1, le=MAX_CENTS)]
    duration_s: _DURATION
    mode: Literal["extend", "sudden_death"] = "extend"


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


def _unavailable(exc: BaseException) -> Failure:
    log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    return Failure(
        "unavailable", "the store is unavailable; retry with the same ref", retry_after_ms=1000
    )


class _Emitter:
    """Publishes room events in commit order per session, off the caller's path, so that a
    slow or failing bus never delays or fails an already committed purchase."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._queues: dict[str, deque[tuple[RoomEvent, asyncio.Future[int | None]]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    def emit(self, event: RoomEvent) -> asyncio.Future[int | None]:
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        session = event.session
        self._queues.setdefault(session, deque()).append((event, fut))
        if session not in self._workers:
            self._workers[session] = asyncio.create_task(
                self._drain(session), name="commerce-events"
            )
        return fut

    async def _drain(self, session: str) -> None:
        queue = self._queues[session]
        try:
            while queue:
                event, fut = queue.popleft()
                offset: int | None = None
                try:
                    offset = await self._publish(event)
                except Exception as exc:
                    log.error("publishing %s to %s failed: %s", kind_of(event), session, exc)
                if not fut.done():
                    fut.set_result(offset)
        finally:
            self._workers.pop(session, None)
            if not queue:
                self._queues.pop(session, None)

    async def close(self, timeout_s: float = 5.0) -> None:
        workers = list(self._workers.values())
        if workers:
            _, pending = await asyncio.wait(workers, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for queue in self._queues.values():
            for _, fut in queue:
                if not fut.done():
                    fut.set_result(None)
        self._queues.clear()


class _KeyedLocks:
    """asyncio locks by key, dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            _, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


# Purchases of one offer that go to PostgreSQL together, at most (one transaction).
BUY_BATCH_MAX = 64


class _Attempt:
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


class CommerceService:
    """Offers, purchases, orders, auctions and merchant webhooks for every session."""

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
    ) -> None:
        if reservation_ttl_s <= 0:
            raise ValueError("reservation_ttl_s must be positive")
        self._pool = pool
        self._on_stock = on_stock
        self._emitter = _Emitter(publish)
        self.reservation_ttl_s = reservation_ttl_s
        self._clock = clock
        self._sweep_interval_s = sweep_interval_s
        self._stock_interval_s = stock_interval_s
        self._op_timeout_s = op_timeout_s
        # Offers whose remaining changed here since the last stock report: offer → session.
        self._stock_dirty: dict[str, str] = {}
        # One bid per auction in flight on this node, so `bid` events leave in seq order.
        self._bid_locks = _KeyedLocks()
        self.gate = rules.SoldOutGate(gate_ttl_s)
        # Purchases of one offer in flight at once on this node (they contend for one row);
        # the others wait in the offer's queue, each as a future (no task per attempt).
        self._admit = max(2, min(8, pool.get_max_size() // 2))
        self._waiting: dict[str, deque[_Attempt]] = {}
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

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the sweeper (reservation expiry, offer end, auction close) and, with a
        webhook URL, the deliverer. Both are driven by the tables, so a restart loses nothing."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._sweep_forever(), name="commerce-sweeper"),
                asyncio.create_task(self._report_stock_forever(), name="commerce-stock"),
                asyncio.create_task(self._listen_forever(), name="commerce-listen"),
            ]
        if self.deliverer is not None:
            await self.deliverer.start()

    async def stop(self) -> None:
        if self._admitters:  # purchases in flight finish; what still waits gets `unavailable`
            _, late = await asyncio.wait(set(self._admitters), timeout=self._op_timeout_s)
            for task in late:
                task.cancel()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.deliverer is not None:
            await self.deliverer.stop()
        with contextlib.suppress(Exception):
            await self.report_stock()
        await self._emitter.close()

    async def _listen_forever(self) -> None:
        """Hold one connection that LISTENs for units returned on any node; if it is lost the
        gate's own `gate_ttl_s` re-checks still bound how long it can be wrong."""
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for returned stock failed: %s", exc)
            await asyncio.sleep(1.0)

    async def _listen_once(self) -> None:
        async with self._pool.acquire() as conn:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(store.STOCK_RETURNED, self._stock_returned)
            # Returns made while nobody listened were not announced: start from scratch.
            self.gate.reopen_all()
            try:
                await lost.wait()
            finally:
                with contextlib.suppress(Exception):
                    await conn.remove_listener(store.STOCK_RETURNED, self._stock_returned)

    def _stock_returned(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for offer_id in payload.split(","):
            self.gate.reopen(offer_id)

    async def _report_stock_forever(self) -> None:
        while True:
            await asyncio.sleep(self._stock_interval_s)
            try:
                await self.report_stock()
            except Exception as exc:
                log.warning("stock report failed: %s", exc)

    async def report_stock(self) -> None:
        """Call `on_stock` with the committed remaining of every offer changed here since the
        last report. Reading it back (one query per interval, not per purchase) means a
        report is never older than the newest commit, whatever order purchases finish in."""
        if not self._stock_dirty:
            return
        dirty, self._stock_dirty = self._stock_dirty, {}
        try:
            rows = await self._db(functools.partial(store.remaining_of, offer_ids=list(dirty)))
        except Exception:
            for offer, session in dirty.items():
                self._stock_dirty.setdefault(offer, session)
            raise
        for session, offer, remaining in rows:
            try:
                self._on_stock(session, offer, remaining)
            except Exception:
                log.exception("on_stock callback failed")

    async def _sweep_forever(self) -> None:
        while True:
            await self.sweep()
            await asyncio.sleep(self._sweep_interval_s)

    async def sweep(self) -> None:
        """One pass of every background duty; each failure is logged and retried next pass."""
        for duty in (self.expire_due, self.end_due_offers, self.close_due_auctions):
            try:
                await duty()
            except Failure as exc:
                log.warning("commerce sweep (%s): %s", duty.__name__, exc.message)
            except Exception:
                log.exception("commerce sweep (%s) failed", duty.__name__)
        self.gate.prune(self._clock())

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
                    raise _unavailable(exc) from exc
                await asyncio.sleep(0.01 * (attempt + 1))
            except _UNAVAILABLE as exc:
                raise _unavailable(exc) from exc
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
    ) -> Offer:
        """Open a flash offer, taking `quantity` from product stock in the same transaction.

        Raises unauthorized, forbidden (not the creator/admin), not_found (session, or product
        not in its showcase), not_live, sold_out (stock short), bad_frame (terms out of
        range), unavailable."""
        terms = rules.OfferTerms(
            price_cents=price_cents,
            quantity=quantity,
            per_user_limit=per_user_limit,
            duration_s=duration_s,
        )
        now = self._clock()
        offer = await self._db(
            lambda c: store.open_offer(c, who, session_id, product_id, terms, now)
        )
        await self._emit(OfferEvent(**msgspec.structs.asdict(offer)))
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
        self._observe(ended.offer.id, ended.observation)
        self._emit(OfferEnded(ended.offer.session, ended.offer.id, ended.reason, ended.returned))
        self._webhooks_written()

    async def end_due_offers(self, limit: int = 100) -> int:
        """End offers past `ends_at` or in sessions no longer live; returns how many."""
        count = 0
        while count < limit:
            now = self._clock()
            ended = await self._db(functools.partial(store.end_due_offer, now=now))
            if ended is None:
                break
            self._after_end(ended)
            count += 1
        return count

    # ------------------------------------------------------------ buying

    def _precheck(self, who: Identity, offer_id: str, qty: int, ref: str) -> None:
        """What a purchase checks before any I/O: who may buy, the numbers, and the sold-out
        gate (most of a flash sale's attempts end here)."""
        rules.require_buyer(who)
        if not 1 <= qty <= MAX_BUY_QTY:
            raise Failure("bad_frame", f"qty must be 1..{MAX_BUY_QTY}")
        if not 1 <= len(ref) <= ID_MAX_CHARS:
            raise Failure("bad_frame", "ref must be 1-64 characters")
        self.stats["buy_attempts"] += 1
        code = self.gate.check(offer_id, who.sub, self._clock())
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
    ) -> Order:
        """Reserve `qty` units (one code path for the `buy` frame and `POST /api/orders`).

        Idempotent per (user, ref): a retry returns the same order, whatever its status or
        the offer's. Returns only after commit. Raises unauthorized (guest), forbidden
        (minor), not_found (offer, or not in `session_id`), offer_closed, not_live, sold_out,
        limit_reached, duplicate (ref already used for another offer), bad_frame (qty or ref
        out of range), unavailable (retry with the same ref)."""
        return await self.reserve(who, offer_id, qty, ref, session_id=session_id)

    def reserve(
        self,
        who: Identity,
        offer_id: str,
        qty: int,
        ref: str,
        *,
        session_id: str | None = None,
    ) -> asyncio.Future[Order]:
        """`buy` as a future, with no task per attempt: the order, or the refusal as its
        exception. A refusal known without I/O (the sold-out gate, who may buy, the numbers)
        is raised at once instead, so it is answered in the step that read the frame.

        A burst waits in the offer's queue, not on the pool: at most `_admit` attempts of one
        offer are at the database at once, and by the time a waiting attempt's turn comes the
        gate usually knows the answer, so a refusal then costs no database work."""
        self._precheck(who, offer_id, qty, ref)
        fut: asyncio.Future[Order] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(offer_id)
        if waiting is None:
            waiting = self._waiting[offer_id] = deque()
        waiting.append(_Attempt(who, qty, ref, session_id, fut))
        busy = self._admitting.get(offer_id, 0)
        if busy < self._admit:
            self._admitting[offer_id] = busy + 1
            task = asyncio.get_running_loop().create_task(self._admit_loop(offer_id, waiting))
            self._admitters.add(task)
            task.add_done_callback(self._admitters.discard)
        return fut

    async def _admit_loop(self, offer_id: str, waiting: deque[_Attempt]) -> None:
        """One of the offer's `_admit` lanes to the database. It takes what waits, in order:
        attempts the gate refuses by now are answered at once; the others (up to
        BUY_BATCH_MAX) go to PostgreSQL together, one transaction for the lot."""
        batch: list[_Attempt] = []
        try:
            while waiting:
                batch = []
                now = self._clock()
                while waiting and len(batch) < BUY_BATCH_MAX:
                    attempt = waiting.popleft()
                    if attempt.future.done():  # the caller gave up
                        continue
                    late = self.gate.check(offer_id, attempt.who.sub, now)
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

    async def _reserve_batch(self, offer_id: str, batch: list[_Attempt]) -> None:
        """Reserve for `batch` in one transaction and answer every attempt in it."""
        stamp = self.gate.stamp(offer_id)
        requests = [store.BuyRequest(a.who.sub, a.qty, a.ref, a.session_id) for a in batch]
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
        or paid. The units go back to the offer if it is open, else to product stock.
        Cancelling a cancelled or expired order returns it unchanged. Raises unauthorized,
        forbidden, not_found, unavailable."""
        now = self._clock()
        order, release = await self._db(lambda c: store.cancel(c, who, order_id, now))
        if release is not None:
            self._released([release])
        return order

    async def expire_due(self, batch: int = 200) -> int:
        """Expire reserved orders past `expires_at`; returns how many. Safe on every node."""
        total = 0
        while True:
            now = self._clock()
            count, releases = await self._db(
                functools.partial(store.expire_due, now=now, limit=batch)
            )
            self._released(releases)
            total += count
            if count < batch:
                break
        self.stats["orders_expired"] += total
        return total

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
    ) -> BidAccepted:
        """Place a bid; bids on one auction are totally ordered. Idempotent per (auction,
        user, ref). Raises unauthorized (guest), forbidden (minor), not_found, not_live,
        auction_closed, bid_too_low, bad_frame (amount or ref out of range), unavailable."""
        rules.require_buyer(who)
        if not 0 <= amount_cents <= MAX_CENTS:
            raise Failure("bad_frame", f"amount_cents must be 0..{MAX_CENTS}")
        if not 1 <= len(ref) <= ID_MAX_CHARS:
            raise Failure("bad_frame", "ref must be 1-64 characters")
        try:
            async with asyncio.timeout(self._op_timeout_s), self._bid_locks.hold(auction_id):
                now = self._clock()
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
            raise _unavailable(exc) from exc
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
                    store.close_due_auction, now=now, reservation_ttl_s=self.reservation_ttl_s
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
