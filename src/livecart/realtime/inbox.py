"""The gateway's inbox and each connection's turn: whole messages are queued as the sockets
read them, handled in slices of loop time, each connection's frames in order (a frame that
waits holds the turn; those behind it wait in its backlog). Decoding and the purchase path
live here too, since a buy is answered in the step that read it. A mixin of `Gateway`
(`realtime.endpoint`)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

import msgspec

from .. import protocol
from ..commerce.rules import Order
from ..protocol import CLOSE_FLOODING, Failure, OrderMsg, encode
from ..runtime.node import Node
from .connection import Connection

log = logging.getLogger("livecart.gateway")
_running: set[asyncio.Task[None]] = set()  # frame handling in flight (kept from the GC)

# Frames read while one is being handled wait on the connection; past this many the socket
# stops reading (TCP pushes back on the client) until they are done.
BACKLOG_MAX = 64
# Frames are read as they come but handled in slices of at most this much loop time, so that
# a burst of thousands of clients does not starve the other I/O of the node (its database
# and Redis round trips, which a burst's own purchases wait for).
SLICE_S = 0.002
# Frames read but not yet handled, over all connections; past this the sockets that add to
# it stop reading until it is half done.
INBOX_MAX = 8192


class Inbox:
    """Frames in: queued, taken in slices, handled in order per connection."""

    node: Node
    _inbox: deque[tuple[Connection, bytes, float]]
    _inbox_paused: list[Connection]
    _taking: bool

    if TYPE_CHECKING:  # the other parts of `Gateway`

        def _quick(self, conn: Connection, frame: protocol.ClientFrame) -> bool: ...
        async def dispatch(
            self, conn: Connection, frame: protocol.ClientFrame, arrived: float
        ) -> None: ...

    def received(self, conn: Connection, message: bytes, arrived: float | None = None) -> None:
        """One whole client message, as the socket reads it: handled in order with the others
        in the inbox, in this loop iteration when there is time, else in the next ones.
        `arrived` (epoch seconds; default now) is when its bytes were read: buys and bids are
        judged from it (video time), not from when their turn comes."""
        inbox = self._inbox
        inbox.append((conn, message, time.time() if arrived is None else arrived))
        if len(inbox) > INBOX_MAX and not conn.paused:
            conn.paused = True
            conn.socket.pause_reading()
            self._inbox_paused.append(conn)
        if not self._taking:
            self._taking = True
            asyncio.get_running_loop().call_soon(self._take)

    def fragment(self, conn: Connection) -> None:
        """One more frame of a message still being received: it counts toward the flood
        limit like a whole message does (which may close the connection with 4008)."""
        if self.node.moderation.flooding(conn.id):
            conn.close(CLOSE_FLOODING, "flooding")

    def _take(self) -> None:
        """Handle inbox frames for at most SLICE_S, then let the loop poll again."""
        inbox = self._inbox
        deadline = time.perf_counter() + SLICE_S
        while inbox:
            conn, message, arrived = inbox.popleft()
            if not conn.closed:
                try:
                    self._turn(conn, message, arrived)
                except Exception:  # one frame's failure must not stop the inbox
                    log.exception("frame handling failed", extra=conn.info())
            if time.perf_counter() > deadline:
                break
        if inbox:
            asyncio.get_running_loop().call_soon(self._take)
            return
        self._taking = False
        if self._inbox_paused:
            paused, self._inbox_paused = self._inbox_paused, []
            for conn in paused:
                if conn.backlog is None and not conn.closed:
                    conn.paused = False
                    conn.socket.resume_reading()

    def _turn(self, conn: Connection, message: bytes, arrived: float) -> None:
        """One frame of `conn`, now if its previous one is done, else after it."""
        backlog = conn.backlog
        if backlog is not None:
            backlog.append((message, arrived))
            if len(backlog) >= BACKLOG_MAX and not conn.paused:
                conn.paused = True
                conn.socket.pause_reading()
            return
        work = self._frame(conn, message, arrived)
        if work is not None:
            conn.backlog = deque()
            self._hold(conn, work)

    def _hold(self, conn: Connection, work: Awaitable[Any]) -> None:
        """`work` holds the connection's turn; the frames behind it wait in the backlog until
        `_next`. A purchase (a future) calls `_next` from its answer; a coroutine runs in a
        task that does."""
        if not isinstance(work, asyncio.Future):
            self._spawn(self._drain(conn, work))

    async def _drain(self, conn: Connection, work: Awaitable[Any]) -> None:
        try:
            await work
        except Exception:
            log.exception("frame handling failed", extra=conn.info())
        self._next(conn)

    def _next(self, conn: Connection) -> None:
        """The connection's turn is free: handle what waits, in order, until a frame has to
        wait again or none is left."""
        while not conn.closed:
            backlog = conn.backlog
            if not backlog:
                break
            work = self._frame(conn, *backlog.popleft())
            if work is not None:
                self._hold(conn, work)
                return
        conn.backlog = None
        if conn.paused and not conn.closed:
            conn.paused = False
            conn.socket.resume_reading()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        _running.add(task)
        task.add_done_callback(_running.discard)

    def _frame(self, conn: Connection, raw: bytes, arrived: float) -> Awaitable[Any] | None:
        """Decode and handle one message (read at `arrived`, epoch seconds): None when it is
        done, else the work still to do."""
        node = self.node
        frames_in = node.metrics.frames_in
        max_bytes = node.settings.max_frame_bytes
        if len(raw) > max_bytes:
            frames_in.labels("invalid").inc()
            conn.send_error("too_large", f"frames are limited to {max_bytes} bytes")
            return None
        try:
            frame = protocol.decode_frame(raw)
        except Failure as exc:
            frames_in.labels("invalid").inc()
            conn.send_error(exc.code, exc.message, protocol.frame_ref(exc))
            return None
        frames_in.labels(type(frame).__struct_config__.tag).inc()
        if not isinstance(frame, protocol.Chat) and node.moderation.flooding(conn.id):
            conn.close(CLOSE_FLOODING, "flooding")
            return None
        try:
            if isinstance(frame, protocol.Buy):
                return self._buy(conn, frame, arrived)
            if self._quick(conn, frame):
                return None
        except Failure as exc:
            self._refused(conn, frame, exc)
            return None
        except Exception:
            self._failed(conn, frame)
            return None
        return self._handle(conn, frame, arrived)

    def _buy(self, conn: Connection, frame: protocol.Buy, arrived: float) -> asyncio.Future[Order]:
        """Most of a flash sale's attempts are refused right here, raised by the sold-out
        gate, which is in memory; the others wait in the offer's queue as a future, answered
        when it is done."""
        return self.node.start_buy(
            conn.identity,
            frame.offer,
            frame.qty,
            frame.ref,
            frame.session,
            video_at=self.node.hub.video_at(conn, frame.session, arrived, frame.video_at),
            then=functools.partial(self._bought, conn, frame),
        )

    def _bought(self, conn: Connection, frame: protocol.Buy, bought: asyncio.Future[Order]) -> None:
        """The purchase's answer; then the connection's next frames."""
        exc = asyncio.CancelledError() if bought.cancelled() else bought.exception()
        if exc is None:
            conn.send(encode(OrderMsg(frame.ref, msgspec.to_builtins(bought.result()))))
        elif isinstance(exc, Failure):
            self._refused(conn, frame, exc)
        else:
            log.error("buy failed", exc_info=exc, extra=conn.info())
            conn.send_error("unavailable", "internal error; retry with the same ref", frame.ref)
        self._next(conn)

    @staticmethod
    def _refused(conn: Connection, frame: protocol.ClientFrame, exc: Failure) -> None:
        conn.send_error(
            exc.code,
            exc.message,
            getattr(frame, "ref", None),
            retry_after_ms=exc.retry_after_ms,
            session=getattr(frame, "session", None),
            min_cents=exc.min_cents,
        )

    @staticmethod
    def _failed(conn: Connection, frame: protocol.ClientFrame) -> None:
        """A frame whose handling broke unexpectedly: logged, answered `unavailable`."""
        log.exception("frame handling failed", extra=conn.info())
        conn.send_error("unavailable", "internal error; retry later", getattr(frame, "ref", None))

    async def _handle(self, conn: Connection, frame: protocol.ClientFrame, arrived: float) -> None:
        try:
            await self.dispatch(conn, frame, arrived)
        except Failure as exc:
            self._refused(conn, frame, exc)
        except Exception:
            self._failed(conn, frame)
