"""The node's HTTP/1.1 protocol: uvicorn's httptools protocol, with every request head bounded
in size and time before it is buffered. REST requests and WebSocket upgrades both come through
it (uvicorn hands an upgrade to the `ws` protocol only once its head is complete).

Why not uvicorn's own limits: httptools (llhttp) keeps a header's name and value in its own
buffer until the header ends, with no limit, and uvicorn's protocol over it has no limit and
no timeout for a request head either (its `timeout_keep_alive` only runs between requests,
and stops at a request's first byte). `h11_max_incomplete_event_size` is such a limit, but only
for the slower h11 protocol. So this subclass counts the bytes of each head as they arrive:

- a request line + headers over `max_head` bytes is answered 431 and the connection closed;
  the parser is never fed more than `max_head` bytes of a head. (A head that begins in the
  same read as the end of the previous request, i.e. a pipelined one, is counted from the next
  read: it may take at most one read, 256 KiB, more.)
- a head not complete within `head_timeout` seconds, counted from the connection (or from the
  first byte of a later request on it), ends the connection (408 when nothing else is on its
  way to the client, else a reset). A connection idle between requests is closed by uvicorn's
  `timeout_keep_alive` as before.
- a WebSocket upgrade on HTTP/1.0 is answered 400 (uvicorn would pass it on as HTTP/1.1).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD = 16 * 1024  # LIVECART_MAX_HEADER_BYTES
HEAD_TIMEOUT_S = 10.0  # LIVECART_HANDSHAKE_TIMEOUT_S


class HttpProtocol(HttpToolsProtocol):
    max_head: int = MAX_HEAD
    head_timeout: float = HEAD_TIMEOUT_S

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head = 0  # bytes of the current request head read so far; -1: not in a head
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        head = self._head
        if head < 0:  # a body, or a request being answered
            super().data_received(data)
            return
        room = self.max_head - head
        if len(data) <= room:
            self._head = head + len(data)
            super().data_received(data)
            return
        # This read crosses the limit: the parser gets only what fits.
        self._head = self.max_head
        if room:
            super().data_received(data[:room])
        transport = self.transport
        if transport.is_closing():
            return
        if self._head == self.max_head:  # the head is still not complete
            self._too_large()
            return
        if transport.get_protocol() is self:
            self.data_received(data[room:])
        # else upgraded: like uvicorn, what a client sent after its upgrade request without
        # waiting for the answer (RFC 6455 §4.1 says it must wait) is not read.

    def _too_large(self) -> None:
        self._stop_head_timer()
        self._unset_keepalive_if_required()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self.transport.abort()  # a pipelined request: its predecessor's answer is cut
            return
        self._refuse(431, b"Request Header Fields Too Large")

    def _refuse(self, status: int, reason: bytes) -> None:
        content = [b"HTTP/1.1 %d " % status, reason, b"\r\n"]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(reason),
            b"connection: close\r\n\r\n",
            reason,
        ]
        self.transport.write(b"".join(content))
        self.transport.close()

    def _head_expired(self) -> None:
        self._head_timer = None
        transport = self.transport
        if self._head < 0 or transport.is_closing() or transport.get_protocol() is not self:
            return
        cycle = self.cycle
        idle = cycle is None or cycle.response_complete
        if self._head > 0 and idle and not transport.get_write_buffer_size():
            self._refuse(408, b"Request Timeout")
        else:
            transport.abort()

    def head_deadline(self, deadline: float) -> None:
        """The head must be complete by `deadline` (loop time), counted from the connection
        (`FastUpgrade` got it first)."""
        self._stop_head_timer()
        self._head_timer = self.loop.call_at(deadline, self._head_expired)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a later request on the connection
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def on_headers_complete(self) -> None:
        self._head = -1
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head = 0  # the next request's head is counted from the next read

    def handle_websocket_upgrade(self) -> None:
        if self.scope.get("http_version", "1.1") != "1.1":
            self.send_400_response("WebSocket upgrades need HTTP/1.1")
            return
        super().handle_websocket_upgrade()


# A request line and headers httptools parses as written, and uvicorn hands to its `ws`
# protocol: `GET /ws…` with a plain target, `name: value` header lines of token names and
# visible-ASCII values.
_REQUEST_LINE = re.compile(rb"GET (/ws(?:\?[A-Za-z0-9._~%!$&'()*+,;=:@/?-]*)?) HTTP/1\.1")
_HEADER = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?[ \t]*"
)


def plain_upgrade(data: bytes) -> bool:
    """Whether `data` is exactly one whole WebSocket upgrade request for `/ws` that uvicorn's
    httptools protocol would hand, as it is, to the `ws` protocol: the request line and
    headers above, one `Upgrade: websocket`, one `Connection` naming `upgrade`, no body
    (no Content-Length or Transfer-Encoding) and nothing after the head."""
    if not data.endswith(b"\r\n\r\n") or data.find(b"\r\n\r\n") != len(data) - 4:
        return False
    lines = data[:-4].split(b"\r\n")
    if not _REQUEST_LINE.fullmatch(lines[0]):
        return False
    upgrade: list[bytes] = []
    connection: list[bytes] = []
    for line in lines[1:]:
        m = _HEADER.fullmatch(line)
        if m is None:
            return False
        name = m.group(1).lower()
        if name == b"upgrade":
            upgrade.append(m.group(2) or b"")
        elif name == b"connection":
            connection.append(m.group(2) or b"")
        elif name in (b"content-length", b"transfer-encoding"):
            return False
    return (
        len(upgrade) == 1
        and upgrade[0].lower() == b"websocket"
        and len(connection) == 1
        and b"upgrade" in [t.strip().lower() for t in connection[0].split(b",")]
    )


class FastUpgrade(asyncio.Protocol):
    """Where every connection starts. A first read that is a whole plain `/ws` upgrade
    request (`plain_upgrade`, what a WebSocket client sends) goes straight to the `ws`
    protocol, as uvicorn's HTTP protocol would hand it over, without that protocol's
    per-connection and per-request objects; anything else (REST, a head in pieces or with
    anything `plain_upgrade` does not vouch for) goes to `http_class`, fed the same bytes,
    with what is left of the head's time. Before the first byte the same deadline holds."""

    http_class: type[HttpProtocol] = HttpProtocol

    __slots__ = ("_app_state", "_config", "_deadline", "_loop", "_state", "_timer", "transport")

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
        self._loop = _loop or asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._state.connections.add(self)
        timeout = self.http_class.head_timeout
        self._deadline = self._loop.time() + timeout
        self._timer = self._loop.call_later(timeout, self._expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.connections.discard(self)
        self._stop_timer()

    def data_received(self, data: bytes) -> None:
        self._stop_timer()
        self._state.connections.discard(self)
        transport = self.transport
        ws_class = self._config.ws_protocol_class
        if ws_class is not None and len(data) <= self.http_class.max_head and plain_upgrade(data):
            ws = ws_class(config=self._config, server_state=self._state, app_state=self._app_state)
            ws.connection_made(transport)
            transport.set_protocol(ws)
            ws.data_received(data)
            return
        http = self.http_class(self._config, self._state, self._app_state, self._loop)
        http.connection_made(transport)
        transport.set_protocol(http)
        http.head_deadline(self._deadline)
        http.data_received(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def shutdown(self) -> None:
        """The server is stopping: nothing was asked on this connection yet."""
        self.transport.close()

    def _expired(self) -> None:
        """Nothing arrived within the head's time: dropped, as `HttpProtocol` does."""
        self._timer = None
        self.transport.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def protocol_class(
    *, max_head: int = MAX_HEAD, head_timeout: float = HEAD_TIMEOUT_S
) -> type[FastUpgrade]:
    """The `http` protocol class for uvicorn with the node's limits."""
    http = type(
        "LivecartHTTP", (HttpProtocol,), {"max_head": max_head, "head_timeout": head_timeout}
    )
    return type("LivecartConnection", (FastUpgrade,), {"http_class": http, "__slots__": ()})
