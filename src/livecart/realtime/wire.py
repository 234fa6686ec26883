"""The WebSocket wire of `/ws`: RFC 6455 frames in one asyncio protocol per connection.

Once the 101 is sent (the opening is `realtime.handshake`'s), the protocol parses client
frames in `data_received` and hands each complete message to the gateway in the same step:
no ASGI queue, no task and no coroutine per connection, nothing per frame but the parse.
Writes are `transport.write` of bytes framed once (a room's frame is built once for all its
viewers).

What a client may send: masked frames (RFC 6455 §5.1), text, binary, continuation, ping,
pong, close; no reserved bits (no extension is negotiated here). Protocol errors close with
1002, invalid UTF-8 in a text message with 1007 (in a fragmented one as soon as the fragment
that makes it invalid arrives), a message over `max_size` or of more than `max_fragments`
frames with 1009. Every fragment is charged `FRAME_COST` bytes on top of its payload and
counts toward the node's flood limit (`gateway.fragment`), so empty or one-byte continuation
frames cost what they weigh. Bytes are bounded before they are buffered: a partial frame
waits in one buffer until the length its header announced is there (each byte is copied once,
whatever the pieces it arrives in), a frame's header is refused as soon as it announces too
much, a pong is skipped while the client is not reading what we write.

A close never outlives `CLOSE_TIMEOUT_S`: after our close frame (or a protocol error, or the
client's close), a client that neither answers nor reads loses its socket when the timeout
expires (the transport is aborted with a reset, dropping what it still held for it).

Keepalive is one sweep per node (`Gateway`), not a timer per connection: `keepalive()` pings
a connection silent for `PING_INTERVAL_S` and drops one that stays silent `PING_TIMEOUT_S`
more.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import socket
import struct
import time
from typing import Any, Protocol

from ..protocol import ws_text_frame


class Client(Protocol):
    """What the wire knows of the gateway's connection it feeds (`realtime.connection`)."""

    def info(self) -> dict[str, Any]: ...

