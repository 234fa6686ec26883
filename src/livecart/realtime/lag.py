"""Video time (SPEC §12): delivery of a room's frames `delay` after they were sent, per
delay bucket.

A room with delayed viewers keeps the frames it sent in the last `max delay` seconds on one
timeline (each frame encoded once, shared by every bucket). Viewers whose delay rounds to the
same multiple of the bucket (default 250 ms) form a bucket, which only holds a position on
that timeline: memory is one timeline per room plus one integer per bucket and per delayed
viewer, not a queue per viewer. Frames due together for a bucket leave as one frame, encoded
once for the bucket. Each delayed viewer remembers the last timeline frame it got
(`RoomCursor.seen`), so moving between buckets never repeats a frame (going up) nor skips one
(going down: what it missed leaves at once); log events keep their offset cursor besides, so
they stay contiguous and in order whatever happens. Viewers in bucket 0 (every viewer that
never reported a delay) take the room's ordinary path untouched.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..protocol import ChatSampled, encode, frame, ws_text_frame
from .connection import Connection, RoomCursor
from .delay import bucket_of

# What waits in a room for its next frame: (offset, or None for state events; the encoded
# message; whether it is a chat message, the only kind sampling may skip).
Entry = tuple[int | None, bytes, bool]


class Frame:
    """One frame a room sent: encoded once, kept on the timeline for delayed buckets."""

    __slots__ = ("at", "batch", "first", "framed", "last", "own", "payload", "seq", "skipped")

    def __init__(
        self,
        at: float,
        batch: list[Entry],
        skipped: set[int],
        own: dict[str, set[int]],
        payload: bytes,
        framed: bytes,
        first: int | None,
        last: int | None,
    ) -> None:
        self.seq = 0
        self.at = at
        self.batch = batch
        self.skipped = skipped
        self.own = own
        self.payload = payload
        self.framed = framed
        self.first = first  # offset before the frame's first log event (None: no log event)
        self.last = last


def send_frame(conn: Connection, cursor: RoomCursor, room_id: str, f: Frame) -> bool:
    """One viewer's copy of a frame: the shared bytes when the viewer is exactly where the
    frame starts, else event by event (`Connection.deliver` keeps offsets in order). True when
    the shared bytes were written."""
    if f.first is not None:
        if cursor.offset != f.first or cursor.resyncing:
            deliver_each(conn, room_id, f.batch)
            return False
        cursor.offset = f.last
    mine = f.own.get(conn.identity.sub) if f.own else None
    if mine is not None:
        deliver_sampled(conn, room_id, f.batch, f.skipped, mine)
        return False
    return conn.write_shared(f.payload, f.framed)


def deliver_each(conn: Connection, room_id: str, batch: list[Entry]) -> None:
    for offset, message, _ in batch:
        if offset is None:
            conn.send(message)
        else:
            conn.deliver(room_id, offset, message)


def deliver_sampled(
    conn: Connection, room_id: str, batch: list[Entry], skipped: set[int], mine: set[int]
) -> None:
    """The sampled frame plus this author's own skipped messages, in offset order."""
    for offset, message, _ in batch:
        if offset not in skipped or offset in mine:
            conn.send(message)
    if len(skipped) > len(mine):
        conn.send(encode(ChatSampled(room_id, len(skipped) - len(mine))))
    conn.flush()


def merge(frames: list[Frame]) -> Frame:
    """Frames due together for a bucket, as one (none of them sampled)."""
    batch = [e for f in frames for e in f.batch]
    payload = frame([m for _, m, _ in batch])
    firsts = [f.first for f in frames if f.first is not None]
    lasts = [f.last for f in frames if f.last is not None]
    merged = Frame(
        frames[-1].at,
        batch,
        set(),
        {},
        payload,
        ws_text_frame(payload),
        firsts[0] if firsts else None,
        lasts[-1] if lasts else None,
    )
    merged.seq = frames[-1].seq
    return merged


class Bucket:
    __slots__ = ("conns", "released")

    def __init__(self, released: int) -> None:
        self.conns: set[Connection] = set()
        self.released = released  # seq of the last timeline frame it sent


