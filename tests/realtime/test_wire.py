"""The node's own WebSocket protocol (`realtime.wire`), driven directly: a recording transport
stands for the socket and a recording gateway for the node. Client frames are built masked as
RFC 6455 requires; what the protocol writes is walked as unmasked server frames."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import uvicorn
import uvicorn.server

from livecart.realtime import handshake, wire
from livecart.realtime import http as livecart_http
from livecart.realtime.handshake import Handshake
from livecart.realtime.wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WireProtocol,
)

RFC_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
RFC_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
MASK = b"\x37\xfa\x21\x3d"


def upgrade_request(
    target: str = "/ws?token=tok123",
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    key: bytes | None = RFC_KEY,
    ws_version: str | None = "13",
    upgrade: str | None = "websocket",
    connection: str | None = "Upgrade",
    extra: list[str] | None = None,
) -> bytes:
    """An upgrade request as uvicorn hands it over (header names lowercased)."""
    lines = [f"{method} {target} {version}", "host: 127.0.0.1:8000"]
    if upgrade is not None:
        lines.append(f"upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"connection: {connection}")
    if key is not None:
        lines.append("sec-websocket-key: " + key.decode())
    if ws_version is not None:
        lines.append(f"sec-websocket-version: {ws_version}")
    lines += extra or []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
    mask: bytes = MASK,
) -> bytes:
    """One client frame; masked unless told otherwise."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, bit | n))
    elif n < 1 << 16:
        head = bytes((b0, bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, bit | 127)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def text(payload: bytes | str, **kw: Any) -> bytes:
    return client_frame(OP_TEXT, payload.encode() if isinstance(payload, str) else payload, **kw)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


def server_frames(data: bytes) -> list[tuple[bool, int, bytes]]:
    """(fin, opcode, payload) of each server frame in `data`: unmasked, no reserved bits,
    and nothing left over."""
    out = []
    i = 0
    while i < len(data):
        assert len(data) - i >= 2, f"truncated frame header at {i}: {data[i:]!r}"
        b0, b1 = data[i], data[i + 1]
        assert not b1 & 0x80, "server frames are not masked"
        assert not b0 & 0x70, "no reserved bits"
        n = b1 & 0x7F
        head = 2
        if n == 126:
            n, head = int.from_bytes(data[i + 2 : i + 4], "big"), 4
            assert n >= 126, "the shortest length encoding"
        elif n == 127:
            n, head = int.from_bytes(data[i + 2 : i + 10], "big"), 10
            assert n >= 1 << 16, "the shortest length encoding"
        assert i + head + n <= len(data), "truncated frame payload"
        out.append((bool(b0 & 0x80), b0 & 0x0F, bytes(data[i + head : i + head + n])))
        i += head + n
    return out


def close_code(payload: bytes) -> int:
    return int.from_bytes(payload[:2], "big")


class FakeSocket:
    def __init__(self) -> None:
        self.options: dict[tuple[int, int], bytes] = {}

    def setsockopt(self, level: int, name: int, value: bytes) -> None:
        self.options[level, name] = value

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 8000)

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 50000)


class FakeTransport:
    """Records what the protocol does to its socket."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.close_calls = 0
        self.aborted = False
        self.socket = FakeSocket()
        self.events: list[str] = []
        self.buffer_size = 0
        self.protocol: Any = None

    @property
    def closed(self) -> bool:
        return self.close_calls > 0 or self.aborted

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.close_calls += 1

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.socket if name == "socket" else default

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.events.append("pause")

    def resume_reading(self) -> None:
        self.events.append("resume")

    def get_write_buffer_size(self) -> int:
        return self.buffer_size

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def take(self) -> bytes:
        """What was written since the last take."""
        out = bytes(self.data)
        self.data.clear()
        return out

    def frames(self) -> list[tuple[bool, int, bytes]]:
        return server_frames(self.take())


class FakeConn:
    def info(self) -> dict[str, Any]:
        return {"conn": "c1"}


class FakeGateway:
    def __init__(self, *, reject: bool = False, defer: bool = False) -> None:
        self.reject = reject
        self.defer = defer  # answer the handshake later (or never)
        self.connects: list[Handshake] = []
        self.messages: list[tuple[Any, bytes]] = []
        self.fragments: list[Any] = []
        self.closes: list[tuple[Any, int]] = []
        self.conn = FakeConn()

    def connect(self, socket: handshake.Upgrading, hs: Handshake) -> None:
        self.connects.append(hs)
        if self.defer:
            return
        if self.reject:
            socket.reject(503, "Service Unavailable")
            return
        socket.accept(hs)
        socket.conn = self.conn

    def received(self, conn: Any, message: bytes, arrived: float) -> None:
        assert abs(time.time() - arrived) < 5, "stamped when its bytes were read"
        self.messages.append((conn, message))

    def fragment(self, conn: Any) -> None:
        self.fragments.append(conn)

    def closed(self, conn: Any, code: int) -> None:
        self.closes.append((conn, code))

    def payloads(self) -> list[bytes]:
        assert all(c is self.conn for c, _ in self.messages)
        return [m for _, m in self.messages]


class Wire:
    """One protocol instance with its fakes."""

    def __init__(
        self,
        *,
        max_size: int = 1 << 20,
        deflate: bool = False,
        gateway: FakeGateway | None = None,
        **limits: Any,
    ) -> None:
        self.gateway = gateway or FakeGateway()
        self.config = SimpleNamespace(ws_max_size=max_size, ws_per_message_deflate=deflate)
        self.state = SimpleNamespace(
            connections=set(), default_headers=[(b"server", b"livecart-test")]
        )
        cls = handshake.protocol_class(self.gateway, **limits)
        self.proto: WireProtocol = cls(self.config, self.state, {})
        self.transport = FakeTransport()
        self.proto.connection_made(self.transport)  # type: ignore[arg-type]

    def open(self, request: bytes | None = None) -> Wire:
        self.proto.data_received(request or upgrade_request())
        head = self.transport.take()
        assert head.startswith(b"HTTP/1.1 101 "), head
        return self

    def feed(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.proto.data_received(chunk)


def opened(**kw: Any) -> Wire:
    return Wire(**kw).open()


# ---------------------------------------------------------------- handshake


async def test_the_http_protocol_it_takes_over_from_is_cut_from_its_parser() -> None:
    """uvicorn's HTTP protocol is still the transport's at connection_made; once the upgrade
    is done its cycle with its parser is broken, so it is freed without the GC."""
    http = SimpleNamespace(parser=object())
    transport = FakeTransport()
    transport.protocol = http
    cls = handshake.protocol_class(FakeGateway())
    state = SimpleNamespace(connections=set(), default_headers=[])
    proto = cls(SimpleNamespace(ws_max_size=1 << 20, ws_per_message_deflate=False), state, {})
    proto.connection_made(transport)  # type: ignore[arg-type]
    assert http.parser is not None, "not during the upgrade call itself"
    await asyncio.sleep(0)
    assert http.parser is None


async def test_the_101_answers_the_rfc_example_key_with_the_default_headers() -> None:
    w = Wire()
    w.proto.data_received(upgrade_request())
    assert w.transport.take() == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + RFC_ACCEPT + b"\r\n"
        b"server: livecart-test\r\n"
        b"\r\n"
    )
    assert not w.transport.closed
    assert w.proto in w.state.connections
    assert handshake.accept_key(RFC_KEY) == RFC_ACCEPT


async def test_the_query_token_reaches_the_gateway() -> None:
    w = Wire().open(upgrade_request("/ws?token=a%2Bb.c&x=1"))
    [hs] = w.gateway.connects
    assert hs.ok and hs.key == RFC_KEY
    assert hs.query == {"token": "a+b.c", "x": "1"}
    assert w.proto.conn is w.gateway.conn


async def test_a_valid_handshake_is_parsed() -> None:
    hs = Handshake(upgrade_request("/ws", connection="keep-alive, Upgrade", upgrade="WebSocket"))
    assert hs.ok
    assert hs.key == RFC_KEY
    assert hs.query == {}
    assert hs.deflate is False
    offered = Handshake(
        upgrade_request(extra=["sec-websocket-extensions: permessage-deflate; client_max_window_bits"])
    )
    assert offered.ok and offered.deflate is True


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(upgrade_request(method="POST"), id="method"),
        pytest.param(upgrade_request("/other"), id="path"),
        pytest.param(upgrade_request("/ws/"), id="path-slash"),
        pytest.param(upgrade_request(version="HTTP/1.0"), id="http-version"),
        pytest.param(upgrade_request(ws_version="8"), id="ws-version"),
        pytest.param(upgrade_request(ws_version=None), id="ws-version-missing"),
        pytest.param(upgrade_request(key=None), id="key-missing"),
        pytest.param(upgrade_request(key=b"not base64!!"), id="key-not-base64"),
        pytest.param(upgrade_request(key=b"AAAA"), id="key-not-16-bytes"),
        pytest.param(upgrade_request(upgrade=None), id="upgrade-missing"),
        pytest.param(upgrade_request(upgrade="h2c"), id="upgrade-other"),
        pytest.param(upgrade_request(connection="keep-alive"), id="connection-no-upgrade"),
        pytest.param(upgrade_request().replace(b"\r\n\r\n", b"\r\n"), id="unterminated"),
        pytest.param(upgrade_request(extra=["no colon here"]), id="bad-header-line"),
    ],
)
async def test_handshake_refuses(request_bytes: bytes) -> None:
    assert Handshake(upgrade_request()).ok, "the base request is valid"
    assert not Handshake(request_bytes).ok


class StubSansIO:
    """Stands for uvicorn's websockets-sansio protocol."""

    made: ClassVar[list[StubSansIO]] = []

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any]) -> None:
        self.config = config
        self.server_state = server_state
        self.transport: Any = None
        self.received: list[bytes] = []
        StubSansIO.made.append(self)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received.append(data)


