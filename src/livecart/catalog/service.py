"""The catalog service: products, sessions, the showcase and the pin, applied to stored state.

REST routes and WebSocket frames call these methods, so both share one permission check and
one set of rules (`catalog.rules`). The service knows the node only through narrow ports:
the database handle, `append` (publish and archive a room event), `changed` (the ranking
index follows a session), `read_log` (the room log) and `live_figures` (a room's viewers and
likes on this node). A session's start and end times are the database's `now()`: one clock
for every node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from ..auth import Identity
from ..protocol import Failure, Pinned, RoomEvent, StatusEvent
from ..runtime.db import Executor
from . import rules as rules
from . import store as store
from .models import (
    Product,
    ProductCreate,
    ProductPatch,
    Session,
    SessionCreate,
    SessionStats,
    SessionStatus,
    TimelinePage,
)

Append = Callable[[RoomEvent], Awaitable[int]]
Changed = Callable[[str], Awaitable[None]]
ReadLog = Callable[[str, int, int], Awaitable[list[dict[str, Any]]]]
LiveFigures = Callable[[str], tuple[int, int] | None]
RoomState = tuple[dict[str, Any], dict[str, Any] | None]
T = TypeVar("T")


class CatalogService:
    def __init__(
        self,
        pool: Executor,
        *,
        append: Append,
        changed: Changed,
        read_log: ReadLog,
        live_figures: LiveFigures,
    ) -> None:
        self._pool = pool
        self._append = append
        self._changed = changed
        self._read_log = read_log
        self._live_figures = live_figures

    # ------------------------------------------------------------ products

    def may_create(self, who: Identity) -> None:
        """`forbidden` unless `who` may create products and sessions (a creator or an admin)."""
        rules.require_manager(who, who.sub)

    async def create_product(self, who: Identity, data: ProductCreate) -> Product:
        rules.require_manager(who, who.sub)
        return await store.create_product(self._pool, who.sub, data)

    async def product(self, product_id: str) -> Product:
        return _found(await store.get_product(self._pool, product_id), "no such product")

    async def managed_product(self, who: Identity, product_id: str) -> Product:
        """The product, if `who` may change it: not_found, then forbidden."""
        product = await self.product(product_id)
        rules.require_manager(who, product.creator)
        return product

    async def patch_product(self, who: Identity, product: Product, data: ProductPatch) -> Product:
        rules.require_manager(who, product.creator)
        return _found(await store.patch_product(self._pool, product.id, data), "no such product")

    # ------------------------------------------------------------ sessions

    async def create_session(self, who: Identity, data: SessionCreate) -> Session:
        rules.require_manager(who, who.sub)
        rules.check_schedule(data.scheduled_at)
        return await store.create_session(self._pool, who.sub, data)

    async def sessions(self, status: SessionStatus | None, limit: int) -> list[Session]:
        return await store.list_sessions(self._pool, status, limit)

    async def session(self, session_id: str) -> Session:
        return _found(await store.get_session(self._pool, session_id), "no such session")

    async def managed_session(self, who: Identity, session_id: str) -> Session:
        """The session, if `who` may manage it: not_found, then forbidden."""
        session = await self.session(session_id)
        rules.require_manager(who, session.creator)
        return session

    async def start(self, who: Identity, session_id: str) -> Session:
        """Go live; a live session is returned as it is."""
        return await self._transition(who, session_id, "live")

    async def end(self, who: Identity, session_id: str) -> Session:
        """End a scheduled or live session; an ended one is returned as it is."""
        return await self._transition(who, session_id, "ended")

    async def _transition(self, who: Identity, session_id: str, to: SessionStatus) -> Session:
        session = await self.managed_session(who, session_id)
        sources = rules.transition(session.status, to)
        if sources is None:
            return session
        if not await store.set_status(self._pool, session.id, sources, to):
            raise Failure("not_live", "the session changed state meanwhile; read it again")
        await self._append(StatusEvent(session.id, to))
        await self._changed(session.id)
        return await self.session(session.id)

    # ------------------------------------------------------------ showcase and pin

    async def add_to_showcase(self, who: Identity, session: Session, product_id: str) -> Session:
        rules.require_manager(who, session.creator)
        product = rules.check_showcase(session, await store.get_product(self._pool, product_id))
        await store.add_to_showcase(self._pool, session.id, product.id)
        await self._changed(session.id)
        return await self.session(session.id)

    async def pin(self, who: Identity, session: Session, product_id: str | None) -> Session:
        """Pin a product of the showcase (None unpins) and tell the room."""
        rules.require_manager(who, session.creator)
        rules.check_pin(session, product_id)
        product = None if product_id is None else await store.get_product(self._pool, product_id)
        await store.set_pinned(self._pool, session.id, product_id)
        await self._append(Pinned(session.id, None if product is None else _plain(product)))
        return await self.session(session.id)

    # ------------------------------------------------------------ reading

    async def timeline(self, session: Session, since: int, limit: int) -> TimelinePage:
        events = await self._read_log(session.id, since, limit)
        next_since = events[-1]["offset"] if events else since
        return TimelinePage(session=session.id, events=events, next_since=next_since)

    async def stats(self, who: Identity, session_id: str) -> SessionStats:
        """Live and cumulative figures of a session for its creator (and admins)."""
        session = await self.managed_session(who, session_id)
        figures = await store.session_figures(self._pool, session.id)
        saved_likes = figures.pop("likes_saved")
        live = self._live_figures(session.id)
        viewers, likes = (0, saved_likes) if live is None else live
        return SessionStats(
            session=session.id, status=session.status, viewers=viewers, likes=likes, **figures
        )

    async def room_state(self, session_id: str) -> RoomState | None:
        """What a room is loaded from: its session row and the pinned product (plain)."""
        row = await store.room_row(self._pool, session_id)
        if row is None:
            return None
        pinned = None
        if row["pinned_product"]:
            product = await store.get_product(self._pool, row["pinned_product"])
            pinned = None if product is None else _plain(product)
        return row, pinned

    async def add_likes(self, counts: dict[str, int]) -> None:
        """Add likes counted in rooms to the sessions' saved totals."""
        await store.add_likes(self._pool, counts)


def _found(value: T | None, message: str) -> T:
    if value is None:
        raise Failure("not_found", message)
    return value


def _plain(product: Product) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(product)
    return out
