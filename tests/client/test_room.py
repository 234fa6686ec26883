"""A room's events as an async iterator and by handler, the coalesced state, the feed, and
leaving (SPEC §14)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from livecart_client import LivecartClient, LivecartError, kind, messages

from ..e2e.harness import ServerProcess, live_session, token


async def test_iterate_events_state_feed_and_leave(node: ServerProcess) -> None:
    live = await live_session(node.url, creator="sdk-room-host")
    sid = live["session"]["id"]
    client = LivecartClient(node.ws_url, token=token("sdk-room-viewer"))
    other = LivecartClient(node.ws_url, token=token("sdk-room-other"))
    feed: list[Any] = []
    try:
        first, second = await asyncio.gather(client.connect(), client.connect())
        assert first is second and client.connections == 1, "one connection for both"
        await other.join(sid)  # join connects a client that was not connected yet
        assert other.connections == 1
        client.on("feed", feed.append)
        await client.feed(True)
        room = await client.join(sid)
        assert room.state is not None and room.state.status == "live"
        assert await client.join(sid) is room, "joining again is the same room"
        got: list[Any] = []

        async def read() -> None:
            async for event in room:
                got.append(event)
                if kind(event) == "likes" and event.total >= 7:
                    return

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.05)
        theirs = await other.join(sid)
        offset = await theirs.chat("hi there")
        assert await theirs.like(7)
        await asyncio.wait_for(reader, 10)
        chats = [e for e in got if isinstance(e, messages.ChatEvent)]
        assert [(c.text, c.offset, c.user) for c in chats] == [("hi there", offset, "sdk-room-other")]
        assert room.likes >= 7 and room.viewers >= 1
        async with asyncio.timeout(5):
            while not feed:
                await asyncio.sleep(0.05)
        assert isinstance(feed[0], dict) and feed[0]["type"] == "feed"

        # The generic send: a frame type by name, its answer by ref.
        ack = await room.send("report", offset=offset, reason="testing the report path")
        assert isinstance(ack, messages.Ack)
        with pytest.raises(LivecartError) as unknown:
            await room.send("no_such_frame")
        assert unknown.value.code == "unknown_type"

        ended = asyncio.create_task(anext(aiter(room), None))
        await asyncio.sleep(0.05)
        await room.leave()
        assert await asyncio.wait_for(ended, 5) is None, "leaving ends the iteration"
        assert sid not in client.rooms
        with pytest.raises(LivecartError) as missing:
            await client.join("no-such-session")
        assert missing.value.code == "not_found"
    finally:
        await client.close()
        await other.close()
