"""A position the server cannot resume from gives `resync` with the fresh snapshot (SPEC §5,
§14): a node restarted without a shared log (the in-process bus starts a new epoch), and a
viewer that was away for longer than the history window."""

from __future__ import annotations

import asyncio
from typing import Any

from livecart_client import LivecartClient, Position, Resync, kind

from ..e2e.harness import ServerProcess, live_session, token
from .conftest import FAST_CHAT
from .proxy import Proxy


async def _until(cond: Any, timeout: float = 60.0, why: Any = None) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {why() if why else ''}") from None


async def test_a_restarted_node_means_a_new_epoch_and_a_resync(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # No Redis (`./dev test` exports REDIS_URL in CI): the room log lives in the process, so
    # a restart loses it and the next node starts a new epoch.
    alone = {**FAST_CHAT, "REDIS_URL": ""}
    a = ServerProcess(database_url, str(tmp_path / "a"), env=alone).start()
    b: ServerProcess | None = None
    proxy = await Proxy(a.port).start()
    client = LivecartClient(proxy.ws_url, token=token("sdk-epoch-viewer"), reconnect_max_s=0.5)
    try:
        live = await live_session(a.url, creator="sdk-epoch-host")
        sid = live["session"]["id"]
        await client.connect()
        room = await client.join(sid)
        chats: list[Any] = []
        resyncs: list[Any] = []
        room.on("chat", chats.append)
        room.on("resync", resyncs.append)
        for i in range(3):
            await room.chat(f"before {i}")
        await _until(lambda: len(chats) == 3)
        old_epoch, old_offset = room.epoch, room.offset

        offline: list[Any] = []
        client.on("offline", offline.append)
        seen: list[str] = []
        client.on("*", lambda msg: seen.append(kind(msg)))
        # In threads: the client and the proxy keep running meanwhile.
        await asyncio.to_thread(a.terminate)  # 1001 to every socket; the log goes with it
        b = await asyncio.to_thread(
            ServerProcess(database_url, str(tmp_path / "b"), env=alone).start
        )
        proxy.upstream_port = b.port
        await _until(
            lambda: resyncs,
            why=lambda: (
                f"connections={client.connections} proxied={proxy.accepted} "
                f"proxy errors={proxy.errors[-3:]} b alive={b is not None and b.proc.poll()} "
                f"offline={offline[-3:]} room={room.position} old={old_epoch} "
                f"ports a={a.port} b={b.port if b else None} proxy->{proxy.upstream_port} "
                f"seen={seen[-12:]} node b:\n"
                + "".join(b.output[-20:] if b else [])
            ),
        )

        joined = resyncs[0]
        assert isinstance(joined, Resync) and joined.new_epoch and joined.epoch != old_epoch
        assert joined.joined.recovered is False
        assert joined.previous == Position(str(old_epoch), old_offset)
        assert room.epoch == joined.epoch and room.offset == joined.offset
        assert joined.offset >= old_offset, "offsets go on from the archive's floor"
        assert [c["text"] for c in joined.state.chat][-3:] == [f"before {i}" for i in range(3)]
        assert room.state is joined.state
        after = await room.chat("after the restart")
        await _until(lambda: len(chats) == 4)
        assert chats[-1].text == "after the restart" and chats[-1].offset == after
        assert after == joined.offset + 1
        assert len(resyncs) == 1
    finally:
        await client.close()
        await proxy.close()
        a.kill()
        if b is not None:
            b.kill()


async def test_away_longer_than_the_history_window_means_a_resync(
    database_url: str,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    node = ServerProcess(
        database_url, str(tmp_path / "w"), env={**FAST_CHAT, "LIVECART_HISTORY_SIZE": "5"}
    ).start()
    proxy = await Proxy(node.port).start()
    viewer = LivecartClient(proxy.ws_url, token=token("sdk-window-viewer"), reconnect_max_s=0.3)
    sender = LivecartClient(node.ws_url, token=token("sdk-window-sender"))
    try:
        live = await live_session(node.url, creator="sdk-window-host")
        sid = live["session"]["id"]
        await viewer.connect()
        await sender.connect()
        room = await viewer.join(sid)
        out = await sender.join(sid)
        chats: list[Any] = []
        resyncs: list[Any] = []
        room.on("chat", chats.append)
        room.on("resync", resyncs.append)
        await out.chat("seen")
        await _until(lambda: len(chats) == 1)
        epoch = room.epoch

        # Away briefly: the missed messages are replayed, no resync.
        proxy.blocked = True
        proxy.cut()
        await out.chat("missed 1")
        await out.chat("missed 2")
        proxy.blocked = False
        await _until(lambda: len(chats) == 3)
        assert [c.text for c in chats] == ["seen", "missed 1", "missed 2"] and not resyncs

        # Away for more than the window (5 events): a fresh snapshot in the same epoch.
        proxy.blocked = True
        proxy.cut()
        for i in range(8):
            await out.chat(f"gone {i}")
        proxy.blocked = False
        await _until(lambda: resyncs)
        joined = resyncs[0]
        assert joined.epoch == epoch and not joined.new_epoch
        assert joined.joined.recovered is False
        assert room.offset == joined.offset == chats[-1].offset + 8
        assert [c["text"] for c in joined.state.chat][-8:] == [f"gone {i}" for i in range(8)]
        assert [c.text for c in chats] == ["seen", "missed 1", "missed 2"], "no event replayed"
        latest = await out.chat("live again")
        await _until(lambda: len(chats) == 4)
        assert chats[-1].offset == latest == joined.offset + 1
    finally:
        await viewer.close()
        await sender.close()
        await proxy.close()
        node.kill()
