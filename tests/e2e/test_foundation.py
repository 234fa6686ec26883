"""The real WebSocket path end to end: a uvicorn server in a child process, real clients."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
import websockets

from .harness import Client, ServerProcess, headers, live_session, token


async def test_hello_then_two_viewers_see_the_same_offsets_in_order(server: ServerProcess) -> None:
    s = await live_session(server.url)
    sid = s["session"]["id"]
    alice = await Client.connect(server, token("alice", name="Alice"))
    bob = await Client.connect(server, token("bob"))
    hello = await alice.expect("hello")
    assert hello["user"] == "alice" and hello["role"] == "viewer"
    assert hello["limits"]["max_frame_bytes"] == 16384
    assert (hello["limits"]["chat_rate_per_s"], hello["limits"]["chat_burst"]) == (1.0, 5)
    for c in (alice, bob):
        await c.send({"type": "join", "session": sid})
    ja, jb = await alice.expect("joined"), await bob.expect("joined")
    assert ja["epoch"] == jb["epoch"] and ja["offset"] == jb["offset"]
    assert ja["state"]["status"] == "live"
    for i in range(10):
        sender = alice if i % 2 == 0 else bob
        await sender.send({"type": "chat", "session": sid, "text": f"  msg {i}  ", "ref": f"r{i}"})
    acks = {}
    for i in range(10):
        sender = alice if i % 2 == 0 else bob
        acks[i] = (await sender.expect("ack", ref=f"r{i}"))["offset"]
    seen = {}
    for name, c in (("alice", alice), ("bob", bob)):
        got = [await c.expect("chat") for _ in range(10)]
        seen[name] = [(m["offset"], m["text"]) for m in got]
        offsets = [o for o, _ in seen[name]]
        assert offsets == list(range(ja["offset"] + 1, ja["offset"] + 11)), "contiguous, in order"
    assert seen["alice"] == seen["bob"]
    assert sorted(acks.values()) == [o for o, _ in seen["alice"]]
    # Text is trimmed; the author is named.
    assert {t for _, t in seen["alice"]} == {f"msg {i}" for i in range(10)}
    await alice.close()
    await bob.close()


async def test_reconnect_with_since_gets_exactly_the_missed_events(server: ServerProcess) -> None:
    s = await live_session(server.url)
    sid = s["session"]["id"]
    viewer = await Client.connect(server, token("carol"))
    await viewer.send({"type": "join", "session": sid})
    joined = await viewer.expect("joined")
    chatter = await Client.connect(server, token("dave"))
    # A second chatter: one user's burst is five messages (rate limit 1/s, burst 5).
    chatter2 = await Client.connect(server, token("dave2"))
    await chatter2.send({"type": "chat", "session": sid, "text": "before", "ref": "a"})
    first = (await chatter2.expect("ack", ref="a"))["offset"]
    seen = await viewer.expect("chat", offset=first)
    await viewer.close()
    offsets = []
    for i in range(5):
        await chatter.send({"type": "chat", "session": sid, "text": f"missed {i}", "ref": f"m{i}"})
        offsets.append((await chatter.expect("ack", ref=f"m{i}"))["offset"])
    back = await Client.connect(server, token("carol"))
    await back.send(
        {
            "type": "join",
            "session": sid,
            "since": {"epoch": joined["epoch"], "offset": seen["offset"]},
        }
    )
    rejoined = await back.expect("joined")
    assert rejoined["recovered"] is True
    assert rejoined["offset"] == offsets[-1]
    missed = [m for m in await back.drain(0.5) if "offset" in m]
    assert [m["offset"] for m in missed] == offsets
    assert [m["text"] for m in missed] == [f"missed {i}" for i in range(5)]
    # Live events follow with no gap.
    await chatter2.send({"type": "chat", "session": sid, "text": "after", "ref": "z"})
    live = await back.expect("chat")
    assert live["offset"] == offsets[-1] + 1
    # A position from another epoch is not recoverable: a fresh snapshot instead.
    other = await Client.connect(server, token("erin"))
    await other.send({"type": "join", "session": sid, "since": {"epoch": "nope", "offset": 1}})
    fresh = await other.expect("joined")
    assert fresh["recovered"] is False
    assert fresh["offset"] == offsets[-1] + 1
    assert [m["text"] for m in fresh["state"]["chat"]][-2:] == ["missed 4", "after"]
    for c in (back, chatter, chatter2, other):
        await c.close()


async def test_guest_watches_but_cannot_chat_or_like(server: ServerProcess) -> None:
    s = await live_session(server.url)
    sid = s["session"]["id"]
    guest = await Client.connect(server)
    hello = await guest.expect("hello")
    assert hello["role"] == "guest"
    await guest.send({"type": "join", "session": sid})
    await guest.expect("joined")
    await guest.send({"type": "chat", "session": sid, "text": "hi", "ref": "g1"})
    err = await guest.expect("error", ref="g1")
    assert err["code"] == "unauthorized"
    await guest.send({"type": "like", "session": sid, "count": 3})
    assert (await guest.expect("error"))["code"] == "unauthorized"
    async with httpx.AsyncClient(base_url=server.url) as http:
        tl = (await http.get(f"/api/sessions/{sid}/timeline")).json()
    assert all(e["type"] != "chat" for e in tl["events"]), "nothing was written"
    await guest.close()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("{not json", "bad_frame"),
        ('{"type": "chat", "session": "s", "text": 5, "ref": "x"}', "bad_frame"),
        ('{"type": "join"}', "bad_frame"),
        ('{"session": "s"}', "bad_frame"),
        ("[1, 2]", "bad_frame"),
        ('{"type": "dance", "ref": "x"}', "unknown_type"),
        ('{"type": "like", "session": "s", "count": 51}', "bad_frame"),
        ('{"type": "chat", "session": "s", "text": "hi", "ref": ""}', "bad_frame"),
        ('{"type": "join", "session": "s", "since": {"epoch": "e", "offset": -1}}', "bad_frame"),
        (b'\xff\xfe{"type": "ping"}', "bad_frame"),
        ("x" * (16 * 1024 + 1), "too_large"),
    ],
)
async def test_bad_input_gets_its_code_and_the_connection_stays_usable(
    server: ServerProcess, payload: str | bytes, code: str
) -> None:
    c = await Client.connect(server, token("fuzzer"))
    await c.expect("hello")
    await c.send(payload)
    err = await c.expect("error")
    assert err["code"] == code
    await c.send({"type": "ping", "ref": "still-there"})
    await c.expect("pong", ref="still-there")
    await c.close()


async def test_chat_text_rules_and_unknown_session(server: ServerProcess) -> None:
    s = await live_session(server.url)
    sid = s["session"]["id"]
    c = await Client.connect(server, token("writer"))
    await c.send({"type": "chat", "session": sid, "text": "   ", "ref": "blank"})
    assert (await c.expect("error", ref="blank"))["code"] == "bad_frame"
    await c.send({"type": "chat", "session": sid, "text": "é" * 501, "ref": "long"})
    assert (await c.expect("error", ref="long"))["code"] == "bad_frame"
    await c.send({"type": "chat", "session": sid, "text": "é" * 500, "ref": "max"})
    assert (await c.expect("ack", ref="max"))["offset"] >= 1
    await c.send({"type": "chat", "session": "ses_missing", "text": "hi", "ref": "nf"})
    assert (await c.expect("error", ref="nf"))["code"] == "not_found"
    await c.send({"type": "join", "session": "ses_missing"})
    assert (await c.expect("error"))["code"] == "not_found"
    await c.close()


async def test_chat_before_live_is_refused(server: ServerProcess) -> None:
    h = headers(token("creator2", "creator"))
    async with httpx.AsyncClient(base_url=server.url) as http:
        sess = (await http.post("/api/sessions", headers=h, json={"title": "Later"})).json()
    c = await Client.connect(server, token("early"))
    await c.send({"type": "chat", "session": sess["id"], "text": "hello?", "ref": "e"})
    assert (await c.expect("error", ref="e"))["code"] == "not_live"
    await c.close()


async def test_forged_and_expired_tokens_close_with_4001(server: ServerProcess) -> None:
    from livecart import auth

    forged = auth.issue("another-secret-that-is-long-enough-000000", "mallory", "admin")
    expired = token("old", ttl_s=1, now=1_000_000)
    for bad in (forged, expired, "not.a.jwt"):
        ws = await websockets.connect(server.ws_url + f"?token={bad}")
        msgs = json.loads(await ws.recv())
        assert msgs[0]["type"] == "error" and msgs[0]["code"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


async def test_creator_pins_and_ends_viewers_get_events(server: ServerProcess) -> None:
    s = await live_session(server.url, creator="pinner")
    sid = s["session"]["id"]
    v = await Client.connect(server, token("watcher"))
    await v.send({"type": "join", "session": sid})
    joined = await v.expect("joined")
    assert joined["state"]["pinned"] is None
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.post(
            f"/api/sessions/{sid}/pin",
            headers=s["headers"],
            json={"product_id": s["product"]["id"]},
        )
        assert r.status_code == 200 and r.json()["pinned_product"] == s["product"]["id"]
        pinned = await v.expect("pinned")
        assert pinned["product"]["id"] == s["product"]["id"]
        assert pinned["offset"] == joined["offset"] + 1
        # A viewer may not pin or end.
        r = await http.post(f"/api/sessions/{sid}/end", headers=headers(token("watcher")))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await http.post(f"/api/sessions/{sid}/end", headers=s["headers"])
        assert r.json()["status"] == "ended"
    status = await v.expect("status")
    assert status["status"] == "ended" and status["offset"] == pinned["offset"] + 1
    late = await Client.connect(server, token("late"))
    await late.send({"type": "join", "session": sid})
    state = (await late.expect("joined"))["state"]
    assert state["status"] == "ended" and state["pinned"]["id"] == s["product"]["id"]
    await v.close()
    await late.close()


async def test_viewer_and_like_counts_are_coalesced(server: ServerProcess) -> None:
    s = await live_session(server.url)
    sid = s["session"]["id"]
    a = await Client.connect(server, token("liker"))
    b = await Client.connect(server, token("watcher2"))
    for c in (a, b):
        await c.send({"type": "join", "session": sid})
        await c.expect("joined")
    for _ in range(10):  # within the flood budget of 20 frames per 2 s
        await a.send({"type": "like", "session": sid, "count": 10})
    deadline = asyncio.get_running_loop().time() + 3
    totals = []
    while asyncio.get_running_loop().time() < deadline:
        m = await b.expect("likes", timeout=3)
        totals.append(m["total"])
        if m["total"] == 100:
            break
    assert totals[-1] == 100
    assert len(totals) <= 5, "coalesced: far fewer likes messages than like frames"
    viewers = await b.expect("viewers")
    assert viewers["count"] == 2
    await a.close()
    await b.close()


MAX_ROUNDS = 2_000  # a bound on the writing, never reached: the close comes long before


def _closed_slow(node: ServerProcess, user: str) -> bool:
    """Whether the node logged closing `user`'s connection for being too slow (4009)."""
    return any("closing slow consumer" in line and user in line for line in list(node.output))