class Lag:
    """A room's delayed delivery: the timeline of its recent frames and its delay buckets."""

    __slots__ = (
        "bucket_s",
        "buckets",
        "handle",
        "keep_s",
        "members",
        "ramping",
        "room_id",
        "seq",
        "timeline",
        "writes",
    )

    def __init__(self, room_id: str, bucket_ms: int, keep_s: float) -> None:
        self.room_id = room_id
        self.bucket_s = bucket_ms / 1000.0
        self.keep_s = keep_s
        self.timeline: deque[Frame] = deque()
        self.seq = 0
        self.members: dict[Connection, int] = {}  # delayed viewer -> its bucket (> 0)
        self.buckets: dict[int, Bucket] = {}
        self.ramping: set[Connection] = set()  # viewers whose delay in force is climbing
        self.handle: object | None = None  # the pending release (a loop timer)
        self.writes = 0  # shared frames written (for the metrics)

    @property
    def idle(self) -> bool:
        return not self.members and not self.ramping

    def append(self, f: Frame) -> None:
        self.seq += 1
        f.seq = self.seq
        self.timeline.append(f)

    def _after(self, seq: int) -> int:
        """Index on the timeline of the first frame with a seq greater than `seq`."""
        if not self.timeline:
            return 0
        return max(0, min(len(self.timeline), seq + 1 - self.timeline[0].seq))

    def _released_at(self, k: int, now: float) -> int:
        """The seq a bucket of delay k has sent by `now`."""
        cutoff = now - k * self.bucket_s
        released = self.timeline[0].seq - 1 if self.timeline else self.seq
        for f in self.timeline:
            if f.at > cutoff:
                break
            released = f.seq
        return released

    def place(self, conn: Connection, cursor: RoomCursor, k: int, now: float) -> None:
        """Put a viewer in bucket k (0: the room's ordinary path), sending at once whatever
        the new bucket has already sent and the viewer has not got."""
        old = self.members.get(conn, 0)
        if k == old:
            return
        if old == 0:
            cursor.seen = self.seq  # it had everything, straight from the room
        else:
            bucket = self.buckets[old]
            bucket.conns.discard(conn)
            if not bucket.conns:
                del self.buckets[old]
        if k == 0:
            del self.members[conn]
            upto = self.seq
        else:
            self.members[conn] = k
            into = self.buckets.get(k)
            if into is None:
                into = self.buckets[k] = Bucket(self._released_at(k, now))
            into.conns.add(conn)
            upto = into.released
        if upto > cursor.seen:
            start = self._after(cursor.seen)
            for f in list(self.timeline)[start : self._after(upto)]:
                send_frame(conn, cursor, self.room_id, f)
            cursor.seen = upto

    def drop(self, conn: Connection) -> None:
        self.ramping.discard(conn)
        k = self.members.pop(conn, 0)
        if k:
            bucket = self.buckets[k]
            bucket.conns.discard(conn)
            if not bucket.conns:
                del self.buckets[k]

    def advance(
        self, now: float, cursor_of: Callable[[Connection], RoomCursor | None], bucket_ms: int
    ) -> None:
        """Move the viewers whose delay is climbing to the bucket of their delay now."""
        for conn in list(self.ramping):
            cursor = cursor_of(conn)
            if cursor is None or cursor.delay is None or conn.closed:
                self.drop(conn)
                continue
            self.place(conn, cursor, bucket_of(cursor.delay.in_force(now), bucket_ms), now)
            if not cursor.delay.rising(now):
                self.ramping.discard(conn)

    def release(self, now: float) -> None:
        """Send every bucket what is due to it by `now`."""
        for k, bucket in list(self.buckets.items()):
            cutoff = now - k * self.bucket_s
            start = self._after(bucket.released)
            end = start
            timeline = self.timeline
            while end < len(timeline) and timeline[end].at <= cutoff:
                end += 1
            if end == start:
                continue
            due = [timeline[i] for i in range(start, end)]
            bucket.released = due[-1].seq
            one = due[0] if len(due) == 1 else None
            if one is None and not any(f.skipped for f in due):
                one = merge(due)  # one frame for the bucket, encoded once
            room_id, first_seq, last_seq = self.room_id, due[0].seq, due[-1].seq
            for conn in list(bucket.conns):
                cursor = conn.rooms.get(room_id)
                if cursor is None or conn.closed:
                    self.drop(conn)
                    continue
                seen = cursor.seen
                if seen >= last_seq:
                    continue  # it got these before it moved here
                cursor.seen = last_seq
                if one is None or seen >= first_seq:
                    for f in due:
                        if f.seq > seen:
                            send_frame(conn, cursor, room_id, f)
                elif one.first is None or (cursor.offset == one.first and not cursor.resyncing):
                    # The common case, as in `Hub.flush`: the viewer is where the frame starts.
                    if one.first is not None:
                        cursor.offset = one.last
                    mine = one.own.get(conn.identity.sub) if one.own else None
                    if mine is not None:
                        deliver_sampled(conn, room_id, one.batch, one.skipped, mine)
                    elif conn.write_shared(one.payload, one.framed):
                        self.writes += 1
                else:
                    deliver_each(conn, room_id, one.batch)

    def prune(self, now: float) -> None:
        """Forget frames older than the largest delay (every bucket has sent them)."""
        cutoff = now - self.keep_s
        timeline = self.timeline
        while timeline and timeline[0].at < cutoff:
            timeline.popleft()

    def next_due(self) -> float | None:
        due: float | None = None
        for k, bucket in self.buckets.items():
            i = self._after(bucket.released)
            if i < len(self.timeline):
                at = self.timeline[i].at + k * self.bucket_s
                due = at if due is None else min(due, at)
        return due