@pytest.mark.parametrize(
    ("request_bytes", "node_deflate"),
    [
        pytest.param(upgrade_request("/other"), False, id="other-path"),
        pytest.param(upgrade_request(key=None), False, id="no-key"),
        pytest.param(
            upgrade_request(extra=["sec-websocket-extensions: permessage-deflate"]),
            True,
            id="deflate-offered-and-enabled",
        ),
    ],
)
async def test_other_upgrades_are_handed_to_uvicorns_protocol(
    monkeypatch: pytest.MonkeyPatch, request_bytes: bytes, node_deflate: bool
) -> None:
    StubSansIO.made.clear()
    monkeypatch.setattr(handshake, "WebSocketsSansIOProtocol", StubSansIO)
    w = Wire(deflate=node_deflate)
    w.proto.data_received(request_bytes)
    [other] = StubSansIO.made
    assert w.transport.protocol is other
    assert other.transport is w.transport
    assert other.received == [request_bytes], "the request is passed on untouched"
    assert other.config is w.config and other.server_state is w.state
    assert w.proto not in w.state.connections
    assert w.transport.take() == b"", "no 101 of ours"
    assert w.gateway.connects == []


async def test_deflate_offered_to_a_node_without_it_is_served_uncompressed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    StubSansIO.made.clear()
    monkeypatch.setattr(handshake, "WebSocketsSansIOProtocol", StubSansIO)
    w = Wire(deflate=False)
    w.proto.data_received(
        upgrade_request(extra=["sec-websocket-extensions: permessage-deflate; client_max_window_bits"])
    )
    head = w.transport.take()
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-extensions" not in head.lower()
    assert StubSansIO.made == []
    w.feed(text("hi"))
    assert w.gateway.payloads() == [b"hi"]


# ---------------------------------------------------------------- frames in


async def test_one_masked_text_frame_is_delivered() -> None:
    w = opened()
    w.feed(text('{"type":"ping","ref":"r1"}'))
    assert w.gateway.payloads() == [b'{"type":"ping","ref":"r1"}']
    assert w.transport.take() == b""
    assert not w.transport.closed


async def test_a_frame_delivered_one_byte_at_a_time() -> None:
    w = opened()
    frame = text("one byte at a time")
    for i in range(len(frame) - 1):
        w.feed(frame[i : i + 1])
        assert w.gateway.messages == [], f"nothing before the last byte (at {i})"
    w.feed(frame[-1:])
    assert w.gateway.payloads() == [b"one byte at a time"]


@pytest.mark.parametrize("size", [300, 70_000])
async def test_extended_length_headers_delivered_one_byte_at_a_time(size: int) -> None:
    w = opened()
    payload = bytes(i % 253 for i in range(size))
    frame = client_frame(OP_BINARY, payload)
    head = 2 + (2 if size < 1 << 16 else 8) + 4
    for i in range(head):
        w.feed(frame[i : i + 1])
    assert w.transport.take() == b"" and w.gateway.messages == []
    body = frame[head:]
    step = 1 if size < 1000 else 997
    for i in range(0, len(body), step):
        assert w.gateway.messages == []
        w.feed(body[i : i + step])
    assert w.gateway.payloads() == [payload]
    assert not w.transport.closed


