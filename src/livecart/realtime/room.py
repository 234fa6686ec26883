"""A room on this node: a live session's cached state (status, pin, slow mode, likes,
stock), who on the node is joined, and what waits for the room's next frame. `Hub`
(`realtime.hub`) keeps the rooms and fans their events out."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from .connection import Connection
from .lag import Entry, Lag

__all__ = ["Entry", "Room"]


class Room:
    __slots__ = (
        "batch",
        "category",
        "chat_kept",
        "chat_seen",
        "commerce",
        "conns",
        "creator",
        "flush_at",
        "id",
        "lag",
        "last_flush",
        "likes",
        "likes_sent",
        "likes_unsaved",
        "likes_unsynced",
        "pinned",
        "shield",
        "slow",
        "status",
        "stock",
        "tags",
        "viewers_sent",
        "viewers_sent_at",
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
        self.viewers_sent_at = 0.0
        self.viewers_total: int | None = None  # over all nodes, when a cluster reports it
        self.likes_sent = self.likes
        self.likes_unsaved = 0  # not yet added to PostgreSQL's total
        self.likes_unsynced = 0  # not yet added to the cluster's total (Redis)
        self.stock: dict[str, int] = {}  # offer -> remaining, not yet sent
        # The commerce part of join snapshots (open offers, open auction), shared by the joins
        # whose position it covers: (covers events up to this offset, the read).
        self.commerce: tuple[int, asyncio.Future[Any]] | None = None
        # Fan-out: what waits for the next frame: (offset or None, message, is chat).
        self.batch: list[Entry] = []
        self.flush_at: asyncio.TimerHandle | asyncio.Handle | None = None
        self.last_flush = 0.0
        # Delayed delivery, while some viewer here has a delay (SPEC §12; `realtime.delay`).
        self.lag: Lag | None = None
        # When the chat messages of the last second were published, and when those shown were.
        self.chat_seen: deque[float] = deque()
        self.chat_kept: deque[float] = deque()
