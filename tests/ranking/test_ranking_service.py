"""The ranking service against real PostgreSQL, built from its ports as a node builds it: the
catalog it learns, the push rule (SPEC §8), interest profiles and privacy."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import pytest

from livecart.catalog import store as catalog
from livecart.ranking import RankingService, store
from livecart.ranking.feeds import TRENDING_EVERY_S

from .ranking_world import Clock, Subscriber, World, service, settled, world


async def _engage(svc: RankingService, w: World, product: str, fans: int, name: str) -> None:
    """`fans` accounts each click and add the product to their cart (enough to trend)."""
    for i in range(fans):
        who = w.viewer(f"{name}{i}")
        svc.record(who, "product_click", w.session, product_id=product)
        svc.record(who, "add_to_cart", w.session, product_id=product)
    await settled(svc)


async def _ticks(svc: RankingService, clock: Clock, seconds: float, sub: Subscriber) -> list[Any]:
    """Run the push loop's ticks for `seconds` of clock time: (time, message) pushed."""
    out = []
    for _ in range(round(seconds / 0.1)):
        clock.advance(0.1)
        before = len(sub.sent)
        await svc.push_once()
        out += [(clock.now, m) for m in sub.sent[before:]]
    return out


async def test_a_session_is_learned_from_its_first_signal(pool: asyncpg.Pool) -> None:
    w = await world(pool)
    ended = await world(pool, live=False)
    svc, ports = service(pool)
    assert not svc.index.is_live("session", w.session)
    svc.record(w.viewer("first"), "join", w.session)
    svc.record(w.viewer("early"), "join", ended.session)
    await settled(svc)
    assert svc.index.is_live("session", w.session)
    assert not svc.index.is_live("session", ended.session)
    # A session found not live is not read again for a while.
    svc.record(w.viewer("early"), "join", ended.session)  # a viewer already read
    assert not svc._background
    # Held signals were counted once the session was known: enough accounts make it trend.
    await _engage(svc, w, w.products[0], 10, "fan")
    trending = svc.trending("products")["products"]
    assert trending[0]["id"] == w.products[0]
    assert trending[0]["creator"] == w.creator.sub and trending[0]["category"] == "cat0"
    assert [h["id"] for h in svc.trending("hosts")["hosts"]] == [w.creator.sub]
    svc._flush_counts()
    assert ports.events["add_to_cart"] == 10 and ports.events["join"] == 3


async def test_one_account_cannot_make_a_product_trend(pool: asyncpg.Pool) -> None:
    w = await world(pool)
    svc, _ = service(pool)
    bot = w.viewer("bot")
    for _ in range(50):
        svc.record(bot, "add_to_cart", w.session, product_id=w.products[0])
    await settled(svc)
    assert svc.trending("products")["products"] == []


