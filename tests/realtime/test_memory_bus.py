"""The in-process bus: positions, history windows, recovery, redaction, ordered delivery."""

import pytest

from livecart.realtime.bus.base import Publication, StreamPosition
from livecart.realtime.bus.memory import MemoryBus


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def floor_at(n: int):  # type: ignore[no-untyped-def]
    async def floor(room: str) -> int:
        return n

    return floor


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def make(clock: Clock, floor: int = 0, size: int = 5, ttl: float = 60.0) -> MemoryBus:
    return MemoryBus(await floor_at(floor), history_size=size, history_ttl_s=ttl, clock=clock)


async def test_offsets_are_contiguous_from_the_floor_and_delivered_in_order(clock: Clock) -> None:
    bus = await make(clock, floor=41)
    got: list[tuple[str, Publication]] = []
    await bus.start(lambda room, pub: got.append((room, pub)))
    await bus.subscribe("r")
    positions = [await bus.publish("r", "chat", b'{"n":%d}' % i) for i in range(3)]
    assert [p.offset for p in positions] == [42, 43, 44]
    assert len({p.epoch for p in positions}) == 1
    assert [pub.offset for _, pub in got] == [42, 43, 44]
    await bus.publish("unsubscribed", "chat", b"{}")
    assert len(got) == 3


async def test_history_recovery_window_and_epochs(clock: Clock) -> None:
    bus = await make(clock, size=5)
    for i in range(8):
        pos = await bus.publish("r", "chat", b'{"n":%d}' % i)
    h = await bus.history("r", StreamPosition(pos.epoch, 5), 100)
    assert h.recovered and [p.offset for p in h.publications] == [6, 7, 8]
    h = await bus.history("r", StreamPosition(pos.epoch, 3), 100)  # 4..8 are kept
    assert h.recovered and [p.offset for p in h.publications] == [4, 5, 6, 7, 8]
    h = await bus.history("r", StreamPosition(pos.epoch, 2), 100)  # 3 is gone
    assert not h.recovered and [p.offset for p in h.publications] == [4, 5, 6, 7, 8]
    h = await bus.history("r", StreamPosition("other", 7), 2)
    assert not h.recovered and [p.offset for p in h.publications] == [7, 8]
    h = await bus.history("r", StreamPosition(pos.epoch, 9), 2)  # from the future
    assert not h.recovered
    h = await bus.history("r", StreamPosition(pos.epoch, 8), 2)
    assert h.recovered and h.publications == [] and h.position == pos


async def test_history_ages_out_and_redaction_replaces(clock: Clock) -> None:
    bus = await make(clock, ttl=10)
    first = await bus.publish("r", "chat", b'{"text":"secret"}')
    clock.t = 5
    await bus.publish("r", "chat", b'{"text":"b"}')
    await bus.redact("r", 2, b'{"removed":true}')
    h = await bus.history("r", StreamPosition(first.epoch, 0), 10)
    assert [p.data for p in h.publications] == [b'{"text":"secret"}', b'{"removed":true}']
    clock.t = 12
    h = await bus.history("r", StreamPosition(first.epoch, 0), 10)
    assert not h.recovered and [p.offset for p in h.publications] == [2]
