"""Users written in groups against real PostgreSQL: every `add` returns once its row is
committed, one batch may name the same user twice (the latest row wins), `close` writes what
is still queued and refuses what comes after."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from livecart.catalog.store import UserRow, UserWriter


def prefix() -> str:
    return f"uw-{secrets.token_hex(4)}-"


async def rows(pool: asyncpg.Pool, start: str) -> dict[str, tuple[str, str, bool]]:
    found = await pool.fetch(
        "SELECT id, name, role, minor FROM users WHERE id LIKE $1 || '%'", start
    )
    return {r["id"]: (r["name"], r["role"], r["minor"]) for r in found}


async def test_concurrent_adds_are_committed_when_they_return(pool: asyncpg.Pool) -> None:
    p = prefix()
    writer = UserWriter(pool)
    writer.start()
    try:
        many = [UserRow(f"{p}{i}", f"name{i}", "viewer", i % 5 == 0) for i in range(60)]
        twice = f"{p}twice"
        first = UserRow(twice, "old name", "viewer", False)
        latest = UserRow(twice, "new name", "creator", True)
        seen_after_add: dict[str, tuple[str, str, bool] | None] = {}

        async def add_then_read(row: UserRow) -> None:
            await writer.add(row)
            # Read on another connection at once: the row must already be committed.
            got = await pool.fetchrow("SELECT name, role, minor FROM users WHERE id = $1", row.id)
            if row is not first:  # the same batch may already hold the later row
                seen_after_add[row.id] = None if got is None else tuple(got)
            else:
                assert got is not None, "the user's row is committed when add returns"

        await asyncio.gather(
            *(add_then_read(r) for r in many[:30]),
            add_then_read(first),
            *(add_then_read(r) for r in many[30:]),
            add_then_read(latest),
        )
        for row in many:
            assert seen_after_add[row.id] == (row.name, row.role, row.minor)
        assert seen_after_add[twice] == ("new name", "creator", True)
        stored = await rows(pool, p)
        assert len(stored) == 61
        assert stored[twice] == ("new name", "creator", True), "the latest row wins"
        for row in many:
            assert stored[row.id] == (row.name, row.role, row.minor)
    finally:
        await writer.close()


async def test_each_awaited_add_is_visible_right_after(pool: asyncpg.Pool) -> None:
    p = prefix()
    writer = UserWriter(pool)
    writer.start()
    try:
        for i in range(10):
            row = UserRow(f"{p}{i % 3}", f"round{i}", "viewer", i % 2 == 1)
            await writer.add(row)
            got = await pool.fetchrow("SELECT name, minor FROM users WHERE id = $1", row.id)
            assert got is not None and (got["name"], got["minor"]) == (row.name, row.minor), i
        stored = await rows(pool, p)
        assert stored == {
            f"{p}0": ("round9", "viewer", True),
            f"{p}1": ("round7", "viewer", True),
            f"{p}2": ("round8", "viewer", False),
        }
    finally:
        await writer.close()


async def test_a_later_add_updates_a_user_and_keeps_first_seen(pool: asyncpg.Pool) -> None:
    p = prefix()
    writer = UserWriter(pool)
    writer.start()
    try:
        await writer.add(UserRow(f"{p}u", "before", "viewer", True))
        before = await pool.fetchrow(
            "SELECT first_seen, last_seen FROM users WHERE id = $1", f"{p}u"
        )
        await asyncio.sleep(0.01)
        await writer.add(UserRow(f"{p}u", "after", "moderator", False))
        after = await pool.fetchrow(
            "SELECT name, role, minor, first_seen, last_seen FROM users WHERE id = $1", f"{p}u"
        )
        assert (after["name"], after["role"], after["minor"]) == ("after", "moderator", False)
        assert after["first_seen"] == before["first_seen"]
        assert after["last_seen"] > before["last_seen"]
    finally:
        await writer.close()


async def test_close_writes_what_is_queued_then_refuses_adds(pool: asyncpg.Pool) -> None:
    p = prefix()
    writer = UserWriter(pool)
    writer.start()
    queued = [
        asyncio.ensure_future(writer.add(UserRow(f"{p}{i}", f"n{i}", "viewer", False)))
        for i in range(25)
    ]
    await asyncio.sleep(0)  # every add is queued, none is committed yet
    assert not any(f.done() for f in queued)
    await writer.close()
    assert all(f.done() and f.exception() is None for f in queued), "close waits for them"
    stored = await rows(pool, p)
    assert stored == {f"{p}{i}": (f"n{i}", "viewer", False) for i in range(25)}
    with pytest.raises(RuntimeError, match="closed"):
        await writer.add(UserRow(f"{p}late", "late", "viewer", False))
    assert f"{p}late" not in await rows(pool, p)


async def test_a_failed_batch_fails_its_adds_and_the_writer_goes_on(pool: asyncpg.Pool) -> None:
    p = prefix()
    writer = UserWriter(pool)
    writer.start()
    try:
        bad = UserRow(f"{p}bad", None, "viewer", False)  # type: ignore[arg-type]
        with pytest.raises(asyncpg.NotNullViolationError):
            await writer.add(bad)
        await writer.add(UserRow(f"{p}good", "good", "viewer", False))
        assert await rows(pool, p) == {f"{p}good": ("good", "viewer", False)}
    finally:
        await writer.close()


async def test_add_user_answers_when_the_platform_first_saw_the_user(pool: asyncpg.Pool) -> None:
    """Moderation's first-seen time comes back with the write (no query of its own): the
    stored `first_seen`, kept from the first visit, for each row of a batch (even one user
    named twice in it)."""
    p = prefix()
    old = f"{p}old"
    await pool.execute(
        "INSERT INTO users (id, name, role, first_seen) "
        "VALUES ($1, 'old', 'viewer', now() - interval '3 days')",
        old,
    )
    writer = UserWriter(pool)
    writer.start()
    try:
        new = UserRow(f"{p}new", "new", "viewer", False)
        again = UserRow(old, "old again", "viewer", False)
        seen = await asyncio.gather(
            writer.add_user(new),
            writer.add_user(UserRow(old, "old", "viewer", False)),
            writer.add_user(again),
        )
        stored = {
            r["id"]: r["s"]
            for r in await pool.fetch(
                "SELECT id, extract(epoch FROM first_seen)::float8 AS s FROM users "
                "WHERE id LIKE $1 || '%'",
                p,
            )
        }
        assert seen == [stored[new.id], stored[old], stored[old]]
        assert stored[new.id] - stored[old] > 2 * 86400  # the old visit is kept
    finally:
        await writer.close()