async def test_several_frames_in_one_chunk_are_delivered_in_order() -> None:
    w = opened()
    chunk = b"".join(text(f"m{i}") for i in range(5))
    w.feed(chunk)
    assert w.gateway.payloads() == [b"m0", b"m1", b"m2", b"m3", b"m4"]


async def test_chunks_split_mid_frame_are_delivered_in_order() -> None:
    w = opened()
    stream = text("first") + text("x" * 300) + text("third")
    w.feed(stream[:9], stream[9:40], stream[40:])
    assert w.gateway.payloads() == [b"first", b"x" * 300, b"third"]


@pytest.mark.parametrize("size", [125, 126, 200, 65535, 65536, 70_000])
async def test_16_and_64_bit_lengths(size: int) -> None:
    w = opened(max_size=1 << 20)
    payload = bytes(i % 251 for i in range(size))
    frame = client_frame(OP_BINARY, payload)
    assert frame[1] & 0x7F == (size if size < 126 else 126 if size < 1 << 16 else 127)
    w.feed(frame)
    assert w.gateway.payloads() == [payload]


async def test_a_fragmented_message_with_a_ping_between_its_fragments() -> None:
    w = opened()
    w.feed(
        text("hel", fin=False),
        client_frame(OP_PING, b"are you there"),
    )
    assert w.transport.frames() == [(True, OP_PONG, b"are you there")]
    assert w.gateway.messages == [], "not before the last fragment"
    w.feed(client_frame(OP_CONT, b"lo ", fin=False), client_frame(OP_CONT, b"world"))
    assert w.gateway.payloads() == [b"hello world"]
    w.feed(text("next"))
    assert w.gateway.payloads() == [b"hello world", b"next"]
    assert not w.transport.closed


async def test_a_ping_outside_a_message_is_answered_and_a_pong_is_silent() -> None:
    w = opened()
    w.feed(client_frame(OP_PING), client_frame(OP_PONG, b"x"), client_frame(OP_PING, b"2"))
    assert w.transport.frames() == [(True, OP_PONG, b""), (True, OP_PONG, b"2")]
    assert w.gateway.messages == []


async def test_a_binary_message_is_delivered() -> None:
    w = opened()
    w.feed(client_frame(OP_BINARY, b"\x00\xff\xfe"))
    w.feed(client_frame(OP_BINARY, b"\x01", fin=False), client_frame(OP_CONT, b"\xff"))
    assert w.gateway.payloads() == [b"\x00\xff\xfe", b"\x01\xff"]
    assert not w.transport.closed


async def test_valid_multibyte_utf8_is_delivered_even_split_across_fragments() -> None:
    w = opened()
    message = "prix: 12 € – 🛒 ünd 日本".encode()
    w.feed(text(message))
    cut = message.index("€".encode()) + 1  # inside the euro sign
    w.feed(text(message[:cut], fin=False), client_frame(OP_CONT, message[cut:]))
    assert w.gateway.payloads() == [message, message]
    assert not w.transport.closed


async def test_an_empty_text_message_is_delivered() -> None:
    w = opened()
    w.feed(text(b""))
    assert w.gateway.payloads() == [b""]


def assert_failed(w: Wire, code: int) -> None:
    frames = w.transport.frames()
    assert len(frames) == 1 and frames[0][:2] == (True, OP_CLOSE), frames
    assert close_code(frames[0][2]) == code
    assert w.transport.closed
    w.proto.connection_lost(None)
    assert w.gateway.closes == [(w.gateway.conn, code)]


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([text(b'{"ref":"\xff"}')], id="single"),
        pytest.param([text(b"\xc3\x28")], id="bad-continuation-byte"),
        pytest.param([text(b"\xed\xa0\x80")], id="surrogate"),
        pytest.param([text(b"ok", fin=False), client_frame(OP_CONT, b"\xc3")], id="truncated"),
    ],
)
async def test_invalid_utf8_in_a_text_message_closes_with_1007(frames: list[bytes]) -> None:
    w = opened()
    w.feed(*frames)
    assert w.gateway.messages == []
    assert_failed(w, 1007)


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([text("hi", masked=False)], id="unmasked"),
        pytest.param([client_frame(OP_BINARY, b"x" * 300, masked=False)], id="unmasked-126"),
        pytest.param([text("hi", rsv=0x40)], id="rsv1"),
        pytest.param([text("hi", rsv=0x20)], id="rsv2"),
        pytest.param([text("hi", rsv=0x10)], id="rsv3"),
        pytest.param([client_frame(OP_CONT, b"orphan")], id="continuation-without-message"),
        pytest.param(
            [text("a", fin=False), text("b")], id="new-text-inside-fragmented-message"
        ),
        pytest.param(
            [text("a", fin=False), client_frame(OP_BINARY, b"b")],
            id="new-binary-inside-fragmented-message",
        ),
        pytest.param([client_frame(OP_PING, b"p" * 126)], id="control-over-125"),
        pytest.param([client_frame(OP_PING, b"p", fin=False)], id="control-not-final"),
        pytest.param([client_frame(OP_PONG, b"p" * 126)], id="pong-over-125"),
        pytest.param([client_frame(OP_CLOSE, b"\x03", fin=True)], id="close-one-byte"),
        pytest.param([client_frame(0x3, b"x")], id="reserved-data-opcode"),
        pytest.param([client_frame(0xB, b"x")], id="reserved-control-opcode"),
    ],
)
async def test_protocol_errors_close_with_1002(frames: list[bytes]) -> None:
    w = opened()
    # What follows the bad frame in the same chunk is not read.
    w.feed(b"".join(frames) + text("after"))
    assert w.gateway.messages == []
    assert_failed(w, 1002)


async def test_a_message_over_max_size_closes_with_1009() -> None:
    w = opened(max_size=1000)
    w.feed(client_frame(OP_BINARY, b"x" * 1000))
    assert w.gateway.payloads() == [b"x" * 1000], "max_size itself is allowed"
    w.feed(client_frame(OP_BINARY, b"x" * 1001))
    assert w.gateway.payloads() == [b"x" * 1000]
    assert_failed(w, 1009)


async def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    w = opened(max_size=1000)
    w.feed(bytes((0x81, 0x80 | 127)) + (1 << 40).to_bytes(8, "big"))
    assert_failed(w, 1009)


async def test_a_message_over_max_size_across_fragments_closes_with_1009() -> None:
    w = opened(max_size=1000)
    w.feed(text("a" * 400, fin=False), client_frame(OP_CONT, b"b" * 400, fin=False))
    assert w.transport.take() == b""
    w.feed(client_frame(OP_CONT, b"c" * 201))
    assert w.gateway.messages == []
    assert_failed(w, 1009)


