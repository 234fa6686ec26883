"""Interest profiles: what this node knows of each signed-in viewer (the settings, the age
flag, the profile built from their events), read from PostgreSQL on first use and written back
when changed; and privacy: personalization off, erasure, export. Minors are never profiled
(the core's `ProfileBuilder` refuses)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from ..auth import Identity
from ..protocol import Failure
from ..runtime.db import Executor
from . import store
from .catalog_cache import CatalogCache
from .core import InterestProfile, ProfileBuilder
from .core.signals import SignalKind
from .ports import OrdersOf, RoomOf
from .store import PROFILE_SAVE_CHUNK, ViewerRow
from .sync import SharedTrending

log = logging.getLogger("livecart.ranking")

PROFILE_SAVE_EVERY_S = 10.0
"""Changed interest profiles are written at most this often (and at shutdown)."""
PROFILE_QUEUE_MAX = 64
"""Events kept per viewer while their stored profile is being read."""
PROFILE_READ_CHUNK = 500
"""Viewers read from PostgreSQL in one statement at most: a join storm's first signals become
one query per batch of newcomers, not one per viewer."""

# (kind, at, session, product, count, minutes): a viewer event waiting for its profile to load.
ProfileEvent = tuple[SignalKind, float, str, str | None, int, float]


class Viewer:
    """What the service knows about one signed-in viewer on this node."""

    __slots__ = ("dirty", "minor", "personalization", "profile", "revision")

    def __init__(self, minor: bool, personalization: bool, profile: InterestProfile | None):
        self.minor = minor
        self.personalization = personalization
        self.profile = profile
        self.dirty = False
        # Grows with every change that can alter this viewer's feed (profile, settings).
        self.revision = 0

    @property
    def personal(self) -> bool:
        return self.personalization and not self.minor and self.profile is not None


class Profiles:
    def __init__(
        self,
        pool: Executor,
        catalog: CatalogCache,
        *,
        room_of: RoomOf,
        orders_of: OrdersOf,
        shared: SharedTrending | None,
        clock: Callable[[], float],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.pool = pool
        self._catalog = catalog
        self._room_of = room_of
        self._orders_of = orders_of
        self._shared = shared
        self._clock = clock
        self._spawn = spawn
        self.builder = ProfileBuilder()
        self.viewers: dict[str, Viewer] = {}
        # Events of viewers whose stored profile is being read; one reader task per viewer.
        self.queued: dict[str, list[ProfileEvent]] = {}
        self.forgotten_at = 0.0  # the last cluster "forget" marker seen (caches start empty)
        # Viewers asked for and not read yet, read in batches by one reader task.
        self._wanted: dict[str, asyncio.Future[ViewerRow | None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._reading: dict[str, asyncio.Future[ViewerRow | None]] = {}

    # ------------------------------------------------------------ events

    def later(self, who: Identity, event: ProfileEvent) -> None:
        """Fold `event` in once what it needs is read (the viewer, or its product)."""
        self.queued[who.sub] = [event]
        self._spawn(self._later(who))

    async def _later(self, who: Identity) -> None:
        try:
            viewer = await self.viewer(who)
            while True:
                events = self.queued.get(who.sub)
                if not events:
                    break
                event = events[0]
                product_id = event[3]
                if product_id is not None and product_id not in self._catalog.products:
                    await self._catalog.product(product_id)
                events.pop(0)
                self.event(who.sub, viewer, event)
        except Exception as exc:
            log.warning("profile update dropped: %s", exc, extra={"user": who.sub})
        finally:
            self.queued.pop(who.sub, None)

    def event(self, user: str, viewer: Viewer, event: ProfileEvent) -> None:
        kind, now, session_id, product_id, count, minutes = event
        product = self._catalog.products.get(product_id) if product_id else None
        room = self._room_of(session_id)
        category = product.category if product else (room.category if room else None)
        tags = product.tags if product else tuple(room.tags if room else ())
        creator = product.creator if product else (room.creator if room else None)
        profile = self.builder.record(
            viewer.profile,
            user=user,
            minor=viewer.minor,
            personalization=viewer.personalization,
            kind=kind,
            now=now,
            category=category or None,
            tags=tags,
            creator=creator,
            count=count,
            minutes=minutes,
        )
        if profile is not None:
            viewer.profile = profile
            viewer.dirty = True
            viewer.revision += 1

    async def viewer(self, who: Identity) -> Viewer:
        viewer = self.viewers.get(who.sub)
        if viewer is not None:
            return viewer
        row = await self._row(who.sub)
        viewer = self.viewers.get(who.sub)  # read meanwhile by another task
        if viewer is not None:
            return viewer
        personalization = True
        profile = None
        if row is not None:
            personalization = bool(row.settings.get("personalization", True))
            if row.profile is not None and not who.minor:
                try:
                    profile = InterestProfile.from_dict(row.profile)
                except ValueError:
                    log.warning(
                        "discarding an unreadable interest profile", extra={"user": who.sub}
                    )
        viewer = self.viewers[who.sub] = Viewer(who.minor, personalization, profile)
        return viewer

    async def _row(self, user: str) -> ViewerRow | None:
        """The stored row of `user`, read together with the other viewers asked for meanwhile."""
        wanted = self._wanted.get(user)
        if wanted is None:
            wanted = self._wanted[user] = asyncio.get_running_loop().create_future()
            if self._reader is None:
                self._reader = asyncio.get_running_loop().create_task(self._read())
                self._reader.add_done_callback(self._read_stopped)
        # Shielded: one waiter cancelled leaves the read (and any other waiter) alone.
        return await asyncio.shield(wanted)

    async def _read(self) -> None:
        await asyncio.sleep(0)  # let the rest of this loop iteration ask too
        while self._wanted:
            batch = self._reading = dict(itertools.islice(self._wanted.items(), PROFILE_READ_CHUNK))
            for user in batch:
                del self._wanted[user]
            try:
                rows = await store.viewers(self.pool, list(batch))
            except Exception as exc:
                for wanted in batch.values():
                    if not wanted.done():
                        wanted.set_exception(exc)
                        wanted.exception()  # retrieved: each waiter gets it raised
                continue
            for user, wanted in batch.items():
                if not wanted.done():
                    wanted.set_result(rows.get(user))
        self._reading = {}
        self._reader = None  # nothing asked meanwhile: the next ask starts a reader

    def _read_stopped(self, reader: asyncio.Task[None]) -> None:
        """The reader was cancelled (shutdown), even before it ran: nobody is left waiting on
        a read that will not happen."""
        if self._reader is not reader:
            return  # it ended normally (a newer reader may be running)
        self._reader = None
        for wanted in [*self._reading.values(), *self._wanted.values()]:
            wanted.cancel()
        self._reading = {}
        self._wanted.clear()

    # ------------------------------------------------------------ storage

    async def save(self, users: list[str] | None = None) -> None:
        """Write changed profiles (all, or these users'), a chunk per statement."""
        if self._shared is not None:
            # Never write back a profile erased (or opted out) through another node.
            try:
                self.forget(await self._shared.forgotten(self.forgotten_at))
            except Exception as exc:
                log.warning("could not read forgotten viewers from Redis: %s", exc)
        if users is None:
            dirty = [(u, v) for u, v in self.viewers.items() if v.dirty]
        else:
            dirty = [(u, v) for u in users if (v := self.viewers.get(u)) is not None and v.dirty]
        rows = []
        for user, viewer in dirty:
            viewer.dirty = False
            if viewer.profile is not None:
                rows.append((user, viewer.profile.to_dict()))
        for i in range(0, len(rows), PROFILE_SAVE_CHUNK):
            try:
                await store.save_profiles(self.pool, rows[i : i + PROFILE_SAVE_CHUNK])
            except Exception:
                for user, _ in rows[i:]:  # written with the next save
                    if (unsaved := self.viewers.get(user)) is not None:
                        unsaved.dirty = True
                raise

    def forget(self, forgotten: list[tuple[str, float]]) -> None:
        """Drop the cached state of viewers another node changed (read again when needed)."""
        for user, at in forgotten:
            self.viewers.pop(user, None)
            self.queued.pop(user, None)
            self.forgotten_at = max(self.forgotten_at, at)

    async def _announce_forget(self, user: str) -> None:
        if self._shared is None:
            return
        try:
            await self._shared.forget_viewer(user)
        except Exception as exc:
            # Other nodes could keep (and write back) their copy: refuse rather than half-do.
            log.warning("could not announce a profile change to the cluster: %s", exc)
            raise Failure("unavailable", "the cluster cannot be told right now; retry") from None

    # ------------------------------------------------------------ privacy

    async def set_personalization(self, who: Identity, on: bool) -> None:
        await store.set_personalization(self.pool, who, on)
        await self._announce_forget(who.sub)  # other nodes read the new setting
        viewer = await self.viewer(who)
        viewer.personalization = on
        viewer.revision += 1

    async def erase(self, who: Identity) -> bool:
        """Erase the profile from PostgreSQL and from every node's memory."""
        # Before the delete, so no node writes its copy back; after it, so none keeps a copy
        # read in between.
        await self._announce_forget(who.sub)
        self.queued.pop(who.sub, None)
        viewer = self.viewers.get(who.sub)
        if viewer is not None:
            viewer.profile = None
            viewer.dirty = False
            viewer.revision += 1
        erased = await store.erase_profile(self.pool, who.sub)
        await self._announce_forget(who.sub)
        return erased

    async def export(self, who: Identity) -> dict[str, Any]:
        await self.save([who.sub])
        now = self._clock()
        user = await store.user(self.pool, who.sub)
        profile_row = await store.stored_profile(self.pool, who.sub)
        profile = None
        if profile_row is not None:
            p = InterestProfile.from_dict(profile_row["profile"])
            profile = {"stored": profile_row["profile"], "decayed_now": p.describe(now)}
        orders = [msgspec.to_builtins(o) for o in await self._orders_of(who)]
        chat = await store.chat_of(self.pool, who.sub)
        return {
            "user": None
            if user is None
            else {
                **dict(user),
                "first_seen": user["first_seen"].isoformat(),
                "last_seen": user["last_seen"].isoformat(),
            },
            "profile": profile,
            "orders": orders,
            "chat": [{**dict(r), "at": r["at"].isoformat()} for r in chat],
        }
