"""Moderation end to end (SPEC §4, §5, §7): a real node, real WebSocket clients, real REST.

Every test uses its own users and sessions, so the per-user rate limit, the duplicate window
and creator-scoped mutes never leak from one test into another on the shared node.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from .harness import Client, ServerProcess, code, headers, live_session, say, token

# --------------------------------------------------------------------------- helpers


async def connect(server: ServerProcess, sub: str, role: str = "viewer") -> Client:
    """A signed-in client past `hello`; the ping makes sure its account row exists."""
    c = await Client.connect(server, token(sub, role))
    await c.expect("hello")
    await c.send({"type": "ping", "ref": "up"})
    await c.expect("pong", ref="up")
    return c


async def join(c: Client, sid: str) -> dict[str, Any]:
    await c.send({"type": "join", "session": sid})
    return await c.expect("joined", session=sid)


async def viewer(server: ServerProcess, sub: str, sid: str, role: str = "viewer") -> Client:
    c = await connect(server, sub, role)
    await join(c, sid)
    return c


async def moderate(
    http: httpx.AsyncClient, sid: str, actor: str, role: str = "creator", **body: Any
) -> httpx.Response:
    return await http.post(
        f"/api/sessions/{sid}/moderation", headers=headers(token(actor, role)), json=body
    )


async def appoint(http: httpx.AsyncClient, creator: str, moderator: str) -> None:
    r = await http.post(
        f"/api/creators/{creator}/moderators",
        headers=headers(token(creator, "creator")),
        json={"user_id": moderator},
    )
    assert r.status_code == 201, r.text


async def add_term(http: httpx.AsyncClient, creator: str, term: str, action: str) -> None:
    r = await http.post(
        f"/api/creators/{creator}/blocked-terms",
        headers=headers(token(creator, "creator")),
        json={"term": term, "action": action},
    )
    assert r.status_code == 201, r.text


async def queue(http: httpx.AsyncClient, sid: str, actor: str) -> list[dict[str, Any]]:
    r = await http.get(
        f"/api/sessions/{sid}/moderation/queue", headers=headers(token(actor, "creator"))
    )
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def audit(http: httpx.AsyncClient, creator: str) -> list[dict[str, Any]]:
    r = await http.get(f"/api/creators/{creator}/audit", headers=headers(token(creator, "creator")))
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["actions"]
    return rows


async def timeline(http: httpx.AsyncClient, sid: str, since: int = 0) -> tuple[str, list[Any]]:
    r = await http.get(f"/api/sessions/{sid}/timeline", params={"since": since, "limit": 1000})
    assert r.status_code == 200, r.text
    return r.text, r.json()["events"]


async def chats_with(c: Client, text: str, seconds: float = 0.4) -> list[dict[str, Any]]:
    """Chat messages carrying `text` that reach `c` within `seconds` (the inbox is drained)."""
    return [m for m in await c.drain(seconds) if m.get("type") == "chat" and m.get("text") == text]


async def close_code(c: Client, timeout: float = 5.0) -> int | None:
    """Read until the server closes the socket; the close code it sent."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await c._read(timeout)
    except websockets.ConnectionClosed as exc:
        return None if exc.rcvd is None else exc.rcvd.code
    raise AssertionError("unreachable")


async def close_all(*clients: Client) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# --------------------------------------------------------------------------- delete


