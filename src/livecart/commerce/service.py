"""CommerceService: the one adapter the WebSocket gateway and the REST routes call for offers,
orders and auctions (SPEC §4–§6). Rules live in `commerce.rules`, SQL in `commerce.store`;
this package adds the sold-out gate, room events, the background loops and error mapping,
one part per module (`offers`, `purchases`, `orders`, `auctions`, `giveaways`); this one adds the
lifecycle and the background duties.

Every refusal is a `Failure` with a SPEC §5 code. Database trouble (unreachable, timeouts,
exhausted pool) is `unavailable`: the caller retries later with the same ref, which is safe
because purchases and bids are idempotent per ref.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

from ..failure import Failure
from . import store as store
from .auctions import AuctionService
from .chances import ChanceService
from .giveaways import GiveawayService
from .offers import OfferService
from .orders import OrderService
from .purchases import PurchaseService
from .selling import SellingService

log = logging.getLogger("livecart.commerce")


class CommerceService(
    OfferService,
    PurchaseService,
    OrderService,
    AuctionService,
    ChanceService,
    GiveawayService,
    SellingService,
):
    """Offers, purchases, orders, auctions (with second chances), giveaways, claims,
    waitlists, bundles and merchant webhooks for every session."""

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the sweeper (reservation expiry, offer end, auction close, second-chance
        lapse) and, with a webhook URL, the deliverer. Both are driven by the tables, so a
        restart loses nothing."""
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
        if self._bid_drainers:  # bids in flight finish; what still waits gets `unavailable`
            _, late = await asyncio.wait(
                set(self._bid_drainers.values()), timeout=self._op_timeout_s
            )
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
        """Hold one connection that LISTENs for units returned on any node (if it is lost the
        gate's own `gate_ttl_s` re-checks still bound how long it can be wrong) and for
        personal messages (second chances) committed on any node."""
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
            await conn.add_listener(store.PERSONAL, self._personal_message)
            await conn.add_listener(store.WAITLIST_SERVED, self._served)
            # Returns made while nobody listened were not announced: start from scratch.
            self.gate.reopen_all()
            try:
                await lost.wait()
            finally:
                with contextlib.suppress(Exception):
                    await conn.remove_listener(store.STOCK_RETURNED, self._stock_returned)
                with contextlib.suppress(Exception):
                    await conn.remove_listener(store.PERSONAL, self._personal_message)
                    await conn.remove_listener(store.WAITLIST_SERVED, self._served)

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
        for duty in (
            self.expire_due,
            self.end_due_offers,
            self.announce_opened_auctions,
            self.close_due_auctions,
            self.lapse_due_chances,
            self.draw_due_giveaways,
            self.close_due_bundles,
        ):
            try:
                await duty()
            except Failure as exc:
                log.warning("commerce sweep (%s): %s", duty.__name__, exc.message)
            except Exception:
                log.exception("commerce sweep (%s) failed", duty.__name__)
        self.gate.prune(self._clock())
