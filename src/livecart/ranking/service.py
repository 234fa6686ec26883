"""The ranking service: feeds viewer events into the pure ranking core (ranking/core) and the
viewers' interest profiles, shares trending numerators between nodes through Redis (when
configured), and pushes `trending` and `feed` to the viewers who asked for them.

It is built from narrow ports (ports.py), never from the node: a pool, the Redis URL, a clock,
the room of a session, a viewer's orders, two metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..auth import Identity
from ..runtime.db import Executor
from . import store
from .catalog_cache import CatalogCache
from .core import (
    SIGNAL_KINDS,
    CreatorStats,
    Delta,
    FeedItem,
    Signal,
    TrendingIndex,
    creator_score,
)
from .core.creator_score import CreatorScore, started_on_time
from .core.shared import store_numerators, unsynced
from .core.signals import SignalKind
from .core.trending import Scope
from .exposure import Exposure
from .feeds import TICK_S, Feeds
from .ports import CounterOf, ObservePush, OrdersOf, RoomOf, Subscriber
from .profiles import PROFILE_QUEUE_MAX, PROFILE_SAVE_EVERY_S, ProfileEvent, Profiles
from .sync import SYNC_EVERY_S, UNSYNCED_MAX, PartialSync, SharedTrending

log = logging.getLogger("livecart.ranking")


class RankingService:
    def __init__(
        self,
        pool: Executor,
        *,
        redis_url: str | None,
        room_of: RoomOf,
        orders_of: OrdersOf,
        event_counter: CounterOf,
        observe_push: ObservePush,
        clock: Callable[[], float] = time.time,
        redis_prefix: str = "lc:{rank}",
    ) -> None:
        self.pool = pool
        self._clock = clock
        self.index = TrendingIndex()
        now = clock()
        self.index.move_landmark(self.index.landmark_for(now))
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        # Cluster: increments not yet sent to Redis, and the catalog version last seen there.
        self.shared = (
            SharedTrending(redis_url, self.index, prefix=redis_prefix) if redis_url else None
        )
        self._unsynced: list[Delta] | None = [] if self.shared is not None else None
        self._catalog_version = -1
        self.catalog = CatalogCache(
            pool, self.index, clock=clock, ingest=self._ingest, spawn=self._spawn
        )
        self.profiles = Profiles(
            pool,
            self.catalog,
            room_of=room_of,
            orders_of=orders_of,
            shared=self.shared,
            clock=clock,
            spawn=self._spawn,
        )
        self.exposure = Exposure(self.catalog.creator_of)
        self.feeds = Feeds(
            self.index,
            self.catalog,
            self.exposure,
            self.profiles.viewers,
            observe_push=observe_push,
        )
        # The per-signal path reads these directly (the same objects the parts hold).
        self._products = self.catalog.products
        self._viewers = self.profiles.viewers
        self._queued = self.profiles.queued
        self._profile_event = self.profiles.event
        self._counters = {k: event_counter(k) for k in SIGNAL_KINDS}
        # Counted here, added to the counters once a tick (cheaper per signal).
        self._counts = dict.fromkeys(SIGNAL_KINDS, 0)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.catalog.load_live()
        self._tasks = [
            asyncio.create_task(self._push_loop(), name="ranking-push"),
            asyncio.create_task(self._save_loop(), name="ranking-profiles"),
        ]
        if self.shared is not None:
            self._tasks.append(asyncio.create_task(self._sync_loop(), name="ranking-sync"))

    async def stop(self) -> None:
        self._flush_counts()
        for task in self._tasks:
            task.cancel()
        for task in list(self._background):
            task.cancel()
        if self.shared is not None:
            try:
                await asyncio.wait_for(self.sync_once(), 2.0)
            except Exception as exc:
                log.warning("last ranking sync failed: %s", exc)
            await self.shared.close()
        await self.profiles.save()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ signals

    def record(
        self,
        who: Identity,
        kind: SignalKind,
        session_id: str,
        *,
        product_id: str | None = None,
        count: int = 1,
        minutes: float = 0.0,
        value_cents: int = 0,
    ) -> None:
        """One viewer event: into the trending index, and into the viewer's own profile.

        Never waits on the hot path: a viewer whose stored profile is not loaded yet (or a
        product not in the catalog cache) is handled by a background task.
        """
        if who.is_guest:
            return
        now = self._clock()
        signal = Signal(
            kind,
            who.sub,
            now,
            session=session_id,
            product=product_id,
            count=count,
            minutes=minutes,
            value_cents=value_cents,
        )
        if self.index.is_live("session", session_id) or not self.catalog.hold(signal, now):
            self.index.ingest(signal, self._unsynced)
        self._counts[kind] += 1
        feeds = self.feeds
        if feeds.unpushed_since is None:
            feeds.unpushed_since = now
        event: ProfileEvent = (kind, now, session_id, product_id, count, minutes)
        queued = self._queued.get(who.sub)
        if queued is not None:
            if len(queued) < PROFILE_QUEUE_MAX:
                queued.append(event)
            return
        viewer = self._viewers.get(who.sub)
        if viewer is None or (product_id is not None and product_id not in self._products):
            self.profiles.later(who, event)
            return
        self._profile_event(who.sub, viewer, event)

    def _ingest(self, signal: Signal) -> None:
        self.index.ingest(signal, self._unsynced)

    def count_viewer(
        self, creator: str, *, seconds: float = 0.0, joined: bool = False, clicks: int = 0
    ) -> None:
        self.exposure.count_viewer(creator, seconds=seconds, joined=joined, clicks=clicks)

    async def session_changed(self, session_id: str) -> None:
        """Bring the index in line with a session that started, ended or changed showcase."""
        if not await self.catalog.session_changed(session_id):
            return
        if self.shared is not None:
            # Every other node reloads the live catalog when this version moves.
            try:
                await self.shared.catalog_changed()
            except Exception as exc:
                log.warning("could not announce a catalog change: %s", exc)

    # ------------------------------------------------------------ reads

    def trending(
        self, kind: str = "both", category: str | None = None, limit: int = 10
    ) -> dict[str, Any]:
        return self.feeds.trending(self._clock(), kind, category, limit)

    async def feed(self, who: Identity) -> list[FeedItem]:
        """A viewer's feed (GET /api/feed; the push loop uses the same computation)."""
        viewer = None if who.is_guest else await self.profiles.viewer(who)
        now = self._clock()
        return self.feeds.feed_for(who.sub, viewer, now, self.feeds.fresh_candidates(now))

    def shown(self, items: list[FeedItem], times: int = 1) -> None:
        """Count the impressions of a feed that was served (exposure for exploration)."""
        self.exposure.shown(items, times)

    async def creator_score(self, creator: str) -> CreatorScore:
        row = await store.creator_counts(self.pool, creator)
        sessions = await store.session_times(self.pool, creator)
        on_time = sum(
            started_on_time(s.scheduled_at.timestamp(), s.started_at.timestamp()) for s in sessions
        )
        counts = self.exposure.counts.get(creator, {})
        viewers = max(counts.get("viewers", 0), row.chatters, row.buyers)
        stats = CreatorStats(
            creator=creator,
            impressions=counts.get("impressions", 0),
            viewers=viewers,
            buyers=row.buyers,
            viewer_minutes=float(counts.get("viewer_seconds", 0)) / 60.0,
            engagements=row.messages + row.likes + counts.get("clicks", 0),
            sessions_scheduled=len(sessions),
            sessions_on_time=int(on_time),
            orders_reserved=row.settled,
            orders_paid=row.paid,
            messages=row.messages + row.held,
            messages_flagged=row.removed + row.held,
        )
        return creator_score(stats)

    # ------------------------------------------------------------ privacy

    async def set_personalization(self, who: Identity, on: bool) -> None:
        await self.profiles.set_personalization(who, on)

    async def erase_profile(self, who: Identity) -> bool:
        return await self.profiles.erase(who)

    async def export(self, who: Identity) -> dict[str, Any]:
        return await self.profiles.export(who)

    # ------------------------------------------------------------ real time

    def unsubscribe(self, conn: Subscriber) -> None:
        self.feeds.unsubscribe(conn)

    async def subscribe(self, conn: Subscriber, on: bool) -> None:
        if not on:
            self.unsubscribe(conn)
            return
        conn.feed_on = True
        viewer = None if conn.identity.is_guest else await self.profiles.viewer(conn.identity)
        self.feeds.subscribe(conn, viewer, self._clock())

    async def push_once(self) -> None:
        await self.feeds.push_once(self._clock())

    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._flush_counts()
                await self.push_once()
            except Exception:
                log.exception("ranking push failed")

    def _flush_counts(self) -> None:
        for kind, n in self._counts.items():
            if n:
                self._counters[kind].inc(n)
                self._counts[kind] = 0

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(PROFILE_SAVE_EVERY_S)
            try:
                await self.profiles.save()
            except Exception:
                log.exception("saving interest profiles failed")

    # ------------------------------------------------------------ cluster

    async def _sync_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(SYNC_EVERY_S)
            try:
                await self.sync_once()
                if failing:
                    log.info("ranking sync with Redis is back")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("ranking sync with Redis failed (retrying): %s", exc)
                failing = True

    async def sync_once(self) -> None:
        """Send this node's increments to Redis; take the cluster's numerators of live items."""
        assert self.shared is not None and self._unsynced is not None
        batch, self._unsynced = self._unsynced, []
        live = self.index.live_members()
        try:
            landmark, values, version, forgotten = await self.shared.sync(
                batch, live, self.profiles.forgotten_at
            )
        except PartialSync as exc:
            # Some trending shards took their part: only the others' is sent again.
            self._unsynced = (exc.unsent + self._unsynced)[-UNSYNCED_MAX:]
            raise
        except BaseException:
            # Sent again with the next sync (a batch the script applied before the connection
            # broke is counted twice: at least once, never lost while this node runs).
            self._unsynced = (batch + self._unsynced)[-UNSYNCED_MAX:]
            raise
        index = self.index
        # Increments made while the sync was in flight are not in the store's values yet.
        pending = unsynced(self._unsynced, landmark, index.decay.rate)
        members: dict[Scope, list[str]] = {"product": live[0], "session": live[1], "host": live[2]}
        index.absorb(landmark, store_numerators(members, values, pending))
        self.profiles.forget(forgotten)
        if version != self._catalog_version:
            # A node changed the live catalog (a session started, ended, or showed a product).
            await self.catalog.load_live()
            self._catalog_version = version
