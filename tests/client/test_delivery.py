"""The delivery rules on their own, message by message: an offset seen before is dropped, a
skipped offset is not delivered but makes the room re-join from the last one delivered, a
frame that announces sampled chat may skip chat offsets, and a `joined` that could not
resume is a `resync`. (Against a real node these rules are exercised by test_reconnect and
test_resync; the server never skips an offset, so the gap path is driven here.)"""

from __future__ import annotations

from typing import Any

from livecart_client import LivecartClient, Resync, to_message
from livecart_client.client import Room


def _chat(offset: int, text: str = "x") -> dict[str, Any]:
    return {
        "type": "chat",
        "offset": offset,
        "session": "s1",
        "user": "u",
        "name": "U",
        "text": text,
        "at": 0,
    }


def _joined(epoch: str, offset: int, recovered: bool) -> dict[str, Any]:
    state = {
        "status": "live",
        "pinned": None,
        "offers": [{"id": "o1", "remaining": 4}],
        "auction": None,
        "viewers": 3,
        "likes": 9,
        "slow": 0,
        "chat": [],
    }
    return {
        "type": "joined",
        "session": "s1",
        "epoch": epoch,
        "offset": offset,
        "recovered": recovered,
        "state": state,
    }


async def test_duplicates_gaps_sampling_and_resync() -> None:
    client = LivecartClient("ws://127.0.0.1:9/ws")
    room = client._rooms["s1"] = Room(client, "s1")
    got: list[Any] = []
    seen_by_client: list[Any] = []
    room.on("*", got.append)
    client.on("chat", seen_by_client.append)

    def feed(*messages: dict[str, Any], sampled: bool = False) -> None:
        for msg in messages:
            client._dispatch(to_message(msg), {"s1"} if sampled else set())

    feed(_joined("e1", 10, False))
    assert room.joined and room.offset == 10 and room.stock == {"o1": 4} and room.viewers == 3
    feed(_chat(11, "a"), _chat(11, "a again"), _chat(9, "old"), _chat(12, "b"))
    chats = [m for m in got if getattr(m, "text", None)]
    assert [c.text for c in chats] == ["a", "b"]
    assert [c.text for c in seen_by_client] == ["a", "b"], "dropped events reach no handler"

    feed(_chat(14, "after a gap"))  # 13 is missing: not delivered, a re-join from 12
    assert room.offset == 12 and room._resyncing
    feed(_chat(15, "still held back"))
    assert room.offset == 12
    feed(_joined("e1", 15, True), _chat(13, "c"), _chat(14, "d"), _chat(15, "e"))
    assert [getattr(m, "text", None) for m in got if getattr(m, "text", None)][-3:] == [
        "c",
        "d",
        "e",
    ]
    assert room.offset == 15 and not any(isinstance(m, Resync) for m in got)

    feed(_chat(18, "sampled"), sampled=True)  # 16 and 17 skipped by the server's sampling
    assert room.offset == 18 and got[-1].text == "sampled"

    feed(_joined("e2", 40, False))  # another epoch: a resync with the fresh snapshot
    resync = got[-1]
    assert isinstance(resync, Resync) and resync.new_epoch and resync.offset == 40
    assert resync.previous.epoch == "e1" and resync.previous.offset == 18
    assert room.position is not None and room.position.epoch == "e2" and room.offset == 40
    feed(_chat(41, "new epoch"))
    assert got[-1].text == "new epoch"

    feed(_joined("e2", 90, False))  # same epoch, outside the history window: also a resync
    assert isinstance(got[-1], Resync) and not got[-1].new_epoch and room.offset == 90
    await client.close()
