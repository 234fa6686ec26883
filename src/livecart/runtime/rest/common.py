"""What every REST route shares: identity, body decoding, JSON responses, errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ... import auth
from ...auth import Action, Identity
from ...protocol import Failure
from ...text import is_line
from ..node import Node

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
    if failure.min_cents is not None:
        error["min_cents"] = failure.min_cents
    if failure.code == "too_large":
        # The rest of an oversized body is not read: the connection cannot be reused.
        headers["Connection"] = "close"
    resp = json({"error": error}, HTTP_STATUS.get(failure.code, 400))
    resp.headers.update(headers)
    return resp


IDENTITY_KEY = "livecart.identity"


def identity(request: Request) -> Identity:
    """The caller; no Authorization header means a guest. Verified once per request (the rate
    limiter may have done it already)."""
    known: Identity | None = request.scope.get(IDENTITY_KEY)
    if known is not None:
        return known
    who = _verify(request)
    request.scope[IDENTITY_KEY] = who
    return who


def _verify(request: Request) -> Identity:
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


def too_large() -> Failure:
    return Failure("too_large", f"request bodies are limited to {MAX_BODY} bytes")


async def body(request: Request, kind: type[T]) -> T:
    """The JSON body as `kind`; an empty body is `{}`. Bounded before buffered: a declared
    length over MAX_BODY never reaches a route (`guard.Guard` refuses it before reading), and
    a body is refused as soon as its bytes pass the limit, so no more than MAX_BODY (plus one
    read) is ever held."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large()
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        if not str(exc).startswith("Expected `int`, got `float`"):
            raise Failure("bad_frame", str(exc)) from None
        # JSON (and the schema's "integer") counts 136.0 as the integer 136: accept it the
        # same way, off the fast path, as the same value would be if written 136.
        try:
            return msgspec.convert(_whole_floats_as_ints(msgspec.json.decode(raw)), type=kind)
        except (msgspec.ValidationError, RecursionError):
            raise Failure("bad_frame", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise Failure("bad_frame", str(exc)) from None
    except RecursionError:
        raise Failure("bad_frame", "the body is nested too deeply") from None


def check_request_text(request: Request) -> None:
    """Path parameters and query values are user text too: the `Line` rule, else bad_frame."""
    for value in request.path_params.values():
        if isinstance(value, str) and not is_line(value):
            raise Failure("bad_frame", "a path parameter holds a character that is not allowed")
    for _, value in request.query_params.multi_items():
        if not is_line(value):
            raise Failure("bad_frame", "a query value holds a character that is not allowed")


def _whole_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_floats_as_ints(v) for v in value]
    return value


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if len(raw) > 24:
        raise Failure("bad_frame", f"{name} must be between {lo} and {hi}")
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
            check_request_text(request)
            return await fn(request)
        except Failure as failure:
            return error_response(failure)

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped
