"""Discovery end to end: pushes, opt-out, erasure, export and minors."""

from __future__ import annotations

import asyncio

import httpx

from .harness import Client, ServerProcess, headers, live_session, token


async def _engage(server: ServerProcess, sid: str, pid: str, users: list[str]) -> None:
    clients = [await Client.connect(server, token(u)) for u in users]
    for c in clients:
        await c.send({"type": "join", "session": sid})
        await c.expect("joined")
        await c.send({"type": "signal", "session": sid, "name": "add_to_cart", "product": pid})
        await c.send({"type": "signal", "session": sid, "name": "product_click", "product": pid})
    await asyncio.sleep(0.2)
    for c in clients:
        await c.close()


async def test_trending_and_feed_are_pushed_when_the_top_changes(server: ServerProcess) -> None:
    s = await live_session(server.url, creator="rank-host")
    sid, pid = s["session"]["id"], s["product"]["id"]
    watcher = await Client.connect(server, token("rank-watcher"))
    await watcher.send({"type": "feed", "on": True})
    first = await watcher.expect("trending")
    assert pid not in [p["id"] for p in first["products"]]
    feed = await watcher.expect("feed")
    assert all({"kind", "id", "score", "why"} <= set(i) for i in feed["items"])
    await _engage(server, sid, pid, [f"rank-fan{i}" for i in range(6)])
    # Other sessions on this shared node may trend too: wait for the push that has ours.
    deadline = asyncio.get_running_loop().time() + 6
    while True:
        pushed = await watcher.expect("trending", timeout=6)
        if pid in [p["id"] for p in pushed["products"]]:
            break
        assert asyncio.get_running_loop().time() < deadline, pushed
    assert "rank-host" in [h["id"] for h in pushed["hosts"]]
    async with httpx.AsyncClient(base_url=server.url) as http:
        metrics = (await http.get("/metrics")).text
        assert 'livecart_ranking_events_total{kind="add_to_cart"}' in metrics
        push_count = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("livecart_ranking_push_seconds_count")
        )
        assert push_count >= 1, "the event-to-push latency was measured"
        rest = (await http.get("/api/trending", params={"kind": "products"})).json()
        assert pid in [p["id"] for p in rest["products"]]
        cat = (
            await http.get("/api/trending", params={"kind": "products", "category": "home"})
        ).json()
        assert pid in [p["id"] for p in cat["products"]]
        items = (await http.get("/api/feed")).json()["items"]
        assert any(i["id"] in (pid, sid) for i in items)
        first_item = next(i for i in items if i["id"] in (pid, sid))
        assert set(first_item["why"]) == {"trend", "affinity", "explore"}
    await watcher.close()


async def test_one_account_cannot_make_a_product_trend(server: ServerProcess) -> None:
    s = await live_session(server.url, creator="rank-bot-host")
    sid, pid = s["session"]["id"], s["product"]["id"]
    bot = await Client.connect(server, token("rank-bot"))
    await bot.send({"type": "join", "session": sid})
    await bot.expect("joined")
    for _ in range(9):  # under the flood limit
        await bot.send({"type": "signal", "session": sid, "name": "add_to_cart", "product": pid})
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient(base_url=server.url) as http:
        rest = (await http.get("/api/trending", params={"kind": "products", "limit": 50})).json()
    assert pid not in [p["id"] for p in rest["products"]]
    await bot.close()


async def test_opt_out_erasure_export_and_minors(server: ServerProcess) -> None:
    s = await live_session(server.url, creator="privacy-host")
    sid, pid = s["session"]["id"], s["product"]["id"]
    me = headers(token("privacy-viewer"))
    kid = headers(token("privacy-kid", minor=True))
    await _engage(server, sid, pid, ["privacy-viewer"])
    kid_ws = await Client.connect(server, token("privacy-kid", minor=True))
    await kid_ws.send({"type": "join", "session": sid})
    await kid_ws.expect("joined")
    await kid_ws.send({"type": "signal", "session": sid, "name": "product_click", "product": pid})
    await kid_ws.send({"type": "chat", "session": sid, "text": "so cool", "ref": "k"})
    await kid_ws.expect("ack", ref="k")
    await kid_ws.close()
    async with httpx.AsyncClient(base_url=server.url) as http:
        export = (await http.get("/api/me/export", headers=me)).json()
        assert export["user"]["id"] == "privacy-viewer"
        assert export["profile"]["decayed_now"]["categories"]["home"] > 0
        assert (await http.get("/api/me/export", headers=kid)).json()["profile"] is None
        kid_export = (await http.get("/api/me/export", headers=kid)).json()
        assert [c["text"] for c in kid_export["chat"]] == ["so cool"]
        # Erase: gone from the store and from memory.
        assert (await http.delete("/api/me/profile", headers=me)).json()["erased"] is True
        assert (await http.get("/api/me/export", headers=me)).json()["profile"] is None
        # Opt out: no profile updates, trending-only feed.
        r = await http.patch("/api/me/settings", headers=me, json={"personalization": False})
        assert r.json() == {"personalization": False}
        await _engage(server, sid, pid, ["privacy-viewer"])
        assert (await http.get("/api/me/export", headers=me)).json()["profile"] is None
        items = (await http.get("/api/feed", headers=me)).json()["items"]
        assert all(i["why"]["affinity"] == 0 for i in items)
        r = await http.patch("/api/me/settings", headers=me, json={"personalization": "yes"})
        assert r.status_code == 400
        assert (await http.delete("/api/me/profile")).status_code == 401


async def test_creator_score_is_visible_to_its_creator_only(server: ServerProcess) -> None:
    s = await live_session(server.url, creator="score-host")
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/api/creators/score-host/score", headers=s["headers"])
        assert r.status_code == 200
        score = r.json()
        names = {c["name"] for c in score["components"]}
        assert len(names) == 5
        assert abs(sum(c["weight"] for c in score["components"]) - 1) < 1e-9
        assert abs(score["total"] - sum(c["contribution"] for c in score["components"])) < 1e-9
        other = await http.get(
            "/api/creators/score-host/score", headers=headers(token("nosy", "creator"))
        )
        assert other.status_code == 403
        admin = await http.get(
            "/api/creators/score-host/score", headers=headers(token("boss", "admin"))
        )
        assert admin.status_code == 200
