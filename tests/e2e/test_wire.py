"""The node's own WebSocket wire on a real node, over raw sockets: fragmented messages with a
control frame between fragments, the closing handshake, and the upgrades it hands on to
uvicorn's protocol (another path, a bad handshake, permessage-deflate on a node that enables
it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import websockets

from .harness import ServerProcess, live_session, token

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
MASK = b"\x0f\x1e\x2d\x3c"
OP_CONT, OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x8, 0x9, 0xA
TIMEOUT = 5.0


def upgrade(
    path: str = "/ws", *, key: str | None = KEY, extra: tuple[str, ...] = ()
) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        *([f"Sec-WebSocket-Key: {key}"] if key is not None else []),
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    n = len(payload)
    assert n < 1 << 16
    b0 = (0x80 if fin else 0) | opcode
    head = bytes((b0, 0x80 | n)) if n < 126 else bytes((b0, 0xFE)) + n.to_bytes(2, "big")
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


class RawClient:
    """One TCP connection speaking the WebSocket protocol by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: ServerProcess) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    async def handshake(self, request: bytes) -> tuple[int, dict[str, str]]:
        """Send an upgrade request; the status and headers of the answer."""
        self.writer.write(request)
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))
        await self.writer.drain()

    async def frame(self) -> tuple[bool, int, bytes]:
        """The next server frame: (fin, opcode, payload)."""

        async def read() -> tuple[bool, int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            assert not b1 & 0x80, "server frames are not masked"
            assert not b0 & 0x70, "no extension was negotiated"
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            return bool(b0 & 0x80), b0 & 0x0F, await self.reader.readexactly(n)

        return await asyncio.wait_for(read(), TIMEOUT)

    async def messages(self) -> list[dict[str, Any]]:
        """The messages of the next server frame (a JSON array in one text frame)."""
        fin, opcode, payload = await self.frame()
        assert (fin, opcode) == (True, OP_TEXT), (fin, opcode, payload)
        messages = json.loads(payload)
        assert isinstance(messages, list), payload
        return messages

    async def eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), TIMEOUT) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def opened(server: ServerProcess, *extra: str) -> tuple[RawClient, dict[str, str]]:
    c = await RawClient.connect(server)
    status, headers = await c.handshake(upgrade(extra=extra))
    assert status == 101, (status, headers)
    assert headers["sec-websocket-accept"] == ACCEPT.decode()
    [hello] = await c.messages()
    assert hello["type"] == "hello" and hello["role"] == "guest"
    return c, headers


async def test_a_fragmented_message_with_a_ping_between_fragments(server: ServerProcess) -> None:
    c, _ = await opened(server)
    message = b'{"type":"ping","ref":"f1"}'
    parts = message[:9], message[9:18], message[18:]
    await c.send(client_frame(OP_TEXT, parts[0], fin=False), client_frame(OP_PING, b"mid-msg"))
    assert await c.frame() == (True, OP_PONG, b"mid-msg"), "answered inside the message"
    await c.send(client_frame(OP_CONT, parts[1], fin=False))
    await asyncio.sleep(0.05)
    await c.send(client_frame(OP_CONT, parts[2]))
    assert await c.messages() == [{"type": "pong", "ref": "f1"}]
    # The connection goes on: an unfragmented message after it.
    await c.send(client_frame(OP_TEXT, b'{"type":"ping","ref":"f2"}'))
    assert await c.messages() == [{"type": "pong", "ref": "f2"}]
    await c.close()


async def test_the_client_closing_with_1000_is_echoed_with_1000(server: ServerProcess) -> None:
    c, _ = await opened(server)
    await c.send(client_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"done"))
    fin, opcode, payload = await c.frame()
    assert (fin, opcode) == (True, OP_CLOSE)
    assert int.from_bytes(payload[:2], "big") == 1000
    assert await c.eof(), "the server closes the TCP connection after the echo"
    await c.close()