async def test_fragments_adding_up_to_max_size_are_delivered() -> None:
    # Each frame of a fragmented message is charged FRAME_COST bytes besides its payload.
    w = opened(max_size=1000)
    first = 600 - 2 * wire.FRAME_COST
    w.feed(text("a" * first, fin=False), client_frame(OP_CONT, b"b" * 400))
    assert w.gateway.payloads() == [b"a" * first + b"b" * 400]
    assert not w.transport.closed
    w.feed(text("a" * (first + 1), fin=False), client_frame(OP_CONT, b"b" * 400))
    assert len(w.gateway.messages) == 1
    assert_failed(w, 1009)


# ---------------------------------------------------------------- closing


async def test_a_client_close_is_echoed_and_reported() -> None:
    w = opened()
    w.feed(client_frame(OP_CLOSE, close_payload(1000, b"bye")))
    assert w.transport.frames() == [(True, OP_CLOSE, close_payload(1000))]
    assert w.transport.closed
    assert w.gateway.closes == []
    w.proto.connection_lost(None)
    assert w.gateway.closes == [(w.gateway.conn, 1000)]
    assert w.proto not in w.state.connections


async def test_a_client_close_with_another_code_is_echoed_with_it() -> None:
    w = opened()
    w.feed(client_frame(OP_CLOSE, close_payload(1001)), text("late"))
    assert w.transport.frames() == [(True, OP_CLOSE, close_payload(1001))]
    assert w.gateway.messages == []
    w.proto.connection_lost(None)
    assert w.gateway.closes == [(w.gateway.conn, 1001)]


async def test_a_client_close_without_a_code_is_answered_1000_and_reported_1005() -> None:
    w = opened()
    w.feed(client_frame(OP_CLOSE))
    assert w.transport.frames() == [(True, OP_CLOSE, close_payload(1000))]
    assert w.transport.closed
    w.proto.connection_lost(None)
    assert w.gateway.closes == [(w.gateway.conn, 1005)]


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4009, 4999])
async def test_a_client_close_with_a_valid_code_is_echoed(code: int) -> None:
    w = opened()
    w.feed(client_frame(OP_CLOSE, close_payload(code, "au revoir é".encode())))
    assert w.transport.frames() == [(True, OP_CLOSE, close_payload(code))]
    w.proto.connection_lost(None)
    assert w.gateway.closes == [(w.gateway.conn, code)]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
async def test_a_client_close_with_a_code_not_allowed_on_the_wire_closes_with_1002(code: int) -> None:
    # 1005, 1006 and 1015 must never be sent; the others are unassigned (RFC 6455 §7.4).
    w = opened()
    w.feed(client_frame(OP_CLOSE, close_payload(code)))
    assert_failed(w, 1002)


async def test_a_client_close_reason_that_is_not_utf8_closes_with_1007() -> None:
    w = opened()
    w.feed(client_frame(OP_CLOSE, close_payload(1000, b"bad \xff")))
    assert_failed(w, 1007)


async def test_a_server_close_waits_for_the_clients_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "CLOSE_TIMEOUT_S", 0.05)
    w = opened()
    w.proto.close(4009, "too slow to keep up")
    assert w.transport.frames() == [(True, OP_CLOSE, close_payload(4009, b"too slow to keep up"))]
    assert "resume" in w.transport.events, "the reply is read even while paused"
    assert not w.transport.closed, "the client's reply is awaited"
    w.proto.close(1000)
    assert w.transport.take() == b"", "one close frame"
    # What arrives now is not read; a ping is not answered.
    w.feed(text("late"), client_frame(OP_PING, b"p"))
    assert w.gateway.messages == []
    assert w.transport.take() == b""
    assert not w.transport.closed
    w.feed(client_frame(OP_CLOSE, close_payload(4009)))
    assert w.transport.take() == b"", "the reply is not answered again"
    assert w.transport.close_calls == 1
    w.proto.connection_lost(None)
    assert w.gateway.closes == [(w.gateway.conn, 4009)]
    await asyncio.sleep(0.1)
    assert w.transport.close_calls == 1, "the close timer was cancelled"


async def test_a_server_close_without_a_reply_closes_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "CLOSE_TIMEOUT_S", 0.05)
    w = opened()
    w.proto.close(4009, "too slow")
    await asyncio.sleep(0.01)
    assert not w.transport.closed
    await asyncio.sleep(0.1)
    assert w.transport.close_calls == 1
    assert w.transport.frames() == [(True, OP_CLOSE, close_payload(4009, b"too slow"))]
    w.proto.connection_lost(None)
    assert w.gateway.closes == [(w.gateway.conn, 4009)]


async def test_a_long_close_reason_is_cut_to_fit_a_control_frame() -> None:
    w = opened()
    w.proto.close(4000, "r" * 300)
    [(fin, opcode, payload)] = w.transport.frames()
    assert (fin, opcode, close_code(payload)) == (True, OP_CLOSE, 4000)
    assert len(payload) == 125


async def test_connection_lost_without_a_close_frame_reports_1006() -> None:
    w = opened()
    w.feed(text("hi"))
    w.proto.connection_lost(ConnectionResetError())
    assert w.gateway.closes == [(w.gateway.conn, 1006)]
    assert w.proto not in w.state.connections
    assert w.proto.send(b"x", None) == -1
    w.proto.connection_lost(None)
    assert len(w.gateway.closes) == 1, "reported once"


async def test_connection_lost_before_the_handshake_reports_nothing() -> None:
    w = Wire()
    w.proto.connection_lost(None)
    assert w.gateway.closes == []
    assert w.proto not in w.state.connections


async def test_shutdown_closes_with_1012() -> None:
    w = opened()
    w.proto.shutdown()
    assert w.transport.frames() == [(True, OP_CLOSE, close_payload(1012, b"server restart"))]
    assert w.transport.closed


# ---------------------------------------------------------------- output


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
async def test_send_frames_the_payload(size: int, header: bytes) -> None:
    w = opened()
    w.transport.buffer_size = 4321
    payload = bytes(i % 256 for i in range(size))
    assert w.proto.send(payload, None) == 4321
    written = w.transport.take()
    assert written == header + payload
    assert server_frames(written) == [(True, OP_TEXT, payload)]


async def test_send_writes_a_prebuilt_frame_as_is() -> None:
    w = opened()
    framed = b"\x81\x02[]"
    assert w.proto.send(b"[]", framed) == 0
    assert w.transport.take() == framed


async def test_send_after_close_returns_minus_one() -> None:
    w = opened()
    w.proto.close(1000)
    w.transport.take()
    assert w.proto.send(b"[]", None) == -1
    assert w.proto.send(b"[]", b"\x81\x02[]") == -1
    assert w.transport.take() == b""


