"""The Bus contract, run against every implementation: the in-process MemoryBus and the RedisBus
on a real Redis. Whatever one serves, the other serves too."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import pytest

from livecart.realtime.bus.base import Bus, Publication, StreamPosition
from livecart.realtime.bus.memory import MemoryBus
from livecart.realtime.bus.redis import OnEpoch, RedisBus
from tests.conftest import redis_url_or_skip

# ------------------------------------------------------------ helpers (shared with test_redis_bus)


class Floors:
    """The OffsetFloor callback: a settable value per room, and how often it was asked."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.calls: Counter[str] = Counter()

    async def __call__(self, room: str) -> int:
        self.calls[room] += 1
        return self.values.get(room, 0)


class Recorder:
    """The on_publication callback: every publication delivered, per room."""

    def __init__(self) -> None:
        self.got: defaultdict[str, list[Publication]] = defaultdict(list)

    def __call__(self, room: str, pub: Publication) -> None:
        self.got[room].append(pub)

    def offsets(self, room: str) -> list[int]:
        return [p.offset for p in self.got[room]]


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.005)


async def delete_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
    finally:
        await client.aclose()


class MakeBus(Protocol):
    def __call__(
        self,
        floor: Floors,
        *,
        on_publication: Callable[[str, Publication], None] | None = None,
        history_size: int = 1000,
        history_ttl_s: float = 600.0,
        on_epoch: OnEpoch | None = None,
        reconnect_min_s: float = 0.05,
        room_ttl_s: float = 86400.0,
    ) -> Awaitable[Bus]: ...


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[MakeBus]:
    kind: str = request.param
    url = redis_url_or_skip() if kind == "redis" else ""
    prefix = f"lctest-{secrets.token_hex(4)}"
    buses: list[Bus] = []

    async def make(
        floor: Floors,
        *,
        on_publication: Callable[[str, Publication], None] | None = None,
        history_size: int = 1000,
        history_ttl_s: float = 600.0,
        on_epoch: OnEpoch | None = None,
        reconnect_min_s: float = 0.05,
        room_ttl_s: float = 86400.0,
    ) -> Bus:
        bus: Bus
        if kind == "memory":
            bus = MemoryBus(floor, history_size=history_size, history_ttl_s=history_ttl_s)
        else:
            bus = RedisBus(
                url,
                floor,
                history_size=history_size,
                history_ttl_s=history_ttl_s,
                node_id=f"{prefix}-n{len(buses)}",
                key_prefix=prefix,
                on_epoch=on_epoch,
                reconnect_min_s=reconnect_min_s,
                room_ttl_s=room_ttl_s,
            )
        await bus.start(on_publication or (lambda room, pub: None))
        buses.append(bus)
        return bus

    try:
        yield make
    finally:
        for bus in buses:
            await bus.stop()
        if url:
            await delete_prefix(url, prefix)


def pos(epoch: str, offset: int) -> StreamPosition:
    return StreamPosition(epoch, offset)


# ------------------------------------------------------------ the contract


async def test_offsets_are_contiguous_from_the_floor(make_bus: MakeBus) -> None:
    floors = Floors()
    floors.values["a"] = 41
    bus = await make_bus(floors)
    positions = [await bus.publish("a", "chat", b'{"n":%d}' % i) for i in range(5)]
    assert [p.offset for p in positions] == [42, 43, 44, 45, 46]
    assert len({p.epoch for p in positions}) == 1
    assert [(await bus.publish("b", "chat", b"{}")).offset for _ in range(2)] == [1, 2]
    # The floor costs a database query: asked once per room, not per publish.
    assert floors.calls == Counter({"a": 1, "b": 1})


async def test_history_without_since_serves_the_newest(make_bus: MakeBus) -> None:
    bus = await make_bus(Floors())
    last = StreamPosition("", 0)
    for i in range(1, 11):
        last = await bus.publish("r", "chat", b"m%d" % i)
    history = await bus.history("r", None, 3)
    assert not history.recovered
    assert history.position == last
    assert [(p.offset, p.kind, p.data) for p in history.publications] == [
        (8, "chat", b"m8"),
        (9, "chat", b"m9"),
        (10, "chat", b"m10"),
    ]
    assert (await bus.history("r", None, 0)).publications == []


async def test_history_since_recovers_exactly_what_followed(make_bus: MakeBus) -> None:
    bus = await make_bus(Floors())
    for i in range(1, 11):
        last = await bus.publish("r", "chat" if i % 2 else "pinned", b"m%d" % i)
    epoch = last.epoch

    h = await bus.history("r", pos(epoch, 4), 2)  # the limit does not cut a recovery short
    assert h.recovered and h.position == pos(epoch, 10)
    assert [p.offset for p in h.publications] == [5, 6, 7, 8, 9, 10]
    assert [p.kind for p in h.publications] == ["chat", "pinned"] * 3

    h = await bus.history("r", pos(epoch, 10), 5)
    assert h.recovered and h.publications == []

    h = await bus.history("r", pos(epoch, 0), 100)
    assert h.recovered and [p.offset for p in h.publications] == list(range(1, 11))

    for wrong in (pos("another-epoch", 4), pos(epoch, 11)):
        h = await bus.history("r", wrong, 3)
        assert not h.recovered
        assert [p.offset for p in h.publications] == [8, 9, 10]
        assert h.position == pos(epoch, 10)


