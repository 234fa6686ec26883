"""Room events of commerce, published per session in commit order off the caller's path."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from ..protocol import RoomEvent, kind_of

log = logging.getLogger("livecart.commerce")

# Appends an event to its session's room log and returns its offset (the gateway's publisher).
Publish = Callable[[RoomEvent], Awaitable[int]]


class Emitter:
    """Publishes room events in commit order per session, off the caller's path, so that a
    slow or failing bus never delays or fails an already committed purchase."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._queues: dict[str, deque[tuple[RoomEvent, asyncio.Future[int | None]]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    def emit(self, event: RoomEvent) -> asyncio.Future[int | None]:
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        session = event.session
        self._queues.setdefault(session, deque()).append((event, fut))
        if session not in self._workers:
            self._workers[session] = asyncio.create_task(
                self._drain(session), name="commerce-events"
            )
        return fut

    async def _drain(self, session: str) -> None:
        queue = self._queues[session]
        try:
            while queue:
                event, fut = queue.popleft()
                offset: int | None = None
                try:
                    offset = await self._publish(event)
                except Exception as exc:
                    log.error("publishing %s to %s failed: %s", kind_of(event), session, exc)
                if not fut.done():
                    fut.set_result(offset)
        finally:
            self._workers.pop(session, None)
            if not queue:
                self._queues.pop(session, None)

    async def close(self, timeout_s: float = 5.0) -> None:
        workers = list(self._workers.values())
        if workers:
            _, pending = await asyncio.wait(workers, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for queue in self._queues.values():
            for _, fut in queue:
                if not fut.done():
                    fut.set_result(None)
        self._queues.clear()