async def test_send_after_a_client_close_returns_minus_one() -> None:
    w = opened()
    w.feed(client_frame(OP_CLOSE, close_payload(1000)))
    w.transport.take()
    assert w.proto.send(b"[]", None) == -1
    assert w.transport.take() == b""


# ---------------------------------------------------------------- keepalive


EPS = 1e-3  # past a keepalive deadline by less than any real clock step here


async def test_keepalive_pings_a_silent_client_once_and_drops_it_after_the_timeout() -> None:
    w = opened()
    start = w.proto.last_read
    assert start > 0
    w.proto.keepalive(start + wire.PING_INTERVAL_S - 0.5)
    assert w.transport.take() == b"", "no ping while the client is recent"
    # A hair past each deadline: (t + 20.0) - t may come out below 20.0 in floating point.
    ping_at = start + wire.PING_INTERVAL_S + EPS
    w.proto.keepalive(ping_at)
    [(fin, opcode, _)] = w.transport.frames()
    assert (fin, opcode) == (True, OP_PING)
    w.proto.keepalive(ping_at + 1)
    w.proto.keepalive(ping_at + wire.PING_TIMEOUT_S - 0.5)
    assert w.transport.take() == b"", "no second ping while one is outstanding"
    assert not w.transport.closed
    w.proto.keepalive(ping_at + wire.PING_TIMEOUT_S + EPS)
    [(fin, opcode, payload)] = w.transport.frames()
    assert (fin, opcode, close_code(payload)) == (True, OP_CLOSE, 1011)
    assert w.transport.closed
    w.proto.connection_lost(None)
    assert w.gateway.closes == [(w.gateway.conn, 1011)]


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(client_frame(OP_PONG, b"lc"), id="pong"),
        pytest.param(text('{"type":"ping"}'), id="message"),
        pytest.param(text("partial")[:3], id="part-of-a-frame"),
    ],
)
async def test_data_from_the_client_clears_the_outstanding_ping(answer: bytes) -> None:
    w = opened()
    ping_at = w.proto.last_read + wire.PING_INTERVAL_S + EPS
    w.proto.keepalive(ping_at)
    assert [op for _, op, _ in w.transport.frames()] == [OP_PING]
    w.feed(answer)
    w.proto.keepalive(w.proto.last_read + 1)
    assert w.transport.take() == b"", "the client is recent again"
    # By this clock the client has been silent since its answer: pinged again, not dropped.
    w.proto.keepalive(ping_at + wire.PING_TIMEOUT_S)
    assert [op for _, op, _ in w.transport.frames()] == [OP_PING]
    assert not w.transport.closed


async def test_keepalive_leaves_a_closing_connection_alone() -> None:
    w = opened()
    w.proto.close(4009)
    w.transport.take()
    w.proto.keepalive(w.proto.last_read + wire.PING_INTERVAL_S + wire.PING_TIMEOUT_S + EPS)
    assert w.transport.take() == b""


# ---------------------------------------------------------------- flow control and refusal


async def test_pause_and_resume_reading_reach_the_transport() -> None:
    w = opened()
    w.proto.pause_reading()
    w.proto.resume_reading()
    w.proto.pause_reading()
    assert w.transport.events == ["pause", "resume", "pause"]
    w.proto.close(4009)
    assert w.transport.events == ["pause", "resume", "pause", "resume"]
    w.proto.pause_reading()
    assert w.transport.events[-1] == "resume", "a closing connection is not paused"


async def test_reject_answers_http_503_and_closes() -> None:
    w = Wire(gateway=FakeGateway(reject=True))
    w.proto.data_received(upgrade_request())
    body = b"Service Unavailable"
    assert w.transport.take() == (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 19\r\n"
        b"Connection: close\r\n"
        b"\r\n" + body
    )
    assert w.transport.closed
    w.feed(text("hi"))
    assert w.gateway.messages == []
    assert w.transport.take() == b""
    assert w.proto.send(b"[]", None) == -1
    w.proto.connection_lost(None)
    assert w.gateway.closes == [], "no WebSocket was opened"


# ---------------------------------------------------------------- bounded before buffered


def big_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """`client_frame` for large payloads (masked in C)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + MASK + (wire.apply_mask(payload, MASK) if n else b"")


async def test_a_partial_frame_waits_in_one_buffer_appended_in_place() -> None:
    w = opened()
    payload = bytes(i % 251 for i in range(100_000))
    frame = big_frame(OP_BINARY, payload)
    assert frame == client_frame(OP_BINARY, payload)
    w.feed(frame[:1000])
    buf = w.proto._buf
    assert isinstance(buf, bytearray) and len(buf) == 1000
    for i in range(1000, len(frame) - 1, 64):
        w.feed(frame[i : min(i + 64, len(frame) - 1)])
        assert w.proto._buf is buf, "appended in place, never copied again"
    assert w.gateway.messages == []
    w.feed(frame[-1:])
    assert w.gateway.payloads() == [payload]
    assert w.proto._buf is None


async def test_whole_frames_in_one_read_leave_nothing_buffered() -> None:
    w = opened()
    w.feed(b"".join(text(f"m{i}") for i in range(100)))
    assert len(w.gateway.messages) == 100
    assert w.proto._buf is None
    # A read that ends inside a frame keeps only that frame's start.
    w.feed(text("a") + text("bcdef")[:3])
    assert w.proto._buf == text("bcdef")[:3]


async def test_a_megabyte_in_64_byte_pieces_costs_linear_time() -> None:
    """Quadratic buffering (the partial frame copied again on every read) costs seconds
    here: 16,384 reads copying 512 KiB each on average. Linear costs a few milliseconds per
    thousand reads, whatever the frame's size."""
    payload = bytes(range(256)) * 4096
    frame = big_frame(OP_BINARY, payload)

    def cost(step: int) -> float:
        w = opened(max_size=1 << 20)
        pieces = [frame[i : i + step] for i in range(0, len(frame), step)]
        started = time.perf_counter()
        for piece in pieces:
            w.proto.data_received(piece)
        spent = time.perf_counter() - started
        assert w.gateway.payloads() == [payload]
        return spent

    whole = min(cost(len(frame)) for _ in range(3))
    small = min(cost(64) for _ in range(3))
    assert small < 0.25 + 20 * whole, (small, whole)
    # Twice the pieces of a quarter the size each: about twice the time, not eight times.
    quarter = bytes(256 << 10)
    qframe = big_frame(OP_BINARY, quarter)
    w = opened(max_size=1 << 20)
    started = time.perf_counter()
    for i in range(0, len(qframe), 32):
        w.proto.data_received(qframe[i : i + 32])
    assert time.perf_counter() - started < 0.25 + 20 * whole


