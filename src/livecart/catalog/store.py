"""Products, sessions and the showcase.

Every function takes the database handle first, as `db: Executor` (`runtime.db`); rows become
Structs by `runtime.db.from_row`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from ..ids import new_id
from ..runtime.db import Executor, GroupWriter, from_row
from .models import Product, ProductCreate, ProductPatch, Session, SessionCreate

_PRODUCT_COLS = "id, creator, title, price_cents, currency, stock, category, tags"
# Session's times are the text Python's isoformat gives (what the API has always answered),
# not msgspec's RFC 3339 spelling: they are turned into text before the conversion.
_STAMPS = ("scheduled_at", "started_at", "ended_at")


def _product(row: Any) -> Product:
    return from_row(row, Product)


def _session(row: Any) -> Session:
    return from_row(row, Session, iso_times=_STAMPS)


async def create_product(db: Executor, creator: str, body: ProductCreate) -> Product:
    row = await db.fetchrow(
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


async def get_product(db: Executor, product_id: str) -> Product | None:
    row = await db.fetchrow(f"SELECT {_PRODUCT_COLS} FROM products WHERE id = $1", product_id)
    return None if row is None else _product(row)


async def patch_product(db: Executor, product_id: str, body: ProductPatch) -> Product | None:
    changes = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None}
    if not changes:
        return await get_product(db, product_id)
    sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(changes, start=2))
    row = await db.fetchrow(
        f"UPDATE products SET {sets}, updated_at = now() WHERE id = $1 RETURNING {_PRODUCT_COLS}",
        product_id,
        *changes.values(),
    )
    return None if row is None else _product(row)


_SESSION_SELECT = """
SELECT s.id, s.creator, s.title, s.category, s.tags, s.status, s.playback_url, s.scheduled_at,
       s.started_at, s.ended_at, s.pinned_product,
       coalesce((SELECT array_agg(product ORDER BY position) FROM session_products sp
                 WHERE sp.session = s.id), '{}') AS showcase
FROM sessions s
"""


async def create_session(db: Executor, creator: str, body: SessionCreate) -> Session:
    sid = new_id("ses")
    await db.execute(
        "INSERT INTO sessions (id, creator, title, category, tags, playback_url, scheduled_at) "
        "VALUES ($1,$2,$3,$4,$5,$6,$7)",
        sid,
        creator,
        body.title,
        body.category,
        body.tags,
        body.playback_url,
        body.scheduled_at,
    )
    session = await get_session(db, sid)
    assert session is not None
    return session


async def get_session(db: Executor, session_id: str) -> Session | None:
    row = await db.fetchrow(_SESSION_SELECT + " WHERE s.id = $1", session_id)
    return None if row is None else _session(row)


async def list_sessions(db: Executor, status: str | None, limit: int) -> list[Session]:
    if status is None:
        rows = await db.fetch(_SESSION_SELECT + " ORDER BY s.created_at DESC LIMIT $1", limit)
    else:
        rows = await db.fetch(
            _SESSION_SELECT + " WHERE s.status = $1 ORDER BY s.started_at DESC NULLS LAST LIMIT $2",
            status,
            limit,
        )
    return [_session(r) for r in rows]


async def set_status(db: Executor, session_id: str, sources: tuple[str, ...], to: str) -> bool:
    """Move a session to `to` from one of `sources`, stamping when it started or ended; False
    when it was in none of them (it changed meanwhile)."""
    stamp = "started_at" if to == "live" else "ended_at"
    result: str = await db.execute(
        f"UPDATE sessions SET status = $3, {stamp} = now() "
        "WHERE id = $1 AND status = ANY($2::text[])",
        session_id,
        list(sources),
        to,
    )
    return result.endswith(" 1")


async def add_to_showcase(db: Executor, session_id: str, product_id: str) -> None:
    await db.execute(
        "INSERT INTO session_products (session, product, position) "
        "VALUES ($1, $2, (SELECT coalesce(max(position), 0) + 1 FROM session_products "
        "WHERE session = $1)) ON CONFLICT DO NOTHING",
        session_id,
        product_id,
    )


async def set_pinned(db: Executor, session_id: str, product_id: str | None) -> None:
    await db.execute(
        "UPDATE sessions SET pinned_product = $2 WHERE id = $1", session_id, product_id
    )


_FIGURES = """
SELECT
  (SELECT count(*) FROM room_events WHERE session = $1 AND type = 'chat') AS chat_messages,
  (SELECT count(DISTINCT author) FROM room_events WHERE session = $1 AND type = 'chat')
    AS chatters,
  (SELECT count(*) FROM room_events WHERE session = $1 AND type = 'chat'
     AND state = 'removed') AS removed_messages,
  (SELECT like_total FROM sessions WHERE id = $1) AS likes_saved,
  count(o.id) FILTER (WHERE o.status IN ('reserved', 'paid')) AS orders,
  coalesce(sum(o.qty) FILTER (WHERE o.status IN ('reserved', 'paid')), 0) AS units,
  coalesce(sum(o.total_cents) FILTER (WHERE o.status IN ('reserved', 'paid')), 0)
    AS revenue_cents,
  coalesce(sum(o.total_cents) FILTER (WHERE o.status = 'paid'), 0) AS paid_cents,
  count(DISTINCT o.user_id) FILTER (WHERE o.status IN ('reserved', 'paid')) AS buyers
