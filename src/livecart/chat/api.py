"""Moderation over REST: actions, the review queue, audit log, moderators, blocked terms."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..auth import Action
from ..limits import AUDIT_PAGE_MAX
from ..runtime.rest.common import body, endpoint, json, node_of, query_int, require, signed_in
from . import store as store
from .model import (
    AllowedDomains,
    ModerationRequest,
    ModeratorRequest,
    TermRequest,
)


@endpoint
async def act(request: Request) -> Response:
    who = signed_in(request)
    req = await body(request, ModerationRequest)
    result = await node_of(request).moderation.act(who, request.path_params["id"], req)
    return json(result)


@endpoint
async def queue(request: Request) -> Response:
    node = node_of(request)
    who = signed_in(request)
    room = await node.room(request.path_params["id"])
    await node.moderation.require_moderator(who, room.creator)
    return json({"session": room.id, "items": await store.queue(node.pool, room.id)})


@endpoint
async def audit(request: Request) -> Response:
    node = node_of(request)
    who = signed_in(request)
    creator = request.path_params["id"]
    require(who, Action.APPOINT, owner=creator)
    limit = query_int(request, "limit", 200, 1, AUDIT_PAGE_MAX)
    return json({"creator": creator, "actions": await store.audit_log(node.pool, creator, limit)})


@endpoint
async def add_moderator(request: Request) -> Response:
    who = signed_in(request)
    req = await body(request, ModeratorRequest)
    creator = request.path_params["id"]
    await node_of(request).moderation.appoint(who, creator, req.user_id, True)
    return json({"creator": creator, "moderator": req.user_id}, 201)


@endpoint
async def remove_moderator(request: Request) -> Response:
    who = signed_in(request)
    req = await body(request, ModeratorRequest)
    creator = request.path_params["id"]
    await node_of(request).moderation.appoint(who, creator, req.user_id, False)
    return json({"creator": creator, "moderator": req.user_id})


@endpoint
async def list_terms(request: Request) -> Response:
    node = node_of(request)
    who = signed_in(request)
    scope = request.path_params["id"]
    await node.moderation.require_terms(who, scope)
    return json({"scope": scope, "terms": node.moderation.terms_of(scope)})


@endpoint
async def add_term(request: Request) -> Response:
    who = signed_in(request)
    req = await body(request, TermRequest)
    scope = request.path_params["id"]
    await node_of(request).moderation.add_term(who, scope, req.term, req.action)
    return json({"scope": scope, "term": req.term, "action": req.action}, 201)


@endpoint
async def remove_term(request: Request) -> Response:
    who = signed_in(request)
    req = await body(request, TermRequest)
    scope = request.path_params["id"]
    await node_of(request).moderation.remove_term(who, scope, req.term)
    return json({"scope": scope, "term": req.term})


@endpoint
async def get_allowed(request: Request) -> Response:
    node = node_of(request)
    who = signed_in(request)
    creator = request.path_params["id"]
    await node.moderation.require_moderator(who, creator)
    return json({"creator": creator, "domains": node.moderation.allowed_of(creator)})


@endpoint
async def put_allowed(request: Request) -> Response:
    who = signed_in(request)
    data = await body(request, AllowedDomains)
    creator = request.path_params["id"]
    domains = await node_of(request).moderation.set_allowed(who, creator, data.domains)
    return json({"creator": creator, "domains": domains})
