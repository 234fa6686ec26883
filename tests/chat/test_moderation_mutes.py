"""Timeouts and bans (`chat.rules.mutes`), with the clock as a parameter."""

from __future__ import annotations

from livecart.chat.rules.mutes import (
    MuteBook,
    MuteStatus,
)

# --------------------------------------------------------------------------- mutes


def test_timeout_expires_then_allowed() -> None:
    mutes = MuteBook()
    mutes.timeout("creator", "u", until=600.0)
    assert mutes.status("creator", "u", 0.0) == MuteStatus("muted", 600.0)
    assert mutes.status("creator", "u", 599.9) == MuteStatus("muted", 600.0)
    assert mutes.status("creator", "u", 600.0) is None


def test_ban_outranks_timeout_and_unban_clears_both() -> None:
    mutes = MuteBook()
    mutes.timeout("creator", "u", until=600.0)
    mutes.ban("creator", "u")
    assert mutes.status("creator", "u", 0.0) == MuteStatus("banned")
    assert mutes.unban("creator", "u")
    assert mutes.status("creator", "u", 0.0) is None
    assert not mutes.unban("creator", "u")


def test_mutes_are_scoped_to_the_creator() -> None:
    mutes = MuteBook()
    mutes.ban("creator-a", "u")
    assert mutes.status("creator-b", "u", 0.0) is None


def test_new_timeout_replaces_the_old_one() -> None:
    mutes = MuteBook()
    mutes.timeout("c", "u", until=600.0)
    mutes.timeout("c", "u", until=10.0)
    assert mutes.status("c", "u", 20.0) is None


def test_sweep_forgets_expired_timeouts() -> None:
    mutes = MuteBook()
    mutes.timeout("c", "u", until=10.0)
    mutes.timeout("c", "v", until=100.0)
    mutes.sweep(50.0)
    assert mutes.status("c", "v", 50.0) is not None
    assert mutes.status("c", "u", 5.0) is None  # forgotten, not resurrected
