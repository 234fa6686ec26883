"""A running node: the resources one process owns, created and closed in order."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec
from msgspec import Struct

from .. import auth
from ..auth import Identity
from ..catalog import store as catalog
from ..catalog.service import CatalogService
from ..chat.model import ModerationPorts
from ..chat.replies import SharedReplies
from ..chat.rules.limits import FloodPolicy, RatePolicy
from ..chat.service import ModerationService
from ..commerce import CommerceService
from ..commerce.draw import PRIZE_KEY
from ..commerce.rules import Order
from ..protocol import (
    CLOSE_GOING_AWAY,
    Failure,
    GiveawayEnded,
    OrderMsg,
    RoomEvent,
    encode,
    kind_of,
)
from ..ranking import RankingService
from ..realtime import archive as rooms
from ..realtime.bus.base import Bus
from ..realtime.bus.memory import MemoryBus
from ..realtime.bus.redis import RedisBus
from ..realtime.connection import Connections
from ..realtime.hub import Hub
from ..realtime.presence import RedisPresence
from ..realtime.room import Room
from .config import Settings, node_name
from .db import MeasuredPool, connect_pool, migrate
from .metrics import Metrics

log = logging.getLogger("livecart.node")


class Node:
    def __init__(self, settings: Settings, database_url: str, jwt_secret: str) -> None:
        self.settings = settings
        self.database_url = database_url
        self.jwt_secret = jwt_secret
        self.verifier = auth.Verifier.from_settings(settings, jwt_secret)
        self.id = node_name(settings)
        self.draining = False
        self.started_at = time.time()
        self.pool: asyncpg.Pool
        self.bus: Bus
        self.archive: rooms.ArchiveWriter
        self.users: catalog.UserWriter
        self.hub: Hub
        self.catalog: CatalogService
        self.commerce: CommerceService
        self.moderation: ModerationService
        self.shared_replies: SharedReplies | None = None
        """Answers to chat frames by (user, ref) in Redis, for retries on any node."""
        self.ranking: RankingService
        self.connections = Connections()
        self.metrics = Metrics()
        self._sold_out: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._telling: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        s = self.settings
        await self.verifier.refresh(force=True)  # a JWKS, when configured, before clients
        raw_pool = await connect_pool(
            self.database_url, min_size=s.db_pool_min, max_size=s.db_pool_max
        )
        db_seconds = self.metrics.db_seconds
        measured = MeasuredPool(raw_pool, lambda kind, s: db_seconds.labels(kind).observe(s))
        self.pool = measured
        await migrate(self.pool)
        self.catalog = CatalogService(
            self.pool,
            append=self.append,
            changed=lambda session_id: self.ranking.session_changed(session_id),
            read_log=lambda session_id, since, limit: rooms.timeline(
                self.pool, session_id, since, limit
            ),
            live_figures=self._live_figures,
        )
        if s.redis_url:
            self.bus = RedisBus(
                s.redis_url,
                self._offset_floor,
                history_size=s.history_size,
                history_ttl_s=s.history_ttl_s,
                node_id=self.id,
                on_epoch=lambda room, position: self.hub.on_epoch(room, position),
            )
        else:
            self.bus = MemoryBus(
                self._offset_floor, history_size=s.history_size, history_ttl_s=s.history_ttl_s
            )
        self.archive = rooms.ArchiveWriter(self.pool)
        self.archive.start()
        self.users = catalog.UserWriter(self.pool)
        self.users.start()
        self.hub = Hub(
            self.bus,
            self._load_room,
            coalesce_s=s.coalesce_interval_s,
            tick_s=s.fanout_tick_s,
            writes_per_s=s.fanout_writes_per_s,
            chat_budget=s.chat_display_budget,
            delay_bucket_ms=s.delay_bucket_ms,
            max_delay_ms=s.max_viewer_delay_ms,
            trip_allowance_ms=s.trip_allowance_ms,
            metrics=self.metrics,
        )
        self.hub.on_likes_flush = self.catalog.add_likes
        self.presence = RedisPresence(s.redis_url, self.id) if s.redis_url else None
        if self.presence is not None:
            self.hub.sync_viewers = self.presence.report
            self.hub.sync_likes = self.presence.add_likes
        self.metrics.track_pool(
            lambda: (
                raw_pool.get_size(),
                raw_pool.get_size() - raw_pool.get_idle_size(),
                raw_pool.get_max_size(),
                measured.waiting(),
            )
        )
        self.hub.on_bus_lag = self.metrics.bus_lag.set
        self.metrics.track_rooms(lambda: sum(1 for r in self.hub.rooms.values() if r.conns))
        self._tasks.append(asyncio.create_task(self.metrics.watch_loop_lag(), name="loop-lag"))
        await self.hub.start()
        self.commerce = CommerceService(
            self.pool,
            publish=self.append,
            on_stock=self._on_stock,
            reservation_ttl_s=s.reservation_ttl_s,
            second_chance_ttl_s=s.second_chance_ttl_s,
            tell=self.tell_encoded,
            webhook_url=s.webhook_url,
            webhook_secret=s.webhook_secret,
            settle_grace_s=(s.max_viewer_delay_ms + s.trip_allowance_ms) / 1000,
        )
        await self.commerce.start()
        self.hub.on_sold = self.commerce.stock_changed
        self.hub.on_offers = self.commerce.claims_changed
        self.commerce.on_served = self._waitlist_served
        self.hub.on_drawn = self._drawn
        moderation_actions = self.metrics.moderation_actions
        self.moderation = ModerationService(
            self.pool,
            ModerationPorts(
                room=self.room,
                append=self.append,
                redact=self.bus.redact,
                tell=self.tell,
                acted=lambda action: moderation_actions.labels(action).inc(),
            ),
            rate=RatePolicy(s.chat_rate_per_s, s.chat_burst),
            flood=FloodPolicy(s.flood_frames, s.flood_window_s),
            redis_url=s.redis_url,
        )
        await self.moderation.start()
        shared = self.moderation.shared
        if shared is not None:
            self.shared_replies = SharedReplies(
                shared.redis, shared.prefix, pipeline=shared.pipeline, horizon_s=s.history_ttl_s
            )
        # Trending in Redis belongs to this deployment (one PostgreSQL database), like the
        # chat limits: two deployments sharing a Redis never see each other's items.
        database = await self.pool.fetchval("SELECT current_database()")
        namespace = hashlib.blake2b(database.encode(), digest_size=4).hexdigest()
        self.ranking = RankingService(
            self.pool,
            redis_url=s.redis_url,
            redis_prefix=f"lc:{namespace}:{{rank}}",
            room_of=self.hub.rooms.get,
            orders_of=functools.partial(self.commerce.list_orders, limit=1000),
            event_counter=self.metrics.ranking_events.labels,
            observe_push=self.metrics.push_seconds.observe,
        )
        await self.ranking.start()

    async def stop(self) -> None:
        await self.ranking.stop()
        await self.moderation.stop()
        for task in self._tasks:
            task.cancel()
        await self.commerce.stop()
        await self.hub.stop()
        if self.presence is not None:
            await self.presence.close()
        await self.archive.close()
        await self.users.close()
        await self.pool.close()

    async def drain(self, timeout: float = 2.0) -> None:
        """Stop taking clients: /readyz fails from now on and every socket closes with 1001."""
        self.draining = True
        if self.settings.drain_grace_s:
            await asyncio.sleep(self.settings.drain_grace_s)
        for conn in list(self.connections):
            conn.close(CLOSE_GOING_AWAY, "server going away")  # what is queued goes first
        # Clients answer the close; give them `timeout` to do it before the sockets are cut.
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def ready(self) -> dict[str, Any]:
        checks: dict[str, Any] = {"draining": self.draining}
        try:
            await asyncio.wait_for(self.pool.fetchval("SELECT 1"), timeout=2)
            checks["database"] = True
        except Exception:
            checks["database"] = False
        try:
            checks["bus"] = await asyncio.wait_for(self.bus.ping(), timeout=2)
        except Exception:
            checks["bus"] = False
        checks["ready"] = checks["database"] and checks["bus"] and not self.draining
        return checks

    def _on_stock(self, session_id: str, offer: str, remaining: int) -> None:
        # Count an offer once each time it goes from some stock to none.
        if remaining == 0 and offer not in self._sold_out:
            self._sold_out.add(offer)
            self.metrics.offers_sold_out.inc()
        elif remaining > 0:
            self._sold_out.discard(offer)
        self.hub.set_stock(session_id, offer, remaining)

    def start_buy(
        self,
        who: Identity,
        offer: str,
        qty: int,
        ref: str,
        session_id: str | None = None,
        *,
        video_at: float | None = None,
        then: Callable[[asyncio.Future[Order]], None] | None = None,
    ) -> asyncio.Future[Order]:
        """The one purchase path (WebSocket and REST), measured: a future of the order, or of
        the refusal; a refusal known without I/O is raised at once (`CommerceService.reserve`).
        `then` is called with the future once it is done, after the metrics."""
        started = time.perf_counter()
        try:
            bought = self.commerce.reserve(
                who, offer, qty, ref, session_id=session_id, video_at=video_at
            )
        except Failure as exc:
            self.metrics.buy_attempts.labels(exc.code).inc()
            self.metrics.order_seconds.observe(time.perf_counter() - started)
            raise
        bought.add_done_callback(functools.partial(self._bought, who, started, then))
        return bought

    async def buy(
        self, who: Identity, offer: str, qty: int, ref: str, session_id: str | None = None
    ) -> Order:
        return await self.start_buy(who, offer, qty, ref, session_id)

    def _bought(
        self,
        who: Identity,
        started: float,
        then: Callable[[asyncio.Future[Order]], None] | None,
        bought: asyncio.Future[Order],
    ) -> None:
        try:
            exc = asyncio.CancelledError() if bought.cancelled() else bought.exception()
            if exc is None:
                order = bought.result()
                outcome = "reserved"
                self.ranking.record(
                    who,
                    "purchase",
                    order.session,
                    product_id=order.product,
                    value_cents=order.total_cents,
                )
            else:
                outcome = exc.code if isinstance(exc, Failure) else "error"
            self.metrics.buy_attempts.labels(outcome).inc()
            self.metrics.order_seconds.observe(time.perf_counter() - started)
        finally:
            if then is not None:
                then(bought)

    def _waitlist_served(self, user: str, ref: str, order: dict[str, Any]) -> None:
        """SPEC §13: a waitlist served `user` (on whichever node): `order {ref, order}` with
        the waitlist's ref to that user's connections here."""
        self.tell(user, OrderMsg(ref, order))

    def _drawn(self, event: GiveawayEnded) -> None:
        """A giveaway was drawn (on any node): winners connected here get `order {ref,
        order}` with ref `giveaway:<id>`, read from the database."""
        here = self.connections.users() & set(event.winners)
        if here:
            task = asyncio.create_task(self._tell_prizes(event.giveaway, sorted(here)))
            self._telling.add(task)
            task.add_done_callback(self._telling.discard)

    async def _tell_prizes(self, giveaway: str, users: list[str]) -> None:
        try:
            orders = await self.commerce.prize_orders(giveaway, users)
        except Exception as exc:
            log.warning("prize orders of %s unreadable: %s", giveaway, exc)
            return
        for order in orders:
            self.tell(order.user, OrderMsg(PRIZE_KEY + giveaway, msgspec.to_builtins(order)))

    def tell(self, user: str, message: Struct) -> None:
        """Send `message` to every connection of `user` on this node."""
        self.tell_encoded(user, encode(message))

    def tell_encoded(self, user: str, data: bytes) -> None:
        """Send one encoded personal message to every connection of `user` on this node."""
        for conn in self.connections.of(user):
            conn.send(data)

    # ------------------------------------------------------------ room log

    async def _offset_floor(self, session_id: str) -> int:
        return await rooms.max_offset(self.pool, session_id)

    async def _load_room(self, session_id: str) -> Room | None:
        state = await self.catalog.room_state(session_id)
        return None if state is None else Room(*state)

    def _live_figures(self, session_id: str) -> tuple[int, int] | None:
        """(viewers, likes) of a room loaded on this node, else None."""
        room = self.hub.rooms.get(session_id)
        return None if room is None else (self.hub.viewer_count(room), room.likes)

    async def room(self, session_id: str) -> Room:
        room = await self.hub.room(session_id)
        if room is None:
            raise Failure("not_found", f"no session {session_id}")
        return room

    async def append(
        self, event: RoomEvent, *, author: str | None = None, text: str | None = None
    ) -> int:
        """Append an event to its session's log: encoded once, published to every viewer, then
        archived; returns its offset only once the archive has committed it."""
        session_id = event.session
        kind = kind_of(event)
        data = encode(event)
        try:
            position = await self.bus.publish(session_id, kind, data)
        except Exception as exc:
            log.warning("bus publish failed: %s", exc, extra={"session": session_id})
            raise Failure("unavailable", "the room log is unreachable; retry") from None
        row = rooms.ArchiveRow(session_id, position.offset, kind, author, text, data)
        try:
            await self.archive.append(row)
        except Exception:
            raise Unarchived(row) from None
        return position.offset


class Unarchived(Failure):
    """`unavailable`: the event was published (viewers have it) but is not stored yet; `row`
    is what a retry stores, instead of publishing the event again."""

    def __init__(self, row: rooms.ArchiveRow) -> None:
        super().__init__("unavailable", "the event could not be stored; retry")
        self.row = row
