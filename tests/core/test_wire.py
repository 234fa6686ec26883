"""The node's own WebSocket protocol (`gateway.wire`), driven directly: a recording transport
stands for the socket and a recording gateway for the node. Client frames are built masked as
RFC 6455 requires; what the protocol writes is walked as unmasked server frames."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from livecart.gateway import wire
from livecart.gateway.wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Handshake,
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


class FakeTransport:
    """Records what the protocol does to its socket."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.close_calls = 0
        self.aborted = False
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
        return default

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
    def __init__(self, *, reject: bool = False) -> None:
        self.reject = reject
        self.connects: list[Handshake] = []
        self.messages: list[tuple[Any, bytes]] = []
        self.fragments: list[Any] = []
        self.closes: list[tuple[Any, int]] = []
        self.conn = FakeConn()

    def connect(self, socket: WireProtocol, hs: Handshake) -> None:
        self.connects.append(hs)
        if self.reject:
            socket.reject(503, "Service Unavailable")
            return
        socket.accept(hs)
        socket.conn = self.conn

    def received(self, conn: Any, message: bytes) -> None:
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
    ) -> None:
        self.gateway = gateway or FakeGateway()
        self.config = SimpleNamespace(ws_max_size=max_size, ws_per_message_deflate=deflate)
        self.state = SimpleNamespace(
            connections=set(), default_headers=[(b"server", b"livecart-test")]
        )
        cls = wire.protocol_class(self.gateway)
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
    cls = wire.protocol_class(FakeGateway())
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
    assert wire.accept_key(RFC_KEY) == RFC_ACCEPT


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
    monkeypatch.setattr(wire, "WebSocketsSansIOProtocol", StubSansIO)
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
    monkeypatch.setattr(wire, "WebSocketsSansIOProtocol", StubSansIO)
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


async def test_keepalive_pings_a_silent_client_once_and_drops_it_after_the_timeout() -> None:
    w = opened()
    start = w.proto.last_read
    assert start > 0
    w.proto.keepalive(start + wire.PING_INTERVAL_S - 0.5)
    assert w.transport.take() == b"", "no ping while the client is recent"
    ping_at = start + wire.PING_INTERVAL_S
    w.proto.keepalive(ping_at)
    [(fin, opcode, _)] = w.transport.frames()
    assert (fin, opcode) == (True, OP_PING)
    w.proto.keepalive(ping_at + 1)
    w.proto.keepalive(ping_at + wire.PING_TIMEOUT_S - 0.5)
    assert w.transport.take() == b"", "no second ping while one is outstanding"
    assert not w.transport.closed
    w.proto.keepalive(ping_at + wire.PING_TIMEOUT_S)
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
    ping_at = w.proto.last_read + wire.PING_INTERVAL_S
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
    w.proto.keepalive(w.proto.last_read + wire.PING_INTERVAL_S + wire.PING_TIMEOUT_S)
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
