"""The hub's per-room state without a bus: how often a busy room sends (stretched for rooms
with many viewers here), how often a room's viewer count goes out, and the commerce part of
join snapshots, read once for every join whose position it covers."""

from __future__ import annotations

import asyncio
import time
import types
from typing import Any

import msgspec
import pytest

from livecart.auth import Identity
from livecart.realtime import hub as hub_module
from livecart.realtime.bus.base import Publication, StreamPosition
from livecart.realtime.connection import Connection, RoomCursor
from livecart.realtime.hub import MAX_COUNT_EVERY_S, MAX_TICK_S, Hub
from tests.realtime.test_fanout import SID, Recorder, chat, pinned, settle, viewer
from tests.realtime.test_fanout import make_hub as fanout_hub

_enc = msgspec.json.Encoder()


def make_hub(*, tick_s: float = 0.05, writes_per_s: int = 0, budget: float = 30.0) -> Hub:
    return fanout_hub(tick_s, budget, writes_per_s=writes_per_s)


def viewers(hub: Hub, n: int, prefix: str = "v") -> list[tuple[Connection, Recorder]]:
    return [viewer(hub, f"{prefix}{i}") for i in range(n)]


class Sink:
    """A socket that only counts frames (many viewers, little work per frame)."""

    def __init__(self) -> None:
        self.frames = 0

    def send(self, payload: bytes, framed: bytes | None) -> int:
        self.frames += 1
        return 0

    def close(self, code: int, reason: str = "") -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def crowd(hub: Hub, n: int) -> list[Sink]:
    sinks = []
    for i in range(n):
        sink = Sink()
        conn = Connection(
            sink,
            f"conn-crowd{i}",
            Identity(f"crowd{i}", f"crowd{i}", "viewer"),
            max_bytes=1 << 20,
            max_age_s=10,
            on_gap=lambda c, room: None,
        )
        conn.rooms[SID] = RoomCursor()
        conn.rooms[SID].offset = 0
        hub.add(conn, hub.rooms[SID])
        sinks.append(sink)
    return sinks


def event(offset: int, kind: str, **body: Any) -> Publication:
    return Publication(offset, kind, _enc.encode({"type": kind, "session": SID, **body}))


