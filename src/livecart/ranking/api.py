"""Discovery and privacy over REST: feed, trending, creator scores, export, erasure, settings."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..auth import Action
from ..limits import TRENDING_PAGE_MAX
from ..protocol import Failure
from ..runtime.rest.common import (
    body,
    endpoint,
    identity,
    json,
    node_of,
    query_int,
    require,
    signed_in,
)
from . import SettingsPatch


@endpoint
async def feed(request: Request) -> Response:
    node = node_of(request)
    items = await node.ranking.feed(identity(request))
    node.ranking.shown(items)
    return json({"items": items})


@endpoint
async def trending(request: Request) -> Response:
    kind = request.query_params.get("kind", "both")
    if kind not in ("products", "hosts", "both"):
        raise Failure("bad_frame", "kind must be products or hosts")
    category = request.query_params.get("category") or None
    limit = query_int(request, "limit", 10, 1, TRENDING_PAGE_MAX)
    return json(node_of(request).ranking.trending(kind, category, limit))


@endpoint
async def creator_score(request: Request) -> Response:
    who = signed_in(request)
    creator = request.path_params["id"]
    require(who, Action.APPOINT, owner=creator)
    return json(await node_of(request).ranking.creator_score(creator))


@endpoint
async def export(request: Request) -> Response:
    who = signed_in(request)
    return json(await node_of(request).ranking.export(who))


@endpoint
async def erase_profile(request: Request) -> Response:
    who = signed_in(request)
    erased = await node_of(request).ranking.erase_profile(who)
    return json({"erased": erased})


@endpoint
async def patch_settings(request: Request) -> Response:
    who = signed_in(request)
    data = await body(request, SettingsPatch)
    await node_of(request).ranking.set_personalization(who, data.personalization)
    return json({"personalization": data.personalization})