async def test_delete_reaches_every_viewer_within_a_second_and_leaves_only_a_tombstone(
    server: ServerProcess,
) -> None:
    host = "mdel-host"
    s = await live_session(server.url, creator=host)
    sid = s["session"]["id"]
    author = await viewer(server, "mdel-author", sid)
    viewers = [await viewer(server, f"mdel-v{i}", sid) for i in range(3)]
    leaver = await connect(server, "mdel-leaver")
    before = await join(leaver, sid)
    secret = "call me on 555 0100 for a cheaper deal"
    first = await say(author, sid, secret)
    assert first["type"] == "ack"
    target = first["offset"]
    kept = await say(author, sid, "and the blue one?")
    assert kept["type"] == "ack"
    for v in viewers:
        assert (await v.expect("chat", offset=target))["text"] == secret
    await leaver.expect("chat", offset=target)
    await leaver.close()

    async with httpx.AsyncClient(base_url=server.url) as http:
        started = time.monotonic()
        r = await moderate(http, sid, host, action="delete", offset=target, reason="doxxing")
        assert r.status_code == 200, r.text

        async def removed(v: Client) -> tuple[float, dict[str, Any]]:
            m = await v.expect("chat_removed", timeout=2)
            return time.monotonic() - started, m

        got = await asyncio.gather(*(removed(v) for v in viewers))
        latency = max(t for t, _ in got)
        print(f"delete reached 3 viewers in {latency * 1000:.1f} ms")
        assert latency < 1.0
        removal_offsets = {m["offset"] for _, m in got}
        assert len(removal_offsets) == 1
        removal = removal_offsets.pop()
        assert removal > kept["offset"], "the deletion is a new event of the log"
        assert all(m["target"] == target and m["session"] == sid for _, m in got)

        # Recovery with `since`: the tombstone at the original offset, then the deletion.
        back = await connect(server, "mdel-leaver")
        await back.send(
            {
                "type": "join",
                "session": sid,
                "since": {"epoch": before["epoch"], "offset": before["offset"]},
            }
        )
        rejoined = await back.expect("joined")
        assert rejoined["recovered"] is True
        missed = [m for m in await back.drain(0.5) if "offset" in m]
        assert [m["offset"] for m in missed] == [target, kept["offset"], removal]
        assert missed[0] == {"type": "chat", "session": sid, "offset": target, "removed": True}
        assert missed[1]["text"] == "and the blue one?"
        assert missed[2]["type"] == "chat_removed" and missed[2]["target"] == target
        assert "555 0100" not in json.dumps(missed)

        # A fresh snapshot's recent chat does not carry it either.
        fresh = await connect(server, "mdel-late")
        state = (await join(fresh, sid))["state"]
        assert "555 0100" not in json.dumps(state)
        assert [m.get("text") for m in state["chat"]] == [None, "and the blue one?"]

        # The timeline (replay) serves the tombstone, never the text.
        raw, events = await timeline(http, sid)
        assert "555 0100" not in raw
        by_offset = {e["offset"]: e for e in events}
        assert by_offset[target] == {
            "type": "chat",
            "session": sid,
            "offset": target,
            "removed": True,
        }
        assert by_offset[removal]["type"] == "chat_removed"
        raw, events = await timeline(http, sid, since=target - 1)
        assert events[0]["offset"] == target and events[0]["removed"] is True
        assert "555 0100" not in raw

        # The audit log keeps who, whom, why, when and the original text.
        rows = [a for a in await audit(http, host) if a["action"] == "delete"]
        assert len(rows) == 1
        row = rows[0]
        assert row["actor"] == host and row["target"] == "mdel-author"
        assert row["offset"] == target and row["reason"] == "doxxing"
        assert row["original_text"] == secret and row["session"] == sid and row["at"]

        # Deleting it again changes nothing.
        r = await moderate(http, sid, host, action="delete", offset=target)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    await close_all(author, back, fresh, *viewers)


# --------------------------------------------------------------------------- mutes


async def test_timed_out_user_is_refused_until_expiry_then_allowed(server: ServerProcess) -> None:
    host = "mto-host"
    s = await live_session(server.url, creator=host)
    sid = s["session"]["id"]
    other_sid = (await live_session(server.url, creator=host))["session"]["id"]
    target = await viewer(server, "mto-target", sid)
    watcher = await viewer(server, "mto-watcher", sid)
    assert code(await say(target, sid, "hello")) == "ack"
    async with httpx.AsyncClient(base_url=server.url) as http:
        asked = time.time()
        r = await moderate(
            http, sid, host, action="timeout", user_id="mto-target", seconds=2, reason="calm down"
        )
        assert r.status_code == 200, r.text
        until = r.json()["until"]
        assert abs(until - (asked + 2) * 1000) < 1000
        muted = await target.expect("muted")
        assert muted == {"type": "muted", "session": sid, "until": until}
        refused = await say(target, sid, "why?")
        assert code(refused) == "muted"
        # Scoped to the creator: the same creator's other session refuses too.
        assert code(await say(target, other_sid, "over here then")) == "muted"
        assert await chats_with(watcher, "why?", 0.2) == []
        # Still refused just before the end...
        await asyncio.sleep(max(0.0, until / 1000 - time.time() - 0.4))
        assert code(await say(target, sid, "now?")) == "muted"
        # ...and allowed once it is over.
        await asyncio.sleep(max(0.0, until / 1000 - time.time() + 0.1))
        back = await say(target, sid, "sorry, I am back")
        assert code(back) == "ack"
        seen = await watcher.expect("chat", offset=back["offset"])
        assert seen["text"] == "sorry, I am back"
        rows = [a for a in await audit(http, host) if a["action"] == "timeout"]
        assert len(rows) == 1
        assert rows[0]["target"] == "mto-target" and rows[0]["seconds"] == 2
        assert rows[0]["reason"] == "calm down" and rows[0]["actor"] == host
    await close_all(target, watcher)


