"""Group-committed writers against real PostgreSQL isolate a failing row (SPEC §10, "One bad
row never fails other people's writes"): when PostgreSQL (or the driver) refuses one row of a
batch, the other rows commit and only the failing row's `add` raises.

The rows here bypass the decoders on purpose (U+0000 in text, a number past bigint): the
writers must hold by themselves, whatever reaches them.
"""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from livecart.catalog.store import UserRow, UserWriter
from livecart.realtime.archive import ArchiveRow, ArchiveWriter
from livecart.runtime.db import GroupWriter, row_error


def _body(session: str, text: str) -> bytes:
    return b'{"type":"chat","session":"' + session.encode() + b'","text":"' + text.encode() + b'"}'


async def test_archive_batch_with_a_nul_row_commits_the_others(pool: asyncpg.Pool) -> None:
    writer = ArchiveWriter(pool)
    writer.start()
    sessions = [f"bi-{secrets.token_hex(4)}-{i}" for i in range(4)]
    try:
        good = [
            ArchiveRow(s, n, "chat", f"u{n}", f"hello {n}", _body(s, f"hello {n}"))
            for s in sessions
            for n in range(1, 26)
        ]
        bad_nul = ArchiveRow(sessions[0], 99, "chat", "mallory", "x\x00y", _body(sessions[0], "x"))
        bad_range = ArchiveRow(
            sessions[1], 2**64, "chat", "mallory", "big", _body(sessions[1], "b")
        )
        rows = [*good[:50], bad_nul, *good[50:80], bad_range, *good[80:]]
        # All added at once: they land in one batch (the writer takes up to 2,000).
        results = await asyncio.gather(*(writer.append(r) for r in rows), return_exceptions=True)
        failed = [r for r, res in zip(rows, results, strict=True) if isinstance(res, BaseException)]
        assert failed == [bad_nul, bad_range], results
        stored = await pool.fetch(
            'SELECT session, "offset", text FROM room_events WHERE session = ANY($1::text[])',
            sessions,
        )
        assert sorted((r["session"], r["offset"], r["text"]) for r in stored) == sorted(
            (r.session, r.offset, r.text) for r in good
        )
        # The writer goes on: later rows commit.
        later = ArchiveRow(sessions[0], 26, "chat", "u26", "later", _body(sessions[0], "later"))
        await writer.append(later)
        assert (
            await pool.fetchval(
                'SELECT text FROM room_events WHERE session = $1 AND "offset" = 26', sessions[0]
            )
            == "later"
        )
    finally:
        await writer.close()


async def test_user_batch_with_a_nul_name_commits_the_others(pool: asyncpg.Pool) -> None:
    p = f"bu-{secrets.token_hex(4)}-"
    writer = UserWriter(pool)
    writer.start()
    try:
        good = [UserRow(f"{p}{i}", f"name {i}", "viewer", False) for i in range(40)]
        bad = UserRow(f"{p}bad", "evil\x00name", "viewer", False)
        rows = [*good[:20], bad, *good[20:]]
        results = await asyncio.gather(*(writer.add(r) for r in rows), return_exceptions=True)
        failed = [r for r, res in zip(rows, results, strict=True) if isinstance(res, BaseException)]
        assert failed == [bad], results
        stored = await pool.fetch("SELECT id, name FROM users WHERE id LIKE $1 || '%'", p)
        assert {r["id"]: r["name"] for r in stored} == {u.id: u.name for u in good}
    finally:
        await writer.close()


async def test_a_failure_not_caused_by_a_row_fails_the_batch_once() -> None:
    """The database unreachable is no reason to split: every add fails, after one attempt."""
    calls: list[int] = []

    async def write(items: list[int]) -> None:
        calls.append(len(items))
        raise ConnectionResetError("gone")

    writer: GroupWriter[int] = GroupWriter(write, name="test-writer")
    writer.start()
    try:
        results = await asyncio.gather(*(writer.add(i) for i in range(10)), return_exceptions=True)
        assert all(isinstance(r, ConnectionResetError) for r in results), results
        assert calls == [10]
    finally:
        await writer.close()


async def test_rows_failing_in_a_batch_are_found_by_halving() -> None:
    written: list[list[int]] = []

    async def write(items: list[int]) -> None:
        if any(i % 7 == 3 for i in items):
            raise ValueError("a bad row")
        written.append(items)

    writer: GroupWriter[int] = GroupWriter(write, name="test-writer")
    writer.start()
    try:
        results = await asyncio.gather(*(writer.add(i) for i in range(64)), return_exceptions=True)
        bad = {i for i, r in enumerate(results) if isinstance(r, ValueError)}
        assert bad == {i for i in range(64) if i % 7 == 3}
        assert sorted(i for batch in written for i in batch) == [i for i in range(64) if i % 7 != 3]
    finally:
        await writer.close()


@pytest.mark.parametrize(
    ("exc", "isolate"),
    [
        (asyncpg.exceptions.CharacterNotInRepertoireError("nul"), True),
        (asyncpg.exceptions.NumericValueOutOfRangeError("range"), True),
        (asyncpg.exceptions.CheckViolationError("check"), True),
        (asyncpg.exceptions.UniqueViolationError("unique"), True),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), True),
        (OverflowError("int too big"), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), False),
        (asyncpg.exceptions.QueryCanceledError("timeout"), False),
        (ConnectionResetError("reset"), False),
        (TimeoutError(), False),
    ],
)
def test_which_errors_may_come_from_a_row(exc: BaseException, isolate: bool) -> None:
    assert row_error(exc) is isolate