@pytest.mark.parametrize("how", ["server-close", "protocol-error", "client-close", "shutdown"])
async def test_a_close_to_a_client_that_does_not_read_is_aborted_after_close_timeout(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(wire, "CLOSE_TIMEOUT_S", 0.05)
    w = opened()
    w.transport.buffer_size = 377_000  # what the client has not read
    if how == "server-close":
        w.proto.close(4009, "too slow to keep up")
    elif how == "protocol-error":
        w.feed(text("x", masked=False))
    elif how == "client-close":
        w.feed(client_frame(OP_CLOSE, close_payload(1000)))
    else:
        w.proto.shutdown()
    await asyncio.sleep(0.01)
    assert not w.transport.aborted, "not before the timeout"
    await asyncio.sleep(0.1)
    assert w.transport.aborted
    assert w.transport.socket.options == {
        (socket.SOL_SOCKET, socket.SO_LINGER): struct.pack("ii", 1, 0)
    }, "a reset: the kernel keeps nothing for it either"
    w.proto.connection_lost(None)
    [(_, code)] = w.gateway.closes
    assert code == {"server-close": 4009, "protocol-error": 1002}.get(how, code)


async def test_a_close_that_completes_cancels_the_abort(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "CLOSE_TIMEOUT_S", 0.05)
    w = opened()
    w.transport.buffer_size = 1000
    w.feed(text("x", masked=False))
    w.proto.connection_lost(None)
    await asyncio.sleep(0.1)
    assert not w.transport.aborted


async def test_a_rejected_upgrade_to_a_client_that_does_not_read_is_aborted_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "CLOSE_TIMEOUT_S", 0.05)
    w = Wire(gateway=FakeGateway(reject=True))
    w.transport.buffer_size = 10
    w.proto.data_received(upgrade_request())
    assert w.transport.take().startswith(b"HTTP/1.1 503 ")
    await asyncio.sleep(0.1)
    assert w.transport.aborted


@pytest.mark.parametrize("version", ["8", "7", "14", "0"])
async def test_an_unsupported_websocket_version_gets_426_naming_13(version: str) -> None:
    for target in ("/ws", "/other"):
        w = Wire()
        w.proto.data_received(upgrade_request(target, ws_version=version))
        answer = w.transport.take()
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 426 Upgrade Required"
        assert b"Sec-WebSocket-Version: 13" in lines[1:]
        assert body == b"Upgrade Required"
        assert w.transport.closed
        assert w.gateway.connects == [] and w.transport.protocol is None


async def test_bytes_sent_before_the_101_are_refused_not_buffered() -> None:
    w = Wire(gateway=FakeGateway(defer=True))
    w.proto.data_received(upgrade_request())
    assert w.transport.take() == b"", "the gateway answers later"
    w.feed(text("too early"))
    assert w.transport.take().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert w.transport.closed
    assert w.proto._buf is None
    w.feed(text("more") * 1000)
    assert w.transport.take() == b""


async def test_an_oversized_upgrade_request_gets_431() -> None:
    w = Wire(max_request=1024)
    w.proto.data_received(upgrade_request(extra=["x-pad: " + "p" * 1500]))
    assert w.transport.take().startswith(b"HTTP/1.1 101 "), "up to twice the head limit"
    w = Wire(max_request=1024)
    w.proto.data_received(upgrade_request(extra=["x-pad: " + "p" * 2100]))
    assert w.transport.take().startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert w.transport.closed and w.gateway.connects == []


async def test_an_upgrade_the_gateway_does_not_answer_in_time_is_closed() -> None:
    w = Wire(gateway=FakeGateway(defer=True), handshake_timeout=0.05)
    w.proto.data_received(upgrade_request())
    await asyncio.sleep(0.1)
    assert w.transport.closed
    # Answered in time: the deadline is off.
    w = Wire(gateway=FakeGateway(defer=True), handshake_timeout=0.05)
    w.proto.data_received(upgrade_request())
    [hs] = w.gateway.connects
    w.proto.accept(hs)
    await asyncio.sleep(0.1)
    assert not w.transport.closed


async def test_a_message_may_span_at_most_max_fragments_frames() -> None:
    w = opened(max_fragments=4)
    frames = [text("a", fin=False)] + [client_frame(OP_CONT, b"b", fin=False)] * 2
    w.feed(*frames, client_frame(OP_CONT, b"c"))
    assert w.gateway.payloads() == [b"abbc"]
    w.feed(*frames, client_frame(OP_CONT, b"", fin=False))
    assert w.transport.take() == b""
    w.feed(client_frame(OP_CONT, b""))
    assert len(w.gateway.messages) == 1
    assert_failed(w, 1009)


async def test_empty_continuation_frames_are_charged_against_the_message_size() -> None:
    w = opened(max_size=1000, max_fragments=10_000)
    fits = 1000 // wire.FRAME_COST
    w.feed(text("", fin=False), *[client_frame(OP_CONT, b"", fin=False)] * (fits - 1))
    assert w.transport.take() == b""
    w.feed(client_frame(OP_CONT, b"", fin=False))
    assert_failed(w, 1009)


async def test_every_fragment_but_the_last_counts_toward_the_flood_limit() -> None:
    w = opened()
    w.feed(text("a", fin=False), client_frame(OP_CONT, b"", fin=False))
    assert w.gateway.fragments == [w.gateway.conn] * 2
    w.feed(client_frame(OP_PING), client_frame(OP_CONT, b"b"))
    assert w.gateway.fragments == [w.gateway.conn] * 2, "the message itself is counted once"
    assert w.gateway.payloads() == [b"ab"]
    w.feed(text("whole"))
    assert len(w.gateway.fragments) == 2


class FloodingGateway(FakeGateway):
    """Closes the connection (4008) at the third fragment, as the node's flood limit would."""

    socket: WireProtocol

    def connect(self, socket: handshake.Upgrading, hs: Handshake) -> None:
        self.socket = socket
        super().connect(socket, hs)

    def fragment(self, conn: Any) -> None:
        super().fragment(conn)
        if len(self.fragments) == 3:
            self.socket.close(4008, "flooding")


async def test_a_flood_of_fragments_is_closed_by_the_gateway_and_no_longer_counted() -> None:
    w = opened(gateway=FloodingGateway())
    w.feed(text("a", fin=False), *[client_frame(OP_CONT, b"", fin=False)] * 10)
    assert len(w.gateway.fragments) == 3
    [(_, opcode, payload)] = w.transport.frames()
    assert (opcode, close_code(payload)) == (OP_CLOSE, 4008)
    w.feed(client_frame(OP_CONT, b"end"))
    assert w.gateway.messages == [], "closing: the message is not read"


