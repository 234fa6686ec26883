"""The WebSocket wire of `/ws`: RFC 6455 in one asyncio protocol per connection.

uvicorn parses the HTTP request and, at the upgrade, hands the connection to the class given
as its `ws` setting (`protocol_class`). For a plain `/ws` handshake that class answers 101
itself and from then on parses client frames in `data_received` and hands each complete
message to the gateway in the same step: no ASGI queue, no task and no coroutine per
connection, nothing per frame but the parse. Writes are `transport.write` of bytes framed
once (a room's frame is built once for all its viewers).

Anything else (another path, a malformed or unsupported handshake, a client offering
permessage-deflate when the node enables it) is handed on, untouched, to uvicorn's own
`websockets-sansio` protocol and served through ASGI as before.

What a client may send: masked frames (RFC 6455 §5.1), text, binary, continuation, ping,
pong, close; no reserved bits (no extension is negotiated here). Protocol errors close with
1002, invalid UTF-8 in a text message with 1007, a message over `max_size` with 1009.
Keepalive is one sweep per node (`Gateway`), not a timer per connection: `keepalive()` pings
a connection silent for `PING_INTERVAL_S` and drops one that stays silent `PING_TIMEOUT_S`
more.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from ..protocol import ws_text_frame

if TYPE_CHECKING:
    from .connection import Connection

try:  # websockets' C helper (a uvicorn[standard] dependency); the fallback is pure Python
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover

    def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:  # type: ignore[misc]
        n = len(data)
        key = int.from_bytes((bytes(mask) * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


log = logging.getLogger("livecart.gateway")

PATH = "/ws"
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
CLOSE_TIMEOUT_S = 5.0  # how long a close we sent waits for the client's reply

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_KEEPALIVE = 1011
CLOSE_RESTART = 1012
CLOSE_ABNORMAL = 1006  # no close frame was received (never sent on the wire)
# Codes a close frame may carry besides 3000-4999 (RFC 6455 §7.4; 1012-1014 registered since).
_CLOSE_CODES_ON_WIRE = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    body = code.to_bytes(2, "big") + reason.encode()[:123]
    return control_frame(OP_CLOSE, body)


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


class Handshake:
    """The parts of an upgrade request this protocol needs, or `ok = False`."""

    __slots__ = ("deflate", "key", "ok", "query")

    def __init__(self, request: bytes) -> None:
        self.ok = False
        self.key = b""
        self.query: dict[str, str] = {}
        self.deflate = False
        head, sep, _ = request.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if not sep or len(parts) != 3 or parts[0] != b"GET" or parts[2] != b"HTTP/1.1":
            return
        path, _, query = parts[1].partition(b"?")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                return
            name = name.strip().lower()
            value = value.strip()
            headers[name] = headers[name] + b"," + value if name in headers else value
        upgrade = {t.strip().lower() for t in headers.get(b"upgrade", b"").split(b",")}
        connection = {t.strip().lower() for t in headers.get(b"connection", b"").split(b",")}
        key = headers.get(b"sec-websocket-key", b"")
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except (binascii.Error, ValueError):
            valid_key = False
        try:
            self.query = dict(parse_qsl(query.decode("ascii")))
            decoded_path = unquote(path.decode("ascii"))
        except UnicodeDecodeError:
            return
        self.deflate = b"permessage-deflate" in headers.get(b"sec-websocket-extensions", b"")
        self.key = key
        self.ok = (
            decoded_path == PATH
            and b"websocket" in upgrade
            and b"upgrade" in connection
            and headers.get(b"sec-websocket-version") == b"13"
            and valid_key
        )


class WireProtocol(asyncio.Protocol):
    """One WebSocket client of `/ws`. `gateway` (set on the class by `protocol_class`) gets
    `connect(socket, query)`, `received(conn, message)` and `closed(conn, code)`."""

    gateway: Any = None

    __slots__ = (
        "_app_state",
        "_buf",
        "_close_timer",
        "_config",
        "_parts",
        "_parts_size",
        "_parts_text",
        "_state",
        "close_code",
        "close_sent",
        "conn",
        "gone",
        "last_read",
        "max_size",
        "opened",
        "ping_sent",
        "transport",
    )

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._state = server_state
        self._app_state = app_state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.conn: Connection | None = None  # set once the gateway has accepted a client
        self.opened = False  # the 101 has been sent
        self.max_size: int = config.ws_max_size
        self._buf = b""
        self._parts: list[bytes] | None = None  # a fragmented message being received
        self._parts_size = 0
        self._parts_text = False
        self._close_timer: asyncio.TimerHandle | None = None
        self.close_sent = False
        self.close_code: int | None = None
        self.gone = False
        self.last_read = 0.0
        self.ping_sent = 0.0  # when the unanswered keepalive ping left; 0: none

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._state.connections.add(self)
        # uvicorn's HTTP protocol, still the transport's until the upgrade completes, and its
        # parser refer to each other: left to the garbage collector, a crowd joining at the
        # start of a show costs a full young-generation collection every few thousand.
        previous = transport.get_protocol()
        if previous is not self and getattr(previous, "parser", None) is not None:
            asyncio.get_running_loop().call_soon(_release_parser, previous)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self._state.connections.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        conn, self.conn = self.conn, None
        if conn is not None:
            self.gateway.closed(conn, self.close_code or CLOSE_ABNORMAL)

    def data_received(self, data: bytes) -> None:
        if not self.opened:
            if not self.close_sent:
                self._handshake(data)
            return
        self.last_read = time.monotonic()
        self.ping_sent = 0.0
        buf = self._buf + data if self._buf else data
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[head : head + 2], "big")
                head += 2
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[head : head + 8], "big")
                head += 8
            if not b1 & 0x80:
                return self.fail(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            if b0 & 0x70:
                return self.fail(CLOSE_PROTOCOL_ERROR, "no extension was negotiated")
            if length > self.max_size:
                return self.fail(CLOSE_TOO_BIG, "message too big")
            end = head + 4 + length
            if end > n:
                break
            payload = apply_mask(buf[head + 4 : end], buf[head : head + 4]) if length else b""
            pos = end
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
            if self.gone or self.transport.is_closing():
                return
        self._buf = buf[pos:] if pos < n else b""

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def shutdown(self) -> None:
        """The server is stopping (uvicorn calls this on every connection)."""
        if not self.close_sent and self.conn is not None:
            self.close(CLOSE_RESTART, "server restart")
        self.transport.close()

    # ------------------------------------------------------------ frames in

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode >= OP_CLOSE:
            if not fin or len(payload) > 125:
                return self.fail(CLOSE_PROTOCOL_ERROR, "bad control frame")
            if opcode == OP_PING:
                if not self.close_sent:
                    self.transport.write(control_frame(OP_PONG, payload))
            elif opcode == OP_PONG:
                pass  # any data counts as life (data_received)
            elif opcode == OP_CLOSE:
                self._closed_by_peer(payload)
            else:
                self.fail(CLOSE_PROTOCOL_ERROR, "unknown opcode")
            return
        if opcode == OP_CONT:
            if self._parts is None:
                return self.fail(CLOSE_PROTOCOL_ERROR, "continuation without a message")
            self._parts.append(payload)
            self._parts_size += len(payload)
            if self._parts_size > self.max_size:
                return self.fail(CLOSE_TOO_BIG, "message too big")
            if not fin:
                return
            message, text = b"".join(self._parts), self._parts_text
            self._parts = None
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._parts is not None:
                return self.fail(CLOSE_PROTOCOL_ERROR, "a new message inside a fragmented one")
            text = opcode == OP_TEXT
            if not fin:
                self._parts, self._parts_size, self._parts_text = [payload], len(payload), text
                return
            message = payload
        else:
            return self.fail(CLOSE_PROTOCOL_ERROR, "unknown opcode")
        if text and not message.isascii():
            try:
                message.decode()
            except UnicodeDecodeError:
                return self.fail(CLOSE_INVALID_DATA, "text frames must be UTF-8")
        if self.close_sent or self.conn is None:
            return  # closing: what arrives now is not read
        self.gateway.received(self.conn, message)

    def _closed_by_peer(self, payload: bytes) -> None:
        code = 1005
        if len(payload) == 1:
            return self.fail(CLOSE_PROTOCOL_ERROR, "bad close frame")
        if len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            if code not in _CLOSE_CODES_ON_WIRE and not 3000 <= code < 5000:
                return self.fail(CLOSE_PROTOCOL_ERROR, "bad close code")
            try:
                payload[2:].decode()
            except UnicodeDecodeError:
                return self.fail(CLOSE_INVALID_DATA, "close reasons must be UTF-8")
        if self.close_sent:  # the reply to ours: the closing handshake is complete
            self.transport.close()
            return
        self.close_code = code
        self.close_sent = True
        self.transport.write(close_frame(code if code != 1005 else 1000))
        self.transport.close()

    # ------------------------------------------------------------ output

    def send(self, payload: bytes, framed: bytes | None) -> int:
        """Write one message frame; the bytes now waiting for the client, or -1 when closed."""
        if self.close_sent or self.gone:
            return -1
        transport = self.transport
        transport.write(ws_text_frame(payload) if framed is None else framed)
        size: int = transport.get_write_buffer_size()
        return size

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame and wait (at most CLOSE_TIMEOUT_S) for the client's reply."""
        if self.close_sent or self.gone:
            return
        self.close_sent = True
        self.close_code = code
        self.transport.write(close_frame(code, reason))
        self.transport.resume_reading()  # the reply must be read even while paused
        self._close_timer = asyncio.get_running_loop().call_later(
            CLOSE_TIMEOUT_S, self.transport.close
        )

    def fail(self, code: int, reason: str) -> None:
        """A protocol error: close frame, then the connection, at once."""
        if not self.close_sent and not self.gone:
            self.close_sent = True
            self.close_code = code
            self.transport.write(close_frame(code, reason))
        self.transport.close()

    def pause_reading(self) -> None:
        if not self.close_sent and not self.gone:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.gone:
            self.transport.resume_reading()

    def keepalive(self, now: float) -> None:
        """Called by the node's sweep (`now`: time.monotonic()): ping a silent client, drop
        one that did not answer."""
        if self.gone or self.close_sent:
            return
        if self.ping_sent:
            if now - self.ping_sent >= PING_TIMEOUT_S:
                log.info("keepalive ping timeout", extra=self.conn.info() if self.conn else {})
                self.fail(CLOSE_KEEPALIVE, "keepalive ping timeout")
        elif now - self.last_read >= PING_INTERVAL_S:
            self.ping_sent = now
            self.transport.write(control_frame(OP_PING, b"lc"))

    # ------------------------------------------------------------ handshake

    def _handshake(self, request: bytes) -> None:
        hs = Handshake(request)
        if not hs.ok or (hs.deflate and self._config.ws_per_message_deflate):
            return self._hand_over(request)
        self.last_read = time.monotonic()
        self.gateway.connect(self, hs)

    def _hand_over(self, request: bytes) -> None:
        """Not ours to serve: uvicorn's websockets-sansio protocol takes the connection."""
        other = WebSocketsSansIOProtocol(
            config=self._config, server_state=self._state, app_state=self._app_state
        )
        self._state.connections.discard(self)
        other.connection_made(self.transport)
        self.transport.set_protocol(other)
        other.data_received(request)

    def accept(self, hs: Handshake) -> None:
        """Answer 101; messages go to `self.conn` once the gateway sets it."""
        head = [
            b"HTTP/1.1 101 Switching Protocols",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + accept_key(hs.key),
        ]
        head += [name + b": " + value for name, value in self._state.default_headers]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n")
        self.opened = True

    def reject(self, status: int, reason: str) -> None:
        """Refuse the upgrade with an HTTP status (no WebSocket is opened)."""
        body = reason.encode()
        self.close_sent = True
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        self.transport.close()


def _release_parser(http_protocol: Any) -> None:
    """Once the upgrade is done, break the HTTP protocol's cycle with its parser."""
    http_protocol.parser = None


def protocol_class(gateway: Any) -> type[WireProtocol]:
    """The `ws` protocol class for uvicorn, bound to `gateway`."""
    return type("LivecartWire", (WireProtocol,), {"gateway": gateway, "__slots__": ()})

