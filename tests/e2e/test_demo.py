"""`livecart demo`: seeds through the public API, prints three signed-in URLs, and its bots
chat, like and buy on their own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect


def test_demo_prints_three_urls_and_its_bots_chat(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("LIVECART_JWT_SECRET", None)  # the demo keeps its own secret in the data dir
    args = ["--port", "0", "--bots", "5", "--data-dir", str(tmp_path / "demo")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "livecart", "demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    try:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 90
        while len(urls) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if m := re.match(r"\s+(viewer|creator|moderator)\s+(http://\S+)\s*$", line):
                urls[m[1]] = m[2]
        assert set(urls) == {"viewer", "creator", "moderator"}, "".join(output)
        threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True).start()

        m = re.fullmatch(r"(http://[^/]+)/watch/([^#/]+)#token=([\w.-]+)", urls["viewer"])
        assert m, urls["viewer"]
        base, sid, viewer = m[1], m[2], m[3]
        m = re.fullmatch(
            rf"{re.escape(base)}/studio#session={sid}&token=([\w.-]+)", urls["creator"]
        )
        assert m, urls["creator"]
        creator = m[1]
        m = re.fullmatch(rf"{re.escape(base)}/moderate/{sid}#token=([\w.-]+)", urls["moderator"])
        assert m, urls["moderator"]
        moderator = m[1]

        with httpx.Client(base_url=base, timeout=10) as http:
            for path in (f"/watch/{sid}", "/studio", f"/moderate/{sid}"):
                page = http.get(path)
                assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            session = http.get(f"/api/sessions/{sid}").json()
            assert session["status"] == "live" and session["creator"] == "demo-creator"
            assert len(session["showcase"]) >= 4
            assert session["pinned_product"] in session["showcase"]

            # Each printed token is accepted, with the role its page needs.
            def auth(tok: str) -> dict[str, str]:
                return {"authorization": f"Bearer {tok}"}

            assert http.get("/api/me/orders", headers=auth(viewer)).status_code == 200
            assert (
                http.get(f"/api/sessions/{sid}/moderation/queue", headers=auth(moderator))
            ).status_code == 200
            assert (
                http.get("/api/creators/demo-creator/audit", headers=auth(creator))
            ).status_code == 200

            # A flash offer is open, as a viewer joining sees it.
            ws_url = base.replace("http://", "ws://") + "/ws"
            with connect(ws_url, open_timeout=10) as ws:
                ws.send(json.dumps({"type": "join", "session": sid}))
                joined = None
                while joined is None:
                    for msg in json.loads(ws.recv(timeout=10)):
                        if msg["type"] == "joined":
                            joined = msg
            assert joined["state"]["status"] == "live"
            assert joined["state"]["offers"], "the demo opens a flash offer"
            assert joined["state"]["pinned"]["id"] == session["pinned_product"]

            # Within a few seconds the bots are chatting.
            bots: set[str] = set()
            deadline = time.monotonic() + 30
            while not bots and time.monotonic() < deadline:
                events = http.get(f"/api/sessions/{sid}/timeline?limit=1000").json()["events"]
                bots = {
                    e["user"]
                    for e in events
                    if e["type"] == "chat" and str(e.get("user", "")).startswith("bot-")
                }
                time.sleep(0.5)
            assert bots, "no bot chat in the timeline:\n" + "".join(output)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise
    assert code == 0, "".join(output)