async def test_pushes_trending_and_feeds_only_when_they_change(pool: asyncpg.Pool) -> None:
    w = await world(pool)
    clock = Clock()
    svc, ports = service(pool, clock=clock)
    # Only this session is known to the service (learned from a signal, not the whole table).
    svc.record(w.viewer("first"), "join", w.session)
    await settled(svc)

    watcher = Subscriber(w.viewer("watcher"))
    gone = Subscriber(w.viewer("gone"))
    await svc.subscribe(watcher, True)
    await svc.subscribe(gone, True)
    gone.closed = True
    assert watcher.feed_on and watcher.kinds() == ["trending", "feed"]
    first_feed = watcher.sent[1]
    ids = {w.session, *w.products}
    assert first_feed["items"] and {i["id"] for i in first_feed["items"]} <= ids

    # Nothing moves: no feed is pushed (a first trending may be, once).
    quiet = await _ticks(svc, clock, 3.0, watcher)
    assert [m["type"] for _, m in quiet if m["type"] == "feed"] == []

    await _engage(svc, w, w.products[1], 10, "fan")
    busy = await _ticks(svc, clock, 2.5, watcher)
    trending = [(t, m) for t, m in busy if m["type"] == "trending"]
    assert trending and trending[-1][1]["products"][0]["id"] == w.products[1]
    assert ports.pushes, "the event-to-push delay was measured"
    pushed_at = [t for t, m in quiet + busy if m["type"] == "trending"]
    assert all(b - a >= TRENDING_EVERY_S - 1e-9 for a, b in itertools.pairwise(pushed_at))

    # The session ends: every feed that showed it changes, once FEED_EVERY_S has passed.
    await pool.execute("UPDATE sessions SET status = 'ended' WHERE id = $1", w.session)
    await svc.session_changed(w.session)
    ended = await _ticks(svc, clock, 2.0, watcher)
    feeds = [(t, m) for t, m in ended if m["type"] == "feed"]
    assert len(feeds) == 1
    assert not {i["id"] for i in feeds[0][1]["items"]} & ids
    assert feeds[0][1]["version"] > first_feed["version"]
    assert gone.kinds() == ["trending", "feed"], "a closed connection is not written to"

    svc.unsubscribe(watcher)
    assert not watcher.feed_on
    await _engage(svc, w, w.products[0], 10, "late")
    assert await _ticks(svc, clock, 3.0, watcher) == []


async def test_profiles_are_built_saved_read_back_and_exported(pool: asyncpg.Pool) -> None:
    w = await world(pool)
    svc, ports = service(pool)
    ports.orders = [{"id": "o1"}]
    ann = w.viewer("ann")
    await catalog.upsert_user(pool, ann.sub, ann.name, ann.role, ann.minor)  # as on connect
    for _ in range(3):
        svc.record(ann, "product_click", w.session, product_id=w.products[0])
    await settled(svc)
    profile = svc.profiles.viewers[ann.sub].profile
    assert profile is not None
    await svc.profiles.save()
    stored = await store.stored_profile(pool, ann.sub)
    assert stored is not None and stored["profile"] == profile.to_dict()

    # Another service (a restart, another node) reads it back.
    other, _ = service(pool)
    viewer = await other.profiles.viewer(ann)
    assert viewer.profile is not None and viewer.profile.to_dict() == profile.to_dict()
    assert viewer.personal

    export = await svc.export(ann)
    assert export["profile"]["decayed_now"]["categories"]["cat0"] > 0
    assert export["orders"] == [{"id": "o1"}]
    assert export["user"]["id"] == ann.sub and export["user"]["minor"] is False


async def test_minors_are_never_profiled(pool: asyncpg.Pool) -> None:
    w = await world(pool)
    svc, _ = service(pool)
    kid = w.viewer("kid", minor=True)
    await catalog.upsert_user(pool, kid.sub, kid.name, kid.role, kid.minor)
    # Even a profile stored for the account (before it was known to be a minor) is not used.
    adult = w.viewer("adult")
    svc.record(adult, "product_click", w.session, product_id=w.products[1])
    await settled(svc)
    adult_profile = svc.profiles.viewers[adult.sub].profile
    assert adult_profile is not None
    await store.save_profiles(pool, [(kid.sub, adult_profile.to_dict())])
    for _ in range(5):
        svc.record(kid, "add_to_cart", w.session, product_id=w.products[0])
    await settled(svc)
    viewer = svc.profiles.viewers[kid.sub]
    assert viewer.profile is None and not viewer.personal
    await svc.profiles.save()
    stored = await store.stored_profile(pool, kid.sub)
    assert stored is not None and stored["profile"] == adult_profile.to_dict()  # untouched
    items = await svc.feed(kid)
    assert all(i.why.affinity == 0 for i in items)