async def test_ban_covers_the_creators_sessions_only_and_unban_lifts_it(
    server: ServerProcess,
) -> None:
    host = "mban-host"
    sid = (await live_session(server.url, creator=host))["session"]["id"]
    sid2 = (await live_session(server.url, creator=host))["session"]["id"]
    elsewhere = (await live_session(server.url, creator="mban-other"))["session"]["id"]
    target = await viewer(server, "mban-target", sid)
    mod = "mban-mod"
    async with httpx.AsyncClient(base_url=server.url) as http:
        await appoint(http, host, mod)
        r = await moderate(http, sid, mod, "viewer", action="ban", user_id="mban-target")
        assert r.status_code == 200, r.text
        muted = await target.expect("muted")
        assert muted["session"] == sid and muted["until"] is None
        assert code(await say(target, sid, "let me talk")) == "banned"
        assert code(await say(target, sid2, "in the other show")) == "banned"
        assert code(await say(target, elsewhere, "another creator's show")) == "ack"
        r = await moderate(http, sid, host, action="unban", user_id="mban-target")
        assert r.status_code == 200, r.text
        assert code(await say(target, sid, "thanks for the unban")) == "ack"
        assert code(await say(target, sid2, "hello again")) == "ack"
        actions = [(a["action"], a["actor"], a["target"]) for a in await audit(http, host)]
        assert ("ban", mod, "mban-target") in actions
        assert ("unban", host, "mban-target") in actions
    await target.close()


# --------------------------------------------------------------------------- automatic limits


async def test_slow_mode_refuses_with_retry_after_and_exempts_moderators(
    server: ServerProcess,
) -> None:
    host, mod = "mslow-host", "mslow-chmod"
    sid = (await live_session(server.url, creator=host))["session"]["id"]
    fan = await viewer(server, "mslow-fan", sid)
    async with httpx.AsyncClient(base_url=server.url) as http:
        await appoint(http, host, mod)
        chmod = await viewer(server, mod, sid)
        owner = await viewer(server, host, sid, "creator")
        staff = await viewer(server, "mslow-staff", sid, "moderator")
        r = await moderate(http, sid, host, action="slow", seconds=30)
        assert r.status_code == 200, r.text
        assert (await fan.expect("slow"))["seconds"] == 30
        late = await connect(server, "mslow-late")
        assert (await join(late, sid))["state"]["slow"] == 30
        assert code(await say(fan, sid, "first question")) == "ack"
        refused = await say(fan, sid, "second question")
        assert code(refused) == "slow_mode"
        assert 25_000 < refused["retry_after_ms"] <= 30_000
        for privileged in (chmod, owner, staff):
            for i in range(3):
                assert code(await say(privileged, sid, f"announcement {i}")) == "ack"
        r = await moderate(http, sid, mod, "viewer", action="slow", seconds=0)
        assert r.status_code == 200, r.text
        assert code(await say(fan, sid, "second question")) == "ack"
        assert any(a["action"] == "slow" and a["seconds"] == 30 for a in await audit(http, host))
    await close_all(fan, chmod, owner, staff, late)


async def test_sixth_message_of_a_burst_is_rate_limited(server: ServerProcess) -> None:
    sid = (await live_session(server.url, creator="mrate-host"))["session"]["id"]
    c = await viewer(server, "mrate-fast", sid)
    refs = [f"burst{i}" for i in range(6)]
    for i, ref in enumerate(refs):
        await c.send({"type": "chat", "session": sid, "text": f"deal {i}?", "ref": ref})
    replies = [await c.expect(("ack", "held", "error"), ref=ref) for ref in refs]
    assert [code(r) for r in replies] == ["ack"] * 5 + ["rate_limited"]
    wait_ms = replies[-1]["retry_after_ms"]
    assert 0 < wait_ms <= 1000
    await asyncio.sleep(wait_ms / 1000)
    assert code(await say(c, sid, "deal 5?")) == "ack", "waiting retry_after_ms is enough"
    await c.close()


