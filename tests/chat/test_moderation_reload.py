"""The moderation state a node reloads from PostgreSQL never undoes a change made on the node
while the reload was reading (a timeout that raced a reload used to be lost for a second)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from livecart.chat import store as store
from livecart.chat.model import ModerationPorts
from livecart.chat.rules.limits import FloodPolicy, RatePolicy
from livecart.chat.service import ModerationService


def _unused(*args: Any, **kw: Any) -> Any:
    raise AssertionError("a reload reaches nothing of the node but PostgreSQL")


UNUSED_PORTS = ModerationPorts(
    room=_unused, append=_unused, redact=_unused, tell=_unused, acted=_unused
)


@pytest.mark.parametrize("change", ["timeout", "ban"])
async def test_a_mute_made_during_a_reload_survives_it(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    service = ModerationService(pool, UNUSED_PORTS, rate=RatePolicy(), flood=FloodPolicy())
    reading, release = asyncio.Event(), asyncio.Event()
    real_active_mutes = store.active_mutes

    async def slow_active_mutes(p: Any) -> Any:
        rows = await real_active_mutes(p)  # read before the change below is written
        reading.set()
        await release.wait()
        return rows

    monkeypatch.setattr(store, "active_mutes", slow_active_mutes)
    reload = asyncio.create_task(service.reload())
    await reading.wait()
    until = time.time() + 60
    if change == "timeout":
        service._mute(lambda book: book.timeout("cr-race", "u-race", until))
    else:
        service._mute(lambda book: book.ban("cr-race", "u-race"))
    release.set()
    await reload
    status = service.guards.mutes.status("cr-race", "u-race", time.time())
    assert status is not None
    assert status.kind == ("muted" if change == "timeout" else "banned")
    # Once the reload is over, changes are no longer recorded for replay.
    assert service._mutes_changed is None
