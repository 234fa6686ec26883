"""The live catalog as the ranking knows it: products and live sessions read from PostgreSQL on
first use and kept in the trending index. A signal for a session this node does not know yet
waits while the session is read (in a cluster it may have started through another node a
moment ago)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ..runtime.db import Executor
from . import store
from .core import FeedItem, ProductInfo, Signal, TrendingIndex
from .store import SessionRow

log = logging.getLogger("livecart.ranking")

CATALOG_QUEUE_MAX = 10_000
"""Signals kept per session while this node reads whether it is live."""
NOT_LIVE_TTL_S = 5.0
"""A session found not live is not looked up again for this long."""
NOT_LIVE_KEEP = 10_000
"""Sessions known not to be live past which the expired ones are dropped."""


class CatalogCache:
    def __init__(
        self,
        pool: Executor,
        index: TrendingIndex,
        *,
        clock: Callable[[], float],
        ingest: Callable[[Signal], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.pool = pool
        self.index = index
        self._clock = clock
        self._ingest = ingest
        self._spawn = spawn
        self.products: dict[str, ProductInfo] = {}
        self.session_creator: dict[str, str] = {}
        # Set when the live set changed; the feeds clear it once they have looked.
        self.changed = True
        # Signals for sessions this node does not know yet, and sessions known not to be live.
        self._wait: dict[str, list[Signal]] = {}
        self._not_live: dict[str, float] = {}

    async def product(self, product_id: str) -> ProductInfo | None:
        info = self.products.get(product_id)
        if info is None:
            info = await store.product(self.pool, product_id)
            if info is None:
                return None
            self.products[product_id] = info
            self.index.put_product(info)
        return info

    def creator_of(self, item: FeedItem) -> str | None:
        if item.kind == "session":
            return self.session_creator.get(item.id)
        info = self.products.get(item.id)
        return info.creator if info else None

    async def session_changed(self, session_id: str) -> bool:
        """Bring the index in line with a session that started, ended or changed showcase;
        False when there is no such session."""
        row = await store.session(self.pool, session_id)
        if row is None:
            return False
        await self._apply(row)
        return True

    async def _apply(self, row: SessionRow) -> None:
        self.session_creator[row.id] = row.creator
        self.changed = True
        if row.status != "live":
            self.index.end_session(row.id)
            self._not_live[row.id] = self._clock()
            return
        self._not_live.pop(row.id, None)
        products = [p for p in (row.showcase or []) if await self.product(p) is not None]
        self.index.start_session(row.info(), products)

    async def load_live(self) -> None:
        """Every live session from PostgreSQL; sessions live here but no longer there end."""
        rows = await store.live_sessions(self.pool)
        live = {row.id for row in rows}
        _, sessions, _ = self.index.live_members()
        for session_id in sessions:
            if session_id not in live:
                self.index.end_session(session_id)
                self.changed = True
        for row in rows:
            await self._apply(row)

    def hold(self, signal: Signal, now: float) -> bool:
        """Keep a signal for a session this node does not know as live while the session is
        read from PostgreSQL; False when it is known not to be live (the signal is counted as
        it is)."""
        session_id = signal.session
        assert session_id is not None
        checked = self._not_live.get(session_id)
        if checked is not None and now - checked < NOT_LIVE_TTL_S:
            return False
        waiting = self._wait.get(session_id)
        if waiting is None:
            if len(self._not_live) > NOT_LIVE_KEEP:
                self._not_live = {
                    k: v for k, v in self._not_live.items() if now - v < NOT_LIVE_TTL_S
                }
            waiting = self._wait[session_id] = []
            self._spawn(self._learn_session(session_id))
        if len(waiting) < CATALOG_QUEUE_MAX:
            waiting.append(signal)
        return True

    async def _learn_session(self, session_id: str) -> None:
        try:
            row = await store.session(self.pool, session_id)
            if row is not None:
                await self._apply(row)
            else:
                self._not_live[session_id] = self._clock()
        except Exception as exc:
            log.warning("could not read session %s: %s", session_id, exc)
        finally:
            for signal in self._wait.pop(session_id, []):
                self._ingest(signal)
