"""Faults: a node killed mid-session, the database restarting under a sale."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from livecart.runtime.db import EmbeddedPostgres, migrate

from ..conftest import redis_url_or_skip
from .harness import Client, ServerProcess, live_session, open_offer, token


async def test_clients_of_a_killed_node_resume_on_another_without_losing_acked_chat(
    database_url: str,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    redis_url = redis_url_or_skip()
    a = ServerProcess(database_url, str(tmp_path / "a"), env={"REDIS_URL": redis_url}).start()
    b = ServerProcess(database_url, str(tmp_path / "b"), env={"REDIS_URL": redis_url}).start()
    try:
        s = await live_session(a.url, creator="fault-host")
        sid = s["session"]["id"]
        viewer = await Client.connect(a, token("fault-viewer"))
        await viewer.send({"type": "join", "session": sid})
        joined = await viewer.expect("joined")
        writer = await Client.connect(a, token("fault-writer"))
        acked = []
        for i in range(3):
            await writer.send(
                {"type": "chat", "session": sid, "text": f"before {i}", "ref": f"x{i}"}
            )
            acked.append((await writer.expect("ack", ref=f"x{i}"))["offset"])
        last_seen = joined["offset"]
        for _ in acked:
            last_seen = (await viewer.expect("chat"))["offset"]
        a.kill()  # SIGKILL: no goodbye
        other = await Client.connect(b, token("fault-writer2"))
        await other.send({"type": "chat", "session": sid, "text": "meanwhile", "ref": "m"})
        meanwhile = (await other.expect("ack", ref="m"))["offset"]
        back = await Client.connect(b, token("fault-viewer"))
        await back.send(
            {
                "type": "join",
                "session": sid,
                "since": {"epoch": joined["epoch"], "offset": last_seen},
            }
        )
        rejoined = await back.expect("joined")
        assert rejoined["recovered"] is True
        missed = [m for m in await back.drain(0.5) if m.get("type") == "chat"]
        assert [m["offset"] for m in missed] == [meanwhile]
        async with httpx.AsyncClient(base_url=b.url) as http:
            events = (await http.get(f"/api/sessions/{sid}/timeline")).json()["events"]
        stored = {e["offset"] for e in events if e["type"] == "chat"}
        assert set(acked) | {meanwhile} <= stored, "every acknowledged message is in the archive"
        for c in (back, other):
            await c.close()
    finally:
        a.kill()
        b.kill()


async def test_purchases_answer_unavailable_while_the_database_is_down_then_succeed(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    url = await pg.astart()
    await migrate(url)
    node = ServerProcess(url, str(tmp_path / "node")).start()
    try:
        s = await live_session(node.url, creator="db-fault-host")
        sid = s["session"]["id"]
        offer = await open_offer(
            node.url, s, price_cents=100, quantity=5, per_user_limit=1, duration_s=600
        )
        buyer = await Client.connect(node, token("db-fault-buyer"))
        await pg.astop()
        await buyer.send(
            {"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": "r"}
        )
        refused = await buyer.expect(("order", "error"), timeout=20, ref="r")
        assert refused["type"] == "error" and refused["code"] == "unavailable", refused
        await pg.astart()
        deadline = time.monotonic() + 20
        while True:
            await buyer.send(
                {"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": "r"}
            )
            answer = await buyer.expect(("order", "error"), timeout=20, ref="r")
            if answer["type"] == "order":
                break
            assert answer["code"] == "unavailable" and time.monotonic() < deadline, answer
            await asyncio.sleep(0.5)
        assert answer["order"]["status"] == "reserved" and answer["order"]["qty"] == 1
        # The same ref again: the same order, nothing more reserved.
        await buyer.send(
            {"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": "r"}
        )
        again = await buyer.expect("order", ref="r")
        assert again["order"]["id"] == answer["order"]["id"]
        await buyer.close()
    finally:
        node.kill()
        await pg.astop()


async def test_a_redis_restart_gives_viewers_a_fresh_snapshot_and_chat_goes_on(
    database_url: str,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = _start(argv)
    node = None
    try:
        await asyncio.sleep(0.3)
        node = ServerProcess(
            database_url, str(tmp_path), env={"REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        ).start()
        s = await live_session(node.url, creator="redis-fault-host")
        sid = s["session"]["id"]
        viewer = await Client.connect(node, token("redis-fault-viewer"))
        await viewer.send({"type": "join", "session": sid})
        before = await viewer.expect("joined")
        redis.kill()
        redis.wait(5)
        redis = _start(argv)  # an empty Redis: every room's history is lost
        writer = await Client.connect(node, token("redis-fault-writer"))
        deadline = time.monotonic() + 20
        answers = []
        while True:
            await writer.send({"type": "chat", "session": sid, "text": "back?", "ref": "w"})
            answer = await writer.expect(("ack", "error"), timeout=10, ref="w")
            if answer["type"] == "ack":
                break
            # Retries while Redis is away spend the user's chat budget too.
            answers.append((round(time.monotonic() - deadline + 20, 1), answer["code"]))
            assert answer["code"] in ("unavailable", "duplicate", "rate_limited"), answer
            assert time.monotonic() < deadline, (answers, "".join(node.output)[-2000:])
            await asyncio.sleep(max(0.5, answer.get("retry_after_ms", 0) / 1000))
        # The connected viewer is resynced with a fresh snapshot of the new epoch.
        fresh = await viewer.expect("joined", timeout=10)
        assert fresh["epoch"] != before["epoch"] and fresh["recovered"] is False
        assert fresh["offset"] >= before["offset"]
        # The new message is in the fresh snapshot, or follows it as a live event.
        in_snapshot = [m for m in fresh["state"]["chat"] if m.get("text") == "back?"]
        chat = in_snapshot[0] if in_snapshot else await viewer.expect("chat", text="back?")
        assert chat["offset"] == answer["offset"]
        # PostgreSQL-backed data is intact.
        async with httpx.AsyncClient(base_url=node.url) as http:
            assert (await http.get(f"/api/sessions/{sid}")).json()["status"] == "live"
            assert (await http.get("/readyz")).json()["ready"] is True
        for c in (viewer, writer):
            await c.close()
    finally:
        if node is not None:
            node.kill()
        redis.kill()


def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL)
