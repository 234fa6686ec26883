"""What the ranking service needs from the rest of a node, as narrow ports: it never sees the
node, the gateway or moderation. A node wires these to its hub, connections and metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ..auth import Identity


class Subscriber(Protocol):
    """A viewer's connection as the push loop sees it (the gateway's `Connection` is one)."""

    identity: Identity
    closed: bool
    feed_on: bool

    def send(self, message: bytes) -> None:
        """Queue a message for this viewer alone."""

    def write_shared(self, payload: bytes, framed: bytes) -> bool:
        """Write a message framed once for many viewers; False when closed."""


class RoomFacts(Protocol):
    """What a viewer event's room says about it when no product does (the hub's `Room`)."""

    @property
    def creator(self) -> str: ...

    @property
    def category(self) -> str: ...

    @property
    def tags(self) -> Sequence[str]: ...


class EventCounter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


RoomOf = Callable[[str], RoomFacts | None]
"""The room of a session if this node holds it (no I/O: called per signal)."""
OrdersOf = Callable[[Identity], Awaitable[list[Any]]]
"""A viewer's orders, for the export."""
CounterOf = Callable[[str], EventCounter]
"""The counter of ingested events of one kind."""
ObservePush = Callable[[float], None]
"""Seconds from an event to the trending push that carries it."""
