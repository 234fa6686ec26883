"""Moderation state in PostgreSQL: audit log, mutes, blocked terms, channel moderators, the
held-message queue and reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from ..runtime.db import Connection, Executor


async def audit(
    db: Executor,
    *,
    creator: str,
    session: str | None,
    actor: str,
    action: str,
    target: str | None = None,
    offset: int | None = None,
    seconds: int | None = None,
    reason: str | None = None,
    original_text: str | None = None,
) -> None:
    await db.execute(
        "INSERT INTO moderation_actions "
        '(creator, session, actor, action, target, "offset", seconds, reason, original_text) '
        "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
        creator,
        session,
        actor,
        action,
        target,
        offset,
        seconds,
        reason,
        original_text,
    )


async def audit_log(db: Executor, creator: str, limit: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        'SELECT id, session, actor, action, target, "offset", seconds, reason, original_text, at '
        "FROM moderation_actions WHERE creator = $1 ORDER BY id DESC LIMIT $2",
        creator,
        limit,
    )
    return [{**dict(r), "at": r["at"].isoformat()} for r in rows]


async def set_mute(
    db: Executor, creator: str, user: str, kind: str, until: datetime | None
) -> None:
    await db.execute(
        "INSERT INTO mutes (creator, user_id, kind, until) VALUES ($1,$2,$3,$4) "
        "ON CONFLICT (creator, user_id) DO UPDATE SET kind = $3, until = $4",
        creator,
        user,
        kind,
        until,
    )


async def clear_mute(db: Executor, creator: str, user: str) -> bool:
    result: str = await db.execute(
        "DELETE FROM mutes WHERE creator = $1 AND user_id = $2", creator, user
    )
    return not result.endswith(" 0")


async def active_mutes(db: Executor) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT creator, user_id, kind, until FROM mutes WHERE until IS NULL OR until > now()"
    )
    return rows


async def terms(db: Executor) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT scope, term, action FROM blocked_terms ORDER BY scope, term"
    )
    return rows


async def add_term(db: Executor, scope: str, term: str, action: str, by: str) -> None:
    await db.execute(
        "INSERT INTO blocked_terms (scope, term, action, added_by) VALUES ($1,$2,$3,$4) "
        "ON CONFLICT (scope, term) DO UPDATE SET action = $3, added_by = $4, added_at = now()",
        scope,
        term,
        action,
        by,
    )


async def remove_term(db: Executor, scope: str, term: str) -> bool:
    result: str = await db.execute(
        "DELETE FROM blocked_terms WHERE scope = $1 AND term = $2", scope, term
    )
    return not result.endswith(" 0")


async def channel_moderators(db: Executor, creator: str) -> set[str]:
    rows = await db.fetch("SELECT moderator FROM creator_moderators WHERE creator = $1", creator)
    return {r["moderator"] for r in rows}


async def appoint(db: Executor, creator: str, moderator: str) -> None:
    await db.execute(
        "INSERT INTO creator_moderators (creator, moderator) VALUES ($1,$2) ON CONFLICT DO NOTHING",
        creator,
        moderator,
    )


async def dismiss(db: Executor, creator: str, moderator: str) -> bool:
    result: str = await db.execute(
        "DELETE FROM creator_moderators WHERE creator = $1 AND moderator = $2", creator, moderator
    )
    return not result.endswith(" 0")


# ---------------------------------------------------------------- held messages

REPORT_ITEM = "report:"  # queue id prefix of a reported (visible) message: report:<offset>
DISMISS_REPORTS = "dismiss_reports"  # audit action that closes a reported message's item


async def hold(
    db: Executor,
    *,
    id: str,
    session: str,
    author: str,
    name: str,
    text: str,
    reason: str,
    ref: str,
) -> None:
    await db.execute(
        "INSERT INTO held_messages (id, session, author, name, text, reason, ref) "
        "VALUES ($1,$2,$3,$4,$5,$6,$7)",
        id,
        session,
        author,
        name,
        text,
        reason,
        ref,
    )


_FREE = "(claimed_by IS NULL OR claimed_until < now() OR claimed_by = $2)"


async def claim(
    db: Executor, session: str, item: str, moderator: str, lease_s: float
) -> asyncpg.Record | None:
    """Claim a held message of `session` for `lease_s`; None when it is not in that session,
    decided, or claimed by another."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"UPDATE held_messages SET claimed_by = $2, "
        f"claimed_until = now() + make_interval(secs => $3) "
        f"WHERE id = $1 AND session = $4 AND status = 'held' AND {_FREE} RETURNING *",
        item,
        moderator,
        lease_s,
        session,
    )
    return row


async def decide(
    db: Executor, session: str, item: str, moderator: str, status: str
) -> asyncpg.Record | None:
    """Approve or reject a held message of `session` exactly once: None when it is not in that
    session, already decided, or claimed by another."""
    row: asyncpg.Record | None = await db.fetchrow(
        f"UPDATE held_messages SET status = $3, decided_by = $2, decided_at = now() "
        f"WHERE id = $1 AND session = $4 AND status = 'held' AND {_FREE} RETURNING *",
        item,
        moderator,
        status,
        session,
    )
    return row


async def set_held_offset(db: Executor, item: str, offset: int) -> None:
    await db.execute('UPDATE held_messages SET "offset" = $2 WHERE id = $1', item, offset)


async def held_item(db: Executor, item: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT * FROM held_messages WHERE id = $1", item
    )
    return row


