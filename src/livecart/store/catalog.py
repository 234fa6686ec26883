"""Products, sessions and the showcase."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
import msgspec

from ..ids import new_id
from ..models import Product, ProductCreate, ProductPatch, Session, SessionCreate
from .db import GroupWriter

_PRODUCT_COLS = "id, creator, title, price_cents, currency, stock, category, tags"


def _product(row: asyncpg.Record) -> Product:
    return Product(**dict(row))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _session(row: asyncpg.Record) -> Session:
    return Session(
        id=row["id"],
        creator=row["creator"],
        title=row["title"],
        category=row["category"],
        tags=list(row["tags"]),
        status=row["status"],
        playback_url=row["playback_url"],
        scheduled_at=_iso(row["scheduled_at"]),
        started_at=_iso(row["started_at"]),
        ended_at=_iso(row["ended_at"]),
        pinned_product=row["pinned_product"],
        showcase=list(row["showcase"] or []),
    )


async def create_product(pool: asyncpg.Pool, creator: str, body: ProductCreate) -> Product:
    row = await pool.fetchrow(
        f"INSERT INTO products ({_PRODUCT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) "
        f"RETURNING {_PRODUCT_COLS}",
        new_id("prd"),
        creator,
        body.title,
        body.price_cents,
        body.currency,
        body.stock,
        body.category,
        body.tags,
    )
    return _product(row)


async def get_product(pool: asyncpg.Pool | asyncpg.Connection, product_id: str) -> Product | None:
    row = await pool.fetchrow(f"SELECT {_PRODUCT_COLS} FROM products WHERE id = $1", product_id)
    return None if row is None else _product(row)


async def patch_product(pool: asyncpg.Pool, product_id: str, body: ProductPatch) -> Product | None:
    changes = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None}
    if not changes:
        return await get_product(pool, product_id)
    sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(changes, start=2))
    row = await pool.fetchrow(
        f"UPDATE products SET {sets}, updated_at = now() WHERE id = $1 RETURNING {_PRODUCT_COLS}",
        product_id,
        *changes.values(),
    )
    return None if row is None else _product(row)


_SESSION_SELECT = """
SELECT s.*, (SELECT array_agg(product ORDER BY position) FROM session_products sp
             WHERE sp.session = s.id) AS showcase
FROM sessions s
"""


async def create_session(pool: asyncpg.Pool, creator: str, body: SessionCreate) -> Session:
    scheduled = body.scheduled_at
    sid = new_id("ses")
    await pool.execute(
        "INSERT INTO sessions (id, creator, title, category, tags, playback_url, scheduled_at) "
        "VALUES ($1,$2,$3,$4,$5,$6,$7)",
        sid,
        creator,
        body.title,
        body.category,
        body.tags,
        body.playback_url,
        scheduled,
    )
    session = await get_session(pool, sid)
    assert session is not None
    return session


async def get_session(pool: asyncpg.Pool | asyncpg.Connection, session_id: str) -> Session | None:
    row = await pool.fetchrow(_SESSION_SELECT + " WHERE s.id = $1", session_id)
    return None if row is None else _session(row)


async def list_sessions(pool: asyncpg.Pool, status: str | None, limit: int) -> list[Session]:
    if status is None:
        rows = await pool.fetch(_SESSION_SELECT + " ORDER BY s.created_at DESC LIMIT $1", limit)
    else:
        rows = await pool.fetch(
            _SESSION_SELECT + " WHERE s.status = $1 ORDER BY s.started_at DESC NULLS LAST LIMIT $2",
            status,
            limit,
        )
    return [_session(r) for r in rows]


async def set_status(pool: asyncpg.Pool, session_id: str, frm: str, to: str) -> bool:
    """Move a session from `frm` to `to`; False when it was not in `frm`."""
    stamp = "started_at" if to == "live" else "ended_at"
    result: str = await pool.execute(
        f"UPDATE sessions SET status = $3, {stamp} = now() WHERE id = $1 AND status = $2",
        session_id,
        frm,
        to,
    )
    return result.endswith(" 1")


async def add_to_showcase(pool: asyncpg.Pool, session_id: str, product_id: str) -> None:
    await pool.execute(
        "INSERT INTO session_products (session, product, position) "
        "VALUES ($1, $2, (SELECT coalesce(max(position), 0) + 1 FROM session_products "
        "WHERE session = $1)) ON CONFLICT DO NOTHING",
        session_id,
        product_id,
    )


async def in_showcase(pool: asyncpg.Pool, session_id: str, product_id: str) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT 1 FROM session_products WHERE session = $1 AND product = $2",
            session_id,
            product_id,
        )
    )


async def set_pinned(pool: asyncpg.Pool, session_id: str, product_id: str | None) -> None:
    await pool.execute(
        "UPDATE sessions SET pinned_product = $2 WHERE id = $1", session_id, product_id
    )


async def add_likes(pool: asyncpg.Pool, counts: dict[str, int]) -> None:
    await pool.execute(
        "UPDATE sessions s SET like_total = like_total + u.n "
        "FROM unnest($1::text[], $2::bigint[]) AS u(id, n) WHERE s.id = u.id",
        list(counts),
        list(counts.values()),
    )


async def room_row(pool: asyncpg.Pool, session_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        "SELECT id, creator, status, pinned_product, slow_seconds, shield, like_total, category, "
        "tags "
        "FROM sessions WHERE id = $1",
        session_id,
    )
    return None if row is None else dict(row)


class UserRow(NamedTuple):
    id: str
    name: str
    role: str
    minor: bool


_UPSERT_USERS = """
INSERT INTO users (id, name, role, minor)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[])
ON CONFLICT (id) DO UPDATE SET name = excluded.name, role = excluded.role,
    minor = excluded.minor, last_seen = now()
"""


class UserWriter(GroupWriter[UserRow]):
    """Who connected, group-committed: thousands joining at the start of a show cost one
    statement per batch, not one each."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(self._write, name="user-writer")
        self._pool = pool

    async def _write(self, rows: list[UserRow]) -> None:
        latest = {r.id: r for r in rows}  # one row per user per statement
        users = list(latest.values())
        await self._pool.execute(
            _UPSERT_USERS,
            [u.id for u in users],
            [u.name for u in users],
            [u.role for u in users],
            [u.minor for u in users],
        )


async def user_role(pool: asyncpg.Pool, sub: str) -> str | None:
    """The role `sub` last signed in with (None: never seen)."""
    role: str | None = await pool.fetchval("SELECT role FROM users WHERE id = $1", sub)
    return role


async def upsert_user(pool: asyncpg.Pool, sub: str, name: str, role: str, minor: bool) -> None:
    await pool.execute(
        "INSERT INTO users (id, name, role, minor) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (id) DO UPDATE SET name = $2, role = $3, minor = $4, last_seen = now()",
        sub,
        name,
        role,
        minor,
    )
