"""The ranking's PostgreSQL statements: the live catalog it indexes, interest profiles,
privacy (settings, erasure, export) and the counts behind a creator score."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from ..auth import Identity
from ..catalog.store import upsert_user
from ..runtime.db import Executor
from .core import ProductInfo, SessionInfo

PROFILE_SAVE_CHUNK = 500
"""Interest profiles written per statement."""

_SESSION_SQL = (
    "SELECT s.id, s.creator, s.category, s.tags, s.status, "
    "(SELECT array_agg(product ORDER BY position) FROM session_products sp "
    "WHERE sp.session = s.id) AS showcase FROM sessions s "
)


class SessionRow(msgspec.Struct):
    """A session as the ranking indexes it; `showcase` in showcase order."""

    id: str
    creator: str
    category: str
    tags: tuple[str, ...]
    status: str
    showcase: list[str] | None

    def info(self) -> SessionInfo:
        return SessionInfo(self.id, self.creator, self.category, self.tags)


class ViewerRow(msgspec.Struct):
    minor: bool
    settings: dict[str, Any]
    profile: Any  # checked by InterestProfile.from_dict


class CreatorCounts(msgspec.Struct):
    """What PostgreSQL knows about a creator's sessions, for the creator score."""

    chatters: int
    messages: int
    removed: int
    held: int
    buyers: int
    settled: int
    paid: int
    likes: int


class SessionTimes(msgspec.Struct):
    scheduled_at: datetime
    started_at: datetime


async def product(db: Executor, product_id: str) -> ProductInfo | None:
    row = await db.fetchrow(
        "SELECT id, creator, category, tags FROM products WHERE id = $1", product_id
    )
    return None if row is None else msgspec.convert(dict(row), ProductInfo)


async def session(db: Executor, session_id: str) -> SessionRow | None:
    row = await db.fetchrow(_SESSION_SQL + "WHERE s.id = $1", session_id)
    return None if row is None else msgspec.convert(dict(row), SessionRow)


async def live_sessions(db: Executor) -> list[SessionRow]:
    rows = await db.fetch(_SESSION_SQL + "WHERE s.status = 'live'")
    return msgspec.convert([dict(r) for r in rows], list[SessionRow])


async def viewers(db: Executor, users: list[str]) -> dict[str, ViewerRow]:
    """Each viewer's age flag, settings and stored interest profile, in one statement (a
    user never seen is absent)."""
    rows = await db.fetch(
        "SELECT u.id, u.minor, u.settings, p.profile FROM users u "
        "LEFT JOIN interest_profiles p ON p.user_id = u.id WHERE u.id = ANY($1::text[])",
        users,
    )
    return {r["id"]: msgspec.convert(dict(r), ViewerRow) for r in rows}


async def save_profiles(db: Executor, rows: list[tuple[str, dict[str, Any]]]) -> None:
    """Write (user, profile) rows, at most PROFILE_SAVE_CHUNK per call."""
    await db.executemany(
        "INSERT INTO interest_profiles (user_id, profile) VALUES ($1, $2) "
        "ON CONFLICT (user_id) DO UPDATE SET profile = $2, updated_at = now()",
        rows,
    )


async def set_personalization(db: Executor, who: Identity, on: bool) -> None:
    await upsert_user(db, who.sub, who.name, who.role, who.minor)
    await db.execute(
        "UPDATE users SET settings = settings || jsonb_build_object('personalization', $2::bool) "
        "WHERE id = $1",
        who.sub,
        on,
    )


async def erase_profile(db: Executor, user: str) -> bool:
    """Delete a viewer's stored profile; True when there was one."""
    result: str = await db.execute("DELETE FROM interest_profiles WHERE user_id = $1", user)
    return not result.endswith(" 0")


async def user(db: Executor, user_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT id, name, role, minor, settings, first_seen, last_seen FROM users WHERE id = $1",
        user_id,
    )
    return row


async def stored_profile(db: Executor, user: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT profile, updated_at FROM interest_profiles WHERE user_id = $1", user
    )
    return row


async def chat_of(db: Executor, user: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        'SELECT session, "offset", text, state, at FROM room_events '
        "WHERE author = $1 AND type = 'chat' ORDER BY at",
        user,
    )
    return rows


async def creator_counts(db: Executor, creator: str) -> CreatorCounts:
    row = await db.fetchrow(
        """
        SELECT
          (SELECT count(DISTINCT author) FROM room_events e JOIN sessions s ON s.id = e.session
             WHERE s.creator = $1 AND e.type = 'chat') AS chatters,
          (SELECT count(*) FROM room_events e JOIN sessions s ON s.id = e.session
             WHERE s.creator = $1 AND e.type = 'chat') AS messages,
          (SELECT count(*) FROM room_events e JOIN sessions s ON s.id = e.session
             WHERE s.creator = $1 AND e.type = 'chat' AND e.state = 'removed') AS removed,
          (SELECT count(*) FROM held_messages h JOIN sessions s ON s.id = h.session
             WHERE s.creator = $1) AS held,
          (SELECT count(DISTINCT o.user_id) FROM orders o JOIN offers f ON f.id = o.offer
             JOIN sessions s ON s.id = f.session WHERE s.creator = $1
             AND o.status IN ('reserved', 'paid')) AS buyers,
          (SELECT count(*) FROM orders o JOIN offers f ON f.id = o.offer
             JOIN sessions s ON s.id = f.session WHERE s.creator = $1
             AND o.status IN ('paid', 'cancelled', 'expired')) AS settled,
          (SELECT count(*) FROM orders o JOIN offers f ON f.id = o.offer
             JOIN sessions s ON s.id = f.session WHERE s.creator = $1
             AND o.status = 'paid') AS paid,
          (SELECT coalesce(sum(like_total), 0)::bigint FROM sessions WHERE creator = $1) AS likes
        """,
        creator,
    )
    return msgspec.convert(dict(row), CreatorCounts)


async def session_times(db: Executor, creator: str) -> list[SessionTimes]:
    """Scheduled and actual start of the creator's sessions that had both."""
    rows = await db.fetch(
        "SELECT scheduled_at, started_at FROM sessions WHERE creator = $1 "
        "AND scheduled_at IS NOT NULL AND started_at IS NOT NULL",
        creator,
    )
    return msgspec.convert([dict(r) for r in rows], list[SessionTimes])
