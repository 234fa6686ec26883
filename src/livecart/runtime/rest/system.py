"""Health, readiness and the OpenAPI document generated from the msgspec types."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ...catalog.models import ErrorResponse
from .common import Handler, json, node_of


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One REST operation: where it is and what serves it, then what it takes and answers
    (by keyword)."""

    method: str
    path: str
    handler: Handler
    _: KW_ONLY
    summary: str
    request: type | None = None
    response: Any = None
    status: int = 200
    auth: bool = False
    query: dict[str, dict[str, Any]] | None = None
    """Query parameters by name, each with its JSON schema (all optional)."""


def limit(hi: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": hi}


async def healthz(request: Request) -> Response:
    return json({"status": "ok", "node": node_of(request).id})


async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(node_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def readyz(request: Request) -> Response:
    checks = await node_of(request).ready()
    return json(checks, 200 if checks["ready"] else 503)


_ERRORS = {
    400: "bad_frame: a malformed body, path or query value, or a refused string",
    401: "unauthorized: no token, or an invalid or expired one",
    403: "forbidden: the caller's role may not do this here",
    404: "not_found: no such object",
    409: "the object's state refuses it: not_live, sold_out, limit_reached, offer_closed, "
    "duplicate, bid_too_low or auction_closed",
    413: "too_large: the body is over 64 KiB",
    429: "rate_limited: too many requests from this identity (or address); see Retry-After",
    500: "unavailable: an unexpected failure (logged); retry later",
    503: "unavailable: a dependency is unreachable; retry later",
}


def _errors(r: ApiRoute, error_schema: Any) -> dict[str, Any]:
    """Every error status the route can answer, each with the error body."""
    codes = [400, 401, 429, 500, 503]  # 401: any call may carry a bad token
    if r.auth:
        codes.append(403)
    if "{" in r.path or r.request is not None:
        codes.append(404)
    if r.request is not None:
        codes.append(413)
    if r.method != "GET":
        codes.append(409)
    out: dict[str, Any] = {}
    for code in sorted(codes):
        resp: dict[str, Any] = {
            "description": _ERRORS[code],
            "content": {"application/json": {"schema": error_schema}},
        }
        if code in (429, 503):
            resp["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait",
                    "schema": {"type": "integer", "minimum": 1},
                }
            }
        out[str(code)] = resp
    return out


def _body_required(kind: type) -> bool:
    """An empty body is `{}`: it may be left out when no field is required."""
    fields = msgspec.structs.fields(kind) if isinstance(kind, type) else ()
    return any(f.required for f in fields)


def openapi(routes: list[ApiRoute]) -> dict[str, Any]:
    types: list[Any] = [ErrorResponse]
    for r in routes:
        types += [t for t in (r.request, r.response) if t is not None]
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "responses": {}}
        if r.request is not None:
            op["requestBody"] = {
                "required": _body_required(r.request),
                "content": {"application/json": {"schema": by_type[r.request]}},
            }
        ok: dict[str, Any] = {"description": "success"}
        if r.response is not None:
            ok["content"] = {"application/json": {"schema": by_type[r.response]}}
        op["responses"][str(r.status)] = ok
        op["responses"].update(_errors(r, by_type[ErrorResponse]))
        if r.auth:
            op["security"] = [{"bearer": []}]
        params = [seg[1:-1] for seg in r.path.split("/") if seg.startswith("{")]
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
        parameters += [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in (r.query or {}).items()
        ]
        if parameters:
            op["parameters"] = parameters
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "livecart", "version": "0.1.0"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