class TimedRecorder(Recorder):
    """A socket that also notes the loop time of every frame."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def send(self, payload: bytes, framed: bytes | None) -> int:
        self.times.append(asyncio.get_running_loop().time())
        return super().send(payload, framed)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def counts(rec: Recorder) -> list[int]:
    return [m["count"] for m in rec.messages() if m["type"] == "viewers"]


# ------------------------------------------------------------------ tick_of


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 0.05),  # an empty room: the base tick
        (3, 0.05),  # a small room: the base tick
        (50, 0.05),  # exactly the base tick
        (100, 0.1),  # 100 viewers at 1000 writes/s: one frame per 0.1 s
        (200, 0.2),
        (250, MAX_TICK_S),
        (1000, MAX_TICK_S),  # capped
    ],
)
async def test_tick_of_stretches_with_the_viewers_up_to_the_cap(n: int, expected: float) -> None:
    hub = make_hub(tick_s=0.05, writes_per_s=1000)
    viewers(hub, n)
    assert hub.tick_of(hub.rooms[SID]) == pytest.approx(expected)


async def test_tick_of_without_a_write_budget_is_the_base_tick() -> None:
    hub = make_hub(tick_s=0.05, writes_per_s=0)
    viewers(hub, 1000)
    assert hub.tick_of(hub.rooms[SID]) == 0.05


async def test_tick_of_never_goes_below_a_longer_base_tick() -> None:
    hub = make_hub(tick_s=0.4, writes_per_s=10)
    viewers(hub, 100)  # 10 s at 10 writes/s, capped at MAX_TICK_S, below the base tick
    assert hub.tick_of(hub.rooms[SID]) == 0.4


async def test_a_big_room_sends_its_busy_events_at_the_stretched_tick() -> None:
    hub = make_hub(tick_s=0.01, writes_per_s=1000, budget=0)
    sinks = crowd(hub, 149)
    conn, _ = viewer(hub, "timed")
    timed = TimedRecorder()
    conn.socket = timed
    room = hub.rooms[SID]
    tick = hub.tick_of(room)
    assert tick == pytest.approx(0.15)
    loop = asyncio.get_running_loop()
    started = loop.time()
    offset = 0
    while loop.time() - started < 1.2:
        offset += 1
        hub.on_publication(SID, chat(offset))
        await asyncio.sleep(0.01)
    await settle(tick + 0.2)
    got = [m["offset"] for m in timed.messages()]
    assert got == list(range(1, offset + 1)), "every event, in order"
    assert all(s.frames == len(timed.frames) for s in sinks), "one frame each, shared"
    assert len(timed.frames) >= 3
    # About 100 events over 1.2 s: at the base tick they would go out in about 100 frames.
    assert len(timed.frames) <= 1.2 / tick + 3
    gaps = [b - a for a, b in zip(timed.times, timed.times[1:], strict=False)]
    # A frame is written a little after its flush starts (a loaded machine may delay one),
    # so single gaps are bounded loosely and their mean closely.
    assert min(gaps) >= tick / 2, f"frames closer than the stretched tick: {gaps}"
    assert sum(gaps) / len(gaps) >= tick - 0.01, f"frames closer than the stretched tick: {gaps}"
    assert sorted(gaps)[len(gaps) // 2] < tick * 4, f"the room kept sending: {gaps}"


async def test_a_small_room_of_the_same_hub_keeps_the_base_tick() -> None:
    hub = make_hub(tick_s=0.01, writes_per_s=1000, budget=0)
    conn, _ = viewer(hub, "timed")
    timed = TimedRecorder()
    conn.socket = timed
    loop = asyncio.get_running_loop()
    started = loop.time()
    offset = 0
    while loop.time() - started < 0.6:
        offset += 1
        hub.on_publication(SID, chat(offset))
        await asyncio.sleep(0.01)
    await settle(0.1)
    assert [m["offset"] for m in timed.messages()] == list(range(1, offset + 1))
    # The stretched tick (0.15 s) would allow at most 5 frames here.
    assert len(timed.frames) > 10


# ------------------------------------------------------------------ viewer count


async def test_count_every_is_a_tenth_of_the_write_budget_capped() -> None:
    hub = make_hub(writes_per_s=1000)
    room = hub.rooms[SID]
    viewers(hub, 3)
    assert hub._count_every(room) == pytest.approx(0.03)
    viewers(hub, 97, prefix="w")
    assert hub._count_every(room) == pytest.approx(1.0)
    viewers(hub, 900, prefix="x")
    assert hub._count_every(room) == MAX_COUNT_EVERY_S
    assert make_hub(writes_per_s=0)._count_every(room) == 0.0


async def test_a_small_room_gets_every_count_change_on_consecutive_ticks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(hub_module, "time", types.SimpleNamespace(monotonic=clock, time=time.time))
    hub = make_hub(writes_per_s=1000)
    room = hub.rooms[SID]
    first, rec = viewer(hub, "v0")
    hub.tick()
    await settle(0.1)
    assert counts(rec) == [1]
    seen = [1]
    for i in (1, 2):
        viewer(hub, f"v{i}")
        clock.now += 0.2  # one coalescing tick later
        hub.tick()
        await settle(0.1)
        seen.append(i + 1)
        assert counts(rec) == seen
    hub.remove(viewer(hub, "v3")[0], SID)  # joined and left between two ticks: no change
    clock.now += 0.2
    hub.tick()
    await settle(0.1)
    assert counts(rec) == [1, 2, 3], "an unchanged count is not sent again"
    room.conns.discard(next(c for c in room.conns if c is not first))
    clock.now += 0.2
    hub.tick()
    await settle(0.1)
    assert counts(rec) == [1, 2, 3, 2]


async def test_a_big_room_gets_the_first_count_at_once_and_the_next_after_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(hub_module, "time", types.SimpleNamespace(monotonic=clock, time=time.time))
    hub = make_hub(tick_s=0.01, writes_per_s=1000)
    room = hub.rooms[SID]
    crowd = viewers(hub, 100)
    rec = crowd[0][1]
    started = clock.now
    hub.tick()
    await settle(0.3)
    assert counts(rec) == [100], "the first count goes out at once"
    viewer(hub, "late1")
    every = hub._count_every(room)
    assert every == pytest.approx(1.01)
    for step in (0.2, 0.4, 0.6, 0.8, 1.0):
        clock.now = started + step
        if step == 0.6:
            viewer(hub, "late2")  # the count changes again within the interval
        hub.tick()
    await settle(0.3)
    assert counts(rec) == [100], "within the interval the count waits"
    clock.now = started + hub._count_every(room) + 0.001
    hub.tick()
    await settle(0.3)
    assert counts(rec) == [100, 102], "once the interval has passed, the latest count"
    # The next change waits a whole interval again, counted from this send.
    sent_at = clock.now
    viewer(hub, "late3")
    clock.now = sent_at + 0.5
    hub.tick()
    await settle(0.3)
    assert counts(rec) == [100, 102]
    clock.now = sent_at + hub._count_every(room) + 0.001
    hub.tick()
    await settle(0.3)
    assert counts(rec) == [100, 102, 103]
    assert all(counts(r) == [100, 102, 103] for _, r in crowd), "every viewer, the same counts"


# ------------------------------------------------------------------ commerce_state


class Loads:
    """A commerce read that counts its calls; each call waits for `gate` when one is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def __call__(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        self.calls += 1
        n = self.calls
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [{"id": f"read{n}"}], None


async def test_joins_covered_by_one_read_share_it() -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    load = Loads()
    load.gate = asyncio.Event()
    a = asyncio.ensure_future(hub.commerce_state(room, 5, load))
    b = asyncio.ensure_future(hub.commerce_state(room, 3, load))
    c = asyncio.ensure_future(hub.commerce_state(room, 5, load))
    await settle()
    assert load.calls == 1, "the joins wait for one read"
    load.gate.set()
    results = await asyncio.gather(a, b, c)
    assert list(results) == [([{"id": "read1"}], None)] * 3
    # Once done, the read still serves the joins it covers.
    assert await hub.commerce_state(room, 4, load) == ([{"id": "read1"}], None)
    assert load.calls == 1


async def test_a_join_beyond_the_covered_offset_reads_again() -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    load = Loads()
    assert (await hub.commerce_state(room, 5, load))[0] == [{"id": "read1"}]
    assert (await hub.commerce_state(room, 6, load))[0] == [{"id": "read2"}]
    assert load.calls == 2
    assert (await hub.commerce_state(room, 6, load))[0] == [{"id": "read2"}]
    assert (await hub.commerce_state(room, 2, load))[0] == [{"id": "read2"}]
    assert load.calls == 2


async def test_contiguous_non_commerce_events_extend_what_a_read_covers() -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    load = Loads()
    await hub.commerce_state(room, 5, load)
    hub.on_publication(SID, chat(6))
    hub.on_publication(SID, pinned(7))
    hub.on_publication(SID, event(8, "likes", total=3))
    for position in (6, 7, 8):
        assert (await hub.commerce_state(room, position, load))[0] == [{"id": "read1"}]
    assert load.calls == 1
    assert (await hub.commerce_state(room, 9, load))[0] == [{"id": "read2"}], "not yet covered"
    assert load.calls == 2


@pytest.mark.parametrize(
    "kind", ["offer", "offer_ended", "sold", "auction", "bid", "auction_ended"]
)
async def test_a_commerce_event_makes_the_next_join_read_again(kind: str) -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    load = Loads()
    await hub.commerce_state(room, 5, load)
    hub.on_publication(SID, chat(6))
    hub.on_publication(SID, event(7, kind, offer="o1", qty=1))
    assert (await hub.commerce_state(room, 6, load))[0] == [{"id": "read2"}], (
        "after a commerce event even an older position reads again"
    )
    assert load.calls == 2
    hub.on_publication(SID, chat(8))
    assert (await hub.commerce_state(room, 8, load))[0] == [{"id": "read3"}], (
        "a read at 6 does not cover what follows 7"
    )
    hub.on_publication(SID, chat(9))
    assert (await hub.commerce_state(room, 9, load))[0] == [{"id": "read3"}]
    assert load.calls == 3


async def test_a_gap_in_the_offsets_makes_the_next_join_read_again() -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    load = Loads()
    await hub.commerce_state(room, 5, load)
    hub.on_publication(SID, chat(7))  # 6 never arrived here
    assert (await hub.commerce_state(room, 5, load))[0] == [{"id": "read2"}]
    assert load.calls == 2


async def test_a_repeated_offset_makes_the_next_join_read_again() -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    load = Loads()
    await hub.commerce_state(room, 5, load)
    hub.on_publication(SID, chat(5))
    assert (await hub.commerce_state(room, 5, load))[0] == [{"id": "read2"}]


async def test_stock_moving_makes_the_next_join_read_again() -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    load = Loads()
    await hub.commerce_state(room, 5, load)
    hub.set_stock(SID, "o1", 3)
    assert (await hub.commerce_state(room, 5, load))[0] == [{"id": "read2"}]
    assert load.calls == 2
    hub.set_stock("another-room", "o1", 3)  # not this room's
    assert (await hub.commerce_state(room, 5, load))[0] == [{"id": "read2"}]
    assert load.calls == 2


async def test_a_new_epoch_makes_the_next_join_read_again() -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    load = Loads()
    await hub.commerce_state(room, 5, load)
    hub.on_epoch(SID, StreamPosition("e2", 0))
    assert (await hub.commerce_state(room, 1, load))[0] == [{"id": "read2"}]
    assert load.calls == 2


async def test_a_failed_read_is_seen_by_its_joins_and_the_next_join_reads_again() -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    load = Loads()
    load.gate = asyncio.Event()
    load.fail = ConnectionError("database went away")
    a = asyncio.ensure_future(hub.commerce_state(room, 5, load))
    b = asyncio.ensure_future(hub.commerce_state(room, 4, load))
    await settle()
    load.gate.set()
    for joined in (a, b):
        with pytest.raises(ConnectionError, match="database went away"):
            await joined
    assert load.calls == 1
    assert room.commerce is None
    load.gate, load.fail = None, None
    assert (await hub.commerce_state(room, 5, load))[0] == [{"id": "read2"}]
    assert (await hub.commerce_state(room, 5, load))[0] == [{"id": "read2"}]
    assert load.calls == 2


async def test_a_join_that_gives_up_does_not_cancel_the_shared_read() -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    load = Loads()
    load.gate = asyncio.Event()
    quitter = asyncio.ensure_future(hub.commerce_state(room, 5, load))
    stayer = asyncio.ensure_future(hub.commerce_state(room, 5, load))
    await settle()
    quitter.cancel()
    await settle()
    load.gate.set()
    assert await stayer == ([{"id": "read1"}], None)
    assert quitter.cancelled()
    assert (await hub.commerce_state(room, 5, load))[0] == [{"id": "read1"}]
    assert load.calls == 1


async def test_a_superseded_read_failing_does_not_drop_the_newer_one() -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    old_gate = asyncio.Event()

    async def failing() -> Any:
        await old_gate.wait()
        raise ConnectionError("old read failed")

    load = Loads()
    old = asyncio.ensure_future(hub.commerce_state(room, 5, failing))
    assert (await hub.commerce_state(room, 6, load))[0] == [{"id": "read1"}]
    old_gate.set()
    with pytest.raises(ConnectionError):
        await old
    assert (await hub.commerce_state(room, 6, load))[0] == [{"id": "read1"}]
    assert load.calls == 1


async def test_room_events_still_reach_viewers_while_the_cache_is_kept() -> None:
    hub = make_hub()
    room = hub.rooms[SID]
    _, rec = viewer(hub, "v", offset=5)
    load = Loads()
    await hub.commerce_state(room, 5, load)
    hub.on_publication(SID, chat(6))
    hub.on_publication(SID, event(7, "offer", id="o1"))
    await settle(0.1)
    assert [(m["type"], m["offset"]) for m in rec.messages()] == [("chat", 6), ("offer", 7)]
    assert rec.messages()[1]["id"] == "o1"
