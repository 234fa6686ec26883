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


def protocol_class(
    *, max_head: int = MAX_HEAD, head_timeout: float = HEAD_TIMEOUT_S
) -> type[HttpProtocol]:
    """The `http` protocol class for uvicorn with the node's limits."""
    return type(
        "LivecartHTTP", (HttpProtocol,), {"max_head": max_head, "head_timeout": head_timeout}
    )
