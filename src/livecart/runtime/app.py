"""Builds the Starlette app from settings: wiring only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from .. import web
from ..catalog import api as catalog_api
from ..catalog.models import (
    PinRequest,
    Product,
    ProductCreate,
    ProductPatch,
    Session,
    SessionCreate,
    ShowcaseAdd,
    TimelinePage,
)
from ..chat import api as moderation_api
from ..chat.model import AllowedDomains, ModerationRequest, ModeratorRequest, TermRequest
from ..commerce import (
    AuctionCreate,
    GiveawayCreate,
    OfferCreate,
    OrderCreate,
    SecondChanceAccept,
)
from ..commerce import api as commerce_api
from ..commerce.draw import Giveaway
from ..commerce.rules import Auction, Offer, Order, SecondChanceView
from ..commerce.store import Bundle
from ..commerce.store import Place as WaitlistPlace
from ..limits import (
    AUDIT_PAGE_MAX,
    MAX_OFFSET,
    SESSIONS_PAGE_MAX,
    TIMELINE_PAGE_MAX,
    TRENDING_PAGE_MAX,
)
from ..ranking import SettingsPatch
from ..ranking import api as ranking_api
from ..realtime.endpoint import Gateway
from .config import Settings
from .node import Node
from .rest.common import Handler, json
from .rest.guard import Guard, http_error, unexpected
from .rest.system import ApiRoute, healthz, limit, metrics, openapi, readyz

API: list[ApiRoute] = [
    ApiRoute(
        "POST",
        "/api/products",
        catalog_api.create_product,
        summary="Create a product",
        request=ProductCreate,
        response=Product,
        status=201,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/products/{id}",
        catalog_api.get_product,
        summary="Get a product",
        response=Product,
    ),
    ApiRoute(
        "PATCH",
        "/api/products/{id}",
        catalog_api.patch_product,
        summary="Change a product",
        request=ProductPatch,
        response=Product,
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions",
        catalog_api.create_session,
        summary="Create a session",
        request=SessionCreate,
        response=Session,
        status=201,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/sessions",
        catalog_api.list_sessions,
        summary="List sessions (?status=live)",
        response=list[Session],
        query={
            "status": {"type": "string", "enum": ["scheduled", "live", "ended"]},
            "limit": limit(SESSIONS_PAGE_MAX),
        },
    ),
    ApiRoute(
        "GET",
        "/api/sessions/{id}",
        catalog_api.get_session,
        summary="Get a session",
        response=Session,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/start",
        catalog_api.start_session,
        summary="Go live",
        response=Session,
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/end",
        catalog_api.end_session,
        summary="End the session",
        response=Session,
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/products",
        catalog_api.add_to_showcase,
        summary="Add a product to the showcase",
        request=ShowcaseAdd,
        response=Session,
        status=201,
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/pin",
        catalog_api.pin,
        summary="Pin a showcased product (null unpins)",
        request=PinRequest,
        response=Session,
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/offers",
        commerce_api.open_offer,
        summary="Open a flash offer (quantity comes from stock)",
        request=OfferCreate,
        response=Offer,
        status=201,
        auth=True,
    ),
    ApiRoute(
        "GET", "/api/offers/{id}", commerce_api.get_offer, summary="Get an offer", response=Offer
    ),
    ApiRoute(
        "GET",
        "/api/offers/{id}/waitlist/me",
        commerce_api.my_waitlist_place,
        summary="My place on the offer's waitlist (position 1 is served next)",
        response=WaitlistPlace,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/me/bundles",
        commerce_api.my_bundles,
        summary="My bundles: my orders per session; closed when the session ends",
        response=list[Bundle],
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/offers/{id}/end",
        commerce_api.end_offer,
        summary="End an offer; unsold units return to stock",
        response=Offer,
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/orders",
        commerce_api.create_order,
        summary="Buy: reserve units of an offer (idempotent per idempotency_key)",
        request=OrderCreate,
        response=Order,
        status=201,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/orders/{id}",
        commerce_api.get_order,
        summary="Get an order",
        response=Order,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/me/orders",
        commerce_api.my_orders,
        summary="My orders, newest first",
        response=list[Order],
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/orders/{id}/confirm",
        commerce_api.confirm_order,
        summary="Payment captured: reserved -> paid (admin)",
        response=Order,
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/orders/{id}/cancel",
        commerce_api.cancel_order,
        summary="Cancel an order; units return",
        response=Order,
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/auctions",
        commerce_api.create_auction,
        summary="Open an auction",
        request=AuctionCreate,
        response=Auction,
        status=201,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/auctions/{id}",
        commerce_api.get_auction,
        summary="Get an auction",
        response=Auction,
    ),
    ApiRoute(
        "POST",
        "/api/auctions/{id}/second-chance",
        commerce_api.accept_second_chance,
        summary="Take the second chance offered to you: a reserved order at your highest bid",
        request=SecondChanceAccept,
        response=Order,
        status=201,
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/giveaways",
        commerce_api.create_giveaway,
        summary="Open a giveaway (units taken from stock; commitment published)",
        request=GiveawayCreate,
        response=Giveaway,
        status=201,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/auctions/{id}/second-chance",
        commerce_api.my_second_chance,
        summary="Your second chance on an auction (offered, accepted or lapsed)",
        response=SecondChanceView,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/giveaways/{id}",
        commerce_api.get_giveaway,
        summary="Get a giveaway; after the draw with seed, entrants and winners",
        response=Giveaway,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/moderation",
        moderation_api.act,
        summary="Moderate: delete|timeout|ban|unban|slow|claim|approve|reject|shield_on|shield_off",
        request=ModerationRequest,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/sessions/{id}/moderation/queue",
        moderation_api.queue,
        summary="Held messages and reported messages",
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/creators/{id}/audit",
        moderation_api.audit,
        summary="The creator's moderation audit log",
        auth=True,
        query={"limit": limit(AUDIT_PAGE_MAX)},
    ),
    ApiRoute(
        "POST",
        "/api/creators/{id}/moderators",
        moderation_api.add_moderator,
        summary="Appoint a channel moderator",
        request=ModeratorRequest,
        status=201,
        auth=True,
    ),
    ApiRoute(
        "DELETE",
        "/api/creators/{id}/moderators",
        moderation_api.remove_moderator,
        summary="Dismiss a channel moderator",
        request=ModeratorRequest,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/creators/{id}/blocked-terms",
        moderation_api.list_terms,
        summary="Blocked terms (id 'global' for the platform list)",
        auth=True,
    ),
    ApiRoute(
        "POST",
        "/api/creators/{id}/blocked-terms",
        moderation_api.add_term,
        summary="Add a blocked term",
        request=TermRequest,
        status=201,
        auth=True,
    ),
    ApiRoute(
        "DELETE",
        "/api/creators/{id}/blocked-terms",
        moderation_api.remove_term,
        summary="Remove a blocked term",
        request=TermRequest,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/feed",
        ranking_api.feed,
        summary="Personal feed (trending only for guests and opted-out viewers)",
    ),
    ApiRoute(
        "GET",
        "/api/trending",
        ranking_api.trending,
        summary="Trending products and hosts (?kind=&category=&limit=)",
        query={
            "kind": {"type": "string", "enum": ["products", "hosts", "both"]},
            "category": {"type": "string"},
            "limit": limit(TRENDING_PAGE_MAX),
        },
    ),
    ApiRoute(
        "GET",
        "/api/creators/{id}/score",
        ranking_api.creator_score,
        summary="The creator's score with every component, weight and input",
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/me/export",
        ranking_api.export,
        summary="Everything stored about me: profile, orders, chat",
        auth=True,
    ),
    ApiRoute(
        "DELETE",
        "/api/me/profile",
        ranking_api.erase_profile,
        summary="Erase my interest profile",
        auth=True,
    ),
    ApiRoute(
        "PATCH",
        "/api/me/settings",
        ranking_api.patch_settings,
        summary="Personalization on or off",
        request=SettingsPatch,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/sessions/{id}/stats",
        catalog_api.stats,
        summary="Session figures: viewers, likes, chat, orders, revenue",
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/creators/{id}/allowed-domains",
        moderation_api.get_allowed,
        summary="Link domains allowed in the creator's chat",
        auth=True,
    ),
    ApiRoute(
        "PUT",
        "/api/creators/{id}/allowed-domains",
        moderation_api.put_allowed,
        summary="Replace the link allow-list (other links are held)",
        request=AllowedDomains,
        auth=True,
    ),
    ApiRoute(
        "GET",
        "/api/sessions/{id}/timeline",
        catalog_api.timeline,
        summary="Replay the session's log (?since=&limit=)",
        response=TimelinePage,
        query={
            "since": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
            "limit": limit(TIMELINE_PAGE_MAX),
        },
    ),
]


def create_app(settings: Settings, database_url: str, jwt_secret: str) -> App:
    node = Node(settings, database_url, jwt_secret)
    gateway = Gateway(node)
    spec = openapi(API)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await node.start()
        gateway.start()
        try:
            yield
        finally:
            await gateway.stop()
            await node.stop()

    async def openapi_json(request: Request) -> Response:
        return json(spec)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi_json),
        *api_routes(API),
        *web.routes(),
    ]
    app = App(
        gateway,
        settings,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: unexpected},
    )
    app.state.node = node
    return app


def api_routes(api: list[ApiRoute]) -> list[Route]:
    """One route per path with every method it has, so a 405 names them all in `Allow`."""
    by_path: dict[str, dict[str, Handler]] = {}
    for r in api:
        by_path.setdefault(r.path, {})[r.method] = r.handler
    return [Route(path, _by_method(table), methods=list(table)) for path, table in by_path.items()]


def _by_method(table: dict[str, Handler]) -> Handler:
    get = table.get("GET")

    async def dispatch(request: Request) -> Response:
        handler = table.get(request.method)
        if handler is None and request.method == "HEAD" and get is not None:
            handler = get
        assert handler is not None  # the route admits only these methods
        return await handler(request)

    return dispatch


class App(Starlette):
    """Starlette for HTTP. `/ws` is normally served by the node's own wire protocol
    (`realtime.wire`, given to uvicorn as its `ws` class by `realtime.handshake`); what reaches
    the app through ASGI (permessage-deflate, another ASGI server) goes straight to the
    gateway, past the router."""

    def __init__(self, gateway: Gateway, settings: Settings, **kw: Any) -> None:
        super().__init__(**kw)
        self.gateway = gateway
        self.guard = Guard(super().__call__, settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            scope["app"] = self
            await self.gateway.handle(WebSocket(scope, receive, send))
            return
        if scope["type"] == "http":
            scope["app"] = self
            await self.guard(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
