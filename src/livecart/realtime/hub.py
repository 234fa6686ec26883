"""Rooms on this node: who is joined, each room's cached state, fan-out of log events and the
coalesced state events (viewers, likes, stock)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ..protocol import (
    ChatSampled,
    GiveawayEnded,
    Likes,
    Pinned,
    SlowEvent,
    Sold,
    StatusEvent,
    Stock,
    Viewers,
    encode,
    frame,
    with_offset,
    ws_text_frame,
)
from ..runtime.metrics import Metrics
from .bus.base import Bus, Publication, StreamPosition
from .connection import Connection, RoomCursor
from .delay import ViewerDelay, bucket_of, judged_video_at
from .lag import Frame, Lag, deliver_each, deliver_sampled
from .room import Entry, Room

log = logging.getLogger("livecart.gateway")

# A cluster sync that takes longer must not hold up the coalesced state events.
SYNC_TIMEOUT_S = 1.0
# Room events that change what a join snapshot shows of commerce.
COMMERCE_EVENTS = frozenset(
    (
        "offer",
        "offer_ended",
        "sold",
        "auction",
        "bid",
        "auction_ended",
        "giveaway",
        "giveaway_ended",
    )
)
# The longest a busy room's tick is stretched to (see Hub.tick_of).
MAX_TICK_S = 0.25
# The longest a big room's viewer count waits to go out (see Hub._count_every).
MAX_COUNT_EVERY_S = 2.0


class _ChatSeen(msgspec.Struct):
    """What the hub reads of a `chat` event; a tombstone (redacted while a node caught up
    with the log) has neither."""

    user: str | None = None
    at: int | None = None


# Room events read back from the bus, typed (the offset a delivery carries is ignored).
_state = msgspec.json.Decoder(StatusEvent | Pinned | SlowEvent)
_sold = msgspec.json.Decoder(Sold)
_drawn = msgspec.json.Decoder(GiveawayEnded)
_chat = msgspec.json.Decoder(_ChatSeen)

RoomLoader = Callable[[str], Awaitable[Room | None]]


class Hub:
    def __init__(
        self,
        bus: Bus,
        load: RoomLoader,
        *,
        coalesce_s: float = 0.2,
        tick_s: float = 0.05,
        writes_per_s: int = 0,
        chat_budget: float = 30.0,
        delay_bucket_ms: int = 250,
        max_delay_ms: int = 15_000,
        trip_allowance_ms: int = 0,
        metrics: Metrics | None = None,
    ) -> None:
        self.bus = bus
        self._load = load
        self._coalesce_s = coalesce_s
        self._tick_s = tick_s
        self._writes_per_s = writes_per_s
        self._chat_budget = chat_budget
        self._bucket_ms = delay_bucket_ms
        self._max_delay_ms = max_delay_ms
        self._trip_allowance_s = trip_allowance_ms / 1000
        self._metrics = metrics
        self._random = random.Random()
        self.rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Future[Room | None]] = {}
        self._task: asyncio.Task[None] | None = None
        self.on_likes_flush: Callable[[dict[str, int]], Awaitable[None]] | None = None
        self.on_bus_lag: Callable[[float], None] | None = None
        # A sale on any node: this node's viewers get the offer's new `stock`.
        self.on_sold: Callable[[str, str], None] | None = None
        # An offer opened or ended in the session (any node): claim words may have changed.
        self.on_offers: Callable[[str], None] | None = None
        # A giveaway drawn on any node: this node's winners get their `order`.
        self.on_drawn: Callable[[GiveawayEnded], None] | None = None
        # Cluster mode: report local viewer counts, get totals over nodes (once a second).
        self.sync_viewers: Callable[[dict[str, int]], Awaitable[dict[str, int]]] | None = None
        # Cluster mode: add this node's new likes, get totals over nodes (every tick).
        self.sync_likes: (
            Callable[[dict[str, tuple[int, int]]], Awaitable[dict[str, int]]] | None
        ) = None
        self._reported: set[str] = set()

    async def start(self) -> None:
        await self.bus.start(self.on_publication)
        self._task = asyncio.create_task(self._coalesce_loop(), name="hub-coalesce")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush_likes()
        await self.bus.stop()

    async def room(self, session_id: str) -> Room | None:
        """The cached room, loading it (once, however many callers wait) when unknown."""
        room = self.rooms.get(session_id)
        if room is not None:
            return room
        fut = self._loading.get(session_id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._loading[session_id] = fut
            try:
                loaded = await self._load(session_id)
                if loaded is not None:
                    self.rooms[session_id] = loaded
                    await self.bus.subscribe(session_id)
                fut.set_result(loaded)
            except Exception as exc:
                fut.set_exception(exc)
                raise
            finally:
                del self._loading[session_id]
        return await asyncio.shield(fut)

    def add(self, conn: Connection, room: Room) -> None:
        room.conns.add(conn)

    def remove(self, conn: Connection, session_id: str) -> None:
        room = self.rooms.get(session_id)
        if room is not None:
            room.conns.discard(conn)
            if room.lag is not None:
                room.lag.drop(conn)

    # ------------------------------------------------------------ video time (SPEC §12)

    def set_delay(self, conn: Connection, room: Room, cursor: RoomCursor, ms: int) -> None:
        """A viewer's report of its delay (validated: 0..max): smoothed, and the viewer put
        in the bucket of its delay in force (at once when it falls; climbing, bucket by bucket
        as the room sends)."""
        now = asyncio.get_running_loop().time()
        if cursor.delay is None:
            cursor.delay = ViewerDelay()
            cursor.delay.at = now
        cursor.delay.report(ms, now)
        lag = room.lag
        if lag is None:
            lag = room.lag = Lag(room.id, self._bucket_ms, self._max_delay_ms / 1000 + 1.0)
        lag.place(conn, cursor, bucket_of(cursor.delay.in_force(now), self._bucket_ms), now)
        if cursor.delay.rising(now):
            lag.ramping.add(conn)
        else:
            lag.ramping.discard(conn)
        if lag.idle:
            self._end_lag(room)

    def delay_in_force(self, conn: Connection, session_id: str) -> float:
        """The viewer's delay in force in a session (ms; 0 when never reported)."""
        cursor = conn.rooms.get(session_id)
        if cursor is None or cursor.delay is None:
            return 0.0
        return cursor.delay.in_force(asyncio.get_running_loop().time())

    def video_at(
        self, conn: Connection, session_id: str, arrived: float, pressed_ms: int | None = None
    ) -> float:
        """The video time a buy or bid of this viewer is judged at (epoch seconds): its
        arrival (`arrived`, epoch seconds when its bytes were read) minus the delay in force
        then (0 when never reported), or the picture time it says it was made at
        (`pressed_ms`, `video_at` of the frame) within the trip allowance before that
        (`delay.judged_video_at`)."""
        cursor = conn.rooms.get(session_id)
        latest = arrived
        if cursor is not None and cursor.delay is not None:
            ago = max(0.0, time.time() - arrived)
            then = asyncio.get_running_loop().time() - ago
            latest -= cursor.delay.in_force(then) / 1000
        if pressed_ms is None or not self._trip_allowance_s:
            return latest
        return judged_video_at(latest, pressed_ms / 1000, self._trip_allowance_s)

    def _end_lag(self, room: Room) -> None:
        lag = room.lag
        if lag is not None and lag.idle:
            if isinstance(lag.handle, asyncio.TimerHandle):
                lag.handle.cancel()
            room.lag = None

    def _release(self, room: Room) -> None:
        """Send each delay bucket of the room what is due to it, then wait for the next."""
        lag = room.lag
        if lag is None:
            return
        lag.handle = None
        now = asyncio.get_running_loop().time()
        cursor_of = functools.partial(_cursor_of, room.id)
        lag.advance(now, cursor_of, self._bucket_ms)
        lag.release(now)
        lag.prune(now)
        if lag.writes and self._metrics is not None:
            self._metrics.frames_out.inc(lag.writes)
        lag.writes = 0
        if lag.idle and not lag.timeline:
            self._end_lag(room)
            return
        self._release_later(room, now)

    def _release_later(self, room: Room, now: float) -> None:
        lag = room.lag
        if lag is None or lag.handle is not None:
            return
        due = lag.next_due()
        if due is None:
            if lag.idle:
                self._end_lag(room)
            return
        # Several buckets due close together go out in one pass (at most one per tick).
        due = max(due, now + self._tick_s / 2)
        lag.handle = asyncio.get_running_loop().call_at(due, self._release, room)

    # ------------------------------------------------------------ fan-out

    def on_publication(self, session_id: str, pub: Publication) -> None:
        room = self.rooms.get(session_id)
        if room is None:
            return
        if room.commerce is not None:
            covered, read = room.commerce
            if pub.kind in COMMERCE_EVENTS or pub.offset != covered + 1:
                room.commerce = None
            else:  # nothing the read shows has changed up to here
                room.commerce = (pub.offset, read)
        try:
            if pub.kind in ("status", "pinned", "slow"):
                self._apply(room, _state.decode(pub.data))
            elif pub.kind in ("offer", "offer_ended") and self.on_offers is not None:
                self.on_offers(session_id)
            elif pub.kind == "sold" and self.on_sold is not None:
                self.on_sold(session_id, _sold.decode(pub.data).offer)
            elif pub.kind == "giveaway_ended" and self.on_drawn is not None:
                self.on_drawn(_drawn.decode(pub.data))
            elif pub.kind == "chat" and self.on_bus_lag is not None and pub.offset % 16 == 0:
                # A sample of chat events: their `at` is stamped just before publishing.
                at = _chat.decode(pub.data).at
                if at is not None:
                    self.on_bus_lag(max(0.0, time.time() - at / 1000))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("unreadable %s event at %d: %s", pub.kind, pub.offset, exc)
        room.batch.append((pub.offset, with_offset(pub.offset, pub.data), pub.kind == "chat"))
        self._schedule(room)

    def broadcast(self, room: Room, message: bytes) -> None:
        """A message for every viewer of the room that is not a log event (no offset)."""
        room.batch.append((None, message, False))
        self._schedule(room)

    def _schedule(self, room: Room) -> None:
        """An idle room sends at once (after this loop step, so that what arrives together
        leaves together); a busy one at most once per tick."""
        if room.flush_at is not None:
            return
        loop = asyncio.get_running_loop()
        wait = room.last_flush + self.tick_of(room) - loop.time()
        if wait > 0:
            room.flush_at = loop.call_later(wait, self.flush, room)
        else:
            room.flush_at = loop.call_soon(self.flush, room)

    def tick_of(self, room: Room) -> float:
        """How often a busy room sends: `tick_s`, stretched for a room with so many viewers
        here that its frames would exceed `writes_per_s` (each frame then carries more events;
        a write per viewer per frame is most of the cost of fan-out)."""
        if not self._writes_per_s:
            return self._tick_s
        return max(self._tick_s, min(MAX_TICK_S, len(room.conns) / self._writes_per_s))

    def flush(self, room: Room) -> None:
        """Send the room's batch: one frame, encoded once, written to every viewer whose
        position is exactly where the batch starts; the others take the careful path. Viewers
        with a delay get the same frame later, from the room's `Lag`."""
        room.flush_at = None
        batch, room.batch = room.batch, []
        now = asyncio.get_running_loop().time()
        room.last_flush = now
        if not batch or not room.conns:
            return
        offsets = [o for o, _, _ in batch if o is not None]
        messages, skipped, own = self._sample(room, batch)
        payload = frame(messages)
        framed = ws_text_frame(payload)
        first = offsets[0] - 1 if offsets else None
        last = offsets[-1] if offsets else None
        conns: set[Connection] | list[Connection] = room.conns
        lag = room.lag
        if lag is not None:
            lag.advance(now, functools.partial(_cursor_of, room.id), self._bucket_ms)
            lag.append(Frame(now, batch, skipped, own, payload, framed, first, last))
            if lag.members:
                members = lag.members
                conns = [c for c in room.conns if c not in members]
            self._release_later(room, now)
        shared = 0
        for conn in list(conns):
            cursor = conn.rooms.get(room.id)
            if cursor is None or conn.closed:
                continue
            if first is not None:
                if cursor.offset != first or cursor.resyncing:
                    deliver_each(conn, room.id, batch)
                    continue
                cursor.offset = last
            mine = own.get(conn.identity.sub) if own else None
            if mine is not None:
                deliver_sampled(conn, room.id, batch, skipped, mine)
            elif conn.write_shared(payload, framed):
                shared += 1
        if self._metrics is not None and shared:
            self._metrics.frames_out.inc(shared)
            self._metrics.messages_out.inc(shared * len(messages))
            self._metrics.bytes_out.inc(shared * len(framed))

    def _sample(
        self, room: Room, batch: list[Entry]
    ) -> tuple[list[bytes], set[int], dict[str, set[int]]]:
        """Huge rooms: when more chat messages were published in the last second than the
        display budget, keep each with probability budget/rate (a fair share, the same for
        every viewer so the frame stays shared), never more than the budget in any second,
        and announce what was skipped. Non-chat events are never sampled. Returns the
        messages to send, the skipped offsets and, per author of a skipped message, the
        offsets that author still gets (their own)."""
        messages = [m for _, m, _ in batch]
        budget = self._chat_budget
        if budget <= 0:
            return messages, set(), {}
        now = asyncio.get_running_loop().time()
        seen, shown = room.chat_seen, room.chat_kept
        while seen and seen[0] <= now - 1.0:
            seen.popleft()
        while shown and shown[0] <= now - 1.0:
            shown.popleft()
        chats = sum(1 for _, _, chat in batch if chat)
        seen.extend([now] * chats)
        if len(seen) <= budget:
            shown.extend([now] * chats)
            return messages, set(), {}
        keep = budget / len(seen)
        skipped: set[int] = set()
        own: dict[str, set[int]] = {}
        kept: list[bytes] = []
        for offset, message, chat in batch:
            if not chat or offset is None:
                kept.append(message)
            elif len(shown) < budget and self._random.random() < keep:
                shown.append(now)
                kept.append(message)
            else:
                skipped.add(offset)
                author = _chat.decode(message).user
                if author is not None:
                    own.setdefault(author, set()).add(offset)
        if not skipped:
            return messages, skipped, own
        kept.append(encode(ChatSampled(room.id, len(skipped))))
        if self._metrics is not None:
            self._metrics.chat_sampled.inc(len(skipped))
        return kept, skipped, own

    @staticmethod
    def _apply(room: Room, event: StatusEvent | Pinned | SlowEvent) -> None:
        if type(event) is StatusEvent:
            room.status = event.status
        elif type(event) is Pinned:
            room.pinned = event.product
        elif type(event) is SlowEvent:
            room.slow = event.seconds
            room.shield = event.shield

    def commerce_state(
        self, room: Room, position: int, load: Callable[[], Awaitable[Any]]
    ) -> Awaitable[Any]:
        """The commerce part of a join snapshot taken at `position`: one read shared by every
        join whose position it covers. A read started after `position` was read from the log
        reflects every event up to it (events are published after their commit); it keeps
        covering later events until one of them is a commerce event (or stock moves)."""
        cached = room.commerce
        if cached is not None and position <= cached[0]:
            return asyncio.shield(cached[1])
        read = asyncio.ensure_future(load())
        room.commerce = (position, read)
        read.add_done_callback(functools.partial(self._commerce_read, room))
        return asyncio.shield(read)

    @staticmethod
    def _commerce_read(room: Room, read: asyncio.Future[Any]) -> None:
        failed = read.cancelled() or read.exception() is not None
        if failed and room.commerce is not None and room.commerce[1] is read:
            room.commerce = None  # the next join reads again

    def on_epoch(self, session_id: str, position: StreamPosition) -> None:
        """A room's history was lost and restarted: every viewer gets a fresh snapshot."""
        room = self.rooms.get(session_id)
        if room is not None:
            room.commerce = None
            for conn in list(room.conns):
                conn.resync(session_id)

    # ------------------------------------------------------------ coalesced state

    def add_likes(self, room: Room, count: int) -> None:
        room.likes += count
        room.likes_unsaved += count
        room.likes_unsynced += count

    def set_stock(self, session_id: str, offer: str, remaining: int) -> None:
        room = self.rooms.get(session_id)
        if room is not None:
            room.stock[offer] = remaining
            room.commerce = None

    def viewer_count(self, room: Room) -> int:
        local = len(room.conns)
        return local if room.viewers_total is None else max(local, room.viewers_total)

    def _count_every(self, room: Room) -> float:
        """How often a room's viewer count may go out: every tick, except in a room so big
        here that the count would take more than a tenth of `writes_per_s` (thousands joining
        at the start of a show would otherwise be sent a new count five times a second)."""
        if not self._writes_per_s:
            return 0.0
        return min(MAX_COUNT_EVERY_S, len(room.conns) * 10 / self._writes_per_s)

    def tick(self) -> None:
        """Send what changed since the last tick: at most one of each per room per interval."""
        now = time.monotonic()
        for room in self.rooms.values():
            if not room.conns:
                room.stock.clear()
                continue
            viewers = self.viewer_count(room)
            if viewers != room.viewers_sent and now >= room.viewers_sent_at + self._count_every(
                room
            ):
                room.viewers_sent = viewers
                room.viewers_sent_at = now
                self.broadcast(room, encode(Viewers(room.id, viewers)))
            if room.likes != room.likes_sent:
                room.likes_sent = room.likes
                self.broadcast(room, encode(Likes(room.id, room.likes)))
            if room.stock:
                for offer, remaining in room.stock.items():
                    self.broadcast(room, encode(Stock(room.id, offer, remaining)))
                room.stock.clear()

    async def _coalesce_loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self._coalesce_s)
            try:
                if self.sync_likes is not None:
                    await self._sync_likes(self.sync_likes)
                self.tick()
                ticks += 1
                if ticks % 10 == 0:
                    await self._flush_likes()
                if self.sync_viewers is not None and ticks % 5 == 0:
                    await self._sync_viewers(self.sync_viewers)
            except Exception:
                log.exception("coalesce tick failed")

    async def _sync_viewers(
        self, sync: Callable[[dict[str, int]], Awaitable[dict[str, int]]]
    ) -> None:
        counts = {
            r.id: len(r.conns) for r in self.rooms.values() if r.conns or r.id in self._reported
        }
        if not counts:
            return
        self._reported = {room for room, n in counts.items() if n}
        try:
            totals = await asyncio.wait_for(sync(counts), SYNC_TIMEOUT_S)
        except TimeoutError:
            log.warning("viewer count sync timed out")
            return
        for room_id, total in totals.items():
            self.rooms[room_id].viewers_total = total

    async def _sync_likes(
        self, sync: Callable[[dict[str, tuple[int, int]]], Awaitable[dict[str, int]]]
    ) -> None:
        rooms = {
            r.id: (r.likes_unsynced, r.likes - r.likes_unsynced)
            for r in self.rooms.values()
            if r.conns or r.likes_unsynced
        }
        if not rooms:
            return
        for room_id in rooms:
            self.rooms[room_id].likes_unsynced = 0
        try:
            totals = await asyncio.wait_for(sync(rooms), SYNC_TIMEOUT_S)
        except Exception as exc:  # the local total stands in until Redis answers again
            log.warning("like total sync failed: %s", exc)
            for room_id, (delta, _) in rooms.items():
                self.rooms[room_id].likes_unsynced += delta
            return
        for room_id, total in totals.items():
            room = self.rooms[room_id]
            room.likes = total + room.likes_unsynced  # plus what came in meanwhile

    async def _flush_likes(self) -> None:
        counts = {r.id: r.likes_unsaved for r in self.rooms.values() if r.likes_unsaved}
        if not counts or self.on_likes_flush is None:
            return
        for room_id in counts:
            self.rooms[room_id].likes_unsaved = 0
        try:
            await self.on_likes_flush(counts)
        except Exception:
            log.exception("saving like totals failed")
            for room_id, n in counts.items():
                self.rooms[room_id].likes_unsaved += n

    def connections(self) -> set[Connection]:
        out: set[Connection] = set()
        for room in self.rooms.values():
            out |= room.conns
        return out


def _cursor_of(room_id: str, conn: Connection) -> RoomCursor | None:
    return conn.rooms.get(room_id)
