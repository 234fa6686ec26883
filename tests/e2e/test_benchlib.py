"""What the benchmark scripts share (`scripts/benchlib.py`) against a real node and a real
PostgreSQL: the lean WebSocket client's frames both ways, and the scratch database that a
run creates and drops."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest

from .harness import ServerProcess, live_session, token


def _benchlib() -> ModuleType:
    path = Path(__file__).parents[2] / "scripts" / "benchlib.py"
    spec = importlib.util.spec_from_file_location("benchlib", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("benchlib", module)
    spec.loader.exec_module(module)
    return module


benchlib = _benchlib()


def test_client_frames_are_masked_and_sized_as_rfc_6455_says() -> None:
    for n, header in ((0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)):
        payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        frame = benchlib.client_frame(payload)
        assert frame[0] == 0x81 and frame[1] & 0x80, "final text frame, masked"
        assert len(frame) == header + 4 + n
        mask = frame[header : header + 4]
        body = frame[header + 4 :]
        assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == payload
    assert benchlib.client_frame(b"x", 9)[0] == 0x89  # a ping


async def test_the_lean_viewer_talks_to_a_node(server: ServerProcess) -> None:
    live = await live_session(server.url, creator="benchlib-host")
    sid = live["session"]["id"]
    viewer = await benchlib.connect("127.0.0.1", server.port, f"/ws?token={token('bl-v')}")
    try:
        joined = viewer.first("joined")
        viewer.send_json({"type": "join", "session": sid})
        assert (await joined)["session"] == sid  # a server frame well over 125 bytes
        for ref, size in (("short", 10), ("medium", 400)):  # 7-bit and 16-bit lengths
            answer = viewer.answer(ref)
            viewer.send_json({"type": "chat", "session": sid, "text": "x" * size, "ref": ref})
            at, message = await answer
            assert message["type"] == "ack" and at > 0
        pong = viewer.answer("p")
        viewer.send_json({"type": "ping", "ref": "p"})
        assert (await pong)[1]["type"] == "pong"
    finally:
        viewer.close()
    # A close from the server (4001: not signed in) fails what still waits for an answer.
    refused = await benchlib.connect("127.0.0.1", server.port, "/ws?token=not-a-token")
    try:
        waiting = refused.answer("never")
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(waiting, 10)
        assert refused.closed == "4001", refused.closed
    finally:
        refused.close()


async def test_a_scratch_database_is_created_and_dropped(pg_server_url: str) -> None:
    async with benchlib.database(pg_server_url) as db:
        assert db.url != pg_server_url and "scratch database" in db.label
        conn = await asyncpg.connect(db.url)
        try:
            assert await conn.fetchval("SELECT current_database()") == db.url.rsplit("/", 1)[1]
        finally:
            await conn.close()
    conn = await asyncpg.connect(pg_server_url)
    try:
        name = db.url.rsplit("/", 1)[1]
        assert not await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    finally:
        await conn.close()
    async with benchlib.database(pg_server_url, scratch=False) as db:
        assert db.url == pg_server_url
