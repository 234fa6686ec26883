"""Products, sessions, showcase, pin and the replay timeline over REST: thin calls into the
one CatalogService (decode, identity, call, encode)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..limits import MAX_OFFSET, SESSIONS_PAGE_MAX, TIMELINE_PAGE_MAX
from ..runtime.rest.common import body, endpoint, json, node_of, query_int, signed_in
from .models import PinRequest, ProductCreate, ProductPatch, SessionCreate, ShowcaseAdd
from .rules import status_filter
from .service import CatalogService


def _catalog(request: Request) -> CatalogService:
    return node_of(request).catalog


# Where a route reads a body, who may call it is checked first (forbidden before bad_frame),
# then the service checks again with the body in hand (no I/O, it costs nothing).


@endpoint
async def create_product(request: Request) -> Response:
    who = signed_in(request)
    catalog = _catalog(request)
    catalog.may_create(who)
    data = await body(request, ProductCreate)
    return json(await catalog.create_product(who, data), 201)


@endpoint
async def get_product(request: Request) -> Response:
    return json(await _catalog(request).product(request.path_params["id"]))


@endpoint
async def patch_product(request: Request) -> Response:
    who = signed_in(request)
    catalog = _catalog(request)
    product = await catalog.managed_product(who, request.path_params["id"])
    data = await body(request, ProductPatch)
    return json(await catalog.patch_product(who, product, data))


@endpoint
async def create_session(request: Request) -> Response:
    who = signed_in(request)
    catalog = _catalog(request)
    catalog.may_create(who)
    data = await body(request, SessionCreate)
    return json(await catalog.create_session(who, data), 201)


@endpoint
async def list_sessions(request: Request) -> Response:
    status = status_filter(request.query_params.get("status"))
    limit = query_int(request, "limit", 100, 1, SESSIONS_PAGE_MAX)
    return json(await _catalog(request).sessions(status, limit))


@endpoint
async def get_session(request: Request) -> Response:
    return json(await _catalog(request).session(request.path_params["id"]))


@endpoint
async def start_session(request: Request) -> Response:
    who = signed_in(request)
    return json(await _catalog(request).start(who, request.path_params["id"]))


@endpoint
async def end_session(request: Request) -> Response:
    who = signed_in(request)
    return json(await _catalog(request).end(who, request.path_params["id"]))


@endpoint
async def add_to_showcase(request: Request) -> Response:
    who = signed_in(request)
    catalog = _catalog(request)
    session = await catalog.managed_session(who, request.path_params["id"])
    data = await body(request, ShowcaseAdd)
    return json(await catalog.add_to_showcase(who, session, data.product_id), 201)


@endpoint
async def pin(request: Request) -> Response:
    who = signed_in(request)
    catalog = _catalog(request)
    session = await catalog.managed_session(who, request.path_params["id"])
    data = await body(request, PinRequest)
    return json(await catalog.pin(who, session, data.product_id))


@endpoint
async def timeline(request: Request) -> Response:
    catalog = _catalog(request)
    session = await catalog.session(request.path_params["id"])
    since = query_int(request, "since", 0, 0, MAX_OFFSET)
    limit = query_int(request, "limit", 100, 1, TIMELINE_PAGE_MAX)
    return json(await catalog.timeline(session, since, limit))


@endpoint
async def stats(request: Request) -> Response:
    """Live and cumulative figures of a session for its creator (and admins)."""
    who = signed_in(request)
    return json(await _catalog(request).stats(who, request.path_params["id"]))
