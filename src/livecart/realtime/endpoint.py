"""The `/ws` endpoint: authenticate, read frames, decode them in one step, dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import auth, protocol
from ..auth import Action, Identity
from ..catalog import store as catalog
from ..catalog.rules import LIVE
from ..chat import replies
from ..chat.model import ChatRefused
from ..chat.rules.limits import _RecentMap
from ..commerce.rules import Order
from ..limits import CHAT_MAX_CHARS
from ..protocol import (
    CLOSE_FLOODING,
    Ack,
    ErrorMsg,
    Failure,
    Held,
    Hello,
    Joined,
    Left,
    Limits,
    OrderMsg,
    Pong,
    SessionState,
    encode,
)
from ..runtime.node import Node, Unarchived
from . import archive as room_store
from .bus.base import StreamPosition
from .connection import AsgiSocket, Connection, RoomCursor, Socket
from .hub import Room
from .wire import PING_INTERVAL_S, PING_TIMEOUT_S, Handshake, WireProtocol

log = logging.getLogger("livecart.gateway")

# Chat refusals that a retry of the same (user, ref) gets again without running: they depend
# on the message alone. The others (rate_limited, slow_mode, muted, unavailable ...) pass
# with time, so a retry runs again.
_FINAL_CHAT_ERRORS = frozenset({"bad_frame", "blocked", "duplicate", "forbidden"})
RECENT_SCAN = 200  # newest log events scanned for the snapshot's recent chat
_ids = itertools.count(1)
_running: set[asyncio.Task[None]] = set()  # frame handling in flight (kept from the GC)


def _now_ms() -> int:
    return int(time.time() * 1000)


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


class Gateway:
    """The WebSocket side of a node. Both transports (the node's own wire protocol and ASGI)
    hand it whole messages through `received`, in the step that read them. A frame that
    needs no I/O (ping, like, signal, a buy the sold-out gate refuses, ...) is answered in
    that same step; one that waits (chat, join, a buy that reaches PostgreSQL) runs in a task,
    and the frames after it wait their turn, so each connection's frames are handled in
    order."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._keepalive: asyncio.Task[None] | None = None
        self._inbox: deque[tuple[Connection, bytes]] = deque()
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

    # ------------------------------------------------------------ opening and closing

    def connect(self, socket: WireProtocol, hs: Handshake) -> None:
        """A `/ws` handshake on the node's own wire protocol."""
        node = self.node
        if node.draining:
            socket.reject(503, "Service Unavailable")
            node.metrics.closes.labels(str(protocol.CLOSE_GOING_AWAY)).inc()
            return
        socket.accept(hs)
        conn = self._open(socket, f"{node.id}-{next(_ids)}", hs.query.get("token"))
        if conn is not None:
            socket.conn = conn

    async def handle(self, ws: WebSocket) -> None:
        """A `/ws` connection through ASGI (permessage-deflate, or another ASGI server)."""
        node = self.node
        if node.draining:
            await ws.close(protocol.CLOSE_GOING_AWAY)
            node.metrics.closes.labels(str(protocol.CLOSE_GOING_AWAY)).inc()
            return
        await ws.accept()
        socket = AsgiSocket(ws)
        conn = self._open(socket, f"{node.id}-{next(_ids)}", ws.query_params.get("token"))
        if conn is None:
            await socket.finish()
            return
        code = 1000
        try:
            while not conn.closed:
                await socket.readable.wait()
                socket.reading = True
                try:
                    message = await ws.receive()
                except asyncio.CancelledError:
                    if socket.expired:  # a close the client did not read in time
                        break
                    raise
                finally:
                    socket.reading = False
                if message["type"] == "websocket.disconnect":
                    code = message.get("code", 1000)
                    break
                raw: bytes | None = message.get("bytes")
                if raw is None:
                    raw = (message.get("text") or "").encode()
                self.received(conn, raw)
        except WebSocketDisconnect as exc:
            code = exc.code
        finally:
            self.closed(conn, code)
            await socket.finish()

    def _open(self, socket: Socket, conn_id: str, token: str | None) -> Connection | None:
        """Authenticate, register and greet; None (and a 4001 close) for a bad token. A
        connection without a token is a guest at once (`hello`); an `auth` frame may sign it
        in later."""
        node = self.node
        identity, expires, later = auth.guest(conn_id), 0.0, False
        if token:
            try:
                identity, expires = node.verifier.identify(token)
            except auth.KeyMissing:
                later = True  # a key not fetched yet: the JWKS is fetched, frames wait
            except auth.AuthError as exc:
                err = protocol.ErrorMsg("unauthorized", f"invalid token: {exc}")
                socket.send(protocol.frame([encode(err)]), None)
                socket.close(protocol.CLOSE_UNAUTHORIZED, "unauthorized")
                node.metrics.closes.labels(str(protocol.CLOSE_UNAUTHORIZED)).inc()
                return None
        s = node.settings
        conn = Connection(
            socket,
            conn_id,
            identity,
            max_bytes=s.outbox_max_bytes,
            max_age_s=s.outbox_max_age_s,
            on_gap=self._on_gap,
            metrics=node.metrics,
        )
        node.metrics.connections.labels(identity.role).inc()
        log.debug("connected", extra=conn.info())
        node.connections.add(conn)
        if later:
            conn.backlog = deque()
            self._hold(conn, self._open_later(conn, token or ""))
        elif identity.is_guest:
            self._hello(conn)
        else:
            # Frames that arrive meanwhile wait in the backlog.
            conn.backlog = deque()
            self._hold(conn, self._sign_in(conn, identity, expires))
        return conn

    def _hello(self, conn: Connection) -> None:
        s = self.node.settings
        who = conn.identity
        conn.send(
            encode(
                Hello(
                    who.sub,
                    who.role,
                    _now_ms(),
                    Limits(s.max_frame_bytes, CHAT_MAX_CHARS, s.chat_rate_per_s, s.chat_burst),
                    self.node.id,
                )
            )
        )

    def _sign_in(self, conn: Connection, identity: Identity, expires: float) -> Awaitable[None]:
        """`identity` is now the connection's, until `expires`: `hello` says so, and the
        user writer records the user (the returned work)."""
        node = self.node
        if conn.identity.role != identity.role:
            node.metrics.connections.labels(conn.identity.role).dec()
            node.metrics.connections.labels(identity.role).inc()
        conn.identity = identity
        conn.expires = expires
        conn.grace_until = None
        heapq.heappush(self._expiries, (expires, next(_ids), conn))
        self._hello(conn)
        return node.users.add(
            catalog.UserRow(identity.sub, identity.name, identity.role, identity.minor)
        )

    async def _open_later(self, conn: Connection, token: str) -> None:
        """`?token=` signed with a key not cached yet: fetch the key set, then greet or
        close with 4001."""
        try:
            identity, expires = await self.node.verifier.identify_async(token)
        except auth.AuthError as exc:
            conn.send_error("unauthorized", f"invalid token: {exc}")
            conn.close(protocol.CLOSE_UNAUTHORIZED, "unauthorized")
            return
        await self._sign_in(conn, identity, expires)

    async def _auth(self, conn: Connection, token: str) -> None:
        """An `auth` frame: signs a guest connection in, or refreshes the token in force
        (same `sub`, else `forbidden`). A token that does not verify changes nothing."""
        try:
            identity, expires = await self.node.verifier.identify_async(token)
        except auth.AuthError as exc:
            raise Failure("unauthorized", f"invalid token: {exc}") from None
        if not conn.identity.is_guest and identity.sub != conn.identity.sub:
            raise Failure("forbidden", "a connection keeps its user; connect again for another")
        await self._sign_in(conn, identity, expires)

    def _sweep_expiries(self, now: float) -> None:
        """Connections whose token expired are told `unauthorized`; those still without a
        fresh `auth` after auth_grace_s are closed with 4001. Entries left by a refresh or a
        close are skipped (and dropped when they outnumber the connections)."""
        heap = self._expiries
        grace = self.node.settings.auth_grace_s
        while heap and heap[0][0] <= now:
            due, _, conn = heapq.heappop(heap)
            if conn.closed:
                continue
            if conn.grace_until is not None and due == conn.grace_until:
                conn.close(protocol.CLOSE_UNAUTHORIZED, "token expired")
            elif conn.grace_until is None and due == conn.expires:
                conn.send_error(
                    "unauthorized",
                    f"token expired; send auth with a fresh token within {grace:g} s",
                )
                conn.grace_until = now + grace
                heapq.heappush(heap, (conn.grace_until, next(_ids), conn))
        if len(heap) > 2 * len(self.node.connections) + 1024:
            self._expiries = [
                e
                for e in heap
                if not e[2].closed and (e[0] == e[2].expires or e[0] == e[2].grace_until)
            ]
            heapq.heapify(self._expiries)

    async def _expiry_loop(self) -> None:
        interval = min(1.0, self.node.settings.auth_grace_s / 2)
        while True:
            await asyncio.sleep(interval)
            self._sweep_expiries(time.time())

    def closed(self, conn: Connection, code: int) -> None:
        """The client is gone (`code`: what it sent, or what we sent first)."""
        node = self.node
        code = conn.close_code or code
        conn.close_code = code
        conn.closed = True
        conn.backlog = None
        node.metrics.connections.labels(conn.identity.role).dec()
        node.metrics.closes.labels(str(code)).inc()
        log.debug("disconnected", extra={**conn.info(), "code": code})
        node.connections.discard(conn)
        node.ranking.unsubscribe(conn)
        for session_id in list(conn.rooms):
            self._left(conn, session_id)

    async def _keepalive_loop(self) -> None:
        """One sweep for every connection on the wire protocol (uvicorn pings the others)."""
        while True:
            await asyncio.sleep(min(PING_INTERVAL_S, PING_TIMEOUT_S) / 2)
            now = time.monotonic()
            for conn in list(self.node.connections):
                if isinstance(conn.socket, WireProtocol):
                    conn.socket.keepalive(now)

    # ------------------------------------------------------------ frames in

    def received(self, conn: Connection, message: bytes) -> None:
        """One whole client message, as the socket reads it: handled in order with the others
        in the inbox, in this loop iteration when there is time, else in the next ones."""
        inbox = self._inbox
        inbox.append((conn, message))
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
            conn, message = inbox.popleft()
            if not conn.closed:
                try:
                    self._turn(conn, message)
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

    def _turn(self, conn: Connection, message: bytes) -> None:
        """One frame of `conn`, now if its previous one is done, else after it."""
        backlog = conn.backlog
        if backlog is not None:
            backlog.append(message)
            if len(backlog) >= BACKLOG_MAX and not conn.paused:
                conn.paused = True
                conn.socket.pause_reading()
            return
        work = self._frame(conn, message)
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
            work = self._frame(conn, backlog.popleft())
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

    def _frame(self, conn: Connection, raw: bytes) -> Awaitable[Any] | None:
        """Decode and handle one message: None when it is done, else the work still to do."""
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
                return self._buy(conn, frame)
            if self._quick(conn, frame):
                return None
        except Failure as exc:
            self._refused(conn, frame, exc)
            return None
        except Exception:
            self._failed(conn, frame)
            return None
        return self._handle(conn, frame)

    def _buy(self, conn: Connection, frame: protocol.Buy) -> asyncio.Future[Order]:
        """Most of a flash sale's attempts are refused right here, raised by the sold-out
        gate, which is in memory; the others wait in the offer's queue as a future, answered
        when it is done."""
        return self.node.start_buy(
            conn.identity,
            frame.offer,
            frame.qty,
            frame.ref,
            frame.session,
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
        )

    @staticmethod
    def _failed(conn: Connection, frame: protocol.ClientFrame) -> None:
        """A frame whose handling broke unexpectedly: logged, answered `unavailable`."""
        log.exception("frame handling failed", extra=conn.info())
        conn.send_error("unavailable", "internal error; retry later", getattr(frame, "ref", None))

    async def _handle(self, conn: Connection, frame: protocol.ClientFrame) -> None:
        try:
            await self.dispatch(conn, frame)
        except Failure as exc:
            self._refused(conn, frame, exc)
        except Exception:
            self._failed(conn, frame)

    def _quick(self, conn: Connection, frame: protocol.ClientFrame) -> bool:
        """Handle `frame` now if it needs no I/O; False when `dispatch` must."""
        node = self.node
        match frame:
            case protocol.Ping(ref=ref):
                conn.send(encode(Pong(ref)))
                return True
            case protocol.Like() | protocol.Signal():
                self._participant(conn.identity)
                room = node.hub.rooms.get(frame.session)
                if room is None:
                    return False  # `dispatch` loads it
                self._engage(conn, room, frame)
                return True
            case protocol.Feed(on=False):
                node.ranking.unsubscribe(conn)
                return True
        return False

    async def dispatch(self, conn: Connection, frame: protocol.ClientFrame) -> None:
        match frame:
            case protocol.Join():
                await self.join(conn, frame.session, frame.since)
            case protocol.Leave(session=session_id):
                self._left(conn, session_id)
                conn.send(encode(Left(session_id)))
            case protocol.Like() | protocol.Signal():
                self._participant(conn.identity)
                self._engage(conn, await self.node.room(frame.session), frame)
            case protocol.Feed(on=on):
                await self.node.ranking.subscribe(conn, on)
            case protocol.Chat():
                await self.chat(conn, frame)
            case protocol.Bid():
                await self.node.commerce.bid(
                    conn.identity,
                    frame.auction,
                    frame.amount_cents,
                    frame.ref,
                    session_id=frame.session,
                )
                conn.send(encode(Ack(frame.ref)))
            case protocol.Auth(token=token):
                await self._auth(conn, token)
            case protocol.Report():
                room = await self.node.room(frame.session)
                await self.node.moderation.report(conn.identity, room, frame.offset, frame.reason)
                conn.send(encode(Ack(frame.ref)))
            case _:
                raise Failure("unavailable", f"{type(frame).__name__.lower()} is not enabled")

    def _engage(
        self, conn: Connection, room: Room, frame: protocol.Like | protocol.Signal
    ) -> None:
        """A like or a signal, once the room is known."""
        node = self.node
        if isinstance(frame, protocol.Like):
            if room.status != LIVE:
                raise Failure("not_live")
            node.hub.add_likes(room, frame.count)
            node.ranking.record(conn.identity, "like", room.id, count=frame.count)
        else:
            node.ranking.record(conn.identity, frame.name, room.id, product_id=frame.product)
            node.ranking.count_viewer(room.creator, clicks=1)

    # ------------------------------------------------------------ join

    async def join(
        self, conn: Connection, session_id: str, since: protocol.Position | None
    ) -> None:
        node = self.node
        cap = node.settings.max_joined_sessions
        if session_id not in conn.rooms and len(conn.rooms) >= cap:
            raise Failure("limit_reached", f"a connection may join at most {cap} sessions")
        room = await node.room(session_id)
        node.hub.add(conn, room)
        cursor = conn.rooms.get(session_id)
        if cursor is None:
            cursor = conn.rooms[session_id] = RoomCursor()
            if not conn.identity.is_guest:
                node.ranking.record(conn.identity, "join", session_id)
                node.ranking.count_viewer(room.creator, joined=True)
        cursor.offset = None  # hold live events back until the snapshot is queued
        try:
            await self._snapshot(conn, room, since)
        except BaseException:
            # No snapshot went out: do not keep holding events for this room (the client
            # got an error and may join again).
            if cursor.offset is None:
                self.node.hub.remove(conn, session_id)
                conn.rooms.pop(session_id, None)
            raise

    async def _snapshot(
        self, conn: Connection, room: Room, since: protocol.Position | None
    ) -> None:
        node = self.node
        session_id = room.id
        position = None if since is None else StreamPosition(since.epoch, since.offset)
        limit = node.settings.history_size if position is not None else RECENT_SCAN
        history = await node.bus.history(session_id, position, limit)
        recent: list[bytes] = []
        if not history.recovered:
            want = node.settings.recent_chat
            recent = [
                protocol.with_offset(p.offset, p.data)
                for p in history.publications
                if p.kind == "chat"
            ][-want:]
            oldest = (
                history.publications[0].offset
                if history.publications
                else (history.position.offset + 1)
            )
            if len(recent) < want and oldest > 1:
                # The bus's window is short (a restart, a new epoch): older chat comes from the
                # durable log.
                older = await room_store.recent_chat(
                    node.pool, session_id, oldest, want - len(recent)
                )
                recent = [protocol.with_offset(o, body) for o, body in older] + recent
        offers, auction = await node.hub.commerce_state(
            room, history.position.offset, lambda: self._commerce(session_id)
        )
        state = SessionState(
            status=room.status,
            pinned=room.pinned,
            offers=offers,
            auction=auction,
            viewers=node.hub.viewer_count(room),
            likes=room.likes,
            slow=room.slow,
            chat=[msgspec.Raw(m) for m in recent],
        )
        conn.send(
            encode(
                Joined(
                    session_id,
                    history.position.epoch,
                    history.position.offset,
                    history.recovered,
                    state,
                )
            )
        )
        if history.recovered:
            for pub in history.publications:
                conn.send(protocol.with_offset(pub.offset, pub.data))
        conn.position(session_id, history.position.epoch, history.position.offset)

    async def _commerce(
        self, session_id: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        commerce = self.node.commerce
        return await commerce.open_offers(session_id), await commerce.open_auction(session_id)

    def _left(self, conn: Connection, session_id: str) -> None:
        """Leave a room; the time spent in it counts as watch time."""
        self.node.hub.remove(conn, session_id)
        cursor = conn.rooms.pop(session_id, None)
        room = self.node.hub.rooms.get(session_id)
        if cursor is None or room is None or conn.identity.is_guest:
            return
        seconds = time.monotonic() - cursor.joined_at
        self.node.ranking.count_viewer(room.creator, seconds=seconds)
        with contextlib.suppress(Exception):  # a lost watch-time sample must not fail a leave
            self.node.ranking.record(conn.identity, "watch", session_id, minutes=seconds / 60)

    def _on_gap(self, conn: Connection, session_id: str) -> None:
        asyncio.get_running_loop().create_task(self._fill_gap(conn, session_id))

    async def _fill_gap(self, conn: Connection, session_id: str) -> None:
        cursor = conn.rooms.get(session_id)
        if cursor is None or cursor.offset is None:
            return
        since = protocol.Position(cursor.epoch, cursor.offset)
        try:
            await self.join(conn, session_id, since)
        except Exception:
            log.exception("gap fill failed", extra=conn.info())
            conn.close(protocol.CLOSE_GOING_AWAY, "resync failed")

    # ------------------------------------------------------------ chat and likes

    def _participant(self, who: Identity) -> None:
        if who.is_guest:
            raise Failure("unauthorized", "sign in to take part")
        if not auth.can(who, Action.PARTICIPATE):
            raise Failure("forbidden")

    async def chat(self, conn: Connection, frame: protocol.Chat) -> None:
        started = time.perf_counter()
        try:
            self._participant(conn.identity)
            await self._chat_once(conn, frame, started)
        except Failure as exc:
            self.node.metrics.chat_refused.labels(exc.code).inc()
            raise

    async def _chat_once(self, conn: Connection, frame: protocol.Chat, started: float) -> None:
        """Chat is idempotent per (user, ref): a retry gets the first attempt's answer (waiting
        for it while the first runs) and publishes nothing."""
        key = (conn.identity.sub, frame.ref)
        first, fut = self.chat_replies.claim(key)
        while not first:
            reply = await asyncio.shield(fut)
            if reply is not None:
                conn.send(reply)
                return
            first, fut = self.chat_replies.claim(key)  # the first had no final answer: run
        shared = self.node.shared_replies
        if shared is not None:
            try:
                elsewhere = await shared.claim(key)
            except TimeoutError:
                self.chat_replies.settle(key, fut, None)
                raise Failure("unavailable", "this ref is still being handled; retry") from None
            if elsewhere is not None:
                self.chat_replies.settle(key, fut, elsewhere)
                conn.send(elsewhere)
                return
        reply = None
        try:
            unstored = self._unarchived.get(key)
            if unstored is not None:  # published by the first attempt: store it, then ack
                await self._store_chat(key, unstored)
                held, offset = None, unstored.offset
            else:
                held, offset = await self._chat(conn, frame, started)
            reply = encode(Ack(frame.ref, offset) if held is None else Held(frame.ref, held))
            conn.send(reply)
        except Failure as exc:
            if isinstance(exc, Unarchived):
                self._unarchived.put(key, exc.row, time.monotonic())
            if exc.code in _FINAL_CHAT_ERRORS:
                reply = encode(
                    ErrorMsg(exc.code, exc.message, frame.ref, exc.retry_after_ms, frame.session)
                )
            raise
        finally:
            self.chat_replies.settle(key, fut, reply)
            if shared is not None:
                shared.settle(key, reply)

    async def _store_chat(self, key: tuple[str, str], row: room_store.ArchiveRow) -> None:
        try:
            await self.node.archive.append(row)
        except Exception:
            raise Failure("unavailable", "the event could not be stored; retry") from None
        self._unarchived.pop(key)

    async def _chat(
        self, conn: Connection, frame: protocol.Chat, started: float
    ) -> tuple[str | None, int]:
        """(the reason when the message is held, else None; its offset when published)."""
        node = self.node
        who = conn.identity
        text = frame.text.strip()
        if not 1 <= len(text) <= CHAT_MAX_CHARS:
            raise Failure("bad_frame", f"text must be 1-{CHAT_MAX_CHARS} characters after trimming")
        room = await node.room(frame.session)
        if room.status != LIVE:
            raise Failure("not_live", "chat opens when the session is live")
        if conn.first_seen is None:
            conn.first_seen = await node.moderation.first_seen(who.sub)
        try:
            held = await node.moderation.check_chat(
                who, room, text, frame.ref, connection=conn.id, first_seen=conn.first_seen
            )
        except ChatRefused as refused:
            if refused.notice is not None:
                conn.send(encode(refused.notice))
            if refused.close is not None:
                conn.close(refused.close, "flooding")
            raise
        if held is not None:
            node.metrics.chat_refused.labels("held").inc()
            return held, 0  # held for review: only the author is told, with `held`
        try:
            offset = await node.append(
                protocol.ChatEvent(room.id, who.sub, who.name, text, _now_ms()),
                author=who.sub,
                text=text,
            )
        except Failure as exc:
            if not isinstance(exc, Unarchived):  # else viewers have it: it was published
                node.moderation.not_published(who.sub, text)
            raise
        node.metrics.chat_acks.inc()
        node.ranking.record(who, "chat", room.id)
        node.metrics.chat_ack_seconds.observe(time.perf_counter() - started)
        return None, offset
