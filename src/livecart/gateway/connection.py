"""One WebSocket client: a bounded outbox drained by one writer task, and per-room cursors
that keep each room's log events in offset order with no gaps and no duplicates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket

from ..auth import Identity
from ..metrics import Metrics
from ..protocol import CLOSE_TOO_SLOW, ErrorMsg, encode, frame

log = logging.getLogger("livecart.gateway")


class RoomCursor:
    __slots__ = ("epoch", "joined_at", "offset", "pending", "resyncing")

    def __init__(self) -> None:
        self.epoch = ""
        self.joined_at = time.monotonic()
        # None while joining: live events wait in `pending` until the snapshot is out.
        self.offset: int | None = None
        self.pending: list[tuple[int, bytes]] = []
        self.resyncing = False


class Connection:
    def __init__(
        self,
        ws: WebSocket,
        conn_id: str,
        identity: Identity,
        *,
        max_bytes: int,
        max_age_s: float,
        on_gap: Callable[[Connection, str], None],
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ws = ws
        self.id = conn_id
        self.identity = identity
        self.rooms: dict[str, RoomCursor] = {}
        self.feed_on = False
        self.first_seen: float | None = None
        self.closed = False
        self.close_code: int | None = None
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._oldest = 0.0
        self._max_bytes = max_bytes
        self._max_age = max_age_s
        self._clock = clock
        self._on_gap = on_gap
        self._metrics = metrics
        self._wakeup = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None
        # The close frame's send; the endpoint waits for it before the ASGI call ends.
        self.closing: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ outbox

    def send(self, message: bytes) -> None:
        """Queue one encoded message; the writer batches whatever is queued into one frame."""
        if self.closed:
            return
        now = self._clock()
        if self._queue:
            if (
                self._queued_bytes + len(message) > self._max_bytes
                or now - self._oldest > self._max_age
            ):
                log.warning(
                    "closing slow consumer: %d bytes queued, oldest %.1fs",
                    self._queued_bytes,
                    now - self._oldest,
                    extra=self.info(),
                )
                self.close(CLOSE_TOO_SLOW, "too slow to keep up")
                return
        else:
            self._oldest = now
        self._queue.append(message)
        self._queued_bytes += len(message)
        self._wakeup.set()

    def send_error(
        self,
        code: str,
        message: str,
        ref: str | None = None,
        *,
        retry_after_ms: int | None = None,
        session: str | None = None,
    ) -> None:
        self.send(encode(ErrorMsg(code, message, ref, retry_after_ms, session)))

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    async def run_writer(self) -> None:
        try:
            while not self.closed:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue and not self.closed:
                    batch = list(self._queue)
                    self._queue.clear()
                    depth, self._queued_bytes = self._queued_bytes, 0
                    data = frame(batch)
                    await self.ws.send({"type": "websocket.send", "text": data.decode()})
                    if self._metrics is not None:
                        self._metrics.frames_out.inc()
                        self._metrics.messages_out.inc(len(batch))
                        self._metrics.bytes_out.inc(len(data))
                        self._metrics.outbox_depth.observe(depth)
        except Exception:
            self.closed = True

    def close(self, code: int, reason: str = "") -> None:
        """Close at once (pending output is dropped); safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        if self._metrics is not None and self._queue:
            self._metrics.drops.inc(len(self._queue))
        self._queue.clear()
        self._queued_bytes = 0
        self._wakeup.set()
        self.closing = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    async def flush_and_close(self, code: int, reason: str, timeout: float = 1.0) -> None:
        """Let the writer send what is queued (bounded by `timeout`), then close."""
        deadline = self._clock() + timeout
        while self._queue and not self.closed and self._clock() < deadline:
            await asyncio.sleep(0.01)
        if not self.closed:
            self.closed = True
            self.close_code = code
            self._wakeup.set()
            await self._close(code, reason)

    # ------------------------------------------------------------ room events

    def deliver(self, room: str, offset: int, message: bytes) -> None:
        cursor = self.rooms.get(room)
        if cursor is None:
            return
        if cursor.offset is None or cursor.resyncing:
            cursor.pending.append((offset, message))
            return
        if offset <= cursor.offset:
            return
        if offset != cursor.offset + 1:
            cursor.pending.append((offset, message))
            cursor.resyncing = True
            self._on_gap(self, room)
            return
        cursor.offset = offset
        self.send(message)

    def resync(self, room: str) -> None:
        """The room's stream changed under us (a new epoch): hold events, re-join from here."""
        cursor = self.rooms.get(room)
        if cursor is not None and cursor.offset is not None and not cursor.resyncing:
            cursor.resyncing = True
            self._on_gap(self, room)

    def position(self, room: str, epoch: str, offset: int) -> None:
        """Set the cursor once a snapshot or history fill is queued; release held-back events."""
        cursor = self.rooms.get(room)
        if cursor is None:
            return
        cursor.epoch = epoch
        cursor.offset = offset
        cursor.resyncing = False
        pending, cursor.pending = cursor.pending, []
        for off, msg in sorted(pending, key=lambda p: p[0]):
            self.deliver(room, off, msg)

    def info(self) -> dict[str, Any]:
        """Log context of this connection."""
        return {"conn": self.id, "user": self.identity.sub, "role": self.identity.role}
