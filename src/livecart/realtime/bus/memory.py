"""In-process bus for a single node: history in memory, a new epoch per process."""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable

from .base import Bus, History, OffsetFloor, OnPublication, Publication, StreamPosition


class _Room:
    __slots__ = ("epoch", "log", "offset", "times")

    def __init__(self, offset: int) -> None:
        self.epoch = secrets.token_hex(6)
        self.offset = offset
        self.log: deque[Publication] = deque()
        self.times: deque[float] = deque()


class MemoryBus(Bus):
    def __init__(
        self,
        floor: OffsetFloor,
        *,
        history_size: int = 1000,
        history_ttl_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._floor = floor
        self._size = history_size
        self._ttl = history_ttl_s
        self._clock = clock
        self._rooms: dict[str, _Room] = {}
        self._subscribed: set[str] = set()
        self._on_publication: OnPublication | None = None

    async def start(self, on_publication: OnPublication) -> None:
        self._on_publication = on_publication

    async def stop(self) -> None:
        self._on_publication = None

    async def _room(self, name: str) -> _Room:
        room = self._rooms.get(name)
        if room is None:
            floor = await self._floor(name)
            room = self._rooms.get(name)  # another task may have created it meanwhile
            if room is None:
                room = self._rooms[name] = _Room(floor)
        return room

    def _trim(self, room: _Room) -> None:
        horizon = self._clock() - self._ttl
        while room.log and (len(room.log) > self._size or room.times[0] < horizon):
            room.log.popleft()
            room.times.popleft()

    async def publish(self, room: str, kind: str, data: bytes) -> StreamPosition:
        r = await self._room(room)
        # No await from here on: offset assignment, history and delivery are one step.
        r.offset += 1
        pub = Publication(r.offset, kind, data)
        r.log.append(pub)
        r.times.append(self._clock())
        self._trim(r)
        if room in self._subscribed and self._on_publication is not None:
            self._on_publication(room, pub)
        return StreamPosition(r.epoch, r.offset)

    async def history(self, room: str, since: StreamPosition | None, limit: int) -> History:
        r = await self._room(room)
        self._trim(r)
        position = StreamPosition(r.epoch, r.offset)
        if since is not None and since.epoch == r.epoch and since.offset <= r.offset:
            first = r.log[0].offset if r.log else r.offset + 1
            if since.offset >= first - 1:
                start = since.offset - first + 1
                return History(list(r.log)[start:], position, True)
        newest = list(r.log)[-limit:] if limit > 0 else []
        return History(newest, position, False)

    async def redact(self, room: str, offset: int, data: bytes) -> None:
        r = await self._room(room)
        if r.log and r.log[0].offset <= offset <= r.log[-1].offset:
            i = offset - r.log[0].offset
            r.log[i] = Publication(offset, r.log[i].kind, data)

    async def subscribe(self, room: str) -> None:
        self._subscribed.add(room)

    async def unsubscribe(self, room: str) -> None:
        self._subscribed.discard(room)

    async def ping(self) -> bool:
        return True