async def test_personalization_off_stops_profiling_and_erasure_forgets(pool: asyncpg.Pool) -> None:
    w = await world(pool)
    svc, _ = service(pool)
    bob = w.viewer("bob")
    await catalog.upsert_user(pool, bob.sub, bob.name, bob.role, bob.minor)
    svc.record(bob, "product_click", w.session, product_id=w.products[0])
    await settled(svc)
    assert svc.profiles.viewers[bob.sub].profile is not None
    await svc.profiles.save()

    assert await svc.erase_profile(bob) is True
    assert await store.stored_profile(pool, bob.sub) is None
    assert svc.profiles.viewers[bob.sub].profile is None
    await svc.profiles.save()  # nothing written back
    assert await store.stored_profile(pool, bob.sub) is None
    assert await svc.erase_profile(bob) is False

    await svc.set_personalization(bob, False)
    row = (await store.viewers(pool, [bob.sub])).get(bob.sub)
    assert row is not None and row.settings["personalization"] is False
    for _ in range(3):
        svc.record(bob, "add_to_cart", w.session, product_id=w.products[1])
    await settled(svc)
    assert svc.profiles.viewers[bob.sub].profile is None
    items = await svc.feed(bob)
    assert all(i.why.affinity == 0 for i in items)
    # A fresh service reads the setting from PostgreSQL.
    other, _ = service(pool)
    assert (await other.profiles.viewer(bob)).personalization is False


class _Counted:
    """The real pool, counting the statements that read rows (how many round trips)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.fetches = 0

    async def fetch(self, *args: Any) -> Any:
        self.fetches += 1
        return await self.pool.fetch(*args)


async def test_a_join_storm_reads_stored_profiles_in_batches(pool: asyncpg.Pool) -> None:
    w = await world(pool)
    # Stored state of two of them: a profile (built and saved on another node), a setting.
    seed, _ = service(pool)
    fan, quiet = w.viewer("fan"), w.viewer("quiet")
    for who in (fan, quiet):
        await catalog.upsert_user(pool, who.sub, who.name, who.role, who.minor)
    for _ in range(3):
        seed.record(fan, "product_click", w.session, product_id=w.products[0])
    await settled(seed)
    await seed.profiles.save()
    await store.set_personalization(pool, quiet, False)

    svc, _ = service(pool)
    counted = _Counted(pool)
    svc.profiles.pool = counted  # type: ignore[assignment]
    crowd = [w.viewer(f"crowd{i}") for i in range(1200)]
    for who in [fan, quiet, *crowd]:  # their first signal: the join
        svc.record(who, "join", w.session)
    await settled(svc)
    # 1,202 viewers read in a few statements (at most 500 each), not one per viewer.
    assert 3 <= counted.fetches <= 6
    viewers = svc.profiles.viewers
    assert len([v for v in (viewers.get(who.sub) for who in crowd) if v is not None]) == 1200
    assert viewers[fan.sub].profile is not None and viewers[fan.sub].personal
    assert viewers[quiet.sub].personalization is False and not viewers[quiet.sub].personal
    assert viewers[crowd[0].sub].personalization is True  # never seen: the defaults


async def test_a_cancelled_profile_read_leaves_the_others_served(pool: asyncpg.Pool) -> None:
    w = await world(pool)
    svc, _ = service(pool)
    ann, bob = w.viewer("ann"), w.viewer("bob")
    waiting = asyncio.ensure_future(svc.profiles.viewer(ann))
    served = asyncio.ensure_future(svc.profiles.viewer(bob))
    await asyncio.sleep(0)
    waiting.cancel()
    assert (await served).personalization is True
    assert (await svc.profiles.viewer(ann)).personal is False  # read (again) on demand


async def test_a_stopped_profile_reader_leaves_no_waiter_hanging(pool: asyncpg.Pool) -> None:
    w = await world(pool)
    svc, _ = service(pool)
    waiting = asyncio.ensure_future(svc.profiles.viewer(w.viewer("ann")))
    await asyncio.sleep(0)
    reader = svc.profiles._reader
    assert reader is not None
    reader.cancel()  # as at shutdown
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)
    assert svc.profiles._reader is None and not svc.profiles._wanted
    assert (await svc.profiles.viewer(w.viewer("bob"))).personalization is True  # reads again