async def test_same_text_again_is_a_duplicate(server: ServerProcess) -> None:
    sid = (await live_session(server.url, creator="mdup-host"))["session"]["id"]
    a = await viewer(server, "mdup-a", sid)
    b = await viewer(server, "mdup-b", sid)
    assert code(await say(a, sid, "Is this in stock?")) == "ack"
    again = await say(a, sid, "is   this in STOCK?!")
    assert code(again) == "duplicate"
    assert code(await say(b, sid, "Is this in stock?")) == "ack", "per user"
    assert code(await say(a, sid, "Is the red one in stock?")) == "ack"
    await close_all(a, b)


async def test_flooding_closes_the_socket_with_4008(server: ServerProcess) -> None:
    sid = (await live_session(server.url, creator="mflood-host"))["session"]["id"]
    flooder = await viewer(server, "mflood-bot", sid)
    calm = await viewer(server, "mflood-calm", sid)
    for i in range(30):
        try:
            await flooder.send(
                {"type": "chat", "session": sid, "text": f"spam {i}", "ref": f"f{i}"}
            )
        except websockets.ConnectionClosed:
            break
    assert await close_code(flooder) == 4008
    codes = [code(m) for m in flooder.inbox if m.get("ref", "").startswith("f")]
    assert codes[:5] == ["ack"] * 5 and "rate_limited" in codes
    # Others are unaffected.
    assert code(await say(calm, sid, "still here")) == "ack"
    await calm.close()


# --------------------------------------------------------------------------- terms and queue


