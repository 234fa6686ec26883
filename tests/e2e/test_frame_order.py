"""A connection's frames are answered in the order they were sent, on a real node over raw
sockets: many frames in one TCP write, and a frame that waits for the database (chat, a
purchase) followed in the same write by one that does not."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from livecart.runtime import config

from .harness import ServerProcess, live_session, open_offer, token
from .test_wire import (
    ACCEPT,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawClient,
    client_frame,
    upgrade,
)

# The node closes a connection that sends more frames than this within its flood window.
FLOOD_FRAMES = config.load().flood_frames
WAIT_S = 15.0

Messages = list[dict[str, Any]]


def text(message: dict[str, Any]) -> bytes:
    return client_frame(OP_TEXT, json.dumps(message).encode())


async def connected(server: ServerProcess, tok: str | None = None) -> RawClient:
    c = await RawClient.connect(server)
    status, headers = await c.handshake(upgrade(f"/ws?token={tok}" if tok else "/ws"))
    assert status == 101, (status, headers)
    assert headers["sec-websocket-accept"] == ACCEPT.decode()
    [hello] = await c.messages()
    assert hello["type"] == "hello"
    assert hello["role"] == ("guest" if tok is None else "viewer")
    return c


async def read_until(c: RawClient, done: Callable[[Messages], bool]) -> Messages:
    """The messages of the server's frames until `done` holds for what was read."""
    got: Messages = []
    deadline = time.monotonic() + WAIT_S
    while not done(got):
        assert time.monotonic() < deadline, f"gave up waiting; got {got}"
        fin, opcode, payload = await c.frame()
        if opcode == OP_TEXT:
            assert fin
            batch = json.loads(payload)
            assert isinstance(batch, list), payload
            got.extend(batch)
        elif opcode == OP_PING:
            await c.send(client_frame(OP_PONG, payload))
        else:
            assert opcode != OP_CLOSE, f"closed: {payload!r} after {got}"
    return got


def position(got: Messages, type_: str | tuple[str, ...], ref: str) -> int:
    types = (type_,) if isinstance(type_, str) else type_
    found = [i for i, m in enumerate(got) if m.get("type") in types and m.get("ref") == ref]
    assert len(found) == 1, (type_, ref, got)
    return found[0]


def has(type_: str | tuple[str, ...], ref: str) -> Callable[[Messages], bool]:
    types = (type_,) if isinstance(type_, str) else type_
    return lambda got: any(m.get("type") in types and m.get("ref") == ref for m in got)


def pongs(got: Messages) -> list[str]:
    return [m["ref"] for m in got if m.get("type") == "pong"]


async def joined(c: RawClient, sid: str) -> None:
    await c.send(text({"type": "join", "session": sid}))
    await read_until(
        c, lambda got: any(m.get("type") == "joined" and m["session"] == sid for m in got)
    )


async def test_pings_in_one_write_are_answered_in_order(server: ServerProcess) -> None:
    c = await connected(server)
    refs = [f"p{i}" for i in range(FLOOD_FRAMES)]  # as many as the flood guard allows
    await c.send(*(text({"type": "ping", "ref": r}) for r in refs))
    got = await read_until(c, lambda got: len(pongs(got)) == len(refs))
    assert pongs(got) == refs
    assert [m["type"] for m in got] == ["pong"] * len(refs)
    await c.close()


async def test_frames_behind_a_signed_in_users_first_write_keep_their_order(
    server: ServerProcess,
) -> None:
    # A signed-in connection's first frames wait for its user row to be written.
    c = await connected(server, token(f"fo-early-{secrets.token_hex(3)}"))
    refs = [f"q{i}" for i in range(FLOOD_FRAMES)]
    await c.send(*(text({"type": "ping", "ref": r}) for r in refs))
    got = await read_until(c, lambda got: len(pongs(got)) == len(refs))
    assert pongs(got) == refs
    await c.close()


async def test_a_chat_is_answered_before_the_ping_sent_after_it(server: ServerProcess) -> None:
    tag = secrets.token_hex(3)
    s = await live_session(server.url, creator=f"fo-creator-{tag}")
    sid = s["session"]["id"]
    c = await connected(server, token(f"fo-talker-{tag}"))
    await joined(c, sid)
    await c.send(
        text({"type": "chat", "session": sid, "text": "hello from the front row", "ref": "c1"}),
        text({"type": "ping", "ref": "after-chat"}),
    )
    got = await read_until(c, lambda got: has("pong", "after-chat")(got) and has("ack", "c1")(got))
    ack = got[position(got, "ack", "c1")]
    assert isinstance(ack["offset"], int) and ack["offset"] >= 1
    assert position(got, "ack", "c1") < position(got, "pong", "after-chat"), got
    await c.close()


async def test_chats_and_pings_interleaved_in_one_write_are_answered_in_order(
    server: ServerProcess,
) -> None:
    tag = secrets.token_hex(3)
    s = await live_session(server.url, creator=f"fo-creator-{tag}")
    sid = s["session"]["id"]
    c = await connected(server, token(f"fo-chatty-{tag}"))
    await joined(c, sid)
    frames = []
    order = []
    for i in range(4):
        frames.append(
            text({"type": "chat", "session": sid, "text": f"message number {i}", "ref": f"c{i}"})
        )
        frames.append(text({"type": "ping", "ref": f"p{i}"}))
        order += [f"c{i}", f"p{i}"]
    await c.send(*frames)
    got = await read_until(c, lambda got: len(pongs(got)) == 4 and has("ack", "c3")(got))
    answers = [
        m["ref"] for m in got if m.get("type") in ("ack", "held", "error", "pong") and "ref" in m
    ]
    assert answers == order, got
    assert [m["type"] for m in got if m.get("ref") in ("c0", "c1", "c2", "c3")] == ["ack"] * 4
    await c.close()


async def test_a_buy_is_answered_before_the_ping_sent_after_it(server: ServerProcess) -> None:
    tag = secrets.token_hex(3)
    s = await live_session(server.url, creator=f"fo-seller-{tag}")
    sid = s["session"]["id"]
    offer = await open_offer(server.url, s, price_cents=700, quantity=5, per_user_limit=2)
    c = await connected(server, token(f"fo-buyer-{tag}"))
    await joined(c, sid)
    await c.send(
        text({"type": "buy", "session": sid, "offer": offer["id"], "qty": 2, "ref": "b1"}),
        text({"type": "ping", "ref": "after-buy"}),
    )
    got = await read_until(c, lambda got: has("pong", "after-buy")(got) and has("order", "b1")(got))
    order = got[position(got, "order", "b1")]["order"]
    assert order["status"] == "reserved" and order["qty"] == 2 and order["total_cents"] == 1400
    assert position(got, "order", "b1") < position(got, "pong", "after-buy"), got
    # A refused purchase (over the per-user limit) also answers before what follows it.
    await c.send(
        text({"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": "b2"}),
        text({"type": "ping", "ref": "after-refusal"}),
    )
    got = await read_until(
        c, lambda got: has("pong", "after-refusal")(got) and has("error", "b2")(got)
    )
    assert got[position(got, "error", "b2")]["code"] == "limit_reached"
    assert position(got, "error", "b2") < position(got, "pong", "after-refusal"), got
    await c.close()
