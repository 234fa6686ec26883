"""The opening of a `/ws` connection: the upgrade request read, checked (RFC 6455 §4.2.1,
version 13, a 16-byte key, the path) and answered 101 or refused with an HTTP status, or the
connection handed, untouched, to uvicorn's `websockets-sansio` protocol (another path, a
malformed handshake, permessage-deflate offered to a node that enables it), with the node's
close deadline.

uvicorn parses the HTTP request and, at the upgrade, hands the connection to the class given
as its `ws` setting (`protocol_class`): a `WireProtocol` (`realtime.wire`, the frames) whose
opening is `Upgrading`'s. Nothing here runs once the 101 is sent."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from typing import Any
from urllib.parse import parse_qsl, unquote

from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol as UvicornSansIO,
)

from . import wire
from .wire import MAX_FRAGMENTS, WireProtocol, reset

PATH = "/ws"
MAX_REQUEST = 16 * 1024  # request line + headers of an upgrade (LIVECART_MAX_HEADER_BYTES)
HANDSHAKE_TIMEOUT_S = 10.0  # upgrade request to 101 (LIVECART_HANDSHAKE_TIMEOUT_S)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


class Handshake:
    """The parts of an upgrade request this protocol needs, or `ok = False`; `bad_version`:
    a WebSocket upgrade for a protocol version other than 13 (answered 426, RFC 6455 §4.4)."""

    __slots__ = ("bad_version", "deflate", "key", "ok", "query")

    def __init__(self, request: bytes) -> None:
        self.ok = False
        self.bad_version = False
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
        version = headers.get(b"sec-websocket-version")
        self.bad_version = (
            version is not None
            and version != b"13"
            and b"websocket" in upgrade
            and b"upgrade" in connection
        )
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
            and version == b"13"
            and valid_key
        )


class Upgrading(WireProtocol):
    """The `WireProtocol` uvicorn is given: its opening (the upgrade request, 101 or a
    refusal, or the hand-over). `gateway` (set on the class by `protocol_class`) gets
    `connect(socket, handshake)` and answers with `accept` or `reject`."""

    max_request: int = MAX_REQUEST
    handshake_timeout: float = HANDSHAKE_TIMEOUT_S

    __slots__ = ()

    def _before_open(self, data: bytes) -> None:
        """The upgrade request (uvicorn hands it over in one piece), or bytes a client sent
        before our answer, which RFC 6455 §4.1 forbids: refused, never buffered."""
        if self.close_sent:
            return  # refused: what arrives now is not read
        if self._requested:
            return self.reject(400, "Bad Request")
        self._requested = True
        # uvicorn rebuilds the request from headers the HTTP protocol bounded; the bound here
        # holds under any HTTP protocol (the rebuilt head may be somewhat longer).
        if len(data) > 2 * self.max_request:
            return self.reject(431, "Request Header Fields Too Large")
        self._handshake(data)

    def _handshake(self, request: bytes) -> None:
        hs = Handshake(request)
        if hs.bad_version:
            return self.reject(426, "Upgrade Required", b"Sec-WebSocket-Version: 13\r\n")
        if not hs.ok or (hs.deflate and self._config.ws_per_message_deflate):
            return self._hand_over(request)
        self.last_read = time.monotonic()
        self.gateway.connect(self, hs)
        self.flush_head()  # the gateway had nothing to send with it
        if not self.opened and not self.close_sent:  # the gateway answers later
            self._deadline(self.handshake_timeout)

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
        """Answer 101; messages go to `self.conn` once the gateway sets it. The answer leaves
        with the first frame the gateway sends in this step (one write), or after it."""
        head = [
            b"HTTP/1.1 101 Switching Protocols",
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + accept_key(hs.key),
        ]
        head += [name + b": " + value for name, value in self._state.default_headers]
        self._head_out = b"\r\n".join(head) + b"\r\n\r\n"
        self.opened = True
        if self._close_timer is not None:  # the handshake deadline
            self._close_timer.cancel()
            self._close_timer = None

    def reject(self, status: int, reason: str, headers: bytes = b"") -> None:
        """Refuse the upgrade with an HTTP status (no WebSocket is opened); `headers`: more
        header lines, each ending in CRLF."""
        body = reason.encode()
        self.close_sent = True
        if self._close_timer is not None:  # the handshake deadline; the close's comes now
            self._close_timer.cancel()
            self._close_timer = None
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
            + headers
            + b"\r\n"
            + body
        )
        self._shut()


class _CloseDeadline:
    """The transport as uvicorn's websockets-sansio protocol sees it: its `close()` (which
    waits for what is buffered to be written) also starts the node's close deadline, past
    which the connection is reset."""

    __slots__ = ("_delay", "_gone", "_timer", "_transport")

    def __init__(self, transport: asyncio.Transport, delay: float) -> None:
        self._transport = transport
        self._delay = delay
        self._timer: asyncio.TimerHandle | None = None
        self._gone = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        self._transport.close()
        if self._timer is None and not self._gone:
            self._timer = asyncio.get_running_loop().call_later(self._delay, reset, self._transport)

    def lost(self) -> None:
        """The connection is gone: no deadline any more."""
        self._gone = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class WebSocketsSansIOProtocol(UvicornSansIO):
    """uvicorn's websockets-sansio protocol (for what the node's wire hands on), with the
    node's close deadline: a client that does not read loses its socket CLOSE_TIMEOUT_S after
    the close, as on the wire (half of it waiting for the client's reply, half for the
    transport to close)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any]) -> None:
        super().__init__(config=config, server_state=server_state, app_state=app_state)
        self.close_timeout = wire.CLOSE_TIMEOUT_S / 2

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        deadline = _CloseDeadline(transport, wire.CLOSE_TIMEOUT_S / 2)  # type: ignore[arg-type]
        super().connection_made(deadline)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        deadline = self.transport
        if isinstance(deadline, _CloseDeadline):
            deadline.lost()
        super().connection_lost(exc)


def protocol_class(
    gateway: Any,
    *,
    max_fragments: int = MAX_FRAGMENTS,
    max_request: int = MAX_REQUEST,
    handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
) -> type[Upgrading]:
    """The `ws` protocol class for uvicorn, bound to `gateway` and the node's limits."""
    return type(
        "LivecartWire",
        (Upgrading,),
        {
            "gateway": gateway,
            "max_fragments": max_fragments,
            "max_request": max_request,
            "handshake_timeout": handshake_timeout,
            "__slots__": (),
        },
    )
