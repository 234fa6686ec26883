"""The durable room log (`room_events`): group-committed appends, timeline, tombstones."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, NamedTuple

import asyncpg

log = logging.getLogger("livecart.store")


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


class ArchiveWriter:
    """Writes room events in batches: every append waits for the commit of its batch, and
    one batch is in flight at a time, so a busy room costs one round trip per batch."""

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 2000) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._pending: list[tuple[ArchiveRow, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="archive-writer")

    async def append(self, row: ArchiveRow) -> None:
        if self._closing:
            raise RuntimeError("archive writer is closed")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, fut))
        self._wakeup.set()
        await fut

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    await self._write([row for row, _ in batch])
                except Exception as exc:
                    log.error("room archive write failed: %s", exc)
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
            if self._closing:
                return

    async def _write(self, rows: list[ArchiveRow]) -> None:
        cols: list[list[Any]] = [[], [], [], [], [], []]
        for r in rows:
            cols[0].append(r.session)
            cols[1].append(r.offset)
            cols[2].append(r.type)
            cols[3].append(r.author)
            cols[4].append(r.text)
            cols[5].append(r.body.decode())
        await self._pool.execute(_INSERT, *cols)

    async def close(self) -> None:
        """Flush what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()


async def max_offset(pool: asyncpg.Pool, session: str) -> int:
    value = await pool.fetchval(
        'SELECT coalesce(max("offset"), 0) FROM room_events WHERE session = $1', session
    )
    return int(value)


async def timeline(
    pool: asyncpg.Pool, session: str, since: int, limit: int
) -> list[dict[str, Any]]:
    """Room events after `since`, oldest first; removed chat comes back as a tombstone."""
    rows = await pool.fetch(
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


async def remove_chat(
    conn: asyncpg.Connection | asyncpg.Pool, session: str, offset: int
) -> tuple[str, str] | None:
    """Mark a chat message removed; returns (author, text) of a message that was visible."""
    row = await conn.fetchrow(
        "UPDATE room_events SET state = 'removed' "
        "WHERE session = $1 AND \"offset\" = $2 AND type = 'chat' AND state = 'visible' "
        "RETURNING author, text",
        session,
        offset,
    )
    return None if row is None else (row["author"], row["text"])


async def recent_chat(
    pool: asyncpg.Pool, session: str, below: int, limit: int
) -> list[tuple[int, bytes]]:
    """The newest `limit` chat events with offset below `below`, oldest first, as wire bodies
    without offset (a removed message as its tombstone)."""
    rows = await pool.fetch(
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
