"""Opening and closing `/ws` connections: the handshake's answer (both transports),
authentication (`?token=`, the `auth` frame), the token-expiry sweep and the keepalive
sweep. A mixin of `Gateway` (`realtime.endpoint`)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import auth, protocol
from ..auth import Identity
from ..catalog import store as catalog
from ..limits import CHAT_MAX_CHARS
from ..protocol import Failure, Hello, Limits, encode
from ..runtime.node import Node
from .connection import AsgiSocket, Connection, Socket
from .handshake import Handshake, Upgrading
from .wire import PING_INTERVAL_S, PING_TIMEOUT_S, WireProtocol

log = logging.getLogger("livecart.gateway")
_ids = itertools.count(1)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Lifecycle:
    """How a connection comes, signs in, stays and goes."""

    node: Node
    _expiries: list[tuple[float, int, Connection]]

    if TYPE_CHECKING:  # the other parts of `Gateway`

        def received(
            self, conn: Connection, message: bytes, arrived: float | None = None
        ) -> None: ...
        def _hold(self, conn: Connection, work: Awaitable[Any]) -> None: ...
        def _on_gap(self, conn: Connection, session_id: str) -> None: ...
        def _left(self, conn: Connection, session_id: str) -> None: ...

    def connect(self, socket: Upgrading, hs: Handshake) -> None:
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
            conn.flush()  # `hello` now, in one write with the 101

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
                    Limits(
                        s.max_frame_bytes,
                        CHAT_MAX_CHARS,
                        s.chat_rate_per_s,
                        s.chat_burst,
                        s.max_viewer_delay_ms,
                        s.trip_allowance_ms,
                    ),
                    self.node.id,
                )
            )
        )

    def _sign_in(self, conn: Connection, identity: Identity, expires: float) -> Awaitable[None]:
        """`identity` is now the connection's, until `expires`: `hello` says so, and the
        user writer records the user (the returned work), learning when the platform first
        saw them (for moderation: the connection's first chat message asks no query)."""
        node = self.node
        if conn.identity.role != identity.role:
            node.metrics.connections.labels(conn.identity.role).dec()
            node.metrics.connections.labels(identity.role).inc()
        node.connections.signed_in(conn, identity)
        conn.expires = expires
        conn.grace_until = None
        heapq.heappush(self._expiries, (expires, next(_ids), conn))
        self._hello(conn)
        return self._record_user(conn, identity)

    async def _record_user(self, conn: Connection, identity: Identity) -> None:
        row = catalog.UserRow(identity.sub, identity.name, identity.role, identity.minor)
        conn.first_seen = await self.node.users.add_user(row)

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