try:  # websockets' C helper (a uvicorn[standard] dependency); the fallback is pure Python
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover

    def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:  # type: ignore[misc]
        n = len(data)
        key = int.from_bytes((bytes(mask) * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


log = logging.getLogger("livecart.gateway")

PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
CLOSE_TIMEOUT_S = 5.0  # how long a close we sent waits for the client's reply
MAX_FRAGMENTS = 64  # frames one message may span (LIVECART_WS_MAX_FRAGMENTS)
# What one more fragment of a message is charged on top of its payload, against `max_size`:
# about what a frame costs to receive and keep, so a message of empty frames is not free.
FRAME_COST = 64
# Pongs are written only while less than this waits for the client: one that sends pings but
# does not read gets no more (RFC 6455 §5.5.3 lets a pong answer only the latest ping).
PONG_BUFFER_MAX = 64 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)

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


def utf8_tail(tail: bytes, data: bytes, final: bool) -> bytes | None:
    """Validate the next piece `data` of a UTF-8 text after `tail` (the bytes of a character
    the previous piece ended inside): the new tail, or None as soon as the text is invalid,
    i.e. once no continuation could make it valid (a truncated character at the end when
    `final`)."""
    chunk = tail + data if tail else data
    if chunk.isascii():
        return b""
    try:
        _, used = codecs.utf_8_decode(chunk, "strict", final)
    except UnicodeDecodeError:
        return None
    rest = chunk[used:]
    # The decoder waits for the third byte of a surrogate (ED A0..BF), already invalid.
    if len(rest) >= 2 and rest[0] == 0xED and rest[1] >= 0xA0:
        return None
    return rest


class WireProtocol(asyncio.Protocol):
    """One WebSocket client of `/ws`. `gateway` (set on the class by
    `handshake.protocol_class`, whose `Upgrading` subclass is what uvicorn runs) gets
    `connect(socket, handshake)`, `received(conn, message)`, `fragment(conn)` (one more frame
    of a message not yet complete) and `closed(conn, code)`."""

    gateway: Any = None
    max_fragments: int = MAX_FRAGMENTS

    __slots__ = (
        "_app_state",
        "_buf",
        "_close_timer",
        "_config",
        "_head_out",
        "_need",
        "_parts",
        "_parts_count",
        "_parts_size",
        "_requested",
        "_state",
        "_utf8",
        "close_code",
        "close_sent",
        "conn",
        "gone",
        "last_read",
        "max_size",
        "opened",
        "ping_sent",
        "read_at",
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
        self.conn: Client | None = None  # set once the gateway has accepted a client
        self.opened = False  # the 101 has been sent (or is in `_head_out`)
        # The 101 response, held back to leave in one write with the first frame (`hello`).
        self._head_out: bytes | None = None
        self.max_size: int = config.ws_max_size
        self._requested = False  # the upgrade request has been read
        self._buf: bytearray | None = None  # the start of a frame not yet complete
        self._need = 0  # the bytes `_buf` must hold before parsing can go on
        self._parts: bytearray | None = None  # a fragmented message being received
        self._parts_size = 0  # its payload plus FRAME_COST per frame
        self._parts_count = 0
        self._utf8: bytes | None = None  # its unfinished last character if text; None: binary
        self._close_timer: asyncio.TimerHandle | None = None
        self.close_sent = False
        self.close_code: int | None = None
        self.gone = False
        self.last_read = 0.0
        self.read_at = 0.0  # epoch seconds of the last read: when its messages arrived
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
        self._buf = self._parts = None
        conn, self.conn = self.conn, None
        if conn is not None:
            self.gateway.closed(conn, self.close_code or CLOSE_ABNORMAL)

    def data_received(self, data: bytes) -> None:
        if not self.opened:
            return self._before_open(data)
        self.last_read = time.monotonic()
        self.read_at = time.time()
        self.ping_sent = 0.0
        buf: bytes | bytearray = data
        pending = self._buf
        if pending is not None:  # the rest of a frame: parsed once all of it is there
            pending += data
            if len(pending) < self._need:
                return
            buf = pending
            self._buf = None
        n = len(buf)
        pos = 0
        need = 0
        while True:
            if n - pos < 2:
                need = 2
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if n - pos < 4:
                    need = 4
                    break
                length = int.from_bytes(buf[head : head + 2], "big")
                head += 2
            elif length == 127:
                if n - pos < 10:
                    need = 10
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
                need = end - pos
                break
            payload = apply_mask(buf[head + 4 : end], buf[head : head + 4]) if length else b""
            pos = end
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
            if self.gone or self.transport.is_closing():
                return
        if pos < n:
            if pending is None:
                pending = bytearray(memoryview(data)[pos:])
            elif pos:
                del pending[:pos]
            self._buf = pending
            self._need = need

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def shutdown(self) -> None:
        """The server is stopping (uvicorn calls this on every connection)."""
        if not self.close_sent and self.conn is not None:
            self.close(CLOSE_RESTART, "server restart")
        self._shut()

    def _before_open(self, data: bytes) -> None:
        """The upgrade request, before the 101 (`handshake.Upgrading`)."""
        raise NotImplementedError

    # ------------------------------------------------------------ frames in

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode >= OP_CLOSE:
            if not fin or len(payload) > 125:
                return self.fail(CLOSE_PROTOCOL_ERROR, "bad control frame")
            if opcode == OP_PING:
                transport = self.transport
                if not self.close_sent and transport.get_write_buffer_size() < PONG_BUFFER_MAX:
                    transport.write(control_frame(OP_PONG, payload))
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
            whole = self._fragment(fin, payload)
            if whole is None:
                return
            message, text = whole, False  # its text was checked fragment by fragment
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._parts is not None:
                return self.fail(CLOSE_PROTOCOL_ERROR, "a new message inside a fragmented one")
            text = opcode == OP_TEXT
            if not fin:
                self._parts = bytearray()
                self._parts_size = self._parts_count = 0
                self._utf8 = b"" if text else None
                self._fragment(fin, payload)
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
        self.gateway.received(self.conn, message, self.read_at)

    def _fragment(self, fin: int, payload: bytes) -> bytes | None:
        """One frame of a fragmented message: the whole message with the last one, else None
        (also when the message is refused). Each frame is charged FRAME_COST bytes besides
        its payload and counted, text is checked as it comes, and every frame but the last
        counts toward the flood limit (the whole message counts as one frame there)."""
        parts = self._parts
        assert parts is not None
        self._parts_count += 1
        self._parts_size += len(payload) + FRAME_COST
        if self._parts_size > self.max_size or self._parts_count > self.max_fragments:
            self.fail(CLOSE_TOO_BIG, "message too big")
            return None
        if self._utf8 is not None:
            self._utf8 = utf8_tail(self._utf8, payload, bool(fin))
            if self._utf8 is None:
                self.fail(CLOSE_INVALID_DATA, "text frames must be UTF-8")
                return None
        parts += payload
        if not fin:
            if self.conn is not None and not self.close_sent:
                self.gateway.fragment(self.conn)
            return None
        self._parts = self._utf8 = None
        return bytes(parts)

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
            self._shut()
            return
        self.close_code = code
        self.close_sent = True
        self.transport.write(close_frame(code if code != 1005 else 1000))
        self._shut()

    # ------------------------------------------------------------ output

    def send(self, payload: bytes, framed: bytes | None) -> int:
        """Write one message frame; the bytes now waiting for the client, or -1 when closed."""
        if self.close_sent or self.gone:
            return -1
        transport = self.transport
        data = ws_text_frame(payload) if framed is None else framed
        if self._head_out is not None:
            data = self._head_out + data
            self._head_out = None
        transport.write(data)
        size: int = transport.get_write_buffer_size()
        return size

    def flush_head(self) -> None:
        """Write the 101 response if it is still held back."""
        if self._head_out is not None:
            self.transport.write(self._head_out)
            self._head_out = None

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame and wait (at most CLOSE_TIMEOUT_S) for the client's reply."""
        if self.close_sent or self.gone:
            return
        self.flush_head()
        self.close_sent = True
        self.close_code = code
        self.transport.write(close_frame(code, reason))
        self.transport.resume_reading()  # the reply must be read even while paused
        self._deadline(CLOSE_TIMEOUT_S)

    def fail(self, code: int, reason: str) -> None:
        """A protocol error: close frame, then the connection, at once."""
        if not self.close_sent and not self.gone:
            self.flush_head()
            self.close_sent = True
            self.close_code = code
            self.transport.write(close_frame(code, reason))
        self._shut()

    def _shut(self) -> None:
        """Close the transport (once what it holds is written), and abort it if that has not
        happened within CLOSE_TIMEOUT_S of the close (a client that does not read)."""
        self.transport.close()
        self._deadline(CLOSE_TIMEOUT_S)

    def _deadline(self, seconds: float) -> None:
        if self._close_timer is None and not self.gone:
            self._close_timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _expired(self) -> None:
        """The close (or the handshake) took too long: an idle socket is closed, one that
        still holds data for the client is reset, so neither it nor its buffers outlive the
        timeout."""
        self._close_timer = None
        if self.gone:
            return
        transport = self.transport
        if not transport.is_closing() and not transport.get_write_buffer_size():
            transport.close()
            return
        reset(transport)

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


def reset(transport: asyncio.Transport) -> None:
    """Drop a connection now: a reset, not a FIN queued behind what the client never read, so
    neither the socket nor its kernel buffers outlive it."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


def _release_parser(http_protocol: Any) -> None:
    """Once the upgrade is done, break the HTTP protocol's cycle with its parser."""
    http_protocol.parser = None
