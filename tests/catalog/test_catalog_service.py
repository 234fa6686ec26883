"""The catalog service against real PostgreSQL, its ports recorded: what each call stores,
what it publishes to the room and tells the ranking, and that a refusal changes nothing."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest

from livecart.auth import Identity
from livecart.catalog.models import ProductCreate, ProductPatch, Session, SessionCreate
from livecart.catalog.service import CatalogService
from livecart.protocol import Failure, RoomEvent, kind_of


class Ports:
    """Stands in for the node: records events, ranking nudges and log reads."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.changed: list[str] = []
        self.reads: list[tuple[str, int, int]] = []
        self.log: list[dict[str, Any]] = []
        self.figures: dict[str, tuple[int, int]] = {}

    async def append(self, event: RoomEvent) -> int:
        body = msgspec.to_builtins(event)
        del body["type"], body["session"]
        self.events.append((event.session, kind_of(event), body))
        return len(self.events)

    async def on_changed(self, session: str) -> None:
        self.changed.append(session)

    async def read_log(self, session: str, since: int, limit: int) -> list[dict[str, Any]]:
        self.reads.append((session, since, limit))
        return [e for e in self.log if e["offset"] > since][:limit]

    def live_figures(self, session: str) -> tuple[int, int] | None:
        return self.figures.get(session)


def person(role: str, sub: str | None = None) -> Identity:
    sub = sub or f"{role}-{secrets.token_hex(4)}"
    return Identity(sub=sub, name=sub, role=role, minor=False)


@pytest.fixture
def ports() -> Ports:
    return Ports()


@pytest.fixture
def catalog(pool: asyncpg.Pool, ports: Ports) -> CatalogService:
    return CatalogService(
        pool,
        append=ports.append,
        changed=ports.on_changed,
        read_log=ports.read_log,
        live_figures=ports.live_figures,
    )


async def refused(code: str, call: Any) -> Failure:
    with pytest.raises(Failure) as caught:
        await call
    assert caught.value.code == code
    return caught.value


async def test_rows_become_the_api_objects(catalog: CatalogService, pool: asyncpg.Pool) -> None:
    cara = person("creator")
    product = await catalog.create_product(
        cara, ProductCreate(title="mug", price_cents=1200, tags=["kitchen", "gift"])
    )
    assert product.creator == cara.sub and product.tags == ["kitchen", "gift"]
    assert product.currency == "USD" and product.stock == 0
    assert await catalog.product(product.id) == product
    when = datetime(2030, 5, 1, 18, 0, 0, 250000, tzinfo=UTC)
    session = await catalog.create_session(
        cara, SessionCreate(title="show", tags=["x"], scheduled_at=when)
    )
    assert session.status == "scheduled" and session.tags == ["x"]
    assert session.showcase == [], "no showcase is an empty list, not null"
    assert session.scheduled_at == "2030-05-01T18:00:00.250000+00:00", "the text it always was"
    assert session.started_at is None and session.ended_at is None
    assert await catalog.session(session.id) == session
    assert await catalog.sessions(None, 1) == [session], "the newest first"
    assert session not in await catalog.sessions("ended", 500)
    await refused("not_found", catalog.product("prd_nope"))
    await refused("not_found", catalog.session("ses_nope"))


async def test_the_session_state_machine(catalog: CatalogService, ports: Ports) -> None:
    cara = person("creator")
    s = await catalog.create_session(cara, SessionCreate(title="show"))
    live = await catalog.start(cara, s.id)
    assert live.status == "live" and live.started_at is not None and live.ended_at is None
    assert ports.events == [(s.id, "status", {"status": "live"})]
    assert ports.changed == [s.id]

    again = await catalog.start(cara, s.id)
    assert again == live, "starting a live session returns it as it is"
    assert len(ports.events) == 1 and len(ports.changed) == 1, "and announces nothing"

    ended = await catalog.end(cara, s.id)
    assert ended.status == "ended" and ended.ended_at is not None
    assert ended.started_at == live.started_at
    assert ports.events[-1] == (s.id, "status", {"status": "ended"})

    failure = await refused("not_live", catalog.start(cara, s.id))
    assert failure.message == "a session that is ended cannot become live"
    assert (await catalog.end(cara, s.id)) == ended
    assert len(ports.events) == 2 and len(ports.changed) == 2
    assert (await catalog.session(s.id)).status == "ended"


async def test_a_scheduled_session_can_be_called_off(catalog: CatalogService, ports: Ports) -> None:
    cara = person("creator")
    s = await catalog.create_session(cara, SessionCreate(title="show"))
    ended = await catalog.end(cara, s.id)
    assert ended.status == "ended" and ended.started_at is None and ended.ended_at is not None
    assert ports.events == [(s.id, "status", {"status": "ended"})]


async def test_concurrent_starts_announce_once(catalog: CatalogService, ports: Ports) -> None:
    cara = person("creator")
    s = await catalog.create_session(cara, SessionCreate(title="show"))
    outcomes = await asyncio.gather(
        *(catalog.start(cara, s.id) for _ in range(8)), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, Failure):
            assert outcome.code == "not_live"
            assert outcome.message == "the session changed state meanwhile; read it again"
        else:
            assert isinstance(outcome, Session) and outcome.status == "live"
    assert any(isinstance(o, Session) for o in outcomes)
    assert ports.events == [(s.id, "status", {"status": "live"})], "one move, one event"
    assert ports.changed == [s.id]


