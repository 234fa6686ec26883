"""What each client frame does once decoded: the ones answered in the read step (`_quick`),
the ones that wait (`dispatch`): join and its snapshot, leave, likes and signals, chat
(idempotent per ref), bids, giveaway entries, reports, feed and auth. A mixin of `Gateway`
(`realtime.endpoint`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from .. import auth, protocol
from ..auth import Action, Identity
from ..catalog.rules import LIVE
from ..chat import replies
from ..chat.model import ChatRefused
from ..chat.rules.limits import _RecentMap
from ..commerce.draw import require_entrant
from ..commerce.rules import claim_candidate, claim_ref
from ..limits import CHAT_MAX_CHARS
from ..protocol import (
    Ack,
    BidAck,
    ErrorMsg,
    Failure,
    Held,
    Joined,
    Left,
    OrderMsg,
    Pong,
    SessionState,
    WaitlistAck,
    encode,
)
from ..runtime.node import Node, Unarchived
from . import archive as room_store
from .bus.base import StreamPosition
from .connection import Connection, RoomCursor
from .lifecycle import _now_ms
from .room import Room

log = logging.getLogger("livecart.gateway")

# Chat refusals that a retry of the same (user, ref) gets again without running: they depend
# on the message alone. The others (rate_limited, slow_mode, muted, unavailable ...) pass
# with time, so a retry runs again.
_FINAL_CHAT_ERRORS = frozenset({"bad_frame", "blocked", "duplicate", "forbidden"})
RECENT_SCAN = 200  # newest log events scanned for the snapshot's recent chat
_ids = itertools.count(1)
_running: set[asyncio.Task[None]] = set()  # frame handling in flight (kept from the GC)


class Handlers:
    """The frame handlers of `Gateway`."""

    node: Node
    chat_replies: replies.ReplyBook
    _unarchived: _RecentMap[tuple[str, str], room_store.ArchiveRow]

    if TYPE_CHECKING:  # the other parts of `Gateway`

        async def _auth(self, conn: Connection, token: str) -> None: ...

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
            case protocol.Delay(session=session_id, ms=ms):
                self._delay(conn, session_id, ms)
                return True
        return False

    def _delay(self, conn: Connection, session_id: str, ms: int) -> None:
        """`delay {session, ms}` (SPEC §12): no answer; refused when out of range or not
        joined, changing nothing."""
        node = self.node
        most = node.settings.max_viewer_delay_ms
        if ms > most:
            raise Failure("bad_frame", f"ms must be 0..{most}")
        cursor = conn.rooms.get(session_id)
        room = node.hub.rooms.get(session_id)
        if cursor is None or room is None or conn not in room.conns:
            raise Failure("not_found", "join the session before reporting its delay")
        node.hub.set_delay(conn, room, cursor, ms)

    async def dispatch(self, conn: Connection, frame: protocol.ClientFrame, arrived: float) -> None:
        """Handle a frame that waits (read at `arrived`, epoch seconds)."""
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
                # The room stays loaded (subscribed) here, so that an `outbid` made on any
                # node reaches this bidder (`Hub.on_outbid`).
                await self.node.room(frame.session)
                placed = await self.node.commerce.bid(
                    conn.identity,
                    frame.auction,
                    frame.amount_cents,
                    frame.ref,
                    session_id=frame.session,
                    max_cents=frame.max_cents,
                    video_at=self.node.hub.video_at(conn, frame.session, arrived, frame.video_at),
                )
                conn.send(
                    encode(BidAck(frame.ref, placed.amount_cents, placed.leading, placed.max_cents))
                )
            case protocol.BuyNow():
                order = await self.node.commerce.buy_now(
                    conn.identity,
                    frame.auction,
                    frame.ref,
                    session_id=frame.session,
                    video_at=self.node.hub.video_at(conn, frame.session, arrived, frame.video_at),
                )
                conn.send(encode(OrderMsg(frame.ref, msgspec.to_builtins(order))))
            case protocol.Accept():
                order = await self.node.commerce.accept_second_chance(
                    conn.identity, frame.auction, frame.ref, session_id=frame.session
                )
                conn.send(encode(OrderMsg(frame.ref, msgspec.to_builtins(order))))
            case protocol.Enter():
                await self.enter(conn, frame)
            case protocol.Auth(token=token):
                await self._auth(conn, token)
            case protocol.Waitlist():
                place = await self.node.commerce.join_waitlist(
                    conn.identity, frame.offer, frame.ref, session_id=frame.session
                )
                conn.send(encode(WaitlistAck(frame.ref, place.position or 0)))
            case protocol.Report():
                room = await self.node.room(frame.session)
                await self.node.moderation.report(conn.identity, room, frame.offset, frame.reason)
                conn.send(encode(Ack(frame.ref)))
            case _:
                raise Failure("unavailable", f"{type(frame).__name__.lower()} is not enabled")

    def _engage(self, conn: Connection, room: Room, frame: protocol.Like | protocol.Signal) -> None:
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
        offers, auction, giveaway = await node.hub.commerce_state(
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
            giveaway=giveaway,
        )
        conn.send(
            encode(
                Joined(
                    session_id,
                    history.position.epoch,
                    history.position.offset,
                    history.recovered,
                    state,
                    round(node.hub.delay_in_force(conn, session_id)),
                )
            )
        )
        if history.recovered:
            for pub in history.publications:
                conn.send(protocol.with_offset(pub.offset, pub.data))
        conn.position(session_id, history.position.epoch, history.position.offset)

    async def _commerce(
        self, session_id: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any] | None]:
        commerce = self.node.commerce
        return (
            await commerce.open_offers(session_id),
            await commerce.open_auction(session_id),
            await commerce.open_giveaway(session_id),
        )

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

    # ------------------------------------------------------------ giveaways

    async def enter(self, conn: Connection, frame: protocol.Enter) -> None:
        """Enter a giveaway: only while this connection is joined to its session (present);
        never the session's own host. Answers `ack {ref}`; entering again is the same entry."""
        who = conn.identity
        room = self.node.hub.rooms.get(frame.session)
        require_entrant(who, creator=None if room is None else room.creator)
        if frame.session not in conn.rooms or room is None:
            raise Failure("forbidden", "join the session to enter its giveaways")
        await self.node.commerce.enter(who, frame.giveaway, session_id=frame.session)
        conn.send(encode(Ack(frame.ref)))

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
        claim: asyncio.Task[None] | None = None
        try:
            unstored = self._unarchived.get(key)
            if unstored is not None:  # published by the first attempt: store it, then ack
                await self._store_chat(key, unstored)
                held, offset = None, unstored.offset
            else:
                held, offset, claim = await self._chat(conn, frame, started)
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
        if claim is not None:  # the connection's next frames wait for the claim's answer
            await asyncio.shield(claim)

    def _start_claim(
        self, conn: Connection, frame: protocol.Chat, text: str
    ) -> asyncio.Task[None] | None:
        """SPEC §13 claim by comment, started once moderation accepted the message and run
        alongside its publishing; None (no task) for a message too long to be a claim word."""
        key = claim_candidate(text)
        if key is None:
            return None
        task = asyncio.get_running_loop().create_task(self._claim(conn, frame, key))
        _running.add(task)
        task.add_done_callback(_running.discard)
        return task

    async def _claim(self, conn: Connection, frame: protocol.Chat, key: str) -> None:
        """A message equal to an open offer's claim word (both normalised) buys one unit
        through the purchase path, ref `claim:<offer>`; the author hears `order {ref, order}`
        or `error {ref, code}` with the chat's ref, as soon as it is decided (before or after
        the chat's `ack`). The message is published either way (viewers see the "+1"s)."""
        node = self.node
        try:
            offer = await node.commerce.claimed_offer(frame.session, key)
            if offer is None:
                return
            order = await node.start_buy(
                conn.identity,
                offer,
                1,
                claim_ref(offer),
                frame.session,
            )
        except Failure as exc:
            conn.send(
                encode(
                    ErrorMsg(exc.code, exc.message, frame.ref, exc.retry_after_ms, frame.session)
                )
            )
            return
        except Exception:
            log.exception("claim failed", extra=conn.info())
            conn.send_error("unavailable", "the claim failed; say it again", frame.ref)
            return
        conn.send(encode(OrderMsg(frame.ref, msgspec.to_builtins(order))))

    async def _store_chat(self, key: tuple[str, str], row: room_store.ArchiveRow) -> None:
        try:
            await self.node.archive.append(row)
        except Exception:
            raise Failure("unavailable", "the event could not be stored; retry") from None
        self._unarchived.pop(key)

    async def _chat(
        self, conn: Connection, frame: protocol.Chat, started: float
    ) -> tuple[str | None, int, asyncio.Task[None] | None]:
        """(the reason when the message is held, else None; its offset when published; the
        claim it makes, if it may be one)."""
        node = self.node
        who = conn.identity
        text = frame.text.strip()
        if not 1 <= len(text) <= CHAT_MAX_CHARS:
            raise Failure("bad_frame", f"text must be 1-{CHAT_MAX_CHARS} characters after trimming")
        room = await node.room(frame.session)
        if room.status != LIVE:
            raise Failure("not_live", "chat opens when the session is live")
        if conn.first_seen is None:  # known from sign-in (`Lifecycle._record_user`) unless
            conn.first_seen = await node.moderation.first_seen(who.sub)  # that write failed
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
            return held, 0, None  # held for review: only the author is told, with `held`
        claim = self._start_claim(conn, frame, text)
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
        return None, offset, claim
