"""The `/ws` endpoint: `Gateway`, the WebSocket side of a node, made of three parts that
share its state: `Lifecycle` (opening, auth, closing; `realtime.lifecycle`), `Inbox` (frames
in, in order; `realtime.inbox`) and `Handlers` (what each frame does; `realtime.handlers`).
They are mixins, not objects the gateway holds, so a frame's way through them is the same
chain of `self` method calls as in one class: no extra call or attribute hop per frame."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from ..chat import replies
from ..chat.rules.limits import _RecentMap
from ..runtime.node import Node
from . import archive as room_store
from .connection import Connection
from .handlers import Handlers
from .inbox import Inbox
from .lifecycle import Lifecycle


class Gateway(Lifecycle, Inbox, Handlers):
    """The WebSocket side of a node. Both transports (the node's own wire protocol and ASGI)
    hand it whole messages through `received`, in the step that read them. A frame that
    needs no I/O (ping, like, signal, a buy the sold-out gate refuses, ...) is answered in
    that same step; one that waits (chat, join, a buy that reaches PostgreSQL) runs in a task,
    and the frames after it wait their turn, so each connection's frames are handled in
    order."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._keepalive: asyncio.Task[None] | None = None
        self._inbox: deque[tuple[Connection, bytes, float]] = deque()
        self._inbox_paused: list[Connection] = []
        self._taking = False
        # A chat's answer is kept as long as the room's history window: a retry within it
        # (the client reconnects and resends) is answered, not published again.
        window = node.settings.history_ttl_s if node is not None else replies.HORIZON_S
        self.chat_replies = replies.ReplyBook(horizon_s=window)
        # Chat published but not yet stored, by (user, ref): a retry stores it, not publishes.
        self._unarchived: _RecentMap[tuple[str, str], room_store.ArchiveRow] = _RecentMap(
            10_000, window
        )
        # (deadline, tie-breaker, connection): token expiries and the grace after them.
        self._expiries: list[tuple[float, int, Connection]] = []
        self._expiry: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._keepalive = loop.create_task(self._keepalive_loop(), name="ws-keepalive")
        self._expiry = loop.create_task(self._expiry_loop(), name="ws-token-expiry")

    async def stop(self) -> None:
        for task in (self._keepalive, self._expiry):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
