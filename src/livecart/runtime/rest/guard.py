"""What every HTTP request passes before the router: the REST rate limit per identity (per
client IP for guests), the security headers of every response, and JSON for every error the
framework itself answers (404, 405 with `Allow`, an unexpected exception)."""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg
import redis.exceptions
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...chat.rules.limits import RateLimiter, RatePolicy
from ...protocol import Failure
from ..config import Settings
from .common import MAX_BODY, error_response, identity, json, too_large

log = logging.getLogger("livecart.api")

# Paths never rate limited besides everything outside /api/: probes and scrapes must always
# answer, and pages, static files and the schema are served from memory without any work.
LIMITED_PREFIX = "/api/"
MAX_KEYS = 100_000

_FRAMEWORK_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    413: "too_large",
    429: "rate_limited",
    503: "unavailable",
}


def page_policy(frame_ancestors: str) -> str:
    """The Content-Security-Policy of the pages: scripts and styles from this origin only (no
    inline script or style), API and WebSocket calls to this origin, video from anywhere the
    creator streams from, and `frame-ancestors` as configured."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "media-src 'self' https: blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            f"frame-ancestors {frame_ancestors.strip()}",
        ]
    )


class Guard:
    """Pure ASGI, in front of the whole HTTP app (WebSockets never pass here)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limiter: RateLimiter[tuple[str, str]] | None = None
        if settings.rest_rate_per_s > 0:
            self.limiter = RateLimiter(
                RatePolicy(settings.rest_rate_per_s, settings.rest_burst), max_keys=MAX_KEYS
            )
        self._always = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        self._csp = (
            b"content-security-policy",
            page_policy(settings.frame_ancestors).encode("latin-1"),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].startswith(LIMITED_PREFIX):
            refusal = _declared_too_large(scope)
            if refusal is None and self.limiter is not None:
                refusal = self._take(scope)
            if refusal is not None:
                await refusal(scope, receive, self._headed(send))
                return
        await self.app(scope, receive, self._headed(send))

    def _take(self, scope: Scope) -> Response | None:
        assert self.limiter is not None
        key = _key(scope)
        decision = self.limiter.check(key, time.monotonic())
        if decision.allowed:
            return None
        who = "this identity" if key[0] == "user" else "this address"
        return error_response(
            Failure(
                "rate_limited",
                f"too many requests from {who}; retry later",
                retry_after_ms=decision.retry_after_ms,
            )
        )

    def _headed(self, send: Send) -> Send:
        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers += self._always
                for name, value in headers:
                    if name.lower() == b"content-type" and value.startswith(b"text/html"):
                        headers.append(self._csp)
                        break
                message = {**message, "headers": headers}
            await send(message)

        return headed


def _declared_too_large(scope: Scope) -> Response | None:
    """A body declared over MAX_BODY is refused before anything is read, whether or not the
    route reads bodies (`body()` also counts what chunked bodies deliver)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if len(value) > 9 or not value.isdigit() or int(value) > MAX_BODY:
                return error_response(too_large())
            return None
    return None


def _key(scope: Scope) -> tuple[str, str]:
    """The identity the request is counted against: the verified token's subject (kept for
    the route, which then does not verify it again), else the client address."""
    request = Request(scope)
    if "authorization" in request.headers:
        try:
            who = identity(request)
        except Failure:
            who = None  # answered 401 by the route; counted against the address meanwhile
        if who is not None and not who.is_guest:
            return ("user", who.sub)
    client = scope.get("client")
    return ("ip", client[0] if client else "")


async def http_error(request: Request, exc: Exception) -> Response:
    """404, 405 and the framework's other refusals, in the API's error shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed here; allowed: {allowed}"
    else:
        message = str(exc.detail)
    code = _FRAMEWORK_CODES.get(exc.status_code, "bad_frame")
    response = json({"error": {"code": code, "message": message}}, exc.status_code)
    response.headers.update(exc.headers or {})
    return response


# A dependency out of reach: 503, to be retried, rather than a 500 bug.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,  # a Redis Cluster failover in progress
    redis.exceptions.TryAgainError,
)


async def unexpected(request: Request, exc: Exception) -> Response:
    """Never a text/plain 500: logged with its traceback and answered `unavailable`, 503 with
    Retry-After when the database or bus is out of reach, else 500."""
    log.error(
        "unexpected error in %s %s: %r", request.method, request.url.path, exc, exc_info=exc
    )
    if isinstance(exc, _UNREACHABLE):
        response = error_response(Failure("unavailable", "a dependency is out of reach; retry"))
        response.headers["Retry-After"] = "1"
        return response
    body: dict[str, Any] = {"code": "unavailable", "message": "internal error; retry later"}
    return json({"error": body}, 500)
