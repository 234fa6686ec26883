"""Products, sessions, showcase, pin and the replay timeline."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..auth import Action
from ..limits import MAX_OFFSET, SESSIONS_PAGE_MAX, TIMELINE_PAGE_MAX
from ..models import PinRequest, ProductCreate, ProductPatch, Session, SessionCreate, ShowcaseAdd
from ..protocol import Failure, Pinned, StatusEvent
from ..store import catalog, rooms
from .common import body, endpoint, json, node_of, query_int, require, signed_in


async def _session(request: Request) -> Session:
    session = await catalog.get_session(node_of(request).pool, request.path_params["id"])
    if session is None:
        raise Failure("not_found", "no such session")
    return session


@endpoint
async def create_product(request: Request) -> Response:
    who = signed_in(request)
    require(who, Action.MANAGE, owner=who.sub)
    data = await body(request, ProductCreate)
    return json(await catalog.create_product(node_of(request).pool, who.sub, data), 201)


@endpoint
async def get_product(request: Request) -> Response:
    product = await catalog.get_product(node_of(request).pool, request.path_params["id"])
    if product is None:
        raise Failure("not_found", "no such product")
    return json(product)


@endpoint
async def patch_product(request: Request) -> Response:
    who = signed_in(request)
    pool = node_of(request).pool
    product = await catalog.get_product(pool, request.path_params["id"])
    if product is None:
        raise Failure("not_found", "no such product")
    require(who, Action.MANAGE, owner=product.creator)
    data = await body(request, ProductPatch)
    return json(await catalog.patch_product(pool, product.id, data))


@endpoint
async def create_session(request: Request) -> Response:
    who = signed_in(request)
    require(who, Action.MANAGE, owner=who.sub)
    data = await body(request, SessionCreate)
    if data.scheduled_at is not None and not 1970 <= data.scheduled_at.year <= 9998:
        raise Failure("bad_frame", "scheduled_at must be between 1970 and 9998")
    return json(await catalog.create_session(node_of(request).pool, who.sub, data), 201)


@endpoint
async def list_sessions(request: Request) -> Response:
    status = request.query_params.get("status")
    if status is not None and status not in ("scheduled", "live", "ended"):
        raise Failure("bad_frame", "status must be scheduled, live or ended")
    limit = query_int(request, "limit", 100, 1, SESSIONS_PAGE_MAX)
    return json(await catalog.list_sessions(node_of(request).pool, status, limit))


@endpoint
async def get_session(request: Request) -> Response:
    return json(await _session(request))


async def _transition(request: Request, to: str) -> Response:
    node = node_of(request)
    who = signed_in(request)
    session = await _session(request)
    require(who, Action.MANAGE, owner=session.creator)
    sources = ("scheduled",) if to == "live" else ("scheduled", "live")
    if session.status == to:
        return json(session)
    if session.status not in sources:
        raise Failure("not_live", f"a session that is {session.status} cannot become {to}")
    if not any([await catalog.set_status(node.pool, session.id, s, to) for s in sources]):
        raise Failure("not_live", "the session changed state meanwhile; read it again")
    await node.append(StatusEvent(session.id, to))
    await node.ranking.session_changed(session.id)
    return json(await _session(request))


@endpoint
async def start_session(request: Request) -> Response:
    return await _transition(request, "live")


@endpoint
async def end_session(request: Request) -> Response:
    return await _transition(request, "ended")


@endpoint
async def add_to_showcase(request: Request) -> Response:
    node = node_of(request)
    who = signed_in(request)
    session = await _session(request)
    require(who, Action.MANAGE, owner=session.creator)
    data = await body(request, ShowcaseAdd)
    product = await catalog.get_product(node.pool, data.product_id)
    if product is None or product.creator != session.creator:
        raise Failure("not_found", "no such product of this creator")
    await catalog.add_to_showcase(node.pool, session.id, product.id)
    await node.ranking.session_changed(session.id)
    return json(await _session(request), 201)


@endpoint
async def pin(request: Request) -> Response:
    node = node_of(request)
    who = signed_in(request)
    session = await _session(request)
    require(who, Action.MANAGE, owner=session.creator)
    data = await body(request, PinRequest)
    product = None
    if data.product_id is not None:
        if not await catalog.in_showcase(node.pool, session.id, data.product_id):
            raise Failure("not_found", "pin a product from the session's showcase")
        product = await catalog.get_product(node.pool, data.product_id)
    await catalog.set_pinned(node.pool, session.id, data.product_id)
    await node.append(Pinned(session.id, None if product is None else msgspec.to_builtins(product)))
    return json(await _session(request))


@endpoint
async def timeline(request: Request) -> Response:
    node = node_of(request)
    session = await _session(request)
    since = query_int(request, "since", 0, 0, MAX_OFFSET)
    limit = query_int(request, "limit", 100, 1, TIMELINE_PAGE_MAX)
    events = await rooms.timeline(node.pool, session.id, since, limit)
    next_since = events[-1]["offset"] if events else since
    return json({"session": session.id, "events": events, "next_since": next_since})


@endpoint
async def stats(request: Request) -> Response:
    """Live and cumulative figures of a session for its creator (and admins)."""
    node = node_of(request)
    who = signed_in(request)
    session = await _session(request)
    require(who, Action.MANAGE, owner=session.creator)
    row = await node.pool.fetchrow(
        """
        SELECT
          (SELECT count(*) FROM room_events WHERE session = $1 AND type = 'chat') AS chat_messages,
          (SELECT count(DISTINCT author) FROM room_events WHERE session = $1 AND type = 'chat')
            AS chatters,
          (SELECT count(*) FROM room_events WHERE session = $1 AND type = 'chat'
             AND state = 'removed') AS removed_messages,
          (SELECT like_total FROM sessions WHERE id = $1) AS likes_saved,
          count(o.id) FILTER (WHERE o.status IN ('reserved', 'paid')) AS orders,
          coalesce(sum(o.qty) FILTER (WHERE o.status IN ('reserved', 'paid')), 0) AS units,
          coalesce(sum(o.total_cents) FILTER (WHERE o.status IN ('reserved', 'paid')), 0)
            AS revenue_cents,
          coalesce(sum(o.total_cents) FILTER (WHERE o.status = 'paid'), 0) AS paid_cents,
          count(DISTINCT o.user_id) FILTER (WHERE o.status IN ('reserved', 'paid')) AS buyers
        FROM offers f LEFT JOIN orders o ON o.offer = f.id WHERE f.session = $1
        """,
        session.id,
    )
    room = node.hub.rooms.get(session.id)
    out = {k: int(v or 0) for k, v in dict(row).items()}
    likes = out.pop("likes_saved")
    return json(
        {
            "session": session.id,
            "status": session.status,
            "viewers": node.hub.viewer_count(room) if room else 0,
            "likes": room.likes if room else likes,
            **out,
        }
    )
