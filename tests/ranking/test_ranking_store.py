"""The ranking's SQL against real PostgreSQL: catalog reads, viewer rows, profiles, settings,
erasure and the counts behind a creator score (ranking/store.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from livecart.catalog import store as catalog
from livecart.catalog.models import SessionCreate
from livecart.ranking import store
from livecart.ranking.core import ProductInfo

from .ranking_world import world


async def test_products_and_sessions_are_read_as_the_core_takes_them(pool: asyncpg.Pool) -> None:
    w = await world(pool, products=3)
    info = await store.product(pool, w.products[1])
    assert info == ProductInfo(w.products[1], w.creator.sub, "cat1", ("t1",))
    assert await store.product(pool, "no-such-product") is None

    row = await store.session(pool, w.session)
    assert row is not None
    assert (row.id, row.creator, row.status) == (w.session, w.creator.sub, "live")
    assert row.showcase == w.products  # in showcase order
    assert row.info().category == "shoes" and row.info().tags == ("street",)
    assert await store.session(pool, "no-such-session") is None

    live = {r.id: r for r in await store.live_sessions(pool)}
    assert w.session in live
    await pool.execute("UPDATE sessions SET status = 'ended' WHERE id = $1", w.session)
    assert w.session not in {r.id for r in await store.live_sessions(pool)}


async def test_a_session_without_a_showcase_has_none(pool: asyncpg.Pool) -> None:
    w = await world(pool, products=0)
    row = await store.session(pool, w.session)
    assert row is not None and row.showcase is None


async def test_viewer_rows_profiles_settings_and_erasure(pool: asyncpg.Pool) -> None:
    w = await world(pool, products=0)
    who = w.viewer("ann")
    assert await store.viewers(pool, [who.sub]) == {}  # never seen

    await store.set_personalization(pool, who, False)
    row = (await store.viewers(pool, [who.sub])).get(who.sub)
    assert row is not None
    assert row.minor is False and row.settings["personalization"] is False
    assert row.profile is None

    profile = {"v": 1, "anything": [1, 2]}
    await store.save_profiles(pool, [(who.sub, profile)])
    row = (await store.viewers(pool, [who.sub])).get(who.sub)
    assert row is not None and row.profile == profile
    stored = await store.stored_profile(pool, who.sub)
    assert stored is not None and stored["profile"] == profile

    # Saved again: one row, the newer profile.
    await store.save_profiles(pool, [(who.sub, {"v": 2})])
    assert (await store.stored_profile(pool, who.sub))["profile"] == {"v": 2}  # type: ignore[index]

    await store.set_personalization(pool, who, True)
    row = (await store.viewers(pool, [who.sub])).get(who.sub)
    assert row is not None and row.settings["personalization"] is True

    assert await store.erase_profile(pool, who.sub) is True
    assert await store.erase_profile(pool, who.sub) is False
    assert await store.stored_profile(pool, who.sub) is None
    user = await store.user(pool, who.sub)
    assert user is not None and user["name"] == "ann"


async def test_creator_counts_and_session_times(pool: asyncpg.Pool) -> None:
    w = await world(pool, products=1)
    counts = await store.creator_counts(pool, w.creator.sub)
    assert (counts.messages, counts.buyers, counts.paid, counts.likes) == (0, 0, 0, 0)

    await catalog.add_likes(pool, {w.session: 7})
    other = await catalog.create_session(pool, w.creator.sub, SessionCreate(title="again"))
    await catalog.add_likes(pool, {other.id: 5})
    viewer = w.viewer("chatty")
    for i in range(3):
        await pool.execute(
            'INSERT INTO room_events (session, "offset", type, author, text, body, state) '
            "VALUES ($1, $2, 'chat', $3, 'hi', '{}'::jsonb, $4)",
            w.session,
            100 + i,
            viewer.sub,
            "removed" if i == 0 else "visible",
        )
    counts = await store.creator_counts(pool, w.creator.sub)
    assert counts.likes == 12 and isinstance(counts.likes, int)
    assert (counts.messages, counts.chatters, counts.removed) == (3, 1, 1)
    chat = await store.chat_of(pool, viewer.sub)
    assert [r["offset"] for r in chat] == [100, 101, 102]

    assert await store.session_times(pool, w.creator.sub) == []
    planned = datetime(2030, 5, 1, 18, tzinfo=UTC)
    await pool.execute(
        "UPDATE sessions SET scheduled_at = $2, started_at = $3 WHERE id = $1",
        w.session,
        planned,
        planned + timedelta(minutes=3),
    )
    times = await store.session_times(pool, w.creator.sub)
    assert len(times) == 1
    assert times[0].scheduled_at == planned
    assert times[0].started_at - times[0].scheduled_at == timedelta(minutes=3)
