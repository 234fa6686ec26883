"""Video time (SPEC §12) in the hub: delay smoothing, clamping and the rise rate, bucketing
(rounding, one encoding shared by a bucket), delivery `delay` after the room sent, and
offsets that stay contiguous and in order while a viewer's delay moves."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from livecart import protocol
from livecart.failure import Failure
from livecart.realtime.connection import Connection
from livecart.realtime.delay import ViewerDelay, bucket_of, judged_video_at
from livecart.realtime.hub import Hub
from tests.realtime.test_fanout import SID, Recorder, chat, settle, viewer
from tests.realtime.test_fanout import make_hub as fanout_hub

BUCKET_MS = 50


class Timed(Recorder):
    """A socket noting when each frame left and which bytes object carried it."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.framed: list[bytes | None] = []

    def send(self, payload: bytes, framed: bytes | None) -> int:
        self.times.append(asyncio.get_running_loop().time())
        self.framed.append(framed)
        return super().send(payload, framed)


def make_hub() -> Hub:
    hub = fanout_hub(0.01)
    hub._bucket_ms = BUCKET_MS
    hub._max_delay_ms = 2_000
    return hub


def timed_viewer(hub: Hub, user: str) -> tuple[Connection, Timed]:
    conn, _ = viewer(hub, user)
    rec = Timed()
    conn.socket = rec
    return conn, rec


def steady(hub: Hub, conn: Connection, ms: int) -> None:
    """A viewer that has been `ms` behind for a while (its delay in force is the report)."""
    cursor = conn.rooms[SID]
    hub.set_delay(conn, hub.rooms[SID], cursor, ms)
    assert cursor.delay is not None
    cursor.delay.force = float(cursor.delay.target)
    lag = hub.rooms[SID].lag
    assert lag is not None
    lag.ramping.discard(conn)
    lag.place(conn, cursor, bucket_of(ms, BUCKET_MS), asyncio.get_running_loop().time())


def offsets(rec: Recorder) -> list[int]:
    return [m["offset"] for m in rec.messages() if "offset" in m]


# ---------------------------------------------------------------- the delay itself


def test_bucket_rounds_half_up() -> None:
    assert [bucket_of(ms, 250) for ms in (0, 124, 125, 374, 375, 8_000)] == [0, 0, 1, 1, 2, 32]
    assert bucket_of(15_000, 250) == 60


def test_first_report_is_the_target_and_a_lone_glitch_does_not_move_it() -> None:
    d = ViewerDelay()
    d.report(3_000, 0.0)
    assert d.target == 3_000
    d.report(3_100, 1.0)
    assert d.target == 3_000  # the lower median of two
    d.report(14_000, 2.0)  # one wild reading
    assert d.target == 3_100
    d.report(3_050, 3.0)
    assert d.target == 3_100
    d.report(9_000, 4.0)
    d.report(9_000, 5.0)  # a real change takes effect on its second report
    assert d.target == 9_000


def test_delay_in_force_rises_at_most_one_second_per_second_and_falls_at_once() -> None:
    d = ViewerDelay()
    d.report(8_000, 100.0)
    assert d.in_force(100.0) == 0.0
    assert d.in_force(102.5) == pytest.approx(2_500)
    assert d.rising(102.5)
    assert d.in_force(109.0) == 8_000
    assert not d.rising(109.0)
    # Raising the report does not raise the delay in force faster than wall time.
    d.report(15_000, 109.0)
    d.report(15_000, 109.0)
    assert d.in_force(110.0) == pytest.approx(9_000)
    # Falling: at once (after the median has it).
    d.report(1_000, 111.0)
    d.report(1_000, 111.0)
    assert d.in_force(111.0) == 1_000


def test_delay_frame_refuses_negative_and_absurd_values() -> None:
    frame = protocol.decode_frame(b'{"type":"delay","session":"s1","ms":3000}')
    assert frame == protocol.Delay("s1", 3000)
    for bad in (-1, protocol.DELAY_MS_LIMIT + 1, 1.5, "3000"):
        body = json.dumps({"type": "delay", "session": "s1", "ms": bad})
        with pytest.raises(Failure) as err:
            protocol.decode_frame(body.encode())
        assert err.value.code == "bad_frame"


# ---------------------------------------------------------------- delivery