async def test_history_window_is_the_newest_history_size(make_bus: MakeBus) -> None:
    bus = await make_bus(Floors(), history_size=5)
    for i in range(1, 13):
        last = await bus.publish("r", "chat", b"m%d" % i)
    h = await bus.history("r", pos(last.epoch, 7), 100)
    assert h.recovered and [p.offset for p in h.publications] == [8, 9, 10, 11, 12]
    h = await bus.history("r", pos(last.epoch, 6), 100)  # offset 7 has left the window
    assert not h.recovered and [p.offset for p in h.publications] == [8, 9, 10, 11, 12]


async def test_history_window_drops_expired_publications(make_bus: MakeBus) -> None:
    bus = await make_bus(Floors(), history_ttl_s=0.4)
    for _ in range(3):
        await bus.publish("r", "chat", b"old")
    await asyncio.sleep(0.5)
    last = await bus.publish("r", "chat", b"new")
    assert last.offset == 4
    h = await bus.history("r", pos(last.epoch, 0), 10)
    assert not h.recovered and [p.data for p in h.publications] == [b"new"]
    h = await bus.history("r", pos(last.epoch, 3), 10)
    assert h.recovered and [p.offset for p in h.publications] == [4]
    await asyncio.sleep(0.5)
    h = await bus.history("r", None, 10)  # everything expired: an empty window at offset 4
    assert h.publications == [] and h.position == last
    assert (await bus.history("r", pos(last.epoch, 4), 10)).recovered


async def test_history_of_an_unknown_room_starts_it_at_the_floor(make_bus: MakeBus) -> None:
    floors = Floors()
    floors.values["fresh"] = 7
    bus = await make_bus(floors)
    h = await bus.history("fresh", None, 10)
    assert h.publications == [] and not h.recovered and h.position.offset == 7
    assert (await bus.history("fresh", h.position, 10)).recovered
    assert await bus.publish("fresh", "chat", b"x") == pos(h.position.epoch, 8)
    assert floors.calls["fresh"] == 1


async def test_redact_replaces_the_stored_publication(make_bus: MakeBus) -> None:
    bus = await make_bus(Floors(), history_size=5)
    for i in range(1, 4):
        last = await bus.publish("r", "chat", b"m%d" % i)
    await bus.redact("r", 2, b"tombstone")
    await bus.redact("r", 99, b"nothing there")  # beyond the log: ignored
    await bus.redact("r", 0, b"nothing there")
    h = await bus.history("r", pos(last.epoch, 0), 10)
    assert h.recovered
    assert [(p.offset, p.kind, p.data) for p in h.publications] == [
        (1, "chat", b"m1"),
        (2, "chat", b"tombstone"),
        (3, "chat", b"m3"),
    ]
    assert [p.data for p in (await bus.history("r", None, 2)).publications] == [
        b"tombstone",
        b"m3",
    ]
    # Once the redacted publication has left the window, the window is served as usual.
    for _ in range(6):
        last = await bus.publish("r", "chat", b"later")
    h = await bus.history("r", None, 10)
    assert [p.offset for p in h.publications] == [5, 6, 7, 8, 9]
    assert b"tombstone" not in [p.data for p in h.publications]


async def test_subscribers_get_every_publication_in_order(make_bus: MakeBus) -> None:
    seen = Recorder()
    bus = await make_bus(Floors(), on_publication=seen)
    await bus.publish("a", "chat", b"before subscribing")
    await bus.subscribe("a")
    positions = await asyncio.gather(
        *(bus.publish("a", "chat", b"m%d" % i) for i in range(100)),
        bus.publish("b", "chat", b"nobody here listens"),
    )
    sent = {p.offset: b"m%d" % i for i, p in enumerate(positions[:100])}
    await eventually(lambda: len(seen.got["a"]) >= 100, what="100 publications")
    assert seen.offsets("a") == list(range(2, 102))
    assert all(p.data == sent[p.offset] and p.kind == "chat" for p in seen.got["a"])

    await bus.unsubscribe("a")
    await bus.publish("a", "chat", b"after unsubscribing")
    await bus.subscribe("a")
    await bus.publish("a", "chat", b"subscribed again")
    await eventually(lambda: seen.offsets("a")[-1] == 103, what="the resubscribed publication")
    await asyncio.sleep(0.05)
    assert seen.offsets("a") == [*range(2, 102), 103]
    assert "b" not in seen.got


async def test_a_room_subscribed_before_its_first_publication(make_bus: MakeBus) -> None:
    seen = Recorder()
    floors = Floors()
    floors.values["new"] = 20
    bus = await make_bus(floors, on_publication=seen)
    await bus.subscribe("new")
    for _ in range(3):
        await bus.publish("new", "status", b"{}")
    await eventually(lambda: len(seen.got["new"]) == 3, what="3 publications")
    assert seen.offsets("new") == [21, 22, 23]