async def test_blocked_term_is_caught_through_disguises_and_innocent_words_pass(
    server: ServerProcess,
) -> None:
    host = "mblk-host"
    sid = (await live_session(server.url, creator=host))["session"]["id"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        await add_term(http, host, "scam", "block")
        terms = await http.get(
            f"/api/creators/{host}/blocked-terms", headers=headers(token(host, "creator"))
        )
        assert {"term": "scam", "action": "block"} in terms.json()["terms"]
        troll = await viewer(server, "mblk-troll", sid)
        watcher = await viewer(server, "mblk-watch", sid)
        disguises = [
            "this is a ｓｃａｍ",  # fullwidth
            "total 5c4m lol",  # leetspeak
            "ѕсаm alert",  # Cyrillic look-alikes
            "what a s\u200bc\u200ba\u200bm",  # zero-width characters
        ]
        for text in disguises:
            reply = await say(troll, sid, text)
            assert code(reply) == "blocked", text
            assert "scam" in reply["message"]
        assert all(m.get("type") != "chat" for m in await watcher.drain(0.3))
        for text in ("is the scampi recipe in the bio?", "this class is worth $25"):
            assert code(await say(watcher, sid, text)) == "ack", text
        raw, _ = await timeline(http, sid)
        assert "ｓｃａｍ" not in raw and "5c4m" not in raw
    await close_all(troll, watcher)


async def test_hold_term_goes_to_the_queue_and_approval_publishes_it_in_order(
    server: ServerProcess,
) -> None:
    host, mod = "mhold-host", "mhold-mod"
    sid = (await live_session(server.url, creator=host))["session"]["id"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        await appoint(http, host, mod)
        await add_term(http, host, "whatsapp", "hold")
        author = await viewer(server, "mhold-author", sid)
        others = [await viewer(server, f"mhold-v{i}", sid) for i in range(2)]
        text = "add me on WhatsApp for a discount"
        held = await say(author, sid, text)
        assert held["type"] == "held", held
        assert 'blocked term "whatsapp"' in held["reason"]
        assert "offset" not in held
        for v in others:
            assert await chats_with(v, text, 0.2) == [], "held messages are not shown"
        assert text not in (await timeline(http, sid))[0]

        items = await queue(http, sid, mod)
        assert len(items) == 1
        item = items[0]
        assert item["kind"] == "held" and item["author"] == "mhold-author"
        assert item["text"] == text and item["claimed_by"] is None
        assert any('blocked term "whatsapp"' in r for r in item["reasons"])

        meanwhile = await say(others[0], sid, "first!")
        r = await moderate(http, sid, mod, "viewer", action="approve", item=item["id"])
        assert r.status_code == 200, r.text
        ack = await author.expect("ack", ref=held["_ref"])
        assert ack["offset"] > meanwhile["offset"], "published in order, with a new offset"
        for v in [*others, author]:
            m = await v.expect("chat", offset=ack["offset"])
            assert m["text"] == text and m["user"] == "mhold-author"
        assert await queue(http, sid, host) == []
        _, events = await timeline(http, sid)
        replayed = next(e for e in events if e["offset"] == ack["offset"])
        assert replayed["type"] == "chat" and replayed["text"] == text

        # Reject: the author learns it, nobody else sees anything.
        second = await say(author, sid, "whatsapp me please")
        assert second["type"] == "held"
        item2 = (await queue(http, sid, mod))[0]
        r = await moderate(http, sid, host, action="reject", item=item2["id"], reason="spam")
        assert r.status_code == 200, r.text
        err = await author.expect("error", ref=second["_ref"])
        assert err["code"] == "blocked"
        assert await chats_with(others[1], "whatsapp me please", 0.3) == []
        assert await queue(http, sid, host) == []
        # A decided item cannot be decided again.
        r = await moderate(http, sid, host, action="approve", item=item2["id"])
        assert r.status_code == 403 and "already rejected" in r.json()["error"]["message"]
        actions = {a["action"]: a for a in await audit(http, host)}
        assert actions["approve"]["original_text"] == text
        assert actions["approve"]["actor"] == mod
        assert actions["reject"]["original_text"] == "whatsapp me please"
    await close_all(author, *others)


async def test_two_moderators_racing_on_one_held_message_get_exactly_one_outcome(
    server: ServerProcess,
) -> None:
    host, m1, m2 = "mrace-host", "mrace-m1", "mrace-m2"
    sid = (await live_session(server.url, creator=host))["session"]["id"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        for m in (m1, m2):
            await appoint(http, host, m)
        author = await viewer(server, "mrace-author", sid)
        watcher = await viewer(server, "mrace-watch", sid)
        texts = [f"deal {i} at www.cheap-bags{i}.com" for i in range(5)]
        held = [await say(author, sid, t) for t in texts]
        assert [h["type"] for h in held] == ["held"] * 5
        items = {i["text"]: i["id"] for i in await queue(http, sid, host)}

        def act(mod: str, action: str, text: str) -> Any:
            return moderate(http, sid, mod, "viewer", action=action, item=items[text])

        # claim vs approve
        claim, approve = await asyncio.gather(
            act(m1, "claim", texts[0]), act(m2, "approve", texts[0])
        )
        assert sorted([claim.status_code, approve.status_code]) == [200, 403]
        if claim.status_code == 200:
            assert f"claimed by {m1}" in approve.json()["error"]["message"]
            q = {i["id"]: i for i in await queue(http, sid, host)}
            assert q[items[texts[0]]]["claimed_by"] == m1
            r = await act(m2, "reject", texts[0])
            assert r.status_code == 403, "the claim holds against every decision"
            assert (await act(m1, "approve", texts[0])).status_code == 200
        else:
            assert f"already approved by {m2}" in claim.json()["error"]["message"]

        # approve vs approve, reject vs approve, three more times
        races = [
            (act(m1, "approve", texts[1]), act(m2, "approve", texts[1])),
            (act(m1, "reject", texts[2]), act(m2, "approve", texts[2])),
            (act(m1, "approve", texts[3]), act(m2, "reject", texts[3])),
            (act(m2, "approve", texts[4]), act(m1, "approve", texts[4])),
        ]
        for a, b in races:
            ra, rb = await asyncio.gather(a, b)
            assert sorted([ra.status_code, rb.status_code]) == [200, 403]
            loser = ra if ra.status_code == 403 else rb
            assert loser.json()["error"]["code"] == "forbidden"
            assert "already" in loser.json()["error"]["message"]

        # Each message has exactly one outcome, seen once by the author and by viewers.
        await asyncio.sleep(0.3)
        outcomes = {}
        inbox = await author.drain(0.2)
        for h in held:
            mine = [m for m in inbox if m.get("ref") == h["_ref"]]
            assert len(mine) == 1, mine
            outcomes[h["_ref"]] = mine[0]["type"]
        seen = [m["text"] for m in await watcher.drain(0.2) if m.get("type") == "chat"]
        published = [t for t, h in zip(texts, held, strict=True) if outcomes[h["_ref"]] == "ack"]
        assert sorted(seen) == sorted(published)
        assert len(seen) == len(set(seen))
        assert await queue(http, sid, host) == []
        decided = [a for a in await audit(http, host) if a["action"] in ("approve", "reject")]
        assert len(decided) == 5
    await close_all(author, watcher)


async def test_reports_from_several_viewers_make_one_queue_item_with_a_count(
    server: ServerProcess,
) -> None:
    host = "mrep-host"
    sid = (await live_session(server.url, creator=host))["session"]["id"]
    author = await viewer(server, "mrep-author", sid)
    reporters = [await viewer(server, f"mrep-r{i}", sid) for i in range(3)]
    sent = await say(author, sid, "buy followers cheap, dm")
    offset = sent["offset"]
    for i, (rep, reason) in enumerate(zip(reporters, ["spam", "spam", "scam"], strict=True)):
        await rep.send(
            {"type": "report", "session": sid, "offset": offset, "reason": reason, "ref": f"rp{i}"}
        )
        assert (await rep.expect("ack", ref=f"rp{i}")) == {"type": "ack", "ref": f"rp{i}"}
    # The same viewer twice, and the author on their own message, do not add up.
    await reporters[0].send(
        {"type": "report", "session": sid, "offset": offset, "reason": "spam", "ref": "again"}
    )
    await reporters[0].expect("ack", ref="again")
    await author.send(
        {"type": "report", "session": sid, "offset": offset, "reason": "me", "ref": "self"}
    )
    await author.expect("ack", ref="self")
    await reporters[1].send(
        {"type": "report", "session": sid, "offset": 99_999, "reason": "spam", "ref": "nope"}
    )
    assert (await reporters[1].expect("error", ref="nope"))["code"] == "not_found"
    async with httpx.AsyncClient(base_url=server.url) as http:
        items = await queue(http, sid, host)
        assert len(items) == 1
        item = items[0]
        assert item["kind"] == "report" and item["reports"] == 3
        assert item["author"] == "mrep-author" and item["text"] == "buy followers cheap, dm"
        assert sorted(item["reasons"]) == ["scam", "spam"]
        # Rejecting a reported message deletes it.
        r = await moderate(http, sid, host, action="reject", item=item["id"], reason="spam")
        assert r.status_code == 200, r.text
        removed = await reporters[2].expect("chat_removed")
        assert removed["target"] == offset
        assert await queue(http, sid, host) == []
        rows = [a for a in await audit(http, host) if a["offset"] == offset]
        assert rows and rows[0]["original_text"] == "buy followers cheap, dm"

        # Approving a reported message dismisses the reports; it stays visible.
        other = await say(author, sid, "size chart please")
        for i, rep in enumerate(reporters[:2]):
            await rep.send(
                {
                    "type": "report",
                    "session": sid,
                    "offset": other["offset"],
                    "reason": "rude",
                    "ref": f"x{i}",
                }
            )
            await rep.expect("ack", ref=f"x{i}")
        items = await queue(http, sid, host)
        assert [(i["kind"], i["reports"]) for i in items] == [("report", 2)]
        r = await moderate(http, sid, host, action="approve", item=items[0]["id"])
        assert r.status_code == 200, r.text
        assert await queue(http, sid, host) == []
        _, events = await timeline(http, sid)
        assert next(e for e in events if e["offset"] == other["offset"])["text"] == (
            "size chart please"
        )
        r = await moderate(http, sid, host, action="approve", item=items[0]["id"])
        assert r.status_code == 403 and "already" in r.json()["error"]["message"]
    await close_all(author, *reporters)


async def test_a_link_is_held_for_review(server: ServerProcess) -> None:
    host = "mlink-host"
    sid = (await live_session(server.url, creator=host))["session"]["id"]
    c = await viewer(server, "mlink-poster", sid)
    w = await viewer(server, "mlink-watch", sid)
    held = await say(c, sid, "cheaper here: www.bag-deals.com/sale")
    assert held["type"] == "held" and "bag-deals.com" in held["reason"]
    assert code(await say(c, sid, "size M please, 2.5 kg max")) == "ack"
    assert await chats_with(w, "cheaper here: www.bag-deals.com/sale", 0.2) == []
    async with httpx.AsyncClient(base_url=server.url) as http:
        items = await queue(http, sid, host)
        assert len(items) == 1 and items[0]["kind"] == "held"
        assert items[0]["text"] == "cheaper here: www.bag-deals.com/sale"
        assert [r.startswith("link to") and "bag-deals.com" in r for r in items[0]["reasons"]] == [
            True
        ]
        # The creator allow-lists a domain: links to it (and its subdomains) pass.
        h = headers(token(host, "creator"))
        r = await http.put(
            f"/api/creators/{host}/allowed-domains",
            headers=h,
            json={"domains": ["Shop.Example", " "]},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_frame", r.text
        r = await http.put(
            f"/api/creators/{host}/allowed-domains",
            headers=h,
            json={"domains": ["Shop.Example", ".shop.example"]},
        )
        assert r.json()["domains"] == ["shop.example"]
        assert (await http.get(f"/api/creators/{host}/allowed-domains", headers=h)).json()[
            "domains"
        ] == ["shop.example"]
        r = await http.put(
            f"/api/creators/{host}/allowed-domains",
            headers=headers(token("mlink-poster")),
            json={"domains": ["evil.example"]},
        )
        assert r.status_code == 403
    assert code(await say(c, sid, "official: https://www.shop.example/mug")) == "ack"
    assert code(await say(c, sid, "or here: https://evil.example/mug")) == "held"
    await close_all(c, w)


async def test_shield_mode_holds_new_accounts_and_slows_everyone_until_off(
    server: ServerProcess, database_url: str
) -> None:
    host = "mshield-host"
    sid = (await live_session(server.url, creator=host))["session"]["id"]
    db = await asyncpg.connect(database_url)
    try:
        await db.execute(
            "INSERT INTO users (id, name, first_seen) VALUES ($1, $1, now() - interval '2 hours') "
            "ON CONFLICT (id) DO UPDATE SET first_seen = now() - interval '2 hours'",
            "mshield-regular",
        )
    finally:
        await db.close()
    newbie = await viewer(server, "mshield-newbie", sid)
    regular = await viewer(server, "mshield-regular", sid)
    owner = await viewer(server, host, sid, "creator")
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await moderate(http, sid, host, action="shield_on", reason="raid")
        assert r.status_code == 200, r.text
        assert (await regular.expect("slow"))["shield"] is True
        held = await say(newbie, sid, "hi everyone")
        assert held["type"] == "held"
        assert "new account during shield mode" in held["reason"]
        assert code(await say(newbie, sid, "hello??")) == "slow_mode"
        assert code(await say(regular, sid, "calm down people")) == "ack"
        slowed = await say(regular, sid, "seriously")
        assert code(slowed) == "slow_mode" and 25_000 < slowed["retry_after_ms"] <= 30_000
        for i in range(2):
            assert code(await say(owner, sid, f"welcome raiders {i}")) == "ack"
        items = await queue(http, sid, host)
        assert [(i["author"], i["reasons"]) for i in items] == [
            ("mshield-newbie", ["new account during shield mode"])
        ]
        r = await moderate(http, sid, host, action="shield_off")
        assert r.status_code == 200, r.text
        assert (await regular.expect("slow"))["shield"] is False
        assert code(await say(newbie, sid, "can I talk now")) == "ack"
        assert code(await say(regular, sid, "seriously")) == "ack"
        actions = [a["action"] for a in await audit(http, host)]
        assert "shield_on" in actions and "shield_off" in actions
    await close_all(newbie, regular, owner)


@pytest.mark.parametrize("action", ["claim", "approve", "reject"])
async def test_a_held_item_cannot_be_decided_through_another_creators_session(
    server: ServerProcess, action: str
) -> None:
    """A moderator of creator A must not touch a held message of creator B by passing its id
    through one of A's sessions: the item stays as it was."""
    a, b = f"mx-{action}-a", f"mx-{action}-b"
    sid_a = (await live_session(server.url, creator=a))["session"]["id"]
    sid_b = (await live_session(server.url, creator=b))["session"]["id"]
    author = await viewer(server, f"mx-{action}-author", sid_b)
    held = await say(author, sid_b, "visit www.fake-watches.com")
    assert held["type"] == "held"
    async with httpx.AsyncClient(base_url=server.url) as http:
        item = (await queue(http, sid_b, b))[0]
        r = await moderate(http, sid_a, a, action=action, item=item["id"])
        assert r.status_code == 404, r.text
        after = await queue(http, sid_b, b)
        assert [(i["id"], i["claimed_by"]) for i in after] == [(item["id"], None)]
        r = await moderate(http, sid_b, b, action="approve", item=item["id"])
        assert r.status_code == 200, r.text
        await author.expect("ack", ref=held["_ref"])
    await author.close()