async def test_viewers_get_room_events_their_delay_late_sharing_one_encoding() -> None:
    hub = make_hub()
    _, now_rec = timed_viewer(hub, "zero")
    a, a_rec = timed_viewer(hub, "a")
    b, b_rec = timed_viewer(hub, "b")
    c, c_rec = timed_viewer(hub, "c")
    steady(hub, a, 290)  # 290 and 310 round to the same 300 ms bucket
    steady(hub, b, 310)
    steady(hub, c, 600)
    lag = hub.rooms[SID].lag
    assert lag is not None and sorted(lag.buckets) == [6, 12]
    sent = asyncio.get_running_loop().time()
    hub.on_publication(SID, chat(1))
    await settle(0.9)
    for rec, delay in ((now_rec, 0.0), (a_rec, 0.3), (b_rec, 0.3), (c_rec, 0.6)):
        assert offsets(rec) == [1]
        assert rec.times[0] - sent == pytest.approx(delay, abs=0.06)
    # Encoded once: every viewer was written the very same bytes object.
    assert now_rec.framed[0] is a_rec.framed[0] is b_rec.framed[0] is c_rec.framed[0]


async def test_frames_due_together_leave_as_one_frame_per_bucket() -> None:
    hub = make_hub()
    a, a_rec = timed_viewer(hub, "a")
    b, b_rec = timed_viewer(hub, "b")
    _, zero = timed_viewer(hub, "zero")
    steady(hub, a, 400)
    steady(hub, b, 400)
    for o in range(1, 6):
        hub.on_publication(SID, chat(o))
        await settle(0.02)
    assert len(zero.frames) >= 2  # the room sent several frames
    time.sleep(0.5)  # noqa: ASYNC251 (the loop is busy: when the bucket's turn comes, all are due)
    await settle(0.05)
    assert offsets(a_rec) == offsets(b_rec) == [1, 2, 3, 4, 5]
    assert len(a_rec.frames) < len(zero.frames)
    assert a_rec.framed == b_rec.framed and a_rec.framed[0] is b_rec.framed[0]


async def test_state_events_are_delayed_too_but_personal_messages_are_not() -> None:
    hub = make_hub()
    a, rec = timed_viewer(hub, "a")
    steady(hub, a, 400)
    room = hub.rooms[SID]
    start = asyncio.get_running_loop().time()
    hub.broadcast(room, b'{"type":"likes","session":"s1","total":3}')
    a.send(b'{"type":"pong"}')
    await settle(0.1)
    assert [m["type"] for m in rec.messages()] == ["pong"]
    await settle(0.45)
    assert [m["type"] for m in rec.messages()] == ["pong", "likes"]
    assert rec.times[1] - start == pytest.approx(0.4, abs=0.06)


async def test_viewers_that_never_report_take_the_ordinary_path() -> None:
    hub = make_hub()
    _, rec = viewer(hub, "v")
    hub.on_publication(SID, chat(1))
    await settle()
    assert offsets(rec) == [1]
    assert hub.rooms[SID].lag is None


async def test_a_falling_delay_gets_what_it_missed_at_once_in_order() -> None:
    hub = make_hub()
    a, rec = timed_viewer(hub, "a")
    steady(hub, a, 1_000)
    for o in range(1, 4):
        hub.on_publication(SID, chat(o))
        await settle(0.05)
    assert offsets(rec) == []
    hub.set_delay(a, hub.rooms[SID], a.rooms[SID], 0)  # the player caught up
    await settle()
    assert offsets(rec) == [1, 2, 3]
    hub.on_publication(SID, chat(4))
    await settle()
    assert offsets(rec) == [1, 2, 3, 4]  # now straight from the room
    await settle(1.1)
    assert offsets(rec) == [1, 2, 3, 4], "nothing again from the old bucket"
    assert hub.rooms[SID].lag is None


async def test_a_rising_delay_freezes_the_picture_without_repeats_or_gaps() -> None:
    hub = make_hub()
    a, rec = timed_viewer(hub, "a")
    _, zero = timed_viewer(hub, "zero")
    a_cursor = a.rooms[SID]
    hub.set_delay(a, hub.rooms[SID], a_cursor, 300)
    published = 0
    for _ in range(12):  # events every 50 ms while the delay climbs to 300 ms
        published += 1
        hub.on_publication(SID, chat(published))
        await settle(0.05)
    hub.set_delay(a, hub.rooms[SID], a_cursor, 100)
    hub.set_delay(a, hub.rooms[SID], a_cursor, 100)  # falls to 100 ms
    for _ in range(4):
        published += 1
        hub.on_publication(SID, chat(published))
        await settle(0.05)
    await settle(0.5)
    assert offsets(zero) == list(range(1, published + 1))
    assert offsets(rec) == list(range(1, published + 1))


