"""One WebSocket client: bounded output written straight to its socket, and per-room cursors
that keep each room's log events in offset order with no gaps and no duplicates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from starlette.websockets import WebSocket

from ..auth import Identity
from ..protocol import CLOSE_TOO_SLOW, ErrorMsg, encode, frame
from ..runtime.metrics import Metrics
from . import wire
from .delay import ViewerDelay

log = logging.getLogger("livecart.gateway")


class RoomCursor:
    __slots__ = ("delay", "epoch", "joined_at", "offset", "pending", "resyncing", "seen")

    def __init__(self) -> None:
        self.epoch = ""
        self.joined_at = time.monotonic()
        # None while joining: live events wait in `pending` until the snapshot is out.
        self.offset: int | None = None
        self.pending: list[tuple[int, bytes]] = []
        self.resyncing = False
        # Video time (`realtime.delay`): the reported delay (None: never reported, delay 0)
        # and the last frame of the room's delay timeline this viewer got.
        self.delay: ViewerDelay | None = None
        self.seen = 0


class Socket(Protocol):
    """Where a connection's frames go: the node's own wire protocol (`wire.WireProtocol`) or,
    under any ASGI server, `AsgiSocket`."""

    def send(self, payload: bytes, framed: bytes | None) -> int:
        """Write one frame (`framed`: `payload` already WebSocket-framed, or None); returns
        the bytes now waiting for the client, -1 when the socket is closed."""
        ...

    def close(self, code: int, reason: str = "") -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class AsgiSocket:
    """A `Socket` over ASGI `send`: frames wait in a bounded queue for one writer task."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.closed = False
        self.readable = asyncio.Event()  # cleared while the gateway has enough to do
        self.readable.set()
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._wakeup = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self.writer = asyncio.get_running_loop().create_task(self._run())
        # A close that a client not reading keeps from being sent ends the reading too (the
        # reader's `ws.receive()` is cancelled), so the connection goes within CLOSE_TIMEOUT.
        self.reader = asyncio.current_task()
        self.reading = False  # the reader waits in ws.receive()
        self.expired = False
        self._deadline: asyncio.TimerHandle | None = None

    def send(self, payload: bytes, framed: bytes | None) -> int:
        """Queue a frame; returns what was still waiting before it (a writer that keeps up
        has sent everything between two writes, as a socket's buffer would be empty)."""
        if self.closed:
            return -1
        behind = self._bytes
        self._frames.append(payload)
        self._bytes += len(payload)
        self._wakeup.set()
        return behind

    def close(self, code: int, reason: str = "") -> None:
        """Close once what is queued has been sent."""
        if not self.closed:
            self.closed = True
            self._close = (code, reason)
            self._wakeup.set()
            self._deadline = asyncio.get_running_loop().call_later(
                wire.CLOSE_TIMEOUT_S / 2, self._expire
            )

    def _expire(self) -> None:
        """The close could not be sent in time (the client does not read): stop writing and
        reading, so that the ASGI server closes the connection."""
        self._deadline = None
        if self.writer.done():
            return
        self.expired = True
        self.writer.cancel()
        self.readable.set()
        if self.reading and self.reader is not None:
            self.reader.cancel()

    def pause_reading(self) -> None:
        self.readable.clear()

    def resume_reading(self) -> None:
        self.readable.set()

    async def _run(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._frames:
                    payload = self._frames.popleft()
                    self._bytes -= len(payload)
                    await self.ws.send({"type": "websocket.send", "text": payload.decode()})
                if self._close is not None:
                    await self.ws.close(*self._close)
                    return

    async def finish(self, timeout: float = 2.0) -> None:
        """Wait for the writer to send what is queued and the close (if any), then stop it."""
        if self._close is not None:
            await asyncio.wait({self.writer}, timeout=timeout)
        self.writer.cancel()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class Connection:
    """Output goes out in frames, each a JSON array of messages. Personal messages (acks,
    errors, snapshots) queue here and leave together at the end of the current event-loop
    step; room events arrive as whole frames shared by the room (`write_shared`)."""

    __slots__ = (
        "_behind_since",
        "_clock",
        "_loop",
        "_max_age",
        "_max_bytes",
        "_metrics",
        "_on_gap",
        "_queue",
        "_queued_bytes",
        "_scheduled",
        "backlog",
        "close_code",
        "closed",
        "expires",
        "feed_on",
        "first_seen",
        "grace_until",
        "id",
        "identity",
        "paused",
        "rooms",
        "socket",
    )

    def __init__(
        self,
        socket: Socket,
        conn_id: str,
        identity: Identity,
        *,
        max_bytes: int,
        max_age_s: float,
        on_gap: Callable[[Connection, str], None],
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket = socket
        self.id = conn_id
        self.identity = identity
        # When the token in force expires (epoch seconds; None for a guest), and until when
        # a fresh `auth` is awaited once the client was told (None: not told yet).
        self.expires: float | None = None
        self.grace_until: float | None = None
        self.rooms: dict[str, RoomCursor] = {}
        self.feed_on = False
        self.first_seen: float | None = None
        self.closed = False
        self.close_code: int | None = None
        # Frames read while an earlier one is still being handled (None: nothing is).
        self.backlog: deque[tuple[bytes, float]] | None = None  # (message, when read)
        self.paused = False  # reading stopped until the backlog is done
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._scheduled = False
        self._max_bytes = max_bytes
        self._max_age = max_age_s
        self._clock = clock
        self._on_gap = on_gap
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        # Since when the socket's write buffer has been non-empty (the client is behind).
        self._behind_since: float | None = None

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
        min_cents: int | None = None,
    ) -> None:
        self.send(encode(ErrorMsg(code, message, ref, retry_after_ms, session, min_cents)))

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
            self._metrics.outbox_depth.observe(max(behind, 0))

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
        behind = self.socket.send(payload, framed)
        # Bound what waits for this client: bytes in the socket's buffer, and how long it
        # has been behind. The kernel's send buffer (socket_send_buffer) comes first.
        if behind <= 0:
            if behind < 0:
                self.closed = True
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

    def close(self, code: int, reason: str = "") -> None:
        """Close at once; safe to call more than once. Answers already queued go out first,
        except to a client closed for being too slow (its queued output is dropped)."""
        if self.closed:
            return
        if code != CLOSE_TOO_SLOW and self._queue:
            self.flush()
        self.closed = True
        self.close_code = code
        if self._metrics is not None and self._queue:
            self._metrics.drops.inc(len(self._queue))
        self._queue.clear()
        self._queued_bytes = 0
        self.backlog = None
        self.socket.close(code, reason)

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


class Connections:
    """A node's open connections, also by user: a personal message (`order`, `outbid`,
    `muted`, …) goes to the user's own connections without a pass over every connection."""

    __slots__ = ("_all", "_by_user")

    def __init__(self) -> None:
        self._all: set[Connection] = set()
        self._by_user: dict[str, set[Connection]] = {}

    def add(self, conn: Connection) -> None:
        self._all.add(conn)
        self._by_user.setdefault(conn.identity.sub, set()).add(conn)

    def discard(self, conn: Connection) -> None:
        self._all.discard(conn)
        self._drop(conn, conn.identity.sub)

    def signed_in(self, conn: Connection, identity: Identity) -> None:
        """`conn` now acts as `identity` (an `auth` frame): it moves under that user."""
        if conn in self._all and conn.identity.sub != identity.sub:
            self._drop(conn, conn.identity.sub)
            self._by_user.setdefault(identity.sub, set()).add(conn)
        conn.identity = identity

    def of(self, user: str) -> list[Connection]:
        """The user's connections (a copy: a send may close and drop one)."""
        return list(self._by_user.get(user, ()))

    def users(self) -> set[str]:
        return set(self._by_user)

    def _drop(self, conn: Connection, user: str) -> None:
        mine = self._by_user.get(user)
        if mine is not None:
            mine.discard(conn)
            if not mine:
                del self._by_user[user]

    def __iter__(self) -> Iterator[Connection]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, conn: object) -> bool:
        return conn in self._all
