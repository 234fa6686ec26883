"""What the ranking integration tests share: a live session with products in the real
database, a service built from its ports, and a subscriber that records what it is sent."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import asyncpg
import msgspec

from livecart.auth import Identity
from livecart.catalog import store as catalog
from livecart.catalog.models import ProductCreate, SessionCreate
from livecart.ranking import RankingService

from ..conftest import Clock as Clock


class World:
    def __init__(self, creator: Identity, session: str, products: list[str], tag: str) -> None:
        self.creator = creator
        self.session = session
        self.products = products
        self.tag = tag

    def viewer(self, name: str, *, minor: bool = False) -> Identity:
        return Identity(sub=f"{name}-{self.tag}", name=name, role="viewer", minor=minor)


async def world(pool: asyncpg.Pool, *, products: int = 2, live: bool = True) -> World:
    tag = secrets.token_hex(4)
    creator = Identity(sub=f"creator-{tag}", name="creator", role="creator")
    session = await catalog.create_session(
        pool, creator.sub, SessionCreate(title="drop", category="shoes", tags=["street"])
    )
    ids = []
    for i in range(products):
        product = await catalog.create_product(
            pool,
            creator.sub,
            ProductCreate(
                title=f"item {i}", price_cents=5000, stock=10, category=f"cat{i}", tags=[f"t{i}"]
            ),
        )
        await catalog.add_to_showcase(pool, session.id, product.id)
        ids.append(product.id)
    if live:
        await pool.execute("UPDATE sessions SET status = 'live' WHERE id = $1", session.id)
    return World(creator, session.id, ids, tag)


class Subscriber:
    """A connection as the push loop sees it: records the messages it is sent."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.closed = False
        self.feed_on = False
        self.sent: list[dict[str, Any]] = []

    def send(self, message: bytes) -> None:
        self.sent.append(msgspec.json.decode(message))

    def write_shared(self, payload: bytes, framed: bytes) -> bool:
        # `payload` is a frame of one or more messages (a JSON array, or one object).
        decoded = msgspec.json.decode(payload)
        self.sent.extend(decoded if isinstance(decoded, list) else [decoded])
        return not self.closed

    def kinds(self) -> list[str]:
        return [m["type"] for m in self.sent]


class Ports:
    """What a node would wire to the service: a room lookup, a viewer's orders, metrics."""

    def __init__(self) -> None:
        self.rooms: dict[str, Any] = {}
        self.orders: list[Any] = []
        self.events: dict[str, float] = {}
        self.pushes: list[float] = []

    async def orders_of(self, who: Identity) -> list[Any]:
        return list(self.orders)

    def counter(self, kind: str) -> _Counter:
        return _Counter(self.events, kind)


class _Counter:
    def __init__(self, totals: dict[str, float], kind: str) -> None:
        self._totals = totals
        self._kind = kind

    def inc(self, amount: float = 1) -> None:
        self._totals[self._kind] = self._totals.get(self._kind, 0) + amount


def service(
    pool: asyncpg.Pool,
    *,
    clock: Clock | None = None,
    redis_url: str | None = None,
    redis_prefix: str = "lc:{rank}",
) -> tuple[RankingService, Ports]:
    ports = Ports()
    svc = RankingService(
        pool,
        redis_url=redis_url,
        room_of=ports.rooms.get,
        orders_of=ports.orders_of,
        event_counter=ports.counter,
        observe_push=ports.pushes.append,
        clock=clock or time.time,
        redis_prefix=redis_prefix,
    )
    return svc, ports


async def settled(svc: RankingService) -> None:
    """Wait for the service's background reads (profiles, products, sessions) to finish."""
    for _ in range(500):
        if not svc._background:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("background reads did not finish")