async def test_only_the_owner_and_admins_manage(
    catalog: CatalogService, ports: Ports, pool: asyncpg.Pool
) -> None:
    cara, otto, root = person("creator"), person("creator"), person("admin")
    viewer = person("viewer")
    product = await catalog.create_product(cara, ProductCreate(title="mug", price_cents=1))
    s = await catalog.create_session(cara, SessionCreate(title="show"))
    for who in (otto, viewer):
        await refused("forbidden", catalog.start(who, s.id))
        await refused("forbidden", catalog.end(who, s.id))
        await refused("forbidden", catalog.managed_session(who, s.id))
        await refused("forbidden", catalog.managed_product(who, product.id))
        await refused("forbidden", catalog.add_to_showcase(who, s, product.id))
        await refused("forbidden", catalog.pin(who, s, None))
        await refused("forbidden", catalog.stats(who, s.id))
        await refused("forbidden", catalog.patch_product(who, product, ProductPatch(stock=9)))
    for create in (
        lambda: catalog.create_product(viewer, ProductCreate(title="x", price_cents=1)),
        lambda: catalog.create_session(viewer, SessionCreate(title="x")),
    ):
        await refused("forbidden", create())
    with pytest.raises(Failure, match="viewer may not manage here"):
        catalog.may_create(viewer)
    catalog.may_create(cara)
    assert await catalog.session(s.id) == s and await catalog.product(product.id) == product
    assert ports.events == [] and ports.changed == [], "a refusal changes nothing"
    # not_found comes before forbidden, as the routes answer it
    await refused("not_found", catalog.managed_session(otto, "ses_nope"))
    # an admin manages anyone's
    assert (await catalog.start(root, s.id)).status == "live"
    patched = await catalog.patch_product(root, product, ProductPatch(stock=9))
    assert patched.stock == 9 and patched.creator == cara.sub


async def test_showcase_and_pin(catalog: CatalogService, ports: Ports) -> None:
    cara, otto = person("creator"), person("creator")
    mug = await catalog.create_product(cara, ProductCreate(title="mug", price_cents=1200))
    cup = await catalog.create_product(cara, ProductCreate(title="cup", price_cents=800))
    foreign = await catalog.create_product(otto, ProductCreate(title="hat", price_cents=5))
    s = await catalog.create_session(cara, SessionCreate(title="show"))

    await refused("not_found", catalog.add_to_showcase(cara, s, foreign.id))
    await refused("not_found", catalog.add_to_showcase(cara, s, "prd_nope"))
    assert ports.changed == []
    s = await catalog.add_to_showcase(cara, s, mug.id)
    s = await catalog.add_to_showcase(cara, s, cup.id)
    s = await catalog.add_to_showcase(cara, s, mug.id)  # twice: kept once, in place
    assert s.showcase == [mug.id, cup.id]
    assert ports.changed == [s.id] * 3 and ports.events == []

    failure = await refused("not_found", catalog.pin(cara, s, foreign.id))
    assert failure.message == "pin a product from the session's showcase"
    assert ports.events == [] and (await catalog.session(s.id)).pinned_product is None

    pinned = await catalog.pin(cara, s, cup.id)
    assert pinned.pinned_product == cup.id
    assert ports.events == [
        (
            s.id,
            "pinned",
            {
                "product": {
                    "id": cup.id,
                    "creator": cara.sub,
                    "title": "cup",
                    "price_cents": 800,
                    "currency": "USD",
                    "stock": 0,
                    "category": "",
                    "tags": [],
                }
            },
        )
    ]
    state = await catalog.room_state(s.id)
    assert state is not None
    row, room_pin = state
    assert row["id"] == s.id and row["status"] == "scheduled" and row["creator"] == cara.sub
    assert room_pin == ports.events[-1][2]["product"], "a room loads the pin as it was sent"

    unpinned = await catalog.pin(cara, pinned, None)
    assert unpinned.pinned_product is None
    assert ports.events[-1] == (s.id, "pinned", {"product": None})
    assert await catalog.room_state(s.id) == (row | {"pinned_product": None}, None)
    assert await catalog.room_state("ses_nope") is None


async def test_stats_and_timeline(catalog: CatalogService, ports: Ports) -> None:
    cara = person("creator")
    s = await catalog.create_session(cara, SessionCreate(title="show"))
    await catalog.add_likes({s.id: 7})
    await catalog.add_likes({s.id: 5, "ses_nope": 3})
    stats = await catalog.stats(cara, s.id)
    assert (stats.session, stats.status, stats.viewers, stats.likes) == (s.id, "scheduled", 0, 12)
    assert (stats.chat_messages, stats.orders, stats.revenue_cents, stats.buyers) == (0, 0, 0, 0)
    ports.figures[s.id] = (40, 15)  # the room is loaded on this node: its live figures win
    stats = await catalog.stats(cara, s.id)
    assert (stats.viewers, stats.likes) == (40, 15)

    page = await catalog.timeline(s, 0, 100)
    assert (page.session, page.events, page.next_since) == (s.id, [], 0)
    page = await catalog.timeline(s, 9, 100)
    assert page.next_since == 9, "an empty page keeps the caller's position"
    ports.log = [{"offset": n, "type": "chat"} for n in (1, 2, 3)]
    page = await catalog.timeline(s, 1, 1)
    assert page.events == [{"offset": 2, "type": "chat"}] and page.next_since == 2
    assert ports.reads == [(s.id, 0, 100), (s.id, 9, 100), (s.id, 1, 1)]
