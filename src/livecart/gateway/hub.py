"""Rooms on this node: who is joined, each room's cached state, fan-out of log events and the
coalesced state events (viewers, likes, stock)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ..bus.base import Bus, Publication, StreamPosition
from ..protocol import Likes, Stock, Viewers, encode, with_offset
from .connection import Connection

log = logging.getLogger("livecart.gateway")


class Room:
    __slots__ = (
        "category",
        "conns",
        "creator",
        "id",
        "likes",
        "likes_sent",
        "likes_unsaved",
        "pinned",
        "shield",
        "slow",
        "status",
        "stock",
        "tags",
        "viewers_sent",
        "viewers_total",
    )

    def __init__(self, row: dict[str, Any], pinned: dict[str, Any] | None) -> None:
        self.id: str = row["id"]
        self.creator: str = row["creator"]
        self.status: str = row["status"]
        self.slow: int = row["slow_seconds"]
        self.shield: bool = row["shield"]
        self.likes: int = row["like_total"]
        self.category: str = row["category"]
        self.tags: list[str] = list(row["tags"])
        self.pinned = pinned
        self.conns: set[Connection] = set()
        self.viewers_sent = -1
        self.viewers_total: int | None = None  # over all nodes, when a cluster reports it
        self.likes_sent = self.likes
        self.likes_unsaved = 0
        self.stock: dict[str, int] = {}  # offer -> remaining, not yet sent


_body = msgspec.json.Decoder(dict[str, Any])

RoomLoader = Callable[[str], Awaitable[Room | None]]


class Hub:
    def __init__(self, bus: Bus, load: RoomLoader, *, coalesce_s: float = 0.2) -> None:
        self.bus = bus
        self._load = load
        self._coalesce_s = coalesce_s
        self.rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Future[Room | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self.on_likes_flush: Callable[[dict[str, int]], Awaitable[None]] | None = None
        self.on_bus_lag: Callable[[float], None] | None = None
        # Cluster mode: report local viewer counts, get totals over nodes (once a second).
        self.sync_viewers: Callable[[dict[str, int]], Awaitable[dict[str, int]]] | None = None
        self._reported: set[str] = set()

    async def start(self) -> None:
        await self.bus.start(self.on_publication)
        self._task = asyncio.create_task(self._coalesce_loop(), name="hub-coalesce")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush_likes()
        await self.bus.stop()

    async def room(self, session_id: str) -> Room | None:
        """The cached room, loading it (once, however many callers wait) when unknown."""
        room = self.rooms.get(session_id)
        if room is not None:
            return room
        fut = self._loading.get(session_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._loading[session_id] = fut
            try:
                loaded = await self._load(session_id)
                if loaded is not None:
                    self.rooms[session_id] = loaded
                    await self.bus.subscribe(session_id)
                fut.set_result(loaded)
            except Exception as exc:
                fut.set_exception(exc)
                raise
            finally:
                del self._loading[session_id]
        return await asyncio.shield(fut)

    def add(self, conn: Connection, room: Room) -> None:
        room.conns.add(conn)

    def remove(self, conn: Connection, session_id: str) -> None:
        room = self.rooms.get(session_id)
        if room is not None:
            room.conns.discard(conn)

    # ------------------------------------------------------------ fan-out

    def on_publication(self, session_id: str, pub: Publication) -> None:
        room = self.rooms.get(session_id)
        if room is None:
            return
        if pub.kind in ("status", "pinned", "slow"):
            self._apply(room, pub.kind, _body.decode(pub.data))
        elif pub.kind == "chat" and self.on_bus_lag is not None and pub.offset % 16 == 0:
            # A sample of chat events: their `at` is stamped just before publishing.
            at = _body.decode(pub.data).get("at")
            if isinstance(at, int):
                self.on_bus_lag(max(0.0, time.time() - at / 1000))
        message = with_offset(pub.offset, pub.data)  # encoded once for every subscriber
        for conn in room.conns:
            conn.deliver(session_id, pub.offset, message)

    @staticmethod
    def _apply(room: Room, kind: str, body: dict[str, Any]) -> None:
        if kind == "status":
            room.status = body["status"]
        elif kind == "pinned":
            room.pinned = body["product"]
        elif kind == "slow":
            room.slow = body["seconds"]
            room.shield = body.get("shield", False)

    def on_epoch(self, session_id: str, position: StreamPosition) -> None:
        """A room's history was lost and restarted: every viewer gets a fresh snapshot."""
        room = self.rooms.get(session_id)
        if room is not None:
            for conn in list(room.conns):
                conn.resync(session_id)

    def broadcast(self, room: Room, message: bytes) -> None:
        for conn in room.conns:
            conn.send(message)

    # ------------------------------------------------------------ coalesced state

    def add_likes(self, room: Room, count: int) -> None:
        room.likes += count
        room.likes_unsaved += count

    def set_stock(self, session_id: str, offer: str, remaining: int) -> None:
        room = self.rooms.get(session_id)
        if room is not None:
            room.stock[offer] = remaining

    def viewer_count(self, room: Room) -> int:
        local = len(room.conns)
        return local if room.viewers_total is None else max(local, room.viewers_total)

    def tick(self) -> None:
        """Send what changed since the last tick: at most one of each per room per interval."""
        for room in self.rooms.values():
            if not room.conns:
                room.stock.clear()
                continue
            viewers = self.viewer_count(room)
            if viewers != room.viewers_sent:
                room.viewers_sent = viewers
                self.broadcast(room, encode(Viewers(room.id, viewers)))
            if room.likes != room.likes_sent:
                room.likes_sent = room.likes
                self.broadcast(room, encode(Likes(room.id, room.likes)))
            if room.stock:
                for offer, remaining in room.stock.items():
                    self.broadcast(room, encode(Stock(room.id, offer, remaining)))
                room.stock.clear()

    async def _coalesce_loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self._coalesce_s)
            try:
                self.tick()
                ticks += 1
                if ticks % 10 == 0:
                    await self._flush_likes()
                if self.sync_viewers is not None and ticks % 5 == 0:
                    await self._sync_viewers(self.sync_viewers)
            except Exception:
                log.exception("coalesce tick failed")

    async def _sync_viewers(
        self, sync: Callable[[dict[str, int]], Awaitable[dict[str, int]]]
    ) -> None:
        counts = {
            r.id: len(r.conns) for r in self.rooms.values() if r.conns or r.id in self._reported
        }
        if not counts:
            return
        self._reported = {room for room, n in counts.items() if n}
        for room_id, total in (await sync(counts)).items():
            self.rooms[room_id].viewers_total = total

    async def _flush_likes(self) -> None:
        counts = {r.id: r.likes_unsaved for r in self.rooms.values() if r.likes_unsaved}
        if not counts or self.on_likes_flush is None:
            return
        for room_id in counts:
            self.rooms[room_id].likes_unsaved = 0
        try:
            await self.on_likes_flush(counts)
        except Exception:
            log.exception("saving like totals failed")
            for room_id, n in counts.items():
                self.rooms[room_id].likes_unsaved += n

    def connections(self) -> set[Connection]:
        out: set[Connection] = set()
        for room in self.rooms.values():
            out |= room.conns
        return out
