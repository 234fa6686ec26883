"""One WebSocket client: bounded output written straight to its socket, and per-room cursors
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
from ..protocol import CLOSE_TOO_SLOW, ErrorMsg, encode, frame, ws_text_frame

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


def raw_socket(ws: WebSocket) -> Any | None:
    """uvicorn's `websockets-sansio` protocol object behind `ws`, when frames may be written
    to its transport directly: the server's fast path (one `transport.write` of bytes built
    once per room, no task per connection). None under any other ASGI server, or when the
    client negotiated permessage-deflate (then every frame goes through the ASGI `send`,
    which compresses it for that connection)."""
    proto = getattr(getattr(ws, "_send", None), "__self__", None)
    if proto is None or not all(
        hasattr(proto, a) for a in ("transport", "close_sent", "disconnected", "conn")
    ):
        return None
    if getattr(proto.conn, "extensions", None):
        return None
    return proto


class Connection:
    """Output goes out in frames, each a JSON array of messages. Personal messages (acks,
    errors, snapshots) queue here and leave together at the end of the current event-loop
    step; room events arrive as whole frames shared by the room (`write_shared`)."""

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
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._scheduled = False
        self._max_bytes = max_bytes
        self._max_age = max_age_s
        self._clock = clock
        self._on_gap = on_gap
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._raw = raw_socket(ws)
        # Since when the socket's write buffer has been non-empty (the client is behind).
        self._behind_since: float | None = None
        # The ASGI path (no raw socket): frames wait here for the writer task.
        self._frames: deque[bytes] = deque()
        self._frames_bytes = 0
        self._wakeup = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None
        if self._raw is None:
            self.writer = self._loop.create_task(self._run_writer(), name=f"writer-{conn_id}")
        # The close frame's send; the endpoint waits for it before the ASGI call ends.
        self.closing: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ output

    def send(self, message: bytes) -> None:
        """Queue one encoded personal message; everything queued in this loop step leaves
        as one frame."""
        if self.closed:
            return
        if self._queued_bytes + len(message) > self._max_bytes:
            self._too_slow()
            return
        self._queue.append(message)
        self._queued_bytes += len(message)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

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

    def flush(self) -> None:
        """Send the queued personal messages now, as one frame."""
        self._scheduled = False
        if not self._queue or self.closed:
            return
        batch, self._queue = self._queue, []
        self._queued_bytes = 0
        payload = frame(batch)
        behind = self._write(payload, None)
        if self._metrics is not None:
            self._metrics.frames_out.inc()
            self._metrics.messages_out.inc(len(batch))
            self._metrics.bytes_out.inc(len(payload))
            self._metrics.outbox_depth.observe(behind)

    def write_shared(self, payload: bytes, framed: bytes) -> bool:
        """Write a frame built once for many connections (`framed` is `payload` as WebSocket
        bytes); personal messages queued before it go first. False when closed."""
        if self._queue:
            self.flush()
        if self.closed:
            return False
        self._write(payload, framed)
        return not self.closed

    def _write(self, payload: bytes, framed: bytes | None) -> int:
        """Write one frame; returns the bytes now waiting for this client."""
        raw = self._raw
        if raw is None:
            self._frames.append(payload)
            self._frames_bytes += len(payload)
            if self._frames_bytes > self._max_bytes:
                self._too_slow(self._frames_bytes)
            self._wakeup.set()
            return self._frames_bytes
        if raw.close_sent or raw.disconnected:
            self.closed = True
            return 0
        transport = raw.transport
        transport.write(framed if framed is not None else ws_text_frame(payload))
        # Bound what waits for this client: bytes in the socket's buffer, and how long it
        # has been behind. The kernel's send buffer (socket_send_buffer) comes first.
        behind: int = transport.get_write_buffer_size()
        if not behind:
            self._behind_since = None
        elif behind > self._max_bytes:
            self._too_slow(behind)
        elif self._behind_since is None:
            self._behind_since = self._clock()
        elif self._clock() - self._behind_since > self._max_age:
            self._too_slow(behind)
        return behind

    def _too_slow(self, behind: int = 0) -> None:
        log.warning(
            "closing slow consumer: %d bytes waiting",
            behind + self._queued_bytes,
            extra=self.info(),
        )
        self.close(CLOSE_TOO_SLOW, "too slow to keep up")

    async def _run_writer(self) -> None:
        try:
            while not self.closed:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._frames and not self.closed:
                    payload = self._frames.popleft()
                    self._frames_bytes -= len(payload)
                    await self.ws.send({"type": "websocket.send", "text": payload.decode()})
        except Exception:
            self.closed = True

    def close(self, code: int, reason: str = "") -> None:
        """Close at once; safe to call more than once. Answers already queued go out first,
        except to a client closed for being too slow (its queued output is dropped)."""
        if self.closed:
            return
        if code != CLOSE_TOO_SLOW and self._queue:
            self.flush()
        self.closed = True
        self.close_code = code
        dropped = len(self._queue) + len(self._frames)
        if self._metrics is not None and dropped:
            self._metrics.drops.inc(dropped)
        self._queue.clear()
        self._frames.clear()
        self._frames_bytes = self._queued_bytes = 0
        self._wakeup.set()
        self.closing = self._loop.create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    async def flush_and_close(self, code: int, reason: str, timeout: float = 1.0) -> None:
        """Send what is queued (waiting at most `timeout` for the ASGI path), then close."""
        self.flush()
        deadline = self._clock() + timeout
        while self._frames and not self.closed and self._clock() < deadline:
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