FROM offers f LEFT JOIN orders o ON o.offer = f.id WHERE f.session = $1
"""


async def session_figures(db: Executor, session_id: str) -> dict[str, int]:
    """A session's stored figures: chat, saved likes (`likes_saved`), orders and revenue."""
    row = await db.fetchrow(_FIGURES, session_id)
    return {k: int(v or 0) for k, v in dict(row).items()}


async def add_likes(db: Executor, counts: dict[str, int]) -> None:
    await db.execute(
        "UPDATE sessions s SET like_total = like_total + u.n "
        "FROM unnest($1::text[], $2::bigint[]) AS u(id, n) WHERE s.id = u.id",
        list(counts),
        list(counts.values()),
    )


async def room_row(db: Executor, session_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow(
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
RETURNING id, extract(epoch FROM first_seen)::float8 AS first_seen
"""


class UserWriter(GroupWriter[UserRow]):
    """Who connected, group-committed: thousands joining at the start of a show cost one
    statement per batch, not one each. `add` answers when the platform first saw the user
    (epoch seconds), which moderation needs for a first chat message: read here, it costs
    no query of its own."""

    def __init__(self, db: Executor) -> None:
        super().__init__(self._write, name="user-writer")
        self._db = db

    async def add_user(self, row: UserRow) -> float:
        seen: float = await self.add(row)
        return seen

    async def _write(self, rows: list[UserRow]) -> list[float]:
        latest = {r.id: r for r in rows}  # one row per user per statement
        users = list(latest.values())
        written = await self._db.fetch(
            _UPSERT_USERS,
            [u.id for u in users],
            [u.name for u in users],
            [u.role for u in users],
            [u.minor for u in users],
        )
        first_seen = {r["id"]: float(r["first_seen"]) for r in written}
        return [first_seen[r.id] for r in rows]


async def user_role(db: Executor, sub: str) -> str | None:
    """The role `sub` last signed in with (None: never seen)."""
    role: str | None = await db.fetchval("SELECT role FROM users WHERE id = $1", sub)
    return role


async def upsert_user(db: Executor, sub: str, name: str, role: str, minor: bool) -> None:
    await db.execute(
        "INSERT INTO users (id, name, role, minor) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (id) DO UPDATE SET name = $2, role = $3, minor = $4, last_seen = now()",
        sub,
        name,
        role,
        minor,
    )