async def test_leaving_drops_the_viewer_from_its_bucket() -> None:
    hub = make_hub()
    a, rec = timed_viewer(hub, "a")
    steady(hub, a, 300)
    hub.on_publication(SID, chat(1))
    await settle(0.05)
    hub.remove(a, SID)
    a.rooms.pop(SID)
    await settle(0.4)
    assert rec.frames == []
    assert hub.rooms[SID].lag is None


# ---------------------------------------------------------------- judging (trip allowance)


def test_judged_video_at_takes_the_pressed_time_within_the_allowance_only() -> None:
    latest = 1_000.0  # arrival minus delay
    # Said nothing, or a time at or after what the server vouches for: arrival minus delay.
    assert judged_video_at(latest, None, 1.0) == latest
    assert judged_video_at(latest, latest + 5.0, 1.0) == latest
    # Within the allowance: taken as said (the trip given back).
    assert judged_video_at(latest, latest - 0.153, 1.0) == latest - 0.153
    assert judged_video_at(latest, latest - 1.0, 1.0) == latest - 1.0
    # Earlier than that: bounded by the allowance, whatever the client claims.
    assert judged_video_at(latest, latest - 3.0, 1.0) == latest - 1.0
    assert judged_video_at(latest, 0.0, 1.0) == latest - 1.0
    # No allowance: arrival minus delay, always.
    assert judged_video_at(latest, latest - 0.5, 0.0) == latest


async def test_a_bid_is_judged_from_when_it_was_read_minus_the_delay_in_force_then() -> None:
    hub = make_hub()
    hub._trip_allowance_s = 1.0
    conn, _ = viewer(hub, "bidder")
    arrived = time.time() - 0.4  # read 400 ms ago, its turn only now
    # Never reported a delay: judged at its arrival, not at its turn.
    assert hub.video_at(conn, SID, arrived) == arrived
    steady(hub, conn, 1_500)
    assert hub.video_at(conn, SID, arrived) == pytest.approx(arrived - 1.5)
    # It says when the viewer pressed: 200 ms earlier (its trip) counts as said...
    pressed_ms = round((arrived - 1.5 - 0.2) * 1000)
    assert hub.video_at(conn, SID, arrived, pressed_ms) == pytest.approx(pressed_ms / 1000)
    # ... a claim 10 s earlier gains only the allowance; a later one counts as arrival - delay.
    early_ms = round((arrived - 11.5) * 1000)
    assert hub.video_at(conn, SID, arrived, early_ms) == pytest.approx(arrived - 2.5)
    late_ms = round(arrived * 1000)
    assert hub.video_at(conn, SID, arrived, late_ms) == pytest.approx(arrived - 1.5)
    # The server's allowance set to 0: `video_at` is ignored.
    hub._trip_allowance_s = 0.0
    assert hub.video_at(conn, SID, arrived, early_ms) == pytest.approx(arrived - 1.5)


async def test_a_rising_delay_counts_as_it_was_in_force_when_the_frame_was_read() -> None:
    hub = make_hub()
    conn, _ = viewer(hub, "climber")
    cursor = conn.rooms[SID]
    hub.set_delay(conn, hub.rooms[SID], cursor, 2_000)  # climbs from 0 at 1 s per s
    await asyncio.sleep(0.3)
    arrived = time.time() - 0.2  # read when ~100 ms of delay was in force, handled now
    judged = hub.video_at(conn, SID, arrived)
    assert arrived - 0.2 < judged < arrived - 0.05, arrived - judged


@pytest.mark.parametrize(
    "field", ['"video_at":-1', '"video_at":1.5', '"video_at":"1"', '"video_at":true']
)
@pytest.mark.parametrize("kind", ["bid", "buy", "buy_now"])
def test_a_bad_video_at_is_bad_frame(kind: str, field: str) -> None:
    body = {
        "bid": '{"type":"bid","session":"s","auction":"a","amount_cents":10,"ref":"r",%s}',
        "buy": '{"type":"buy","session":"s","offer":"o","qty":1,"ref":"r",%s}',
        "buy_now": '{"type":"buy_now","session":"s","auction":"a","ref":"r",%s}',
    }[kind]
    with pytest.raises(Failure) as err:
        protocol.decode_frame((body % field).encode())
    assert err.value.code == "bad_frame"
    good = protocol.decode_frame((body % '"video_at":1765000000123').encode())
    assert getattr(good, "video_at", None) == 1_765_000_000_123
