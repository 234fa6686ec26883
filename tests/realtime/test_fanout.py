"""The hub's fan-out: idle rooms send at once, busy rooms one shared frame per tick, huge
rooms a fair sample of chat announced with chat_sampled, and every viewer's room events in
offset order with no gaps and no duplicates. Connections here write to a recorder that stands
for the socket."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import msgspec

from livecart.auth import Identity
from livecart.realtime.bus.base import Publication
from livecart.realtime.connection import Connection, RoomCursor
from livecart.realtime.hub import Hub
from livecart.realtime.room import Room

SID = "s1"


class Recorder:
    """The socket of one client: every frame the connection sends, decoded."""

    def __init__(self) -> None:
        self.frames: list[list[dict[str, Any]]] = []
        self.close_code: int | None = None

    def send(self, payload: bytes, framed: bytes | None) -> int:
        if self.close_code is not None:
            return -1
        if framed is not None:
            assert framed.endswith(payload), "the framed bytes carry the payload"
        self.frames.append(json.loads(payload))
        return 0

    def close(self, code: int, reason: str = "") -> None:
        self.close_code = code

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def messages(self) -> list[dict[str, Any]]:
        return [m for f in self.frames for m in f]


async def _never_loaded(session_id: str) -> Room | None:
    raise AssertionError("rooms are set up by the test")


def make_hub(tick_s: float = 0.05, budget: float = 30.0, *, writes_per_s: int = 0) -> Hub:
    hub = Hub(
        None,  # type: ignore[arg-type]
        _never_loaded,
        tick_s=tick_s,
        writes_per_s=writes_per_s,
        chat_budget=budget,
    )
    row = {
        "id": SID,
        "creator": "c",
        "status": "live",
        "slow_seconds": 0,
        "shield": False,
        "like_total": 0,
        "category": "x",
        "tags": [],
    }
    hub.rooms[SID] = Room(row, None)
    return hub


def viewer(hub: Hub, user: str, offset: int | None = 0) -> tuple[Connection, Recorder]:
    rec = Recorder()
    conn = Connection(
        rec,
        f"conn-{user}",
        Identity(user, user, "viewer"),
        max_bytes=1 << 20,
        max_age_s=10,
        on_gap=lambda c, room: None,
    )
    conn.rooms[SID] = RoomCursor()
    conn.rooms[SID].offset = offset
    hub.add(conn, hub.rooms[SID])
    return conn, rec


_enc = msgspec.json.Encoder()


def chat(offset: int, user: str = "u") -> Publication:
    body = {"type": "chat", "session": SID, "user": user, "name": user, "text": f"m{offset}"}
    return Publication(offset, "chat", _enc.encode(body))


def pinned(offset: int) -> Publication:
    return Publication(
        offset, "pinned", _enc.encode({"type": "pinned", "session": SID, "product": None})
    )


async def settle(seconds: float = 0.0) -> None:
    await asyncio.sleep(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_idle_room_sends_at_once_and_a_busy_one_once_per_tick() -> None:
    hub = make_hub(tick_s=0.3)
    _, rec = viewer(hub, "v")
    started = time.monotonic()
    hub.on_publication(SID, chat(1))
    await settle()
    assert [[m["offset"] for m in f] for f in rec.frames] == [[1]], "the first event goes at once"
    assert time.monotonic() - started < 0.1
    for off in (2, 3, 4):
        hub.on_publication(SID, chat(off))
    await settle(0.1)
    assert len(rec.frames) == 1, "within the tick the room waits"
    await settle(0.3)
    assert [[m["offset"] for m in f] for f in rec.frames] == [[1], [2, 3, 4]]


async def test_one_frame_is_shared_and_state_events_ride_along() -> None:
    hub = make_hub()
    recs = [viewer(hub, f"v{i}")[1] for i in range(5)]
    hub.on_publication(SID, chat(1))
    hub.broadcast(hub.rooms[SID], b'{"type":"viewers","session":"s1","count":5}')
    hub.on_publication(SID, chat(2))
    await settle()
    for rec in recs:
        assert rec.frames == recs[0].frames
        assert [m["type"] for m in rec.frames[0]] == ["chat", "viewers", "chat"]


async def test_a_viewer_behind_gets_events_in_order_without_duplicates() -> None:
    hub = make_hub()
    conn, rec = viewer(hub, "late", offset=None)  # joining: its snapshot is not out yet
    _, fresh = viewer(hub, "fresh", offset=0)
    for off in (1, 2, 3):
        hub.on_publication(SID, chat(off))
    await settle()
    assert rec.messages() == []
    # The snapshot was taken at offset 1: 2 and 3 follow it, 1 is not repeated.
    conn.position(SID, "e", 1)
    await settle()
    assert [m["offset"] for m in rec.messages()] == [2, 3]
    hub.on_publication(SID, chat(4))
    await settle(0.1)
    assert [m["offset"] for m in rec.messages()] == [2, 3, 4]
    assert [m["offset"] for m in fresh.messages()] == [1, 2, 3, 4]


async def test_huge_room_samples_chat_fairly_and_never_other_events() -> None:
    hub = make_hub(tick_s=0.02, budget=20.0)
    _, watcher = viewer(hub, "watcher")
    _, author = viewer(hub, "author")
    published = 0
    own: list[int] = []
    offset = 0
    for _ in range(10):  # about 200 chat messages a second for half a second
        for i in range(10):
            offset += 1
            who = "author" if i == 0 else f"u{i}"
            if who == "author":
                own.append(offset)
            hub.on_publication(SID, chat(offset, who))
            published += 1
        offset += 1
        hub.on_publication(SID, pinned(offset))
        await settle(0.05)
    await settle(0.1)
    for rec in (watcher, author):
        msgs = rec.messages()
        chats = [m for m in msgs if m["type"] == "chat"]
        skipped = sum(m["skipped"] for m in msgs if m["type"] == "chat_sampled")
        assert skipped > 0, "the room is over budget"
        assert len(chats) + skipped == published, "every chat message is delivered or counted"
        assert len([m for m in msgs if m["type"] == "pinned"]) == 10, "other events never skipped"
        offsets = [m["offset"] for m in msgs if "offset" in m]
        assert offsets == sorted(set(offsets)), "in order, no duplicates"
    got = {m["offset"] for m in author.messages() if m["type"] == "chat" and m["user"] == "author"}
    assert got == set(own), "an author sees every one of their own messages"
    watcher_chats = len([m for m in watcher.messages() if m["type"] == "chat"])
    assert watcher_chats < published / 2


async def test_a_burst_under_the_budget_is_not_sampled() -> None:
    hub = make_hub(tick_s=0.02, budget=30.0)
    _, rec = viewer(hub, "v")
    for off in range(1, 31):  # 30 at once: a burst, not a rate above 30 a second
        hub.on_publication(SID, chat(off))
    await settle(0.1)
    assert [m["offset"] for m in rec.messages()] == list(range(1, 31))
    assert not [m for m in rec.messages() if m["type"] == "chat_sampled"]


async def test_a_hanging_cluster_sync_does_not_hold_up_state_events() -> None:
    hub = make_hub()
    hub._coalesce_s = 0.05
    _, rec = viewer(hub, "v")

    async def hang(rooms: dict[str, tuple[int, int]]) -> dict[str, int]:
        await asyncio.Event().wait()
        return {}

    hub.sync_likes = hang
    hub.add_likes(hub.rooms[SID], 3)
    loop_task = asyncio.create_task(hub._coalesce_loop())
    try:
        await settle(1.6)
    finally:
        loop_task.cancel()
    assert {"type": "likes", "session": SID, "total": 3} in rec.messages()
