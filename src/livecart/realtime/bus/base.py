"""The bus contract: per-room logs with positions, history for recovery, fan-out to nodes.

Modelled on centrifuge's broker: `publish` assigns the next contiguous offset and makes the
publication visible to history and to subscribers in one step; `history(since)` serves
recovery; a changed epoch tells that a room's history was lost.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import msgspec


class StreamPosition(msgspec.Struct, frozen=True):
    epoch: str
    offset: int


class Publication(NamedTuple):
    offset: int
    kind: str  # the event type, so readers can filter without decoding
    data: bytes  # the encoded event without its offset


class History(NamedTuple):
    publications: list[Publication]
    position: StreamPosition
    # True when `since` was honoured: `publications` is exactly what came after it.
    recovered: bool


# Called by the bus, in offset order per room, for every publication in a subscribed room.
OnPublication = Callable[[str, Publication], None]
# The lowest offset a room may start from (the durable archive's newest offset), so that
# offsets stay unique per room even when the bus loses a room and starts a new epoch.
OffsetFloor = Callable[[str], Awaitable[int]]


class Bus(abc.ABC):
    @abc.abstractmethod
    async def start(self, on_publication: OnPublication) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, room: str, kind: str, data: bytes) -> StreamPosition:
        """Append to the room's log and deliver to subscribers; returns the new position."""

    @abc.abstractmethod
    async def history(self, room: str, since: StreamPosition | None, limit: int) -> History:
        """With `since`: everything after it if it is still in the window (recovered), else the
        newest `limit` publications with recovered False. Without: the newest `limit`."""

    @abc.abstractmethod
    async def redact(self, room: str, offset: int, data: bytes) -> None:
        """Replace the stored publication at `offset` (a deleted chat message's tombstone)."""

    @abc.abstractmethod
    async def subscribe(self, room: str) -> None:
        """Start receiving the room's publications on this node."""

    @abc.abstractmethod
    async def unsubscribe(self, room: str) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the bus can take publications (for /readyz)."""
