"""A running node: the resources one process owns, created and closed in order."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import asyncpg

from .bus.base import Bus
from .bus.memory import MemoryBus
from .commerce import CommerceService
from .config import Settings
from .core.moderation import FloodPolicy, RatePolicy
from .gateway.connection import Connection
from .gateway.hub import Hub, Room
from .moderation import ModerationService
from .protocol import CLOSE_GOING_AWAY, Failure, encode
from .store import catalog, rooms
from .store.db import connect_pool, migrate

log = logging.getLogger("livecart.node")


class Node:
    def __init__(self, settings: Settings, database_url: str, jwt_secret: str) -> None:
        self.settings = settings
        self.database_url = database_url
        self.jwt_secret = jwt_secret
        self.id = settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.draining = False
        self.started_at = time.time()
        self.pool: asyncpg.Pool
        self.bus: Bus
        self.archive: rooms.ArchiveWriter
        self.hub: Hub
        self.commerce: CommerceService
        self.moderation: ModerationService
        self.connections: set[Connection] = set()

    async def start(self) -> None:
        s = self.settings
        self.pool = await connect_pool(
            self.database_url, min_size=s.db_pool_min, max_size=s.db_pool_max
        )
        await migrate(self.pool)
        self.bus = MemoryBus(
            self._offset_floor, history_size=s.history_size, history_ttl_s=s.history_ttl_s
        )
        self.archive = rooms.ArchiveWriter(self.pool)
        self.archive.start()
        self.hub = Hub(self.bus, self._load_room, coalesce_s=s.coalesce_interval_s)
        self.hub.on_likes_flush = lambda counts: catalog.add_likes(self.pool, counts)
        await self.hub.start()
        self.commerce = CommerceService(
            self.pool,
            publish=self.append,
            on_stock=self.hub.set_stock,
            reservation_ttl_s=s.reservation_ttl_s,
            webhook_url=s.webhook_url,
            webhook_secret=s.webhook_secret,
        )
        await self.commerce.start()
        self.moderation = ModerationService(
            self,
            rate=RatePolicy(s.chat_rate_per_s, s.chat_burst),
            flood=FloodPolicy(s.flood_frames, s.flood_window_s),
        )
        await self.moderation.start()

    async def stop(self) -> None:
        await self.commerce.stop()
        await self.hub.stop()
        await self.archive.close()
        await self.pool.close()

    async def drain(self, timeout: float = 2.0) -> None:
        """Stop taking clients: /readyz fails from now on and every socket closes with 1001."""
        self.draining = True
        conns = list(self.connections)
        if conns:
            await asyncio.gather(
                *(c.flush_and_close(CLOSE_GOING_AWAY, "server going away", timeout) for c in conns),
                return_exceptions=True,
            )

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

    # ------------------------------------------------------------ room log

    async def _offset_floor(self, session_id: str) -> int:
        return await rooms.max_offset(self.pool, session_id)

    async def _load_room(self, session_id: str) -> Room | None:
        row = await catalog.room_row(self.pool, session_id)
        if row is None:
            return None
        pinned = None
        if row["pinned_product"]:
            product = await catalog.get_product(self.pool, row["pinned_product"])
            pinned = None if product is None else _plain(product)
        return Room(row, pinned)

    async def room(self, session_id: str) -> Room:
        room = await self.hub.room(session_id)
        if room is None:
            raise Failure("not_found", f"no session {session_id}")
        return room

    async def append(
        self,
        session_id: str,
        kind: str,
        body: dict[str, Any],
        *,
        author: str | None = None,
        text: str | None = None,
    ) -> int:
        """Append an event to a session's log: published to every viewer, then archived; returns
        its offset only once the archive has committed it."""
        data = encode({"type": kind, "session": session_id, **body})
        position = await self.bus.publish(session_id, kind, data)
        try:
            await self.archive.append(
                rooms.ArchiveRow(session_id, position.offset, kind, author, text, data)
            )
        except Exception:
            raise Failure("unavailable", "the event could not be stored; retry") from None
        return position.offset


def _plain(struct: Any) -> dict[str, Any]:
    import msgspec

    out: dict[str, Any] = msgspec.to_builtins(struct)
    return out