@pytest.mark.parametrize(
    ("pieces", "failed_at"),
    [
        pytest.param([b"ok \xce", b"\xba"], None, id="split-2-byte"),
        pytest.param([b"\xf0\x9f", b"\x9b", b"\x92 fin"], None, id="split-4-byte"),
        pytest.param([b"ok", b"\xff", b"more"], 1, id="invalid-byte"),
        pytest.param([b"\xce", b"\xce"], 1, id="lead-after-lead"),
        pytest.param([b"ok \xf4", b"\x90\x80\x80", b"ok"], 1, id="over-u10ffff"),
        pytest.param([b"\xed", b"\xa0", b"\x80"], 1, id="surrogate-at-its-second-byte"),
        pytest.param([b"\xe0", b"\x80"], 1, id="overlong"),
        pytest.param([b"ok", b"\xe2\x82"], 1, id="truncated-at-the-end"),
    ],
)
def test_utf8_tail_fails_at_the_first_piece_no_text_could_follow(
    pieces: list[bytes], failed_at: int | None
) -> None:
    tail: bytes | None = b""
    for i, piece in enumerate(pieces):
        assert tail is not None
        tail = wire.utf8_tail(tail, piece, i == len(pieces) - 1)
        if tail is None:
            assert i == failed_at
            return
    assert failed_at is None and tail == b""


async def test_invalid_utf8_in_a_fragment_closes_at_once() -> None:
    w = opened()
    w.feed(text("κόσμε".encode() + b"\xed", fin=False))
    assert w.transport.take() == b""
    w.feed(client_frame(OP_CONT, b"\xa0", fin=False))
    assert w.gateway.messages == []
    assert_failed(w, 1007)


async def test_pongs_wait_for_a_client_that_reads() -> None:
    w = opened()
    w.transport.buffer_size = wire.PONG_BUFFER_MAX
    w.feed(*[client_frame(OP_PING, b"p" * 125)] * 100)
    assert w.transport.take() == b"", "no pong piles up for a client that does not read"
    w.transport.buffer_size = 0
    w.feed(client_frame(OP_PING, b"now"))
    assert w.transport.frames() == [(True, OP_PONG, b"now")]


# ---------------------------------------------------------------- HTTP heads (gateway.http)


class RecordingParser:
    """Delegates to httptools' parser and records how many bytes it was fed."""

    def __init__(self, parser: Any) -> None:
        self._parser = parser
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self._parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class Http:
    """The node's HTTP protocol over a recording transport, serving a one-line ASGI app.
    `parser` records what httptools is fed once the connection reaches `HttpProtocol`
    (None while it has not: nothing read yet, or a plain upgrade that never needs it).
    `fast=False`: the connection starts on `HttpProtocol` itself, as before `FastUpgrade`."""

    def __init__(
        self, *, max_head: int = 1024, head_timeout: float = 10.0, fast: bool = True
    ) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        harness = self
        self.parser: RecordingParser | None = None
        start = livecart_http.protocol_class(max_head=max_head, head_timeout=head_timeout)

        class Recording(start.http_class):  # type: ignore[name-defined,misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.parser = harness.parser = RecordingParser(self.parser)

        self.gateway = FakeGateway()
        config = uvicorn.Config(
            app,
            http=type("Start", (start,), {"http_class": Recording, "__slots__": ()})
            if fast
            else Recording,
            ws=handshake.protocol_class(self.gateway),
            lifespan="off",
            log_level="critical",
        )
        config.load()
        self.proto = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=uvicorn.server.ServerState(), app_state={}
        )
        self.transport = FakeTransport()
        self.transport.protocol = self.proto
        self.proto.connection_made(self.transport)  # type: ignore[arg-type]

    def feed(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.transport.get_protocol().data_received(chunk)

    async def answer(self) -> bytes:
        for _ in range(100):
            if self.transport.data:
                break
            await asyncio.sleep(0.001)
        return self.transport.take()


async def test_a_head_up_to_the_limit_is_served_in_any_pieces() -> None:
    start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "
    head = start + b"p" * (1024 - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == 1024
    h = Http(max_head=1024)
    h.feed(*(head[i : i + 100] for i in range(0, len(head), 100)))
    assert (await h.answer()).startswith(b"HTTP/1.1 200 OK\r\n")
    # The next request on the connection has a limit of its own.
    h.feed(head)
    assert (await h.answer()).startswith(b"HTTP/1.1 200 OK\r\n")
    assert not h.transport.closed


@pytest.mark.parametrize("chunk", [1, 700, 1024, 1025, 64 * 1024])
async def test_a_head_over_the_limit_gets_431_and_the_parser_never_more_than_the_limit(
    chunk: int,
) -> None:
    h = Http(max_head=1024)
    stream = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200_000
    for i in range(0, len(stream), chunk):
        h.feed(stream[i : i + chunk])
        if h.transport.closed:
            break
    answer = h.transport.take()
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer
    assert b"connection: close\r\n" in answer
    assert h.transport.closed
    assert h.parser is not None and h.parser.fed <= 1024


async def test_a_head_that_ends_in_the_read_crossing_the_limit_is_served_with_its_body() -> None:
    h = Http(max_head=1024)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    h.feed(head + b"x" * 5000)
    assert (await h.answer()).startswith(b"HTTP/1.1 200 OK\r\n")
    assert h.parser is not None and h.parser.fed == len(head) + 5000


async def test_an_upgrade_in_the_read_crossing_the_limit_is_served() -> None:
    h = Http(max_head=1024)
    request = upgrade_request().replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"p" * 700 + b"\r\n\r\n")
    assert len(request) < 1024
    # What follows the request before the 101 is not read (RFC 6455 §4.1), as in uvicorn.
    h.feed(request + text("early") * 100)
    assert h.transport.take().startswith(b"HTTP/1.1 101 ")
    assert isinstance(h.transport.get_protocol(), WireProtocol)
    h.feed(text("on time"))
    assert h.gateway.payloads() == [b"on time"]


async def test_a_head_not_complete_in_time_ends_the_connection() -> None:
    h = Http(head_timeout=0.05)
    await asyncio.sleep(0.1)
    assert h.transport.aborted, "an idle connection is reset"
    h = Http(head_timeout=0.05)
    h.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")
    await asyncio.sleep(0.1)
    assert h.transport.take().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert h.transport.closed


async def test_the_head_timeout_is_per_request() -> None:
    h = Http(head_timeout=0.1)
    await asyncio.sleep(0.06)
    h.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await h.answer()).startswith(b"HTTP/1.1 200 OK\r\n")
    await asyncio.sleep(0.06)
    h.feed(b"GET / HTTP/1.1\r\n")
    await asyncio.sleep(0.06)
    h.feed(b"Host: x\r\n\r\n")
    assert (await h.answer()).startswith(b"HTTP/1.1 200 OK\r\n")
    assert not h.transport.closed


