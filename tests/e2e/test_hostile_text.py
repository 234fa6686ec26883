"""Hostile text against a real node (SPEC §10 "Text", "One bad row never fails other people's
writes", issue 13 findings 1, 2 and 7, and chat idempotent per (user, ref)).

Every user string is checked where it is decoded: U+0000, lone surrogates, C0 controls and
bidi overrides answer `bad_frame` (REST 400 with a JSON error), never 500 and never
`unavailable`; so are numbers the database cannot store, frames nested too deeply, and terms,
domains, titles and tags that are nothing after normalisation.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import asyncpg
import httpx

from .harness import Client, ServerProcess, headers, live_session, say, token


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def assert_bad(r: httpx.Response) -> None:
    """400 with the JSON error of SPEC §4 and code bad_frame."""
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert r.json()["error"]["code"] == "bad_frame", r.text


async def signed_in(server: ServerProcess, sub: str, role: str = "viewer") -> Client:
    c = await Client.connect(server, token(sub, role))
    await c.expect("hello")
    return c


async def joined(server: ServerProcess, sub: str, sid: str, role: str = "viewer") -> Client:
    c = await signed_in(server, sub, role)
    await c.send({"type": "join", "session": sid})
    await c.expect("joined", session=sid)
    return c


async def timeline_chat(base: str, sid: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.get(f"/api/sessions/{sid}/timeline", params={"limit": 1000})
        assert r.status_code == 200, r.text
        return [e for e in r.json()["events"] if e["type"] == "chat"]


# ------------------------------------------------------------------ REST bodies (finding 7)


async def test_unstorable_text_in_rest_bodies_answers_400_json(server: ServerProcess) -> None:
    creator = uid("ht-c")
    h = headers(token(creator, "creator"))
    live = await live_session(server.url, creator)
    async with httpx.AsyncClient(base_url=server.url) as http:
        # U+0000 in a product title (500 text/plain before) and other unstorable text.
        for title in ("mug\u0000", "mug\u0007", "mug\u202eevil", "\u2066mug"):
            assert_bad(
                await http.post("/api/products", headers=h, json={"title": title, "price_cents": 1})
            )
        # Lone surrogates in JSON strings, as raw escapes (json.dumps would refuse to write them).
        for esc in (b"\\ud800", b"\\udfff", b"x\\udc00y"):
            raw = b'{"title": "' + esc + b'", "price_cents": 1}'
            r = await http.post(
                "/api/products", headers={**h, "content-type": "application/json"}, content=raw
            )
            assert_bad(r)
        # U+0000 in an idempotency key (500 text/plain before).
        buyer = headers(token(uid("ht-b")))
        r = await http.post(
            "/api/orders",
            headers=buyer,
            json={"offer_id": "o1", "qty": 1, "idempotency_key": "k\u0000"},
        )
        assert_bad(r)
        sid = live["session"]["id"]
        pid = live["product"]["id"]
        assert_bad(
            await http.patch(f"/api/products/{pid}", headers=h, json={"category": "a\u0000"})
        )
        assert_bad(
            await http.post(
                f"/api/sessions/{sid}/moderation",
                headers=h,
                json={"action": "ban", "user_id": "u\u0000"},
            )
        )
        assert_bad(
            await http.post(
                f"/api/sessions/{sid}/moderation",
                headers=h,
                json={"action": "ban", "user_id": "someone", "reason": "spam\u0000"},
            )
        )
        assert_bad(
            await http.post(
                f"/api/sessions/{sid}/offers",
                headers=h,
                json={"product_id": "p\u0000", "price_cents": 1, "quantity": 1},
            )
        )
        # The product is unchanged and the node answers on.
        r = await http.get(f"/api/products/{pid}")
        assert r.status_code == 200 and r.json()["category"] == "home", r.text


async def test_blank_titles_and_tags_are_refused(server: ServerProcess) -> None:
    h = headers(token(uid("ht-c"), "creator"))
    async with httpx.AsyncClient(base_url=server.url) as http:
        for title in ("   ", "\u200b", "\u00ad\u200d", "\t\n"):
            assert_bad(
                await http.post("/api/products", headers=h, json={"title": title, "price_cents": 1})
            )
            assert_bad(await http.post("/api/sessions", headers=h, json={"title": title}))
        assert_bad(
            await http.post(
                "/api/sessions", headers=h, json={"title": "Show", "tags": ["ok", "\u200b"]}
            )
        )
        r = await http.post("/api/products", headers=h, json={"title": "Mug", "price_cents": 1})
        assert r.status_code == 201, r.text
        assert_bad(
            await http.patch(f"/api/products/{r.json()['id']}", headers=h, json={"title": " "})
        )
        assert (await http.get(f"/api/products/{r.json()['id']}")).json()["title"] == "Mug"


async def test_path_and_query_values_are_text_too(server: ServerProcess) -> None:
    live = await live_session(server.url, uid("ht-c"))
    sid = live["session"]["id"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in (
            "/api/products/p%00x",
            "/api/sessions/s%00x",
            "/api/offers/o%00",
            f"/api/sessions/{sid}/timeline?since=%00",
            "/api/trending?category=a%00b",
            "/api/sessions?status=live%00",
        ):
            assert_bad(await http.get(path))
        # Bytes that are no UTF-8 (an encoded lone surrogate, a stray byte) in a path or query.
        for path in (
            "/api/products/%ED%A0%80",
            "/api/products/%FF%FE",
            "/api/sessions/%ED%B0%80/timeline",
            "/api/trending?category=%ED%A0%80",
        ):
            r = await http.get(path)
            assert r.status_code in (200, 400, 404), (path, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/json"), (path, r.text)
        # Numbers the database stores as bigint: out of range is bad input, not a crash.
        assert_bad(await http.get(f"/api/sessions/{sid}/timeline", params={"since": 2**63}))
        assert_bad(
            await http.post(
                f"/api/sessions/{sid}/moderation",
                headers=live["headers"],
                json={"action": "delete", "offset": 2**63},
            )
        )
        r = await http.get(f"/api/sessions/{sid}/timeline")
        assert r.status_code == 200, r.text


# ------------------------------------------------------------------ WebSocket frames


async def test_unstorable_text_and_numbers_in_frames_answer_bad_frame(
    server: ServerProcess,
) -> None:
    live = await live_session(server.url, uid("ht-c"))
    sid = live["session"]["id"]
    c = await joined(server, uid("ht-v"), sid)
    try:
        for i, text in enumerate(("hi\u0000there", "a\u0001", "\u202egnp.exe", "x\u2068y")):
            await c.send({"type": "chat", "session": sid, "text": text, "ref": f"t{i}"})
            reply = await c.expect("error", ref=f"t{i}")
            assert reply["code"] == "bad_frame", reply
        # A lone surrogate in a frame, as a raw escape.
        await c.send('{"type":"chat","session":"' + sid + '","text":"\\ud800","ref":"sur"}')
        reply = await c.expect("error")
        assert reply["code"] == "bad_frame", reply
        # A report offset past bigint answered `unavailable` before: it is bad input.
        await c.send(
            {"type": "report", "session": sid, "offset": 2**70, "reason": "x", "ref": "big"}
        )
        reply = await c.expect("error", ref="big")
        assert reply["code"] == "bad_frame", reply
        await c.send(
            {"type": "join", "session": sid, "since": {"epoch": "e", "offset": 2**64}, "ref": "j"}
        )
        assert (await c.expect("error"))["code"] == "bad_frame"
        # Nested 7,000 deep: answered (no answer at all before), and the connection lives on.
        for deep in (
            '{"type":"chat","session":"s","ref":"d1","text":' + "[" * 7000 + "]" * 7000 + "}",
            '{"type":"chat","session":"s","ref":"d2","x":' + "[" * 7000 + "]" * 7000 + "}",
            '{"type":' + '{"a":' * 2500 + "1" + "}" * 2500 + "}",  # under 16 KiB
        ):
            await c.send(deep)
            reply = await c.expect("error", timeout=5)
            assert reply["code"] == "bad_frame", reply
        await c.send({"type": "ping", "ref": "alive"})
        await c.expect("pong", ref="alive")
        assert (await say(c, sid, "still here"))["type"] == "ack"
    finally:
        await c.close()


# ------------------------------------------------------------------ one bad row (finding 2)


async def test_a_bad_chat_never_fails_other_peoples_writes(server: ServerProcess) -> None:
    """U+0000 in chat failed the shared archive batch: viewers of other sessions got
    `unavailable` for messages already published. Now the bad one is refused at decoding and
    every other message is acknowledged and archived."""
    a = await live_session(server.url, uid("ht-ca"))
    b = await live_session(server.url, uid("ht-cb"))
    sa, sb = a["session"]["id"], b["session"]["id"]
    bad = await joined(server, uid("ht-bad"), sa)
    good = [await joined(server, uid(f"ht-g{i}"), sb) for i in range(8)]
    try:

        async def honest(i: int, c: Client) -> list[dict[str, Any]]:
            out = []
            for j in range(3):
                await c.send(
                    {"type": "chat", "session": sb, "text": f"hello {i}.{j}", "ref": f"g{j}"}
                )
                out.append(await c.expect(("ack", "error", "held"), ref=f"g{j}"))
            return out

        async def attacker() -> dict[str, Any]:
            for j in range(3):
                await bad.send(
                    {"type": "chat", "session": sa, "text": f"x\u0000{j}", "ref": f"b{j}"}
                )
            return await bad.expect("error", ref="b2")

        results = await asyncio.gather(attacker(), *(honest(i, c) for i, c in enumerate(good)))
        assert results[0]["code"] == "bad_frame", results[0]
        acks = [r for rs in results[1:] for r in rs]
        assert all(r["type"] == "ack" for r in acks), acks
        archived = await timeline_chat(server.url, sb)
        assert sorted(e["text"] for e in archived) == sorted(
            f"hello {i}.{j}" for i in range(8) for j in range(3)
        )
        assert await timeline_chat(server.url, sa) == []
    finally:
        for c in (bad, *good):
            await c.close()


# ------------------------------------------------------------------ terms (finding 1)


async def test_empty_terms_and_domains_are_refused_and_terms_still_work(
    server: ServerProcess,
) -> None:
    creator = uid("ht-t")
    live = await live_session(server.url, creator)
    sid = live["session"]["id"]
    h = live["headers"]
    staff = headers(token(uid("ht-admin"), "admin"))
    async with httpx.AsyncClient(base_url=server.url) as http:
        for term in ("\u200b", "   ", "\u00ad\u200d", "*", "* *", "\u0301"):
            assert_bad(
                await http.post(
                    f"/api/creators/{creator}/blocked-terms", headers=h, json={"term": term}
                )
            )
        assert_bad(
            await http.post(
                "/api/creators/global/blocked-terms", headers=staff, json={"term": "\u200b"}
            )
        )
        for domains in (["\u200b"], ["   "], ["."], ["ok.example", "\u00ad"]):
            assert_bad(
                await http.put(
                    f"/api/creators/{creator}/allowed-domains", headers=h, json={"domains": domains}
                )
            )
        r = await http.get(f"/api/creators/{creator}/blocked-terms", headers=h)
        assert r.status_code == 200 and r.json()["terms"] == [], r.text
        # Term changes work afterwards (they all answered 500 before) and are enforced.
        r = await http.post(
            f"/api/creators/{creator}/blocked-terms", headers=h, json={"term": "knockoff"}
        )
        assert r.status_code == 201, r.text
    c = await joined(server, uid("ht-v"), sid)
    try:
        assert (await say(c, sid, "a real knockoff here"))["code"] == "blocked"
        assert (await say(c, sid, "a real bag here"))["type"] == "ack"
    finally:
        await c.close()


async def test_a_stored_term_that_no_longer_loads_never_stops_a_node(
    database_url: str, tmp_path: Any
) -> None:
    """A bad row already in the database (written by an older version, or by hand) made every
    node exit 3 at start. It is logged and skipped; the good terms are enforced."""
    creator = uid("ht-r")
    db = await asyncpg.connect(database_url)
    try:
        await db.executemany(
            "INSERT INTO blocked_terms (scope, term, action, added_by) VALUES ($1, $2, 'block', 'x')",
            [(creator, "\u200b"), (creator, "   "), (creator, "grift")],
        )
    finally:
        await db.close()
    node = ServerProcess(database_url, str(tmp_path)).start()
    try:
        live = await live_session(node.url, creator)
        sid = live["session"]["id"]
        c = await joined(node, uid("ht-v"), sid)
        try:
            assert (await say(c, sid, "pure grift"))["code"] == "blocked"
            assert (await say(c, sid, "a fine bag"))["type"] == "ack"
        finally:
            await c.close()
        async with httpx.AsyncClient(base_url=node.url) as http:
            r = await http.post(
                f"/api/creators/{creator}/blocked-terms",
                headers=live["headers"],
                json={"term": "swindle"},
            )
            assert r.status_code == 201, r.text
        c = await joined(node, uid("ht-v"), sid)
        try:
            assert (await say(c, sid, "a swindle"))["code"] == "blocked"
        finally:
            await c.close()
        # A bad row can still be removed.
        async with httpx.AsyncClient(base_url=node.url) as http:
            r = await http.request(
                "DELETE",
                f"/api/creators/{creator}/blocked-terms",
                headers=live["headers"],
                json={"term": "\u200b"},
            )
            assert r.status_code == 200, r.text
    finally:
        node.kill()


# ------------------------------------------------------------------ chat idempotent per (user, ref)


async def test_a_retried_chat_is_published_once_with_the_same_ack(server: ServerProcess) -> None:
    live = await live_session(server.url, uid("ht-c"))
    sid = live["session"]["id"]
    user = uid("ht-retry")
    c = await joined(server, user, sid)
    try:
        frame = {"type": "chat", "session": sid, "text": "is it in blue?", "ref": "r1"}
        # The same frame twice at once: the second waits for the first's answer.
        await c.send(frame)
        await c.send(frame)
        first = await c.expect("ack", ref="r1")
        second = await c.expect(("ack", "error"), ref="r1")
        assert second == first, (first, second)
        # Once more after a reconnect (the client lost the answer).
        await c.close()
        c = await joined(server, user, sid)
        await c.send(frame)
        third = await c.expect(("ack", "error"), ref="r1")
        assert third == first, (first, third)
        # Another ref is another message (a new text, past the duplicate window's check).
        await c.send({**frame, "text": "and in red?", "ref": "r2"})
        other = await c.expect("ack", ref="r2")
        assert other["offset"] > first["offset"]
    finally:
        await c.close()
    texts = [e["text"] for e in await timeline_chat(server.url, sid)]
    assert texts == ["is it in blue?", "and in red?"], texts


async def test_a_retried_blocked_or_held_chat_gets_the_same_answer(server: ServerProcess) -> None:
    creator = uid("ht-c")
    live = await live_session(server.url, creator)
    sid = live["session"]["id"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        for term, action in (("counterfeit", "block"), ("whatsapp", "hold")):
            r = await http.post(
                f"/api/creators/{creator}/blocked-terms",
                headers=live["headers"],
                json={"term": term, "action": action},
            )
            assert r.status_code == 201, r.text
    c = await joined(server, uid("ht-v"), sid)
    try:
        for ref, text, kind in (
            ("h1", "ask me on whatsapp", "held"),
            ("b1", "counterfeit", "error"),
        ):
            frame = {"type": "chat", "session": sid, "text": text, "ref": ref}
            await c.send(frame)
            first = await c.expect(kind, ref=ref)
            await c.send(frame)
            again = await c.expect(("ack", "held", "error"), ref=ref)
            assert again == first, (first, again)
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.get(f"/api/sessions/{sid}/moderation/queue", headers=live["headers"])
            held = [i for i in r.json()["items"] if i["kind"] == "held"]
            assert len(held) == 1, r.text
    finally:
        await c.close()
    assert await timeline_chat(server.url, sid) == []


async def test_a_chat_retried_on_another_node_gets_the_same_ack(
    nodes: list[ServerProcess],
) -> None:
    """With Redis, the answer is kept for the cluster: a client that reconnects to another
    node and sends the same ref again gets the first ack and publishes nothing."""
    live = await live_session(nodes[0].url, uid("ht-cc"))
    sid = live["session"]["id"]
    user = uid("ht-roam")
    frame = {"type": "chat", "session": sid, "text": "does it ship abroad?", "ref": "r1"}
    answers = []
    for node in (nodes[0], nodes[1], nodes[2], nodes[0]):
        c = await joined(node, user, sid)
        try:
            await c.send(frame)
            answers.append(await c.expect(("ack", "error", "held"), ref="r1"))
        finally:
            await c.close()
    assert answers[0]["type"] == "ack", answers
    assert all(a == answers[0] for a in answers), answers
    texts = [e["text"] for e in await timeline_chat(nodes[0].url, sid)]
    assert texts == ["does it ship abroad?"], texts


async def test_a_row_the_database_refuses_fails_only_its_author_and_a_retry_stores_it(
    server: ServerProcess, database_url: str
) -> None:
    """A chat row PostgreSQL refuses (here a trigger refuses one marker text) fails only its
    author's write: the others in the same group commit are acknowledged and archived. The
    refused message was already published, so the author's retry with the same ref stores it
    and answers the same offset, without publishing it a second time."""
    marker = f"poison-{secrets.token_hex(4)}"
    db = await asyncpg.connect(database_url)
    fn = f"refuse_{marker.replace('-', '_')}"
    await db.execute(
        f"""
        CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.text LIKE '%{marker}%' THEN
            RAISE EXCEPTION 'refused row' USING ERRCODE = 'check_violation';
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER {fn} BEFORE INSERT ON room_events FOR EACH ROW EXECUTE FUNCTION {fn}();
        """
    )
    dropped = False

    async def drop() -> None:
        nonlocal dropped
        if not dropped:
            await db.execute(f"DROP TRIGGER {fn} ON room_events; DROP FUNCTION {fn}();")
            dropped = True

    live = await live_session(server.url, uid("ht-c"))
    sid = live["session"]["id"]
    watcher = await joined(server, uid("ht-w"), sid)
    author = await joined(server, uid("ht-a"), sid)
    others = [await joined(server, uid(f"ht-o{i}"), sid) for i in range(6)]
    try:
        frame = {"type": "chat", "session": sid, "text": f"look {marker}", "ref": "p1"}

        async def other(i: int, c: Client) -> dict[str, Any]:
            await c.send({"type": "chat", "session": sid, "text": f"honest {i}", "ref": "o1"})
            return await c.expect(("ack", "error"), ref="o1")

        async def bad() -> dict[str, Any]:
            await author.send(frame)
            return await author.expect(("ack", "error"), ref="p1")

        first, *rest = await asyncio.gather(bad(), *(other(i, c) for i, c in enumerate(others)))
        assert first["type"] == "error" and first["code"] == "unavailable", first
        assert all(r["type"] == "ack" for r in rest), rest
        seen = await watcher.expect("chat", text=f"look {marker}")  # published live once
        await drop()
        await author.send(frame)
        again = await author.expect(("ack", "error"), ref="p1")
        assert again == {"type": "ack", "ref": "p1", "offset": seen["offset"]}, again
        later = [m for m in await watcher.drain(0.5) if m.get("type") == "chat"]
        assert all(m["text"] != f"look {marker}" for m in later), later
        texts = sorted(e["text"] for e in await timeline_chat(server.url, sid))
        assert texts == sorted([f"look {marker}", *(f"honest {i}" for i in range(6))]), texts
    finally:
        await drop()
        await db.close()
        for c in (watcher, author, *others):
            await c.close()