async def test_slow_consumer_is_closed_with_4009(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node = ServerProcess(
        database_url,
        str(tmp_path),
        env={
            "LIVECART_OUTBOX_MAX_AGE_S": "1.5",
            "LIVECART_CHAT_RATE_PER_S": "1000",
            "LIVECART_CHAT_BURST": "1000",
            "LIVECART_FLOOD_FRAMES": "100000",
            "LIVECART_CHAT_DISPLAY_BUDGET": "0",  # every message reaches every viewer
        },
    ).start()
    try:
        s = await live_session(node.url, creator="loud")
        sid = s["session"]["id"]
        # A client that upgrades, joins and then never reads, with a tiny receive buffer.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", node.port))
        sock.sendall(
            (
                f"GET /ws?token={token('sloth')} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert b" 101 " in sock.recv(4096)
        sock.sendall(_masked_text_frame(json.dumps({"type": "join", "session": sid}).encode()))
        healthy = await Client.connect(node, token("healthy"))
        limits = (await healthy.expect("hello"))["limits"]
        assert (limits["chat_rate_per_s"], limits["chat_burst"]) == (1000, 1000), "as configured"
        await healthy.send({"type": "join", "session": sid})
        await healthy.expect("joined")
        writers = [await Client.connect(node, token(f"w{i}"), max_queue=None) for i in range(20)]

        got = 0

        async def read_all() -> None:  # the healthy client reads all along
            nonlocal got
            while True:
                await healthy.expect("chat", timeout=15)
                got += 1

        reader = asyncio.create_task(read_all())
        text = "y" * 480
        # The writers go on until the node has closed the sleeper (its outbox stayed
        # non-empty for 1.5 s, checked on each write), however long a loaded machine takes:
        # the trigger is the node's own decision, not a guess at how long it needs.
        rounds = 0
        deadline = asyncio.get_running_loop().time() + 120
        while not _closed_slow(node, "sloth"):
            assert rounds < MAX_ROUNDS and asyncio.get_running_loop().time() < deadline, (
                "the sleeper was never closed: " + "".join(node.output)[-3000:]
            )
            for i, w in enumerate(writers):
                await w.send(
                    {
                        "type": "chat",
                        "session": sid,
                        "text": f"{rounds}-{i}{text}",
                        "ref": f"{rounds}",
                    }
                )
            rounds += 1
            await asyncio.sleep(0.04)
        assert rounds * 20 * len(text) > 64 * 1024, "closed for what it did not read"

        # Now it reads: everything the node had sent it, then a 4009 close frame (well
        # within the node's CLOSE_TIMEOUT, 5 s after the close).
        sock.setblocking(False)
        data = bytearray()
        loop = asyncio.get_running_loop()
        code = None
        while code is None:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 10)
            assert chunk, "the server closed the socket without a close frame"
            data += chunk
            code = _close_code(data)
        assert code == 4009
        assert len(data) < 8 * 1024 * 1024, "the server stopped sending to it"

        # A client that reads keeps receiving everything, the sleeper's fate aside.
        async with asyncio.timeout(30):
            while got < rounds * 20 and not reader.done():
                await asyncio.sleep(0.05)
        assert not reader.done(), reader.exception()
        reader.cancel()
        assert got == rounds * 20
        sock.close()
        await asyncio.gather(*(w.close() for w in writers), healthy.close())
    finally:
        node.kill()


def _masked_text_frame(payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def _close_code(data: bytes) -> int | None:
    """The code of the close frame in a stream of unmasked server frames, once complete."""
    i = 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        head = 2
        if n == 126:
            n, head = int.from_bytes(data[i + 2 : i + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(data[i + 2 : i + 10], "big"), 10
        if i + head + n > len(data):
            return None
        if opcode == 0x8:
            return int.from_bytes(data[i + head : i + head + 2], "big")
        i += head + n
    return None


async def test_invalid_utf8_text_and_huge_frames_close_at_the_websocket_layer(
    server: ServerProcess,
) -> None:
    # A text frame must be UTF-8 (RFC 6455): the WebSocket layer closes with 1007.
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b" 101 " in sock.recv(4096)
    payload = b'{"type":"ping","ref":"\xff"}'
    mask = b"\x01\x02\x03\x04"
    sock.sendall(
        bytes([0x81, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )
    sock.settimeout(5)
    data = b""
    while (code := _close_code(data)) is None:
        chunk = sock.recv(65536)
        assert chunk, "closed without a close frame"
        data += chunk
    assert code == 1007
    sock.close()
    # Past 1 MiB the frame is not read at all: close 1009.
    c = await Client.connect(server, token("huge"))
    await c.expect("hello")
    await c.send("x" * (1024 * 1024 + 10))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await c._read(5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
