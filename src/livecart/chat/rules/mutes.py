"""Timeouts and bans, scoped to a creator.

Pure: no I/O, no module state. Every time is a parameter `now` in seconds.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class MuteStatus(msgspec.Struct, frozen=True):
    kind: Literal["muted", "banned"]
    until: float | None = None
    """End of a timeout; None for a ban."""


class MuteBook:
    """Timeouts and bans, scoped to a creator (they cover all of that creator's sessions).
    A ban outranks a timeout; `unban` lifts both; a new timeout replaces the previous one."""

    def __init__(self) -> None:
        self._timeouts: dict[tuple[str, str], float] = {}
        self._bans: set[tuple[str, str]] = set()

    def timeout(self, creator: str, user: str, until: float) -> None:
        self._timeouts[(creator, user)] = until

    def ban(self, creator: str, user: str) -> None:
        self._bans.add((creator, user))

    def unban(self, creator: str, user: str) -> bool:
        """Lift ban and timeout; True when there was something to lift."""
        had_ban = (creator, user) in self._bans
        self._bans.discard((creator, user))
        return self._timeouts.pop((creator, user), None) is not None or had_ban

    def status(self, creator: str, user: str, now: float) -> MuteStatus | None:
        if (creator, user) in self._bans:
            return MuteStatus("banned")
        until = self._timeouts.get((creator, user))
        if until is None:
            return None
        if until <= now:
            del self._timeouts[(creator, user)]
            return None
        return MuteStatus("muted", until)

    def sweep(self, now: float) -> None:
        """Forget expired timeouts."""
        for key in [k for k, until in self._timeouts.items() if until <= now]:
            del self._timeouts[key]
