"""What the moderation service speaks: the REST requests it takes, the ports through which it
reaches the rest of the node, and the refusal of a chat message it raises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

from msgspec import Meta, Struct

from ..limits import ID_MAX_CHARS, MAX_OFFSET
from ..protocol import ErrorCode, Failure, RoomEvent
from ..text import line_meta
from .rules.links import domain_form

ActionName = Literal[
    "delete",
    "timeout",
    "ban",
    "unban",
    "slow",
    "claim",
    "approve",
    "reject",
    "shield_on",
    "shield_off",
]


_Id = Annotated[str, line_meta(1, ID_MAX_CHARS)]


class ModerationRequest(Struct, forbid_unknown_fields=True):
    """`POST /api/sessions/{id}/moderation`"""

    action: ActionName
    user_id: _Id | None = None
    offset: Annotated[int, Meta(ge=1, le=MAX_OFFSET)] | None = None
    seconds: Annotated[int, Meta(ge=0, le=14 * 86400)] | None = None
    reason: Annotated[str, line_meta(0, 500)] | None = None
    item: _Id | None = None


class TermRequest(Struct, forbid_unknown_fields=True):
    term: Annotated[str, line_meta(1, 100)]
    action: Literal["block", "hold"] = "block"


class AllowedDomains(Struct, forbid_unknown_fields=True):
    domains: Annotated[list[Annotated[str, line_meta(1, 253)]], Meta(max_length=200)]

    def __post_init__(self) -> None:
        for domain in self.domains:
            if not domain_form(domain):
                raise ValueError(f"domain {domain!r} is empty after normalisation")


class ModeratorRequest(Struct, forbid_unknown_fields=True):
    user_id: _Id


class RoomView(Protocol):
    """What moderation reads of a live session."""

    @property
    def id(self) -> str: ...
    @property
    def creator(self) -> str: ...
    @property
    def slow(self) -> int: ...
    @property
    def shield(self) -> bool: ...


class Append(Protocol):
    """Appends an event to a session's log and returns its offset (`Node.append`)."""

    def __call__(
        self,
        event: RoomEvent,
        *,
        author: str | None = None,
        text: str | None = None,
    ) -> Awaitable[int]: ...


@dataclass(frozen=True, slots=True)
class ModerationPorts:
    """What the moderation service needs of the node, and nothing more."""

    room: Callable[[str], Awaitable[RoomView]]
    """The live session by id; raises `not_found`."""
    append: Append
    redact: Callable[[str, int, bytes], Awaitable[object]]
    """Replace a published event in the live history (session, offset, replacement)."""
    tell: Callable[[str, Struct], None]
    """Send a message to every connection of a user on this node."""
    acted: Callable[[str], None]
    """Count a moderation action done (by its name)."""


class ChatRefused(Failure):
    """A refused chat message; besides the error, the author's connection gets `notice`
    (when muted or banned) and is closed with `close` (when flooding)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retry_after_ms: int | None = None,
        notice: Struct | None = None,
        close: int | None = None,
    ) -> None:
        super().__init__(code, message, retry_after_ms=retry_after_ms)
        self.notice = notice
        self.close = close
