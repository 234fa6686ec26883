"""The review queue's rules as production keeps them: in PostgreSQL (`chat.store`),
one statement per claim or decision, so they hold across nodes. A claim is a lease; a held
message is decided exactly once, never over someone else's live claim; reports of one
message make one queue item."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from msgspec import Struct

from livecart.auth import Identity
from livecart.chat import store as store
from livecart.chat.model import ModerationPorts, RoomView
from livecart.chat.review_queue import ReviewQueue
from livecart.protocol import ErrorMsg, Failure

LEASE_S = 60.0


async def _held(pool: asyncpg.Pool, session: str | None = None) -> tuple[str, str]:
    """A fresh held message: (session, item id)."""
    session = session or f"s-{secrets.token_hex(4)}"
    item = f"held-{secrets.token_hex(6)}"
    await store.hold(
        pool,
        id=item,
        session=session,
        author="author",
        name="Author",
        text="dm me",
        reason='blocked term "dm me"',
        ref="r1",
    )
    return session, item


async def test_a_claim_is_a_lease(pool: asyncpg.Pool) -> None:
    session, item = await _held(pool)
    assert await store.claim(pool, session, item, "m1", LEASE_S) is not None
    assert await store.claim(pool, session, item, "m2", LEASE_S) is None  # m1 holds it
    row = await store.held_item(pool, item)
    assert row is not None and row["claimed_by"] == "m1"
    assert await store.claim(pool, session, item, "m1", LEASE_S) is not None  # renewed
    # The lease lapses: another moderator may claim it.
    await pool.execute(
        "UPDATE held_messages SET claimed_until = now() - interval '1 second' WHERE id = $1", item
    )
    taken = await store.claim(pool, session, item, "m2", LEASE_S)
    assert taken is not None and taken["claimed_by"] == "m2"


async def test_a_held_message_is_decided_exactly_once(pool: asyncpg.Pool) -> None:
    session, item = await _held(pool)
    first = await store.decide(pool, session, item, "m1", "approved")
    assert first is not None and (first["status"], first["decided_by"]) == ("approved", "m1")
    assert await store.decide(pool, session, item, "m2", "approved") is None
    assert await store.decide(pool, session, item, "m2", "rejected") is None
    assert await store.claim(pool, session, item, "m2", LEASE_S) is None
    row = await store.held_item(pool, item)
    assert row is not None
    assert (row["status"], row["decided_by"]) == ("approved", "m1")
    assert row["decided_at"] is not None


async def test_a_decision_respects_someone_elses_claim(pool: asyncpg.Pool) -> None:
    session, item = await _held(pool)
    assert await store.claim(pool, session, item, "m1", LEASE_S) is not None
    assert await store.decide(pool, session, item, "m2", "rejected") is None
    decided = await store.decide(pool, session, item, "m1", "rejected")
    assert decided is not None and decided["status"] == "rejected"


async def test_unknown_items_and_other_sessions_are_not_found(pool: asyncpg.Pool) -> None:
    session, item = await _held(pool)
    assert await store.decide(pool, session, "held-nope", "m", "approved") is None
    assert await store.claim(pool, session, "held-nope", "m", LEASE_S) is None
    assert await store.held_item(pool, "held-nope") is None
    # The id of a message held in another session decides nothing here.
    assert await store.claim(pool, "s-other", item, "m", LEASE_S) is None
    assert await store.decide(pool, "s-other", item, "m", "approved") is None
    row = await store.held_item(pool, item)
    assert row is not None and row["status"] == "held" and row["claimed_by"] is None


@pytest.mark.parametrize("round_", range(3))
async def test_at_most_one_of_racing_decisions_succeeds(pool: asyncpg.Pool, round_: int) -> None:
    session, item = await _held(pool)
    calls = [
        store.decide(pool, session, item, f"m{i}", "approved" if i % 2 else "rejected")
        for i in range(8)
    ] + [store.claim(pool, session, item, f"c{i}", LEASE_S) for i in range(4)]
    results = await asyncio.gather(*calls)
    decided = [r for r in results[:8] if r is not None]
    claimed = [r for r in results[8:] if r is not None]
    row = await store.held_item(pool, item)
    assert row is not None
    # Exactly one of the twelve wins: a decision ends the item, a claim locks out the rest.
    assert len(decided) + len(claimed) == 1
    if decided:
        assert (row["status"], row["decided_by"]) == (
            decided[0]["status"],
            decided[0]["decided_by"],
        )
    else:
        # A claim landed before every decision: the claimant holds it, still undecided.
        assert (row["status"], row["claimed_by"]) == ("held", claimed[0]["claimed_by"])


async def test_reports_of_one_message_make_one_item(pool: asyncpg.Pool) -> None:
    session = f"s-{secrets.token_hex(4)}"
    await pool.execute(
        "INSERT INTO sessions (id, creator, title) VALUES ($1, 'cr', 'reports')", session
    )
    await pool.execute(
        'INSERT INTO room_events (session, "offset", type, author, text, body) '
        "VALUES ($1, 7, 'chat', 'author', 'buy here', '{}')",
        session,
    )
    for reporter in ["a", "b", "a", "author", "c"]:  # a twice, and the author: ignored
        assert await store.report(pool, session, 7, reporter, "spam")
    assert await store.report(pool, session, 7, "d", "scam")
    assert not await store.report(pool, session, 8, "d", "scam")  # no message there
    items = await store.queue(pool, session)
    assert len(items) == 1
    item = items[0]
    assert (item["id"], item["kind"], item["offset"]) == ("report:7", "report", 7)
    assert item["reports"] == 4
    assert sorted(item["reasons"]) == ["scam", "spam"]


# --------------------------------------------------------------------------- the service's side


@dataclass(frozen=True)
class _Room:
    id: str
    creator: str = "cr"
    slow: int = 0
    shield: bool = False


def _unused(*args: Any, **kw: Any) -> Any:
    raise AssertionError("not reached by these decisions")


def _queue(pool: asyncpg.Pool, told: list[tuple[str, Struct]]) -> ReviewQueue:
    async def audit(who: Identity, room: RoomView, action: str, **kw: Any) -> None:
        await store.audit(
            pool, creator=room.creator, session=room.id, actor=who.sub, action=action, **kw
        )

    ports = ModerationPorts(
        room=_unused,
        append=_unused,
        redact=_unused,
        tell=lambda user, message: told.append((user, message)),
        acted=_unused,
    )
    return ReviewQueue(pool, ports, require_above=_unused, announce_removal=_unused, audit=audit)


async def test_refusals_say_who_holds_or_decided_the_message(pool: asyncpg.Pool) -> None:
    told: list[tuple[str, Struct]] = []
    queue = _queue(pool, told)
    session, item = await _held(pool)
    room = _Room(session)
    m1 = Identity("m1", "M1", "moderator")
    m2 = Identity("m2", "M2", "moderator")
    assert await queue.claim(m1, room, item)  # the lease's end, ISO 8601
    with pytest.raises(Failure) as refused:
        await queue.decide(m2, room, item, "reject", None)
    assert refused.value.code == "forbidden"
    assert refused.value.message.startswith("claimed by m1 until ")
    await queue.decide(m1, room, item, "reject", "spam")
    assert told == [("author", ErrorMsg("blocked", "rejected by a moderator", "r1", None, session))]
    with pytest.raises(Failure) as refused:
        await queue.decide(m2, room, item, "approve", None)
    assert (refused.value.code, refused.value.message) == ("forbidden", "already rejected by m1")
    with pytest.raises(Failure) as refused:
        await queue.decide(m1, _Room("s-other"), item, "approve", None)
    assert refused.value.code == "not_found"
    with pytest.raises(Failure) as refused:
        await queue.claim(m1, room, "report:5")
    assert refused.value.code == "bad_frame"
    with pytest.raises(Failure) as refused:
        await queue.decide(m1, room, "report:x5", "approve", None)
    assert refused.value.code == "not_found"
    audit = await store.audit_log(pool, "cr", 10)
    assert [(a["action"], a["actor"], a["target"]) for a in audit if a["session"] == session] == [
        ("reject", "m1", "author")
    ]
