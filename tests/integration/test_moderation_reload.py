"""The moderation state a node reloads from PostgreSQL never undoes a change made on the node
while the reload was reading (a timeout that raced a reload used to be lost for a second)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from livecart.core import moderation as rules
from livecart.moderation import ModerationService
from livecart.store import moderation as store


@pytest.mark.parametrize("change", ["timeout", "ban"])
async def test_a_mute_made_during_a_reload_survives_it(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    service = ModerationService(
        SimpleNamespace(pool=pool),  # type: ignore[arg-type]
        rate=rules.RatePolicy(),
        flood=rules.FloodPolicy(),
    )
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
