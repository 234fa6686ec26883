"""Health, readiness and the OpenAPI document generated from the msgspec types."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..models import ErrorResponse
from .common import Handler, json, node_of


class ApiRoute(NamedTuple):
    method: str
    path: str
    handler: Handler
    summary: str
    request: type | None = None
    response: Any = None
    status: int = 200
    auth: bool = False


async def healthz(request: Request) -> Response:
    return json({"status": "ok", "node": node_of(request).id})


async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(node_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def readyz(request: Request) -> Response:
    checks = await node_of(request).ready()
    return json(checks, 200 if checks["ready"] else 503)


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
                "required": True,
                "content": {"application/json": {"schema": by_type[r.request]}},
            }
        ok: dict[str, Any] = {"description": "success"}
        if r.response is not None:
            ok["content"] = {"application/json": {"schema": by_type[r.response]}}
        op["responses"][str(r.status)] = ok
        op["responses"]["default"] = {
            "description": "error: {error: {code, message}} with a SPEC error code",
            "content": {"application/json": {"schema": by_type[ErrorResponse]}},
        }
        if r.auth:
            op["security"] = [{"bearer": []}]
        params = [seg[1:-1] for seg in r.path.split("/") if seg.startswith("{")]
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
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