async def queue(db: Executor, session: str) -> list[dict[str, Any]]:
    held = await db.fetch(
        "SELECT id, author, name, text, reason, claimed_by, claimed_until, at FROM held_messages "
        "WHERE session = $1 AND status = 'held' ORDER BY at",
        session,
    )
    reported = await db.fetch(
        'SELECT r."offset", count(*) AS reports, array_agg(DISTINCT r.reason) AS reasons, '
        "min(r.at) AS at, e.author, e.text, e.state FROM reports r "
        'JOIN room_events e ON e.session = r.session AND e."offset" = r."offset" '
        "WHERE r.session = $1 AND e.state = 'visible' AND NOT EXISTS ("
        "SELECT 1 FROM moderation_actions m WHERE m.creator = (SELECT creator FROM sessions "
        "WHERE id = $1) AND m.session = r.session "
        f'AND m."offset" = r."offset" AND m.action = \'{DISMISS_REPORTS}\') '
        'GROUP BY r."offset", e.author, e.text, e.state ORDER BY min(r.at)',
        session,
    )
    now = datetime.now().astimezone()
    items: list[dict[str, Any]] = [
        {
            "id": r["id"],
            "kind": "held",
            "author": r["author"],
            "name": r["name"],
            "text": r["text"],
            "reasons": [r["reason"]],
            "reports": 0,
            "status": "held",
            "claimed_by": r["claimed_by"]
            if r["claimed_until"] is not None and r["claimed_until"] > now
            else None,
            "at": r["at"].isoformat(),
        }
        for r in held
    ]
    items += [
        {
            "id": f"report:{r['offset']}",
            "kind": "report",
            "offset": r["offset"],
            "author": r["author"],
            "text": r["text"],
            "reasons": list(r["reasons"]),
            "reports": r["reports"],
            "status": "reported",
            "claimed_by": None,
            "at": r["at"].isoformat(),
        }
        for r in reported
    ]
    return items


async def report(db: Executor, session: str, offset: int, reporter: str, reason: str) -> bool:
    """Record a report; False when the message does not exist (or is not chat). An author
    reporting their own message is ignored."""
    author = await db.fetchval(
        "SELECT coalesce(author, '') FROM room_events "
        "WHERE session = $1 AND \"offset\" = $2 AND type = 'chat'",
        session,
        offset,
    )
    if author is None:
        return False
    if author == reporter:
        return True
    await db.execute(
        'INSERT INTO reports (session, "offset", reporter, reason) VALUES ($1,$2,$3,$4) '
        "ON CONFLICT DO NOTHING",
        session,
        offset,
        reporter,
        reason,
    )
    return True


async def set_room_rules(
    db: Executor, session: str, *, slow: int | None = None, shield: bool | None = None
) -> None:
    if slow is not None:
        await db.execute("UPDATE sessions SET slow_seconds = $2 WHERE id = $1", session, slow)
    if shield is not None:
        await db.execute("UPDATE sessions SET shield = $2 WHERE id = $1", session, shield)


async def first_seen(db: Executor, user: str) -> float | None:
    value = await db.fetchval("SELECT first_seen FROM users WHERE id = $1", user)
    return None if value is None else float(value.timestamp())


async def decide_reported(
    conn: Connection, session: str, offset: int, moderator: str, approve: bool
) -> tuple[str, str | None, str | None]:
    """Decide a reported message exactly once: approve dismisses its reports (the message
    stays), reject removes it. Concurrent decisions are serialised on the message's row.
    Returns (outcome, author, text) with outcome `done`, `not_found` or `already <what>`."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT author, text, state FROM room_events "
            "WHERE session = $1 AND \"offset\" = $2 AND type = 'chat' FOR UPDATE",
            session,
            offset,
        )
        if row is None or row["state"] not in ("visible", "removed"):
            return "not_found", None, None
        if row["state"] == "removed":
            return "already removed", row["author"], None
        has_reports = await conn.fetchval(
            'SELECT 1 FROM reports WHERE session = $1 AND "offset" = $2 LIMIT 1', session, offset
        )
        if has_reports is None:
            return "not_found", None, None
        dismissed = await conn.fetchval(
            "SELECT actor FROM moderation_actions WHERE creator = (SELECT creator FROM sessions "
            'WHERE id = $1) AND session = $1 AND "offset" = $2 AND action = $3 LIMIT 1',
            session,
            offset,
            DISMISS_REPORTS,
        )
        if dismissed is not None:
            return f"already approved by {dismissed}", row["author"], row["text"]
        if approve:
            await conn.execute(
                "INSERT INTO moderation_actions (creator, session, actor, action, target, "
                '"offset", original_text) SELECT creator, $1, $3, $4, $5, $2, $6 '
                "FROM sessions WHERE id = $1",
                session,
                offset,
                moderator,
                DISMISS_REPORTS,
                row["author"],
                row["text"],
            )
        else:
            await conn.execute(
                "UPDATE room_events SET state = 'removed' WHERE session = $1 AND \"offset\" = $2",
                session,
                offset,
            )
        return "done", row["author"], row["text"]


async def allowed_domains(db: Executor) -> list[Any]:
    """Creators' link allow-lists (kept in the creator's user settings)."""
    rows: list[Any] = await db.fetch(
        "SELECT id, settings->'allowed_domains' AS domains FROM users "
        "WHERE settings ? 'allowed_domains'"
    )
    return rows


async def set_allowed_domains(db: Executor, creator: str, domains: list[str]) -> None:
    await db.execute(
        "INSERT INTO users (id, name, role) VALUES ($1, $1, 'creator') ON CONFLICT DO NOTHING",
        creator,
    )
    await db.execute(
        "UPDATE users SET settings = settings || jsonb_build_object('allowed_domains', $2::jsonb) "
        "WHERE id = $1",
        creator,
        domains,
    )
