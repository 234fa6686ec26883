"""Process lifecycle: graceful SIGTERM, restarts that keep data, readiness while draining."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import websockets

from .harness import Client, ServerProcess, headers, live_session, token


async def test_sigterm_closes_sockets_with_1001_and_exits_0(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node = ServerProcess(database_url, str(tmp_path)).start()
    try:
        s = await live_session(node.url, creator="term-creator")
        clients = [await Client.connect(node, token(f"term{i}")) for i in range(3)]
        for c in clients:
            await c.send({"type": "join", "session": s["session"]["id"]})
            await c.expect("joined")
        started = time.monotonic()
        node.proc.send_signal(15)  # type: ignore[union-attr]
        for c in clients:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await c._read(10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        code = await asyncio.to_thread(node.proc.wait, 15)  # type: ignore[union-attr]
        assert code == 0, "".join(node.output)
        assert time.monotonic() - started < 10
    finally:
        node.kill()


async def test_restart_keeps_products_sessions_and_chat(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node = ServerProcess(database_url, str(tmp_path)).start()
    try:
        s = await live_session(node.url, creator="keeper")
        sid = s["session"]["id"]
        c = await Client.connect(node, token("speaker"))
        await c.send({"type": "chat", "session": sid, "text": "remember me", "ref": "1"})
        acked = (await c.expect("ack", ref="1"))["offset"]
        await c.close()
        assert node.terminate() == 0
        node = ServerProcess(database_url, str(tmp_path)).start()
        async with httpx.AsyncClient(base_url=node.url) as http:
            product = (await http.get(f"/api/products/{s['product']['id']}")).json()
            assert product["title"] == "Ceramic mug"
            session = (await http.get(f"/api/sessions/{sid}")).json()
            assert session["status"] == "live" and session["showcase"] == [s["product"]["id"]]
            tl = (await http.get(f"/api/sessions/{sid}/timeline")).json()
            chats = [e for e in tl["events"] if e["type"] == "chat"]
            assert [(e["offset"], e["text"], e["user"]) for e in chats] == [
                (acked, "remember me", "speaker")
            ]
        # Offsets continue after the archive's newest; the log starts a new epoch.
        c = await Client.connect(node, token("speaker2"))
        await c.send({"type": "join", "session": sid})
        joined = await c.expect("joined")
        assert joined["offset"] == acked
        # The snapshot's recent chat comes from the durable log after a restart.
        assert [(m["offset"], m["text"]) for m in joined["state"]["chat"]] == [
            (acked, "remember me")
        ]
        await c.send({"type": "chat", "session": sid, "text": "after restart", "ref": "2"})
        assert (await c.expect("ack", ref="2"))["offset"] == acked + 1
        await c.close()
    finally:
        node.kill()


async def test_embedded_default_restarts_on_its_data_dir(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No DATABASE_URL: the embedded PostgreSQL in --data-dir, reused on the second start."""
    first = ServerProcess("", str(tmp_path)).start(timeout=60)
    try:
        h = headers(token("embedded-creator", "creator"))
        async with httpx.AsyncClient(base_url=first.url) as http:
            r = await http.post(
                "/api/products", headers=h, json={"title": "Lamp", "price_cents": 100}
            )
            pid = r.json()["id"]
        assert first.terminate() == 0
        second = ServerProcess("", str(tmp_path)).start(timeout=60)
        try:
            async with httpx.AsyncClient(base_url=second.url) as http:
                assert (await http.get(f"/api/products/{pid}")).json()["title"] == "Lamp"
                assert (await http.get("/readyz")).json()["ready"] is True
        finally:
            assert second.terminate() == 0
    finally:
        first.kill()
