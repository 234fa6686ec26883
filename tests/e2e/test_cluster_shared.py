"""Per-user chat limits shared by several nodes on one Redis (SPEC §1, §7): the duplicate window
and slow mode hold for a user whatever node each message reaches, and a message one node
refuses changes nothing the others see."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx

from .harness import Client, ServerProcess, code, headers, live_session, say, token


def unique(name: str) -> str:
    """User ids of their own, so nothing carries over from another run or test."""
    return f"cs-{name}-{secrets.token_hex(3)}"


async def on_every_node(
    nodes: list[ServerProcess], sub: str, sid: str, role: str = "viewer"
) -> list[Client]:
    """One signed-in client per node for the same user, each joined to the session."""
    clients = []
    for n in nodes:
        c = await Client.connect(n, token(sub, role))
        await c.expect("hello")
        await c.send({"type": "join", "session": sid})
        await c.expect("joined", session=sid)
        clients.append(c)
    return clients


async def moderate(base: str, sid: str, actor: str, **body: Any) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post(
            f"/api/sessions/{sid}/moderation",
            headers=headers(token(actor, "creator")),
            json=body,
        )
        assert r.status_code == 200, r.text


async def slow(
    nodes: list[ServerProcess], sid: str, host: str, seconds: int, *watchers: Client
) -> None:
    """Set slow mode through the first node and wait until every node applies it."""
    await moderate(nodes[0].url, sid, host, action="slow", seconds=seconds)
    for w in watchers:
        assert (await w.expect("slow", seconds=seconds))["seconds"] == seconds


async def close_all(*groups: list[Client]) -> None:
    await asyncio.gather(*(c.close() for g in groups for c in g), return_exceptions=True)


async def test_the_same_text_on_another_node_is_a_duplicate(nodes: list[ServerProcess]) -> None:
    sid = (await live_session(nodes[0].url, creator=unique("dup-host")))["session"]["id"]
    a, b, c = user = await on_every_node(nodes, unique("dup-fan"), sid)
    other = await on_every_node(nodes, unique("dup-other"), sid)
    assert code(await say(a, sid, "Is this in stock?")) == "ack"
    assert code(await say(b, sid, "is   this in STOCK?!")) == "duplicate"
    assert code(await say(c, sid, "Is this in stock?")) == "duplicate"
    assert code(await say(other[1], sid, "Is this in stock?")) == "ack", "per user"
    assert code(await say(c, sid, "Is the red one in stock?")) == "ack"
    await asyncio.sleep(1.1)  # four of the burst of five are spent: let a token come back
    # A held message charges the window too: its copy on another node is a duplicate.
    assert code(await say(a, sid, "cheaper at bags.xyz")) == "held"
    assert code(await say(b, sid, "cheaper at bags.xyz")) == "duplicate"
    await close_all(user, other)


async def test_slow_mode_set_on_one_node_holds_a_user_spread_over_the_others(
    nodes: list[ServerProcess],
) -> None:
    host = unique("slow-host")
    sid = (await live_session(nodes[0].url, creator=host))["session"]["id"]
    fan = await on_every_node(nodes, unique("slow-fan"), sid)
    staff = await on_every_node(nodes, unique("slow-staff"), sid, "moderator")
    await slow(nodes, sid, host, 5, *fan)

    assert code(await say(fan[1], sid, "first question")) == "ack"
    refused = await say(fan[2], sid, "second question")
    assert code(refused) == "slow_mode"
    assert 3_000 < refused["retry_after_ms"] <= 5_000
    again = await say(fan[0], sid, "second question, please")
    assert code(again) == "slow_mode" and again["retry_after_ms"] <= refused["retry_after_ms"]
    for i in range(3):  # moderators are exempt, on every node
        assert code(await say(staff[i], sid, f"announcement {i}")) == "ack"
    assert code(await say(staff[0], sid, "announcement 0")) == "ack", "no duplicates either"

    await asyncio.sleep(again["retry_after_ms"] / 1000)
    # The refused message took nothing: after the interval it is neither slow nor a duplicate.
    assert code(await say(fan[0], sid, "second question")) == "ack"
    assert code(await say(fan[2], sid, "third question")) == "slow_mode"
    await slow(nodes, sid, host, 0, *fan)
    assert code(await say(fan[2], sid, "third question")) == "ack"
    await close_all(fan, staff)


async def test_a_refusal_on_one_node_charges_nothing_on_the_others(
    nodes: list[ServerProcess],
) -> None:
    host = unique("quiet-host")
    sid = (await live_session(nodes[0].url, creator=host))["session"]["id"]
    fan = await on_every_node(nodes, unique("quiet-fan"), sid)

    # A duplicate refused while slow mode is on does not start slow mode.
    assert code(await say(fan[0], sid, "hello all")) == "ack"
    await slow(nodes, sid, host, 3, *fan)
    assert code(await say(fan[1], sid, "hello all")) == "duplicate"
    assert code(await say(fan[2], sid, "good morning")) == "ack"
    # A message blocked for its words takes neither the slow-mode interval nor the window.
    async with httpx.AsyncClient(base_url=nodes[0].url) as http:
        r = await http.post(
            f"/api/creators/{host}/blocked-terms",
            headers=headers(token(host, "creator")),
            json={"term": "refund", "action": "block"},
        )
        assert r.status_code == 201, r.text
    slowed = await say(fan[0], sid, "refund me now")
    assert code(slowed) == "slow_mode", "slow mode comes before blocked terms"
    await asyncio.sleep(slowed["retry_after_ms"] / 1000)
    assert code(await say(fan[0], sid, "refund me now")) == "blocked"
    assert code(await say(fan[1], sid, "is the blue one back?")) == "ack"
    await slow(nodes, sid, host, 0, *fan)

    # A rate-limited message takes nothing either: retried on another node, it goes through.
    burst = [f"deal {i}?" for i in range(7)]
    replies = [await say(fan[i % 3], sid, text) for i, text in enumerate(burst)]
    limited = [(text, r) for text, r in zip(burst, replies, strict=True) if code(r) != "ack"]
    assert limited and all(code(r) == "rate_limited" for _, r in limited), replies
    text, reply = limited[0]
    await asyncio.sleep(reply["retry_after_ms"] / 1000)
    assert code(await say(fan[(burst.index(text) + 1) % 3], sid, text)) == "ack"
    await close_all(fan)
