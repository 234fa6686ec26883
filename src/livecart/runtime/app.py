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
from ..commerce import AuctionCreate, OfferCreate, OrderCreate
from ..commerce import api as commerce_api
from ..commerce.rules import Auction, Offer, Order
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
        "Create a product",
        ProductCreate,
        Product,
        201,
        True,
    ),
    ApiRoute("GET", "/api/products/{id}", catalog_api.get_product, "Get a product", None, Product),
    ApiRoute(
        "PATCH",
        "/api/products/{id}",
        catalog_api.patch_product,
        "Change a product",
        ProductPatch,
        Product,
        200,
        True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions",
        catalog_api.create_session,
        "Create a session",
        SessionCreate,
        Session,
        201,
        True,
    ),
    ApiRoute(
        "GET",
        "/api/sessions",
        catalog_api.list_sessions,
        "List sessions (?status=live)",
        None,
        list[Session],
        query={
            "status": {"type": "string", "enum": ["scheduled", "live", "ended"]},
            "limit": limit(SESSIONS_PAGE_MAX),
        },
    ),
    ApiRoute("GET", "/api/sessions/{id}", catalog_api.get_session, "Get a session", None, Session),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/start",
        catalog_api.start_session,
        "Go live",
        None,
        Session,
        200,
        True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/end",
        catalog_api.end_session,
        "End the session",
        None,
        Session,
        200,
        True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/products",
        catalog_api.add_to_showcase,
        "Add a product to the showcase",
        ShowcaseAdd,
        Session,
        201,
        True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/pin",
        catalog_api.pin,
        "Pin a showcased product (null unpins)",
        PinRequest,
        Session,
        200,
        True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/offers",
        commerce_api.open_offer,
        "Open a flash offer (quantity comes from stock)",
        OfferCreate,
        Offer,
        201,
        True,
    ),
    ApiRoute("GET", "/api/offers/{id}", commerce_api.get_offer, "Get an offer", None, Offer),
    ApiRoute(
        "POST",
        "/api/offers/{id}/end",
        commerce_api.end_offer,
        "End an offer; unsold units return to stock",
        None,
        Offer,
        200,
        True,
    ),
    ApiRoute(
        "POST",
        "/api/orders",
        commerce_api.create_order,
        "Buy: reserve units of an offer (idempotent per idempotency_key)",
        OrderCreate,
        Order,
        201,
        True,
    ),
    ApiRoute(
        "GET", "/api/orders/{id}", commerce_api.get_order, "Get an order", None, Order, 200, True
    ),
    ApiRoute(
        "GET",
        "/api/me/orders",
        commerce_api.my_orders,
        "My orders, newest first",
        None,
        list[Order],
        200,
        True,
    ),
    ApiRoute(
        "POST",
        "/api/orders/{id}/confirm",
        commerce_api.confirm_order,
        "Payment captured: reserved -> paid (admin)",
        None,
        Order,
        200,
        True,
    ),
    ApiRoute(
        "POST",
        "/api/orders/{id}/cancel",
        commerce_api.cancel_order,
        "Cancel an order; units return",
        None,
        Order,
        200,
        True,
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/auctions",
        commerce_api.create_auction,
        "Open an auction",
        AuctionCreate,
        Auction,
        201,
        True,
    ),
    ApiRoute(
        "GET", "/api/auctions/{id}", commerce_api.get_auction, "Get an auction", None, Auction
    ),
    ApiRoute(
        "POST",
        "/api/sessions/{id}/moderation",
        moderation_api.act,
        "Moderate: delete|timeout|ban|unban|slow|claim|approve|reject|shield_on|shield_off",
        ModerationRequest,
        None,
        200,
        True,
    ),
    ApiRoute(
        "GET",
        "/api/sessions/{id}/moderation/queue",
        moderation_api.queue,
        "Held messages and reported messages",
        None,
        None,
        200,
        True,
    ),
    ApiRoute(
        "GET",
        "/api/creators/{id}/audit",
        moderation_api.audit,
        "The creator's moderation audit log",
        None,
        None,
        200,
        True,
        query={"limit": limit(AUDIT_PAGE_MAX)},
    ),
    ApiRoute(
        "POST",
        "/api/creators/{id}/moderators",
        moderation_api.add_moderator,
        "Appoint a channel moderator",
        ModeratorRequest,
        None,
        201,
        True,
    ),
    ApiRoute(
        "DELETE",
        "/api/creators/{id}/moderators",
        moderation_api.remove_moderator,
        "Dismiss a channel moderator",
        ModeratorRequest,
        None,
        200,
        True,
    ),
    ApiRoute(
        "GET",
        "/api/creators/{id}/blocked-terms",
        moderation_api.list_terms,
        "Blocked terms (id 'global' for the platform list)",
        None,
        None,
        200,
        True,
    ),
    ApiRoute(
        "POST",
        "/api/creators/{id}/blocked-terms",
        moderation_api.add_term,
        "Add a blocked term",
        TermRequest,
        None,
        201,
        True,
    ),
    ApiRoute(
        "DELETE",
        "/api/creators/{id}/blocked-terms",
        moderation_api.remove_term,
        "Remove a blocked term",
        TermRequest,
        None,
        200,
        True,
    ),
    ApiRoute(
        "GET",
        "/api/feed",
        ranking_api.feed,
        "Personal feed (trending only for guests and opted-out viewers)",
    ),
    ApiRoute(
        "GET",
        "/api/trending",
        ranking_api.trending,
        "Trending products and hosts (?kind=&category=&limit=)",
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
        "The creator's score with every component, weight and input",
        None,
        None,
        200,
        True,
    ),
    ApiRoute(
        "GET",
        "/api/me/export",
        ranking_api.export,
        "Everything stored about me: profile, orders, chat",
        None,
        None,
        200,
        True,
    ),
    ApiRoute(
        "DELETE",
        "/api/me/profile",
        ranking_api.erase_profile,
        "Erase my interest profile",
        None,
        None,
        200,
        True,
    ),
    ApiRoute(
        "PATCH",
        "/api/me/settings",
        ranking_api.patch_settings,
        "Personalization on or off",
        SettingsPatch,
        None,
        200,
        True,
    ),
    ApiRoute(
        "GET",
        "/api/sessions/{id}/stats",
        catalog_api.stats,
        "Session figures: viewers, likes, chat, orders, revenue",
        None,
        None,
        200,
        True,
    ),
    ApiRoute(
        "GET",
        "/api/creators/{id}/allowed-domains",
        moderation_api.get_allowed,
        "Link domains allowed in the creator's chat",
        None,
        None,
        200,
        True,
    ),
    ApiRoute(
        "PUT",
        "/api/creators/{id}/allowed-domains",
        moderation_api.put_allowed,
        "Replace the link allow-list (other links are held)",
        AllowedDomains,
        None,
        200,
        True,
    ),
    ApiRoute(
        "GET",
        "/api/sessions/{id}/timeline",
        catalog_api.timeline,
        "Replay the session's log (?since=&limit=)",
        None,
        TimelinePage,
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
