"""The durable room log (`room_events`): group-committed appends, timeline, tombstones."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from ..runtime.db import Executor, GroupWriter


class ArchiveRow(NamedTuple):
    session: str
    offset: int
    type: str
    author: str | None
    text: str | None
    body: bytes  # the encoded event (without offset)


_INSERT = """
INSERT INTO room_events (session, "offset", type, author, text, body)
SELECT s, o, t, a, x, b::jsonb
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])
    AS u(s, o, t, a, x, b)
ON CONFLICT (session, "offset") DO NOTHING
"""


class ArchiveWriter(GroupWriter[ArchiveRow]):
    """Room events, group-committed: a busy room costs one round trip per batch."""

    def __init__(self, db: Executor, *, max_batch: int = 2000) -> None:
        super().__init__(self._write, name="archive-writer", max_batch=max_batch)
        self._db = db

    async def append(self, row: ArchiveRow) -> None:
        await self.add(row)

    async def _write(self, rows: list[ArchiveRow]) -> None:
        cols: list[list[Any]] = [[], [], [], [], [], []]
        for r in rows:
            cols[0].append(r.session)
            cols[1].append(r.offset)
            cols[2].append(r.type)
            cols[3].append(r.author)
            cols[4].append(r.text)
            cols[5].append(r.body.decode())
        await self._db.execute(_INSERT, *cols)


async def max_offset(db: Executor, session: str) -> int:
    value = await db.fetchval(
        'SELECT coalesce(max("offset"), 0) FROM room_events WHERE session = $1', session
    )
    return int(value)


async def timeline(db: Executor, session: str, since: int, limit: int) -> list[dict[str, Any]]:
    """Room events after `since`, oldest first; removed chat comes back as a tombstone."""
    rows = await db.fetch(
        'SELECT "offset", type, state, body FROM room_events '
        'WHERE session = $1 AND "offset" > $2 ORDER BY "offset" LIMIT $3',
        session,
        since,
        limit,
    )
    out: list[dict[str, Any]] = []
    for r in rows:
        if r["type"] == "chat" and r["state"] == "removed":
            out.append({"offset": r["offset"], "type": "chat", "session": session, "removed": True})
        else:
            body = r["body"] if isinstance(r["body"], dict) else json.loads(r["body"])
            out.append({"offset": r["offset"], **body})
    return out


async def remove_chat(db: Executor, session: str, offset: int) -> tuple[str, str] | None:
    """Mark a chat message removed; returns (author, text) of a message that was visible."""
    row = await db.fetchrow(
        "UPDATE room_events SET state = 'removed' "
        "WHERE session = $1 AND \"offset\" = $2 AND type = 'chat' AND state = 'visible' "
        "RETURNING author, text",
        session,
        offset,
    )
    return None if row is None else (row["author"], row["text"])


async def chat_author(db: Executor, session: str, offset: int) -> str | None:
    """Who wrote the chat message at `offset` (None: no such message)."""
    author: str | None = await db.fetchval(
        "SELECT author FROM room_events WHERE session = $1 AND \"offset\" = $2 AND type = 'chat'",
        session,
        offset,
    )
    return author


async def recent_chat(
    db: Executor, session: str, below: int, limit: int
) -> list[tuple[int, bytes]]:
    """The newest `limit` chat events with offset below `below`, oldest first, as wire bodies
    without offset (a removed message as its tombstone)."""
    rows = await db.fetch(
        'SELECT "offset", state, body::text AS body FROM room_events '
        "WHERE session = $1 AND type = 'chat' AND \"offset\" < $2 "
        'ORDER BY "offset" DESC LIMIT $3',
        session,
        below,
        limit,
    )
    out: list[tuple[int, bytes]] = []
    for r in reversed(rows):
        if r["state"] == "removed":
            body = b'{"type":"chat","session":' + json.dumps(session).encode() + b',"removed":true}'
        else:
            body = r["body"].encode()
        out.append((r["offset"], body))
    return out