async def test_an_http_1_0_upgrade_gets_400() -> None:
    h = Http()
    h.feed(upgrade_request(version="HTTP/1.0"))
    assert (await h.answer()).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert h.transport.closed
    assert h.gateway.connects == []
    # The same request on HTTP/1.1 is upgraded.
    h = Http()
    h.feed(upgrade_request())
    assert h.transport.take().startswith(b"HTTP/1.1 101 ")


async def test_a_connection_handed_to_uvicorns_protocol_gets_the_close_deadline_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "CLOSE_TIMEOUT_S", 0.05)
    h = Http()
    h.feed(upgrade_request("/other"))
    other = h.transport.get_protocol()
    assert isinstance(other, handshake.WebSocketsSansIOProtocol)
    h.transport.buffer_size = 377_000  # what the client has not read
    other.transport.close()
    assert h.transport.close_calls == 1 and not h.transport.aborted
    await asyncio.sleep(0.1)
    assert h.transport.aborted
    # A connection that ends in time is left alone.
    h = Http()
    h.feed(upgrade_request("/other"))
    other = h.transport.get_protocol()
    other.transport.close()
    other.connection_lost(None)
    await asyncio.sleep(0.1)
    assert not h.transport.aborted


# ---------------------------------------------------------------- the first read (FastUpgrade)

_CLIENT = (
    "GET /ws?token=eyJ.a-b_c.d HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


def _variant(old: str, new: str) -> bytes:
    assert old in _CLIENT
    return _CLIENT.replace(old, new, 1).encode()


# A WebSocket client's request as it sends it, and variants at the edges of what the first
# read's own check takes: each must be answered exactly as uvicorn's HTTP protocol answers it.
_FIRST_READS = {
    "client": _CLIENT.encode(),
    "lowercase names, no OWS": _variant("Upgrade: websocket", "upgrade:websocket"),
    "upgrade list": _variant("Upgrade: websocket", "Upgrade: websocket, h2c"),
    "two upgrades": _variant("Upgrade: websocket", "Upgrade: websocket\r\nUpgrade: h2c"),
    "connection list": _variant("Connection: Upgrade", "Connection: keep-alive, Upgrade"),
    "no connection upgrade": _variant("Connection: Upgrade", "Connection: keep-alive"),
    "two connections": _variant("Connection: Upgrade", "Connection: Upgrade\r\nConnection: x"),
    "space before colon": _variant("Upgrade: websocket", "Upgrade : websocket"),
    "folded header": _variant("Connection: Upgrade", "Connection: Upgrade\r\n  , close"),
    "content-length": _variant("Connection: Upgrade", "Connection: Upgrade\r\nContent-Length: 0"),
    "chunked": _variant("Connection: Upgrade", "Connection: Upgrade\r\nTransfer-Encoding: chunked"),
    "http/1.0": _variant("HTTP/1.1", "HTTP/1.0"),
    "other path": _variant("/ws?", "/other?"),
    "path /ws/": _variant("/ws?", "/ws/?"),
    "path /wsx": _variant("/ws?", "/wsx?"),
    "encoded path": _variant("/ws?", "/w%73?"),
    "lowercase method": _variant("GET ", "get "),
    "post": _variant("GET ", "POST "),
    "control byte": _variant("Host: 127.0.0.1:8000", "Host: 127.0.0.1\x01:8000"),
    "quote in query": _variant("token=", 'x="&token='),
    "version 8": _variant("Version: 13", "Version: 8"),
    "no key": _variant("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
    "deflate offered": _variant("Connection: Upgrade", "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Extensions: permessage-deflate"),
    "no host": _variant("Host: 127.0.0.1:8000\r\n", ""),
    "bytes after the head": _CLIENT.encode() + text("early"),
    "two requests": _CLIENT.encode() * 2,
}  # fmt: skip


@pytest.mark.parametrize("name", list(_FIRST_READS))
async def test_a_first_read_is_answered_as_uvicorns_http_protocol_answers_it(name: str) -> None:
    request = _FIRST_READS[name]
    seen = []
    for fast in (True, False):
        h = Http(max_head=4096, fast=fast)
        h.feed(request)
        await asyncio.sleep(0.02)
        seen.append(
            (
                re.sub(rb"(?i)\r\ndate: [^\r]*", b"", bytes(h.transport.take())),
                type(h.transport.get_protocol()).__mro__[1].__name__,
                len(h.gateway.connects),
                h.transport.closed,
            )
        )
    assert seen[0] == seen[1]


def test_only_a_whole_plain_upgrade_skips_the_http_protocol() -> None:
    plain = {"client", "lowercase names, no OWS", "connection list", "no host", "version 8"}
    plain |= {"no key", "deflate offered"}  # refused or handed on by the `ws` protocol
    for name, request in _FIRST_READS.items():
        assert livecart_http.plain_upgrade(request) == (name in plain), name


async def test_a_plain_upgrade_goes_straight_to_the_wire() -> None:
    h = Http()
    h.feed(_CLIENT.encode())
    assert h.transport.take().startswith(b"HTTP/1.1 101 ")
    assert isinstance(h.transport.get_protocol(), WireProtocol)
    assert h.parser is None  # httptools never saw it
    assert len(h.gateway.connects) == 1
    h.feed(text("on time"))
    assert h.gateway.payloads() == [b"on time"]
    # The same request in two reads takes uvicorn's HTTP protocol, and the same answer.
    h = Http()
    h.feed(_CLIENT.encode()[:40], _CLIENT.encode()[40:])
    assert h.transport.take().startswith(b"HTTP/1.1 101 ")
    assert isinstance(h.transport.get_protocol(), WireProtocol)
    assert h.parser is not None and h.parser.fed == len(_CLIENT)


async def test_the_head_timeout_counts_from_the_connection_across_the_hand_over() -> None:
    h = Http(head_timeout=0.1)
    await asyncio.sleep(0.06)
    h.feed(b"GET / HTTP/1.1\r\n")  # HttpProtocol from here, with 0.04 s left, not 0.1
    await asyncio.sleep(0.06)
    assert h.transport.take().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert h.transport.closed
