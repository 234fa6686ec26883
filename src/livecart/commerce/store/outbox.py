"""The webhook outbox and the returned-stock notice: what a commerce transaction records
for others, written inside that transaction so it exists exactly when the change commits."""

from __future__ import annotations

from typing import Any

import msgspec

from ...ids import new_id
from ...runtime.db import Executor, iso
from .rows import at

# NOTIFY channel: ids of open offers that got units back, sent on commit to every node so
# that each reopens its sold-out gate (payload: comma-separated offer ids).
STOCK_RETURNED = "livecart_stock_returned"


async def notify_returned(conn: Executor, offer_ids: list[str]) -> None:
    """Within the returning transaction: PostgreSQL delivers it only if that commits."""
    chunk: list[str] = []
    for offer_id in offer_ids:
        chunk.append(offer_id)
        if len(chunk) == 200:  # payloads must stay under 8000 bytes
            await conn.execute("SELECT pg_notify($1, $2)", STOCK_RETURNED, ",".join(chunk))
            chunk = []
    if chunk:
        await conn.execute("SELECT pg_notify($1, $2)", STOCK_RETURNED, ",".join(chunk))


# NOTIFY channel: a personal message for one user, sent on commit to every node so that the
# node holding the user's connections delivers it (payload: `{"user": ..., "message": {...}}`).
PERSONAL = "livecart_personal"


async def notify_user(conn: Executor, user: str, message: Any) -> None:
    """Within the transaction whose change the message reports: delivered only if it commits,
    to every node (each sends it to the user's connections there, whatever they joined).
    Messages are small (PostgreSQL caps a payload at 8000 bytes)."""
    await notify_users(conn, [(user, message)])


async def notify_users(conn: Executor, notices: list[tuple[str, Any]]) -> None:
    """`notify_user` for several (user, message) notices, in one statement and in order."""
    if not notices:
        return
    payloads = [
        msgspec.json.encode({"user": user, "message": message}).decode()
        for user, message in notices
    ]
    await conn.execute(
        "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS n(p, i) ORDER BY i",
        PERSONAL,
        payloads,
    )


ENQUEUE = "INSERT INTO webhook_outbox (event_id, topic, payload) VALUES ($1, $2, $3::jsonb)"


def webhook_event(topic: str, data: Any, now: float) -> tuple[str, str, dict[str, Any]]:
    """(event id, topic, payload) in the Standard Webhooks payload shape."""
    payload = {"type": topic, "timestamp": iso(at(now)), "data": msgspec.to_builtins(data)}
    return new_id("msg"), topic, payload


async def enqueue_webhook(conn: Executor, topic: str, data: Any, now: float) -> str:
    """Call inside the transaction that makes the change the event reports."""
    event_id, topic, payload = webhook_event(topic, data, now)
    await conn.execute(ENQUEUE, event_id, topic, payload)
    return event_id
