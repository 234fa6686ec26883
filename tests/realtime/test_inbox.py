"""The gateway's inbox: frames are read as they come and handled in slices of loop time, in
order, so that a burst leaves the loop free for the node's other I/O between slices; past
INBOX_MAX the sockets that add to it stop reading until it is done."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from livecart.realtime import inbox
from livecart.realtime.endpoint import Gateway


class FakeSocket:
    def __init__(self) -> None:
        self.events: list[str] = []

    def pause_reading(self) -> None:
        self.events.append("pause")

    def resume_reading(self) -> None:
        self.events.append("resume")


class FakeConn:
    def __init__(self) -> None:
        self.closed = False
        self.backlog: Any = None
        self.paused = False
        self.socket = FakeSocket()

    def info(self) -> dict[str, Any]:
        return {}


def slow_gateway(monkeypatch: pytest.MonkeyPatch, per_frame_s: float) -> tuple[Gateway, list]:
    """A gateway whose frames each take `per_frame_s` of CPU; returns what it handled."""
    gw = Gateway(None)  # type: ignore[arg-type]
    handled: list[tuple[Any, bytes]] = []

    def turn(conn: Any, message: bytes, arrived: float) -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < per_frame_s:
            pass
        handled.append((conn, message))

    monkeypatch.setattr(gw, "_turn", turn)
    return gw, handled


async def test_a_burst_is_handled_in_order_in_slices_with_the_loop_free_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw, handled = slow_gateway(monkeypatch, 0.001)
    conns = [FakeConn() for _ in range(4)]
    sent = [(conns[i % 4], str(i).encode()) for i in range(40)]
    for conn, message in sent:
        gw.received(conn, message)  # type: ignore[arg-type]
    assert handled == [], "the read step only queues"
    other_io: list[int] = []  # how far the inbox was when other callbacks got their turn
    loop = asyncio.get_running_loop()

    def tick() -> None:
        other_io.append(len(handled))
        if len(handled) < len(sent):
            loop.call_soon(tick)

    loop.call_soon(tick)
    deadline = time.monotonic() + 5
    while len(handled) < len(sent) and time.monotonic() < deadline:
        await asyncio.sleep(0)
    assert handled == sent
    # Each slice is about SLICE_S: other callbacks ran many times while the 40 ms burst was
    # handled, each time with part of the inbox done.
    partial = [n for n in other_io if 0 < n < len(sent)]
    assert len(partial) >= 5, other_io
    assert max(b - a for a, b in itertools.pairwise(other_io)) <= 10


async def test_frames_of_a_closed_connection_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    gw, handled = slow_gateway(monkeypatch, 0.0)
    gone, live = FakeConn(), FakeConn()
    gw.received(gone, b"a")  # type: ignore[arg-type]
    gw.received(live, b"b")  # type: ignore[arg-type]
    gone.closed = True
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert handled == [(live, b"b")]


async def test_past_inbox_max_the_adding_socket_pauses_until_the_inbox_is_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inbox, "INBOX_MAX", 5)
    gw, handled = slow_gateway(monkeypatch, 0.0005)
    flooder, quiet = FakeConn(), FakeConn()
    for i in range(10):
        gw.received(flooder, str(i).encode())  # type: ignore[arg-type]
    assert flooder.socket.events == ["pause"] and flooder.paused
    assert quiet.socket.events == []
    deadline = time.monotonic() + 5
    while len(handled) < 10 and time.monotonic() < deadline:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert flooder.socket.events == ["pause", "resume"] and not flooder.paused
