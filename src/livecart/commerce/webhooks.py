"""Merchant webhooks, delivered at least once from the transactional outbox (`webhook_outbox`).

Rows are written by the commerce store in the same transaction as the change they report.
The deliverer leases due rows (`FOR UPDATE SKIP LOCKED`, so any number of nodes may run it),
POSTs them without holding a transaction, and records success or the next attempt time. A
crash mid-delivery leaves the row leased until the lease ends, then it is sent again: the
table, not memory, drives delivery. Signing follows the Standard Webhooks spec.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

from ..runtime.db import Executor
from .rules import webhook_backoff_s

log = logging.getLogger("livecart.webhooks")

USER_AGENT = "livecart-webhooks/1"


# ---------------------------------------------------------------- signatures


def signing_key(secret: str) -> bytes:
    """A `whsec_<base64>` secret (Standard Webhooks) is its decoded bytes; any other string is
    used as UTF-8."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except binascii.Error as exc:
            raise ValueError("a whsec_ secret must be base64") from exc
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_signature(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """For receivers: True when one of the `webhook-signature` entries matches and the
    timestamp is within `tolerance_s` of now (replay protection)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in signatures.split())


def encode_body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------- HTTP

# A receiver's answer is its status; at most this much of its body is read (so the connection
# can be reused), a longer body is dropped with its connection.
MAX_ANSWER_BYTES = 64 * 1024


class DeliveryError(Exception):
    """The endpoint could not be reached or did not answer with HTTP."""


def _parse_url(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook url must be http(s)://host/...: {url!r}")
    return parts


def client(timeout_s: float, max_connections: int) -> httpx.AsyncClient:
    """One pooled client per deliverer: keep-alive connections (one TLS handshake per
    connection, not per delivery), timeouts on connect, write, read and pool waits, and the
    proxy and CA settings of the environment (HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE) as httpx
    reads them."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        headers={"user-agent": USER_AGENT},
        follow_redirects=False,
        trust_env=True,
    )


async def post(
    http: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float
) -> int:
    """POST `body` and return the response status; the whole attempt (connect, send, answer)
    is bounded by `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            async with http.stream(
                "POST",
                url,
                content=body,
                headers={"content-type": "application/json", **headers},
            ) as response:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read > MAX_ANSWER_BYTES:
                        break  # not reused: closed when the stream ends unread
                return response.status_code
    except httpx.TimeoutException as exc:
        raise TimeoutError(f"timed out: {type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------- the deliverer

_CLAIM = """
UPDATE webhook_outbox w SET attempts = w.attempts + 1,
                            next_at = now() + make_interval(secs => $2)
FROM (SELECT id FROM webhook_outbox
      WHERE delivered_at IS NULL AND next_at <= now()
      ORDER BY next_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) due
WHERE w.id = due.id
RETURNING w.id, w.event_id, w.topic, w.payload, w.attempts
"""

_DELIVERED = (
    "UPDATE webhook_outbox SET delivered_at = now(), last_error = NULL "
    "WHERE id = ANY($1::bigint[]) AND delivered_at IS NULL"
)

_RETRY = """
UPDATE webhook_outbox w SET next_at = now() + make_interval(secs => u.delay), last_error = u.err
FROM unnest($1::bigint[], $2::float8[], $3::text[]) AS u(id, delay, err)
WHERE w.id = u.id AND w.delivered_at IS NULL
"""


class WebhookDeliverer:
    """Delivers due outbox rows to one endpoint, at least once, with exponential backoff."""

    def __init__(
        self,
        pool: Executor,
        url: str,
        secret: str,
        *,
        batch_size: int = 20,
        timeout_s: float = 10.0,
        lease_s: float | None = None,
        poll_s: float = 1.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 3600.0,
        retention_s: float | None = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _parse_url(url)
        signing_key(secret)
        if not secret:
            raise ValueError("a webhook secret is required")
        self._pool = pool
        self.url = url
        self._secret = secret
        self._batch = batch_size
        self._timeout_s = timeout_s
        # Longer than one attempt, so a live deliverer is never raced by another node.
        self._lease_s = lease_s if lease_s is not None else timeout_s + 20.0
        self._poll_s = poll_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._retention_s = retention_s
        self._clock = clock
        self._http: httpx.AsyncClient | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        self.delivered = 0
        self.failed_attempts = 0

    def wake(self) -> None:
        """New rows were committed: look now instead of at the next poll."""
        self._wakeup.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-deliverer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.deliver_due()
                await self._purge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook delivery pass failed: %s", exc)
                sent = 0
            if sent >= self._batch:
                continue  # more may be due right now
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._poll_s)

    async def deliver_due(self) -> int:
        """One pass: lease up to `batch_size` due rows, POST them concurrently, record the
        outcome. Returns the number of rows claimed."""
        rows = await self._pool.fetch(_CLAIM, self._batch, self._lease_s)
        if not rows:
            return 0
        results = await asyncio.gather(*(self._attempt(r) for r in rows))
        ok = [r["id"] for r, err in zip(rows, results, strict=True) if err is None]
        failed = [(r, err) for r, err in zip(rows, results, strict=True) if err is not None]
        if ok:
            await self._pool.execute(_DELIVERED, ok)
            self.delivered += len(ok)
        if failed:
            self.failed_attempts += len(failed)
            await self._pool.execute(
                _RETRY,
                [r["id"] for r, _ in failed],
                [
                    webhook_backoff_s(
                        r["attempts"], base_s=self._backoff_base_s, cap_s=self._backoff_max_s
                    )
                    for r, _ in failed
                ],
                [err for _, err in failed],
            )
        return len(rows)

    async def _attempt(self, row: Any) -> str | None:
        """None on a 2xx answer, else a short reason kept in `last_error`."""
        body = encode_body(row["payload"])
        timestamp = int(self._clock())
        headers = {
            "webhook-id": row["event_id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, row["event_id"], timestamp, body),
        }
        if self._http is None:
            self._http = client(self._timeout_s, self._batch)
        try:
            status = await post(self._http, self.url, body, headers, timeout_s=self._timeout_s)
        except (DeliveryError, TimeoutError, OSError) as exc:
            log.info(
                "webhook %s (%s) attempt %d failed: %s",
                row["event_id"],
                row["topic"],
                row["attempts"],
                exc,
            )
            return (str(exc) or type(exc).__name__)[:500]
        if 200 <= status < 300:
            return None
        log.info(
            "webhook %s (%s) attempt %d: HTTP %d",
            row["event_id"],
            row["topic"],
            row["attempts"],
            status,
        )
        return f"HTTP {status}"

    async def _purge(self) -> None:
        """Drop delivered rows past the retention period, at most once a minute."""
        if self._retention_s is None:
            return
        now = time.monotonic()
        if now - self._last_purge < 60.0:
            return
        self._last_purge = now
        await self._pool.execute(
            "DELETE FROM webhook_outbox WHERE delivered_at < now() - make_interval(secs => $1)",
            self._retention_s,
        )