async def test_an_unmasked_frame_closes_with_1002(server: ServerProcess) -> None:
    c, _ = await opened(server)
    payload = b'{"type":"ping","ref":"u"}'
    await c.send(bytes((0x81, len(payload))) + payload)
    fin, opcode, body = await c.frame()
    assert (fin, opcode, int.from_bytes(body[:2], "big")) == (True, OP_CLOSE, 1002)
    assert await c.eof()
    await c.close()


async def test_an_upgrade_to_another_path_is_refused(server: ServerProcess) -> None:
    c = await RawClient.connect(server)
    status, headers = await c.handshake(upgrade("/elsewhere"))
    assert status == 403, (status, headers)
    assert "sec-websocket-accept" not in headers
    await c.close()


async def test_a_handshake_without_a_key_is_refused(server: ServerProcess) -> None:
    c = await RawClient.connect(server)
    status, headers = await c.handshake(upgrade(key=None))
    assert status == 400, (status, headers)
    assert "sec-websocket-accept" not in headers
    await c.close()


async def test_deflate_offered_to_the_default_node_is_declined(server: ServerProcess) -> None:
    c, headers = await opened(
        server, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    )
    assert "sec-websocket-extensions" not in headers
    await c.send(client_frame(OP_TEXT, b'{"type":"ping","ref":"d0"}'))
    assert await c.messages() == [{"type": "pong", "ref": "d0"}]
    await c.close()
    # A library client offering it (the default) works uncompressed.
    async with websockets.connect(server.ws_url, compression="deflate") as ws:
        assert ws.protocol.extensions == []
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))[0]["type"] == "hello"
        await ws.send('{"type":"ping","ref":"d1"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) == [
            {"type": "pong", "ref": "d1"}
        ]


async def test_a_deflate_node_negotiates_permessage_deflate(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node = ServerProcess(
        database_url,
        str(tmp_path),
        env={
            "LIVECART_WS_DEFLATE": "true",
            "LIVECART_OUTBOX_MAX_AGE_S": "0.5",
            "LIVECART_CHAT_RATE_PER_S": "50",
            "LIVECART_CHAT_BURST": "50",
        },
    ).start()
    try:
        async with websockets.connect(node.ws_url, compression="deflate") as ws:
            assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            [hello] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert hello["type"] == "hello" and hello["role"] == "guest"
            await ws.send('{"type":"ping","ref":"z1"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) == [
                {"type": "pong", "ref": "z1"}
            ]
        # A compressed viewer that keeps up is never taken for a slow one, however long the
        # room's events keep coming (here four times the outbox age).
        s = await live_session(node.url, creator="deflate-host")
        sid = s["session"]["id"]
        async with websockets.connect(
            node.ws_url + "?token=" + token("deflate-viewer"), compression="deflate"
        ) as ws, websockets.connect(
            # The host's acks are not read: an unbounded queue lets its client see the close.
            node.ws_url + "?token=" + s["headers"]["authorization"][7:],
            max_queue=None,
        ) as host:
            await ws.send(json.dumps({"type": "join", "session": sid}))
            chats = 0
            for k in range(20):
                await host.send(
                    json.dumps({"type": "chat", "session": sid, "text": f"deal {k}", "ref": f"d{k}"})
                )
                await asyncio.sleep(0.1)
                while True:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.01)
                    except TimeoutError:
                        break
                    chats += sum(m.get("type") == "chat" for m in json.loads(raw))
            await asyncio.sleep(0.3)
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.3)
                except TimeoutError:
                    break
                chats += sum(m.get("type") == "chat" for m in json.loads(raw))
            assert chats == 20
            assert ws.close_code is None, "the viewer was closed"
        # A client that does not offer it is served by the node's own protocol.
        c, headers = await opened(node)
        assert "sec-websocket-extensions" not in headers
        await c.send(client_frame(OP_TEXT, b'{"type":"ping","ref":"z2"}'))
        assert await c.messages() == [{"type": "pong", "ref": "z2"}]
        await c.close()
    finally:
        node.kill()
