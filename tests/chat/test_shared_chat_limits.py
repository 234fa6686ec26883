"""The cluster's per-user chat limits (`SharedChatLimits`: one Lua script for the token bucket,
slow mode and the duplicate window) against a real Redis, as two nodes sharing it: the order
of the checks, exemptions, and that a refused message changes nothing."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from livecart.chat.rules.chat import ChatCandidate, ChatDecision, ChatGuards, limit_chat
from livecart.chat.rules.limits import RatePolicy
from livecart.chat.rules.normalize import normalize
from livecart.chat.shared_limits import SharedChatLimits
from tests.conftest import redis_url_or_skip

pytestmark = pytest.mark.redis

GENEROUS = RatePolicy(rate_per_s=100.0, burst=100)


class Nodes:
    def __init__(self, url: str) -> None:
        self.url = url
        self.namespace = f"t{secrets.token_hex(4)}"
        self.made: list[SharedChatLimits] = []

    def node(self, policy: RatePolicy = GENEROUS, window_s: float = 30.0) -> SharedChatLimits:
        limits = SharedChatLimits(
            self.url,
            policy,
            namespace=self.namespace,
            duplicate_window_s=window_s,
            max_slow_s=3600.0,
        )
        self.made.append(limits)
        return limits

    async def keys(self) -> list[bytes]:
        raw = aioredis.Redis.from_url(self.url)
        try:
            return sorted([k async for k in raw.scan_iter(match=f"lc:{self.namespace}:*")])
        finally:
            await raw.aclose()

    async def close(self) -> None:
        for limits in self.made:
            await limits.close()
        raw = aioredis.Redis.from_url(self.url)
        try:
            keys = [k async for k in raw.scan_iter(match=f"lc:{self.namespace}:*")]
            if keys:
                await raw.delete(*keys)
        finally:
            await raw.aclose()


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    n = Nodes(redis_url_or_skip())
    try:
        yield n
    finally:
        await n.close()


def msg(
    text: str,
    *,
    user: str = "u1",
    session: str = "s1",
    slow: float = 0.0,
    exempt: bool = False,
    outcome: str = "accept",
) -> ChatCandidate:
    normalized = normalize(text)
    decision = {
        "accept": ChatDecision("accept", normalized=normalized),
        "hold": ChatDecision("hold", code="held", reasons=("link",), normalized=normalized),
        "blocked": ChatDecision("reject", code="blocked", normalized=normalized),
    }[outcome]
    return ChatCandidate(user, session, normalized, slow, exempt, decision)


async def answer(limits: SharedChatLimits, candidate: ChatCandidate) -> tuple[str, int | None]:
    decision = await limits.check(candidate)
    assert decision is not None, "Redis answers"
    return decision.code or decision.verdict, decision.retry_after_ms


async def test_a_duplicate_holds_across_nodes_per_user_and_ignores_punctuation(
    nodes: Nodes,
) -> None:
    a, b = nodes.node(), nodes.node()
    assert await answer(a, msg("Is this in stock?")) == ("accept", None)
    assert await answer(b, msg("is   this in STOCK?!")) == ("duplicate", None)
    assert await answer(b, msg("Is this in stock?", user="u2")) == ("accept", None)
    assert await answer(b, msg("Is this in stock?", session="s2")) == ("duplicate", None), (
        "across sessions"
    )
    assert await answer(a, msg("Is the red one in stock?")) == ("accept", None)


async def test_the_duplicate_window_runs_from_the_copy_that_went_through(nodes: Nodes) -> None:
    a, b = nodes.node(window_s=0.6), nodes.node(window_s=0.6)
    assert await answer(a, msg("hello")) == ("accept", None)
    await asyncio.sleep(0.4)
    assert await answer(b, msg("hello")) == ("duplicate", None)  # does not extend the window
    await asyncio.sleep(0.3)
    assert await answer(b, msg("hello")) == ("accept", None)


async def test_a_held_message_charges_the_window_and_a_blocked_one_does_not(nodes: Nodes) -> None:
    a, b = nodes.node(), nodes.node()
    assert await answer(a, msg("check evil.io", outcome="hold")) == ("held", None)
    assert await answer(b, msg("check evil.io")) == ("duplicate", None)
    assert await answer(a, msg("total scam", slow=30, outcome="blocked")) == ("blocked", None)
    # Neither the window nor slow mode was charged by the blocked message.
    assert await answer(b, msg("total scam", slow=30)) == ("accept", None)
    assert (await answer(a, msg("something else", slow=30)))[0] == "slow_mode"


async def test_slow_mode_holds_across_nodes_with_retry_after_and_is_per_session(
    nodes: Nodes,
) -> None:
    a, b = nodes.node(), nodes.node()
    assert await answer(a, msg("first", slow=1.0)) == ("accept", None)
    code, wait_ms = await answer(b, msg("second", slow=1.0))
    assert code == "slow_mode" and wait_ms is not None and 500 < wait_ms <= 1000
    assert await answer(b, msg("elsewhere", slow=1.0, session="s2")) == ("accept", None)
    assert await answer(b, msg("second", slow=1.0, user="u2")) == ("accept", None)
    await asyncio.sleep(wait_ms / 1000)
    assert await answer(b, msg("second", slow=1.0)) == ("accept", None), (
        "waiting retry_after_ms is enough, and the slow-mode refusal did not take the text"
    )


async def test_a_change_of_slow_mode_applies_at_once(nodes: Nodes) -> None:
    a = nodes.node()
    assert await answer(a, msg("one", slow=60)) == ("accept", None)
    code, wait_ms = await answer(a, msg("two", slow=600))
    assert code == "slow_mode" and wait_ms is not None and 595_000 < wait_ms <= 600_000, "longer"
    code, wait_ms = await answer(a, msg("two", slow=5))
    assert code == "slow_mode" and wait_ms is not None and wait_ms <= 5_000, "shorter"
    assert await answer(a, msg("two", slow=0)) == ("accept", None), "off"


async def test_a_message_sent_while_slow_mode_was_off_does_not_start_it(nodes: Nodes) -> None:
    a = nodes.node()
    assert await answer(a, msg("before", slow=0)) == ("accept", None)
    assert await answer(a, msg("after", slow=30)) == ("accept", None)
    assert (await answer(a, msg("again", slow=30)))[0] == "slow_mode"


async def test_slow_mode_comes_before_the_duplicate_and_neither_refusal_charges(
    nodes: Nodes,
) -> None:
    a, b = nodes.node(), nodes.node()
    assert await answer(a, msg("same", slow=0)) == ("accept", None)
    # A duplicate refused while slow mode is on does not start slow mode ...
    assert await answer(b, msg("same", slow=0.5)) == ("duplicate", None)
    assert await answer(b, msg("fresh", slow=0.5)) == ("accept", None)
    # ... and a slow-mode refusal wins over the duplicate and does not take the text.
    assert (await answer(a, msg("same", slow=0.5)))[0] == "slow_mode"
    assert (await answer(a, msg("newer", slow=0.5)))[0] == "slow_mode"
    await asyncio.sleep(0.55)
    assert await answer(b, msg("newer", slow=0.5)) == ("accept", None)


async def test_privileged_users_skip_slow_mode_and_duplicates_but_not_the_rate_limit(
    nodes: Nodes,
) -> None:
    strict = RatePolicy(rate_per_s=1.0, burst=3)
    a, b = nodes.node(strict), nodes.node(strict)
    for node in (a, b, a):
        assert await answer(node, msg("announcement", slow=60, exempt=True)) == ("accept", None)
    code, wait_ms = await answer(b, msg("announcement", slow=60, exempt=True))
    assert code == "rate_limited" and wait_ms is not None and 0 < wait_ms <= 1000
    assert [k.decode().rsplit(":", 1)[-1] for k in await nodes.keys()] == ["rate"], (
        "exempt messages charge neither slow mode nor the window"
    )


async def test_one_bucket_for_a_user_on_every_node_and_a_limited_message_charges_nothing(
    nodes: Nodes,
) -> None:
    strict = RatePolicy(rate_per_s=1.0, burst=2)
    a, b = nodes.node(strict), nodes.node(strict)
    assert await answer(a, msg("m1", slow=0.1)) == ("accept", None)
    await asyncio.sleep(0.15)
    assert await answer(b, msg("m2", slow=0.1)) == ("accept", None)
    await asyncio.sleep(0.15)
    code, wait_ms = await answer(a, msg("m3", slow=0.1))
    assert code == "rate_limited" and wait_ms is not None and 0 < wait_ms <= 1000
    await asyncio.sleep(wait_ms / 1000)
    assert await answer(b, msg("m3", slow=0.1)) == ("accept", None), "m3 was not taken"


async def test_a_forgotten_text_is_no_longer_a_duplicate_on_any_node(nodes: Nodes) -> None:
    a, b = nodes.node(), nodes.node()
    assert await answer(a, msg("retry me")) == ("accept", None)
    await a.forget("u1", normalize("retry me"))
    assert await answer(b, msg("Retry me!")) == ("accept", None)
    a.forget_soon("u1", normalize("retry me"))
    await a.close()  # waits for what was started
    assert await answer(b, msg("retry me")) == ("accept", None)


async def test_no_answer_from_redis_means_none_quickly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    limits = SharedChatLimits(
        f"redis://127.0.0.1:{port}/0",
        GENEROUS,
        namespace="nowhere",
        duplicate_window_s=30,
        max_slow_s=3600,
    )
    try:
        assert await asyncio.wait_for(limits.check(msg("hi")), 5) is None
        await limits.forget("u1", "hi")  # logged, not raised
    finally:
        await limits.close()


async def test_the_shared_checks_answer_like_one_node_does(nodes: Nodes) -> None:
    """The same messages through this node's own state (`limit_chat`) and through Redis get
    the same answers: one set of rules, whichever state keeps them."""
    shared = nodes.node()
    guards = ChatGuards(rate=GENEROUS)
    script: list[ChatCandidate | float] = [
        msg("a"),
        msg("a", slow=0.4),  # duplicate; the message before did not start slow mode
        msg("b", slow=0.4),
        msg("c", slow=0.4),  # slow mode
        0.5,
        msg("c", slow=0.4, outcome="blocked"),
        msg("c", slow=0.4),  # the blocked one charged nothing
        msg("c", slow=0.4, exempt=True),
        msg("zz", slow=0.4),  # slow mode
        0.5,
        msg("d", slow=0.4, outcome="hold"),
        msg("d"),  # duplicate of a held message
        msg("e", slow=0.4),  # slow mode, started by the held message
    ]
    local_codes, shared_codes = [], []
    for step in script:
        if isinstance(step, float):
            await asyncio.sleep(step)
            continue
        local = limit_chat(step, guards, time.time())
        local_codes.append(local.code or local.verdict)
        shared_codes.append((await answer(shared, step))[0])
    assert shared_codes == local_codes
    assert local_codes == [
        "accept", "duplicate", "accept", "slow_mode", "blocked", "accept", "accept",
        "slow_mode", "held", "duplicate", "slow_mode",
    ]  # fmt: skip
