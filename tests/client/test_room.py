"""A room's events as an async iterator and by handler, the coalesced state, the feed, and
leaving (SPEC §14)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from livecart_client import Gap, LivecartClient, LivecartError, kind, messages

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
        assert [(c.text, c.offset, c.user) for c in chats] == [
            ("hi there", offset, "sdk-room-other")
        ]
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


async def test_a_reader_that_falls_behind_is_bounded_and_told_of_the_gap(
    node: ServerProcess,
) -> None:
    """`events(max_queue=5)`: a reader that stops reading holds at most 5 messages; when it
    reads again it gets a `Gap` counting the oldest ones dropped, then the newest ones, in
    order; the handlers got every message."""
    live = await live_session(node.url, creator="sdk-gap-host")
    sid = live["session"]["id"]
    client = LivecartClient(node.ws_url, token=token("sdk-gap-viewer"))
    other = LivecartClient(node.ws_url, token=token("sdk-gap-other"))
    try:
        room = await client.join(sid)
        theirs = await other.join(sid)
        with pytest.raises(ValueError):
            await anext(room.events(max_queue=0))
        handled: list[Any] = []
        room.on("*", handled.append)
        read: list[Any] = []
        reading = asyncio.Event()
        release = asyncio.Event()
        last_text = "gap-29"

        async def reader() -> None:
            async for event in room.events(max_queue=5):
                read.append(event)
                reading.set()
                await release.wait()  # a slow consumer: nothing more read until released
                if isinstance(event, messages.ChatEvent) and event.text == last_text:
                    return

        task = asyncio.create_task(reader())
        await theirs.chat("gap-start")
        await asyncio.wait_for(reading.wait(), 10)
        for i in range(30):
            await theirs.chat(f"gap-{i}")
        async with asyncio.timeout(10):
            while not any(kind(e) == "chat" and e.text == last_text for e in handled):
                await asyncio.sleep(0.02)
        (inbox,) = room._inboxes
        assert len(inbox.items) == 5, "the slow reader holds no more than max_queue messages"
        assert inbox.dropped >= 30 - 5
        release.set()
        await asyncio.wait_for(task, 10)

        gaps = [e for e in read if isinstance(e, Gap)]
        assert gaps and all(g.session == sid and kind(g) == "gap" for g in gaps)
        # Each gap stands exactly for the messages it dropped, in the handlers' order, up to
        # the last chat (later coalesced state may reach the handlers after the reader ended).
        expanded: list[Any] = []
        for e in read:
            expanded.extend([None] * e.dropped if isinstance(e, Gap) else [e])
        start = handled.index(read[0])
        end = handled.index(read[-1]) + 1
        assert len(expanded) == end - start
        assert all(x is None or x is h for x, h in zip(expanded, handled[start:end], strict=True))
        after_gap = len(read) - 1 - max(i for i, e in enumerate(read) if isinstance(e, Gap))
        assert 1 <= after_gap <= 5, "after the gap: the newest messages that were kept"
    finally:
        await client.close()
        await other.close()
