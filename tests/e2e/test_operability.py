"""What an on-call engineer relies on: exact metrics, readiness, structured logs."""

from __future__ import annotations

import asyncio
import json
import re
import time

import asyncpg
import httpx
import pytest
import websockets

from livecart.runtime.db import EmbeddedPostgres, migrate

from .harness import Client, ServerProcess, headers, live_session, open_offer, token

_SAMPLE = re.compile(r"^(livecart_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$")


async def scrape(base: str) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=base) as http:
        text = (await http.get("/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def delta(before: dict[str, float], after: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_move_by_exactly_the_scripted_amounts(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node = ServerProcess(database_url, str(tmp_path)).start()
    try:
        s = await live_session(node.url, creator="ops-creator")
        sid = s["session"]["id"]
        offer = await open_offer(node.url, s, price_cents=500, quantity=1, per_user_limit=1)
        before = await scrape(node.url)
        viewer = await Client.connect(node, token("ops-viewer"))
        buyer2 = await Client.connect(node, token("ops-viewer2"))
        guest = await Client.connect(node)
        for c in (viewer, guest):
            await c.send({"type": "join", "session": sid})
            await c.expect("joined")
        during = await scrape(node.url)
        assert delta(before, during, 'livecart_connections{role="viewer"}') == 2
        assert delta(before, during, 'livecart_connections{role="guest"}') == 1
        for i in range(3):
            await viewer.send(
                {"type": "chat", "session": sid, "text": f"hello {i}", "ref": f"c{i}"}
            )
            await viewer.expect("ack", ref=f"c{i}")
        await viewer.send(
            {"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": "b"}
        )
        await viewer.expect("order", ref="b")
        await buyer2.send(
            {"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": "b"}
        )
        assert (await buyer2.expect("error", ref="b"))["code"] == "sold_out"
        async with httpx.AsyncClient(base_url=node.url) as http:
            r = await http.post(
                f"/api/sessions/{sid}/moderation",
                headers=s["headers"],
                json={"action": "slow", "seconds": 5},
            )
            assert r.status_code == 200, r.text
        await guest.send({"type": "nonsense"})
        await guest.expect("error")
        for c in (viewer, buyer2, guest):
            await c.close()
        await asyncio.sleep(0.5)  # the server sees the closes
        after = await scrape(node.url)
        assert delta(before, after, 'livecart_frames_in_total{type="chat"}') == 3
        assert delta(before, after, 'livecart_frames_in_total{type="join"}') == 2
        assert delta(before, after, 'livecart_frames_in_total{type="buy"}') == 2
        assert delta(before, after, 'livecart_frames_in_total{type="invalid"}') == 1
        assert delta(before, after, "livecart_chat_acks_total") == 3
        assert delta(before, after, 'livecart_moderation_actions_total{action="slow"}') == 1
        assert delta(before, after, "livecart_chat_ack_seconds_count") == 3
        assert delta(before, after, 'livecart_buy_attempts_total{outcome="reserved"}') == 1
        assert delta(before, after, 'livecart_buy_attempts_total{outcome="sold_out"}') == 1
        assert delta(before, after, "livecart_order_seconds_count") == 2
        assert delta(before, after, "livecart_offers_sold_out_total") == 1
        assert delta(before, after, 'livecart_closes_total{code="1000"}') == 3
        assert delta(before, after, "livecart_offers_sold_out_total") == 1, "counted once"
        assert delta(before, after, 'livecart_connections{role="viewer"}') == 0
        assert after["livecart_db_pool_size"] >= 1
        # A quiet moment: every request answered, nothing waits for a connection.
        assert after["livecart_db_pool_waiting"] == 0
        assert delta(before, after, 'livecart_db_query_seconds_count{kind="transaction"}') >= 1
        assert delta(before, after, 'livecart_db_query_seconds_count{kind="statement"}') >= 3
        assert "livecart_event_loop_lag_seconds" in after
        assert delta(before, after, "livecart_frames_out_total") >= 1
    finally:
        node.kill()


async def test_pool_waiting_counts_requests_held_up_for_a_connection(  # type: ignore[no-untyped-def]
    database_url: str, tmp_path
) -> None:
    """With a pool of two connections (one held by the node's LISTEN for returned stock), a
    request blocked on a row lock holds the other: a second request waits for a connection
    and `livecart_db_pool_waiting` shows it; once the lock goes, both are answered and the
    gauge is back to 0."""
    node = ServerProcess(
        database_url,
        str(tmp_path),
        env={"LIVECART_DB_POOL_MIN": "2", "LIVECART_DB_POOL_MAX": "2"},
    ).start()
    try:
        s = await live_session(node.url, creator="pool-creator")
        pid, h = s["product"]["id"], s["headers"]
        quiet = await scrape(node.url)
        assert quiet["livecart_db_pool_max"] == 2
        assert quiet["livecart_db_pool_waiting"] == 0
        locker = await asyncpg.connect(database_url)
        try:
            async with httpx.AsyncClient(base_url=node.url, timeout=30) as http:
                tx = locker.transaction()
                await tx.start()
                await locker.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", pid)
                first = asyncio.create_task(
                    http.patch(f"/api/products/{pid}", headers=h, json={"title": "First"})
                )
                # The first request's UPDATE waits for the row lock, on the pool's last free
                # connection.
                await until(lambda: locked_updates(locker), "the first update waits for the lock")
                second = asyncio.create_task(
                    http.patch(f"/api/products/{pid}", headers=h, json={"title": "Second"})
                )
                waiting = await until_metric(node.url, lambda m: m >= 1)
                assert waiting >= 1
                await tx.rollback()
                answers = await asyncio.gather(first, second)
                assert [r.status_code for r in answers] == [200, 200]
            assert await until_metric(node.url, lambda m: m == 0) == 0
        finally:
            await locker.close()
    finally:
        node.kill()


async def locked_updates(conn: asyncpg.Connection) -> bool:
    """Whether an UPDATE of products waits for a lock in this database (a fresh view of
    pg_stat_activity: within a transaction it is otherwise read once)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    n = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE products%'"
    )
    return bool(n)


async def until(check, what: str, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def until_metric(base: str, ok, timeout: float = 10) -> float:  # type: ignore[no-untyped-def]
    """`livecart_db_pool_waiting` once `ok(value)`, scraped until then."""
    deadline = time.monotonic() + timeout
    while True:
        value = (await scrape(base))["livecart_db_pool_waiting"]
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


async def test_readyz_fails_first_during_drain(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node = ServerProcess(database_url, str(tmp_path), env={"LIVECART_DRAIN_GRACE_S": "1.5"}).start()
    try:
        c = await Client.connect(node, token("drain-viewer"))
        await c.expect("hello")
        async with httpx.AsyncClient(base_url=node.url) as http:
            assert (await http.get("/readyz")).status_code == 200
            node.proc.send_signal(15)  # type: ignore[union-attr]
            deadline = time.monotonic() + 1.0
            status = 200
            while time.monotonic() < deadline and status == 200:
                status = (await http.get("/readyz")).status_code
            assert status == 503, "readiness fails while the socket is still open"
            assert (await http.get("/healthz")).status_code == 200
            # New WebSocket clients are turned away (to another node) with 503.
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(node.ws_url, open_timeout=5)
            assert refused.value.response.status_code == 503
        code = None
        try:
            while True:
                await c._read(5)
        except Exception as exc:  # the close arrives after the grace period
            code = getattr(getattr(exc, "rcvd", None), "code", None)
        assert code == 1001
        assert await asyncio.to_thread(node.proc.wait, 15) == 0  # type: ignore[union-attr]
    finally:
        node.kill()


async def test_readyz_follows_the_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pg = EmbeddedPostgres(tmp_path / "own-pg")
    url = await pg.astart()
    await migrate(url)
    node = ServerProcess(url, str(tmp_path / "node")).start()
    try:
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            assert (await http.get("/readyz")).json()["database"] is True
            await pg.astop()
            r = await http.get("/readyz")
            assert r.status_code == 503 and r.json()["database"] is False
            assert (await http.get("/healthz")).status_code == 200
            await pg.astart()
            deadline = time.monotonic() + 15
            while (r := await http.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, r.text
                await asyncio.sleep(0.3)
    finally:
        node.kill()
        await pg.astop()


async def test_logs_are_json_lines_without_tokens(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node = ServerProcess(
        database_url,
        str(tmp_path),
        env={
            "LIVECART_LOG_FORMAT": "json",
            "LIVECART_LOG_LEVEL": "debug",
            "LIVECART_NODE_ID": "node-under-test",
        },
    ).start()
    secret_token = token("log-viewer")
    try:
        s = await live_session(node.url, creator="log-creator")
        c = await Client.connect(node, secret_token)
        await c.send({"type": "join", "session": s["session"]["id"]})
        await c.expect("joined")
        await c.close()
        async with httpx.AsyncClient(base_url=node.url) as http:
            await http.get("/api/me/orders", headers=headers(secret_token))
        await asyncio.sleep(0.3)
    finally:
        node.terminate()
    lines = [ln for ln in node.output if not ln.startswith("livecart ready on ")]
    assert lines, "the node logged something"
    entries = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert all(e["node"] == "node-under-test" and e["level"] for e in entries)
    assert any(e.get("user") == "log-viewer" and e.get("conn") for e in entries)
    assert secret_token not in "".join(node.output)
    assert secret_token.split(".")[2] not in "".join(node.output)
