"""The `/ws` endpoint: authenticate, read frames, decode them in one step, dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import auth, protocol
from ..auth import Action, Identity
from ..bus.base import StreamPosition
from ..node import Node
from ..protocol import (
    Ack,
    Failure,
    Hello,
    Joined,
    Left,
    Limits,
    OrderMsg,
    Pong,
    SessionState,
    encode,
)
from ..store import catalog
from ..store import rooms as room_store
from .connection import Connection, RoomCursor
from .hub import Room

log = logging.getLogger("livecart.gateway")

CHAT_MAX_CHARS = 500
RECENT_SCAN = 200  # newest log events scanned for the snapshot's recent chat
_ids = itertools.count(1)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Gateway:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def handle(self, ws: WebSocket) -> None:
        node = self.node
        conn_id = f"{node.id}-{next(_ids)}"
        token = ws.query_params.get("token")
        if node.draining:
            await ws.close(protocol.CLOSE_GOING_AWAY)
            node.metrics.closes.labels(str(protocol.CLOSE_GOING_AWAY)).inc()
            return
        try:
            identity = auth.verify(node.jwt_secret, token) if token else auth.guest(conn_id)
        except auth.AuthError as exc:
            await ws.accept()
            err = protocol.ErrorMsg("unauthorized", f"invalid token: {exc}")
            await ws.send_text(protocol.frame([encode(err)]).decode())
            await ws.close(protocol.CLOSE_UNAUTHORIZED, "unauthorized")
            node.metrics.closes.labels(str(protocol.CLOSE_UNAUTHORIZED)).inc()
            return
        await ws.accept()
        s = node.settings
        conn = Connection(
            ws,
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
        conn.send(
            encode(
                Hello(
                    identity.sub,
                    identity.role,
                    _now_ms(),
                    Limits(s.max_frame_bytes, CHAT_MAX_CHARS, 1.0, 5),
                    node.id,
                )
            )
        )
        try:
            if not identity.is_guest:
                await catalog.upsert_user(
                    node.pool, identity.sub, identity.name, identity.role, identity.minor
                )
            await self._read_loop(conn)
        except WebSocketDisconnect as exc:
            conn.close_code = conn.close_code or exc.code
        finally:
            node.metrics.connections.labels(identity.role).dec()
            node.metrics.closes.labels(str(conn.close_code or 1000)).inc()
            log.debug("disconnected", extra={**conn.info(), "code": conn.close_code or 1000})
            conn.closed = True
            node.connections.discard(conn)
            node.ranking.forget(conn)
            for session_id in list(conn.rooms):
                await self._left(conn, session_id)
            if conn.writer is not None:
                conn.writer.cancel()
            if conn.closing is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.closing, 2)

    async def _read_loop(self, conn: Connection) -> None:
        max_bytes = self.node.settings.max_frame_bytes
        metrics = self.node.metrics
        while not conn.closed:
            message = await conn.ws.receive()
            if message["type"] == "websocket.disconnect":
                conn.close_code = conn.close_code or message.get("code", 1000)
                return
            raw: bytes | None = message.get("bytes")
            if raw is None:
                raw = (message.get("text") or "").encode()
            if len(raw) > max_bytes:
                metrics.frames_in.labels("invalid").inc()
                conn.send_error("too_large", f"frames are limited to {max_bytes} bytes")
                continue
            try:
                frame = protocol.decode_frame(raw)
            except Failure as exc:
                metrics.frames_in.labels("invalid").inc()
                conn.send_error(exc.code, exc.message, protocol.frame_ref(exc))
                continue
            metrics.frames_in.labels(type(frame).__struct_config__.tag).inc()
            ref = getattr(frame, "ref", None)
            if not isinstance(frame, protocol.Chat) and self.node.moderation.flooding(conn):
                return
            try:
                await self.dispatch(conn, frame)
            except Failure as exc:
                conn.send_error(
                    exc.code,
                    exc.message,
                    ref,
                    retry_after_ms=exc.retry_after_ms,
                    session=getattr(frame, "session", None),
                )
            except Exception:
                log.exception("frame handling failed", extra=conn.info())
                conn.send_error("unavailable", "internal error; retry later", ref)

    async def dispatch(self, conn: Connection, frame: protocol.ClientFrame) -> None:
        match frame:
            case protocol.Ping(ref=ref):
                conn.send(encode(Pong(ref)))
            case protocol.Join():
                await self.join(conn, frame.session, frame.since)
            case protocol.Leave(session=session_id):
                await self._left(conn, session_id)
                conn.send(encode(Left(session_id)))
            case protocol.Signal():
                self._participant(conn.identity)
                room = await self.node.room(frame.session)
                await self.node.ranking.record(
                    conn.identity, frame.name, room.id, product_id=frame.product
                )
                self.node.ranking.count_viewer(room.creator, clicks=1)
            case protocol.Feed(on=on):
                await self.node.ranking.subscribe(conn, on)
            case protocol.Chat():
                await self.chat(conn, frame)
            case protocol.Like():
                await self.like(conn, frame)
            case protocol.Buy():
                order = await self.node.buy(
                    conn.identity, frame.offer, frame.qty, frame.ref, frame.session
                )
                conn.send(encode(OrderMsg(frame.ref, msgspec.to_builtins(order))))
            case protocol.Bid():
                await self.node.commerce.bid(
                    conn.identity,
                    frame.auction,
                    frame.amount_cents,
                    frame.ref,
                    session_id=frame.session,
                )
                conn.send(encode(Ack(frame.ref)))
            case protocol.Report():
                room = await self.node.room(frame.session)
                await self.node.moderation.report(conn.identity, room, frame.offset, frame.reason)
                conn.send(encode(Ack(frame.ref)))
            case _:
                raise Failure("unavailable", f"{type(frame).__name__.lower()} is not enabled")

    # ------------------------------------------------------------ join

    async def join(
        self, conn: Connection, session_id: str, since: protocol.Position | None
    ) -> None:
        node = self.node
        room = await node.room(session_id)
        node.hub.add(conn, room)
        cursor = conn.rooms.get(session_id)
        if cursor is None:
            cursor = conn.rooms[session_id] = RoomCursor()
            if not conn.identity.is_guest:
                await node.ranking.record(conn.identity, "join", session_id)
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
        state = SessionState(
            status=room.status,
            pinned=room.pinned,
            offers=await node.commerce.open_offers(session_id),
            auction=await node.commerce.open_auction(session_id),
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

    async def _left(self, conn: Connection, session_id: str) -> None:
        """Leave a room; the time spent in it counts as watch time."""
        self.node.hub.remove(conn, session_id)
        cursor = conn.rooms.pop(session_id, None)
        room = self.node.hub.rooms.get(session_id)
        if cursor is None or room is None or conn.identity.is_guest:
            return
        seconds = time.monotonic() - cursor.joined_at
        self.node.ranking.count_viewer(room.creator, seconds=seconds)
        with contextlib.suppress(Exception):  # a lost watch-time sample must not fail a leave
            await self.node.ranking.record(conn.identity, "watch", session_id, minutes=seconds / 60)

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
            await self._chat(conn, frame, started)
        except Failure as exc:
            self.node.metrics.chat_refused.labels(exc.code).inc()
            raise

    async def _chat(self, conn: Connection, frame: protocol.Chat, started: float) -> None:
        node = self.node
        who = conn.identity
        self._participant(who)
        text = frame.text.strip()
        if not 1 <= len(text) <= CHAT_MAX_CHARS:
            raise Failure("bad_frame", f"text must be 1-{CHAT_MAX_CHARS} characters after trimming")
        room = await node.room(frame.session)
        if room.status != "live":
            raise Failure("not_live", "chat opens when the session is live")
        if await node.moderation.check_chat(conn, room, text, frame.ref):
            node.metrics.chat_refused.labels("held").inc()
            return  # held for review: only the author is told, with `held`
        try:
            offset = await node.append(
                room.id,
                "chat",
                {"user": who.sub, "name": who.name, "text": text, "at": _now_ms()},
                author=who.sub,
                text=text,
            )
        except Failure:
            node.moderation.not_published(who.sub, text)
            raise
        conn.send(encode(Ack(frame.ref, offset)))
        node.metrics.chat_acks.inc()
        await node.ranking.record(who, "chat", room.id)
        node.metrics.chat_ack_seconds.observe(time.perf_counter() - started)

    async def like(self, conn: Connection, frame: protocol.Like) -> None:
        self._participant(conn.identity)
        room = await self.node.room(frame.session)
        if room.status != "live":
            raise Failure("not_live")
        self.node.hub.add_likes(room, frame.count)
        await self.node.ranking.record(conn.identity, "like", room.id, count=frame.count)
