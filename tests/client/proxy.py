"""A TCP proxy on 127.0.0.1 for client tests: it forwards bytes both ways to a node and can
cut every connection mid-stream (a reset, as a dropped mobile network does), refuse new ones
for a while, point at another node (a restart on another port), or slow the way up."""

from __future__ import annotations

import asyncio
import contextlib
import time


class Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.blocked = False  # new connections are closed at once while True
        self.mute_down = False  # what the node sends is dropped while True (lost answers)
        self.up_delay_s = 0.0  # what the client sends reaches the node this much later
        self.accepted = 0
        self.errors: list[str] = []  # why connections to the node failed
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError as exc:
            self.errors.append(f"{time.monotonic():.1f} {self.upstream_port}: {exc}")
            writer.transport.abort()
            return
        self.accepted += 1
        pair = {writer, up_writer}
        self._writers |= pair
        tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, down=False)),
            asyncio.create_task(self._pipe(up_reader, writer, down=True)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in pair:
                w.transport.abort()
            self._writers -= pair
            for t in tasks:
                t.cancel()
                self._tasks.discard(t)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, down: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                if down and self.mute_down:
                    continue  # lost on the way (the socket is cut before anything else)
                if not down and self.up_delay_s:
                    await asyncio.sleep(self.up_delay_s)  # a slow uplink (in order)
                dst.write(data)
                await dst.drain()

    def cut(self) -> int:
        """Reset every open connection, both sides, whatever is in flight; how many."""
        writers = list(self._writers)
        for w in writers:
            w.transport.abort()
        self.cuts += 1
        return len(writers) // 2

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
