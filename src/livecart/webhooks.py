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
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

import asyncpg

from .core.commerce import webhook_backoff_s

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


class DeliveryError(Exception):
    """The endpoint could not be reached or did not answer with HTTP."""


def _parse_url(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook url must be http(s)://host/...: {url!r}")
    return parts


async def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """POST `body` and return the response status (HTTP/1.1, one request per connection);
    the response body is not read, a receiver's answer is its status."""
    parts = _parse_url(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if parts.port is None else f"{shown}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {host_header}",
        f"User-Agent: {USER_AGENT}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    async with asyncio.timeout(timeout_s):
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=(ssl_context or ssl.create_default_context()) if https else None
            )
        except OSError as exc:
            raise DeliveryError(f"connect: {exc}") from exc
        try:
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
        except OSError as exc:
            raise DeliveryError(f"send: {exc}") from exc
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    fields = status_line.decode("latin-1").split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        raise DeliveryError(f"not an HTTP response: {status_line[:80]!r}")
    return int(fields[1])


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
        pool: asyncpg.Pool,
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
        self._ssl = ssl.create_default_context() if url.startswith("https") else None
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
        try:
            status = await post(
                self.url, body, headers, timeout_s=self._timeout_s, ssl_context=self._ssl
            )
        except (DeliveryError, TimeoutError, OSError, ssl.SSLError) as exc:
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
