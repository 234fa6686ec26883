"""Two ranking services sharing one Redis (and one PostgreSQL), as two nodes do: each sees the
other's increments, catalog changes, and erasures and opt-outs (ranking/sync.py and
lua/ranking_sync.lua, lua/ranking_forget.lua)."""

from __future__ import annotations

import math
import secrets

import asyncpg

from livecart.catalog import store as catalog
from livecart.ranking import RankingService, store

from ..conftest import redis_url_or_skip
from .ranking_world import World, service, settled, world


def _pair(pool: asyncpg.Pool) -> tuple[RankingService, RankingService]:
    url = redis_url_or_skip()
    prefix = f"lc:{{rank}}:test{secrets.token_hex(4)}"  # this test's keys only
    a, _ = service(pool, redis_url=url, redis_prefix=prefix)
    b, _ = service(pool, redis_url=url, redis_prefix=prefix)
    return a, b


async def _engage(svc: RankingService, w: World, product: str, name: str) -> None:
    for i in range(10):
        who = w.viewer(f"{name}{i}")
        svc.record(who, "product_click", w.session, product_id=product)
        svc.record(who, "add_to_cart", w.session, product_id=product)
    await settled(svc)


def _scores(svc: RankingService) -> dict[str, float]:
    return {p["id"]: p["score"] for p in svc.trending("products", limit=50)["products"]}


async def test_two_services_see_each_others_increments(pool: asyncpg.Pool) -> None:
    w = await world(pool)
    a, b = _pair(pool)
    try:
        await a.sync_once()
        await b.sync_once()  # both read the live catalog (the first version they see)
        assert b.index.is_live("session", w.session)
        await _engage(a, w, w.products[0], "a-fan")
        assert w.products[0] in _scores(a) and w.products[0] not in _scores(b)
        await a.sync_once()
        await b.sync_once()
        assert math.isclose(_scores(b)[w.products[0]], _scores(a)[w.products[0]], rel_tol=1e-4)

        await _engage(b, w, w.products[1], "b-fan")
        await b.sync_once()
        await a.sync_once()
        assert w.products[1] in _scores(a)
        assert math.isclose(_scores(a)[w.products[1]], _scores(b)[w.products[1]], rel_tol=1e-4)

        # One account on both services stays under one per-account cap, not one per service.
        before = _scores(a)[w.products[1]]
        bot = w.viewer("bot")
        for svc in (a, b):
            for _ in range(30):
                svc.record(bot, "add_to_cart", w.session, product_id=w.products[1])
            await svc.sync_once()
        await a.sync_once()
        gained = _scores(a)[w.products[1]] - before
        cap = a.index.config.user_item_cap
        assert 0 < gained <= cap * 1.001, (gained, cap)
    finally:
        await a.stop()
        await b.stop()


async def test_a_catalog_change_on_one_service_reaches_the_other(pool: asyncpg.Pool) -> None:
    a, b = _pair(pool)
    try:
        await a.sync_once()
        await b.sync_once()
        w = await world(pool)  # goes live after both read the catalog
        assert not b.index.is_live("session", w.session)
        await a.session_changed(w.session)
        assert a.index.is_live("session", w.session)
        await b.sync_once()
        assert b.index.is_live("session", w.session)
        await pool.execute("UPDATE sessions SET status = 'ended' WHERE id = $1", w.session)
        await a.session_changed(w.session)
        await b.sync_once()
        assert not b.index.is_live("session", w.session)
    finally:
        await a.stop()
        await b.stop()


async def test_erasure_and_opt_out_on_one_service_hold_on_the_other(pool: asyncpg.Pool) -> None:
    w = await world(pool)
    a, b = _pair(pool)
    try:
        await a.sync_once()
        await b.sync_once()
        cy = w.viewer("cy")
        await catalog.upsert_user(pool, cy.sub, cy.name, cy.role, cy.minor)
        b.record(cy, "product_click", w.session, product_id=w.products[0])
        await settled(b)
        assert b.profiles.viewers[cy.sub].profile is not None  # changed, not saved yet

        assert await a.erase_profile(cy) is False  # nothing stored yet
        await b.sync_once()
        assert cy.sub not in b.profiles.viewers  # dropped, not written back
        await b.profiles.save()
        assert await store.stored_profile(pool, cy.sub) is None

        # A profile saved by b, then an opt-out through a: b reads the new setting.
        b.record(cy, "product_click", w.session, product_id=w.products[0])
        await settled(b)
        await b.profiles.save()
        assert await store.stored_profile(pool, cy.sub) is not None
        await a.set_personalization(cy, False)
        await b.sync_once()
        viewer = await b.profiles.viewer(cy)
        assert viewer.personalization is False
        b.record(cy, "add_to_cart", w.session, product_id=w.products[1])
        await settled(b)
        assert not b.profiles.viewers[cy.sub].personal

        # The save loop of b also hears of erasures (without a sync in between).
        assert await a.erase_profile(cy) is True
        await b.profiles.save()
        assert cy.sub not in b.profiles.viewers
        assert await store.stored_profile(pool, cy.sub) is None
    finally:
        await a.stop()
        await b.stop()
