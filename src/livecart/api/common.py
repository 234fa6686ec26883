"""What every REST route shares: identity, body decoding, JSON responses, errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from .. import auth
from ..auth import Action, Identity
from ..node import Node
from ..protocol import Failure

T = TypeVar("T")

HTTP_STATUS: dict[str, int] = {
    "bad_frame": 400,
    "unknown_type": 400,
    "too_large": 413,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "not_live": 409,
    "rate_limited": 429,
    "slow_mode": 429,
    "duplicate": 409,
    "muted": 403,
    "banned": 403,
    "blocked": 422,
    "held": 202,
    "sold_out": 409,
    "limit_reached": 409,
    "offer_closed": 409,
    "bid_too_low": 409,
    "auction_closed": 409,
    "unavailable": 503,
}
MAX_BODY = 64 * 1024
_encoder = msgspec.json.Encoder()


def node_of(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def json(obj: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


def error_response(failure: Failure) -> Response:
    error: dict[str, Any] = {"code": failure.code, "message": failure.message}
    headers = {}
    if failure.retry_after_ms is not None:
        error["retry_after_ms"] = failure.retry_after_ms
        headers["Retry-After"] = str(max(1, (failure.retry_after_ms + 999) // 1000))
    resp = json({"error": error}, HTTP_STATUS.get(failure.code, 400))
    resp.headers.update(headers)
    return resp


def identity(request: Request) -> Identity:
    """The caller; no Authorization header means a guest."""
    header = request.headers.get("authorization")
    if not header:
        return auth.guest("http")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Failure("unauthorized", "expected 'Authorization: Bearer <token>'")
    verifier = node_of(request).verifier
    try:
        return verifier.verify(token.strip())
    except auth.KeyMissing as exc:
        # A key rotated in the JWKS: fetched in the background; the client retries.
        verifier.refresh_soon()
        raise Failure("unauthorized", f"invalid token: {exc}", retry_after_ms=1000) from None
    except auth.AuthError as exc:
        raise Failure("unauthorized", f"invalid token: {exc}") from None


def signed_in(request: Request) -> Identity:
    who = identity(request)
    if who.is_guest:
        raise Failure("unauthorized", "this call needs a token")
    return who


def require(
    who: Identity, action: Action, *, owner: str | None = None, channel_moderator: bool = False
) -> None:
    if not auth.can(who, action, owner=owner, channel_moderator=channel_moderator):
        raise Failure("forbidden", f"{who.role} may not {action.value} here")


async def body(request: Request, kind: type[T]) -> T:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise Failure("too_large", f"request bodies are limited to {MAX_BODY} bytes")
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Failure("bad_frame", str(exc)) from None


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Failure("bad_frame", f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise Failure("bad_frame", f"{name} must be between {lo} and {hi}")
    return value


Handler = Callable[[Request], Awaitable[Response]]


def endpoint(fn: Handler) -> Handler:
    """Turns a Failure raised anywhere in the handler into its JSON error."""

    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except Failure as failure:
            return error_response(failure)

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped
