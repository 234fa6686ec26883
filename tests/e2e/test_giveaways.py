"""Giveaways over real sockets (SPEC §13): presence, guests, minors, buyers eligibility,
entering an ended giveaway, bad terms, the draw verified by `scripts/verify_giveaway.py`
against the running server, and a draw across three nodes."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from .harness import Client, ServerProcess, headers, live_session, open_offer, token

ROOT = Path(__file__).parents[2]
VERIFY = ROOT / "scripts" / "verify_giveaway.py"
_spec = importlib.util.spec_from_file_location("verify_giveaway_e2e", VERIFY)
assert _spec is not None and _spec.loader is not None
verify_giveaway = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(verify_giveaway)


async def _giveaway(
    base: str, live: dict[str, Any], *, winners: int, duration_s: int, eligibility: str
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post(
            f"/api/sessions/{live['session']['id']}/giveaways",
            headers=live["headers"],
            json={
                "product_id": live["product"]["id"],
                "winners": winners,
                "duration_s": duration_s,
                "eligibility": eligibility,
            },
        )
        assert r.status_code == 201, r.text
        giveaway: dict[str, Any] = r.json()
        return giveaway


async def _enter(c: Client, sid: str, gid: str, ref: str) -> dict[str, Any]:
    await c.send({"type": "enter", "session": sid, "giveaway": gid, "ref": ref})
    return await c.expect(("ack", "error"), ref=ref)


async def _ended(base: str, gid: str, timeout: float = 10.0) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base) as http:
        for _ in range(int(timeout * 10)):
            g: dict[str, Any] = (await http.get(f"/api/giveaways/{gid}")).json()
            if g["status"] == "ended":
                return g
            await asyncio.sleep(0.1)
    raise AssertionError(f"giveaway {gid} was not drawn within {timeout}s")


def _verify(url: str, gid: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(VERIFY), url, gid, *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_giveaway_end_to_end(server: ServerProcess) -> None:
    live = await live_session(server.url, creator="gw-host")
    sid, pid = live["session"]["id"], live["product"]["id"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        # Bad terms: refused with bad_frame, nothing taken from stock.
        for bad in ({"winners": 0}, {"winners": -2}, {"winners": 101}, {"duration_s": 0},
                    {"duration_s": 3601}, {"eligibility": "everyone"}):  # fmt: skip
            body = {"product_id": pid, "winners": 1, "duration_s": 60, "eligibility": "viewers"}
            r = await http.post(
                f"/api/sessions/{sid}/giveaways", headers=live["headers"], json={**body, **bad}
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_frame", (bad, r.text)
        r = await http.post(
            f"/api/sessions/{sid}/giveaways",
            headers=headers(token("gw-intruder", "creator")),
            json={"product_id": pid, "winners": 1, "duration_s": 60},
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await http.patch(f"/api/products/{pid}", headers=live["headers"], json={"stock": 1})
        assert r.status_code == 200, r.text
        r = await http.post(
            f"/api/sessions/{sid}/giveaways",
            headers=live["headers"],
            json={"product_id": pid, "winners": 2, "duration_s": 60},
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == "sold_out", r.text
        assert (await http.get(f"/api/products/{pid}")).json()["stock"] == 1
        r = await http.patch(f"/api/products/{pid}", headers=live["headers"], json={"stock": 100})
        assert r.status_code == 200, r.text

    viewers = [await Client.connect(server, token(f"gw-v{i}")) for i in range(5)]
    outsider = await Client.connect(server, token("gw-outsider"))
    kid = await Client.connect(server, token("gw-kid", minor=True))
    guest = await Client.connect(server)
    for c in [*viewers, kid, guest]:
        await c.send({"type": "join", "session": sid})
        await c.expect("joined")
    g = await _giveaway(server.url, live, winners=2, duration_s=2, eligibility="viewers")
    event = await viewers[0].expect("giveaway", id=g["id"])
    assert event["commitment"] == g["commitment"] and "seed" not in event
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get(f"/api/products/{pid}")).json()["stock"] == 98
        early = (await http.get(f"/api/giveaways/{g['id']}")).json()
        assert early["seed"] is None and early["entrants"] is None
    # A late joiner sees the open giveaway in the snapshot.
    late = await Client.connect(server, token("gw-late"))
    await late.send({"type": "join", "session": sid})
    snap = (await late.expect("joined"))["state"]
    assert snap["giveaway"]["id"] == g["id"] and "seed" not in snap["giveaway"]

    for i, c in enumerate(viewers):
        assert (await _enter(c, sid, g["id"], f"e{i}"))["type"] == "ack"
    assert (await _enter(viewers[0], sid, g["id"], "again"))["type"] == "ack"  # one entry
    assert (await _enter(outsider, sid, g["id"], "x"))["code"] == "forbidden"  # not joined
    assert (await _enter(kid, sid, g["id"], "x"))["code"] == "forbidden"
    assert (await _enter(guest, sid, g["id"], "x"))["code"] == "unauthorized"
    # Leaving the session ends presence.
    await late.send({"type": "leave", "session": sid})
    await late.expect("left")
    assert (await _enter(late, sid, g["id"], "x"))["code"] == "forbidden"

    ended = await viewers[0].expect("giveaway_ended", timeout=10, giveaway=g["id"])
    assert len(ended["winners"]) == 2 and ended["entrants"] == 5
    assert hashlib.sha256(ended["seed"].encode()).hexdigest() == g["commitment"]
    for i, c in enumerate(viewers):
        if f"gw-v{i}" in ended["winners"]:
            prize = await c.expect("order", ref=f"giveaway:{g['id']}")
            assert prize["order"]["total_cents"] == 0 and prize["order"]["status"] == "reserved"
    assert (await _enter(viewers[1], sid, g["id"], "late"))["code"] == "offer_closed"

    final = await _ended(server.url, g["id"])
    assert sorted(final["entrants"]) == [f"gw-v{i}" for i in range(5)]
    assert final["drawn"] == ended["winners"] and final["seed"] == ended["seed"]
    done = _verify(server.url, g["id"], "--commitment", g["commitment"])
    assert done.returncode == 0 and done.stdout.startswith("OK"), done.stdout + done.stderr
    wrong = _verify(server.url, g["id"], "--commitment", "0" * 64)
    assert wrong.returncode == 1 and "WRONG" in wrong.stdout
    missing = _verify(server.url, "gwy_nope")
    assert missing.returncode == 1
    # The script's check on the server's answer, then on altered copies of it.
    assert verify_giveaway.check(final, commitment=g["commitment"]) == []
    others = [u for u in final["entrants"] if u not in final["drawn"]]
    for tampered in (
        {**final, "drawn": [others[0], *final["drawn"][1:]]},  # another winner
        {**final, "seed": "f" * 64},  # another seed
        {**final, "entrants": [u for u in final["entrants"] if u != final["drawn"][0]]},
        {**final, "drawn": list(reversed(final["drawn"]))},  # the order is part of the draw
    ):
        assert verify_giveaway.check(tampered) != [], tampered
    for c in [*viewers, outsider, kid, guest, late]:
        await c.close()


async def test_buyers_only_giveaway(server: ServerProcess) -> None:
    live = await live_session(server.url, creator="gw-host2")
    sid = live["session"]["id"]
    offer = await open_offer(server.url, live, price_cents=500, quantity=5, per_user_limit=1)
    buyer = await Client.connect(server, token("gw-buyer"))
    browser = await Client.connect(server, token("gw-browser"))
    for c in (buyer, browser):
        await c.send({"type": "join", "session": sid})
        await c.expect("joined")
    await buyer.send({"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": "b"})
    await buyer.expect("order", ref="b")
    g = await _giveaway(server.url, live, winners=1, duration_s=60, eligibility="buyers")
    assert (await _enter(buyer, sid, g["id"], "e"))["type"] == "ack"
    assert (await _enter(browser, sid, g["id"], "e"))["code"] == "forbidden"
    # Not this session's giveaway: not_found.
    other = await live_session(server.url, creator="gw-host3")
    await buyer.send({"type": "join", "session": other["session"]["id"]})
    await buyer.expect("joined")
    assert (await _enter(buyer, other["session"]["id"], g["id"], "w"))["code"] == "not_found"
    # The session ends: drawn at once; the one entrant wins.
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.post(f"/api/sessions/{sid}/end", headers=live["headers"])
        assert r.status_code == 200, r.text
    final = await _ended(server.url, g["id"])
    assert final["drawn"] == ["gw-buyer"]
    assert _verify(server.url, g["id"]).returncode == 0
    for c in (buyer, browser):
        await c.close()


async def test_giveaway_across_nodes(nodes: list[ServerProcess]) -> None:
    """Entrants on three nodes; drawn once; each winner's own node tells it its order."""
    live = await live_session(nodes[0].url, creator="gw-cluster")
    sid = live["session"]["id"]
    clients = []
    for i in range(9):
        c = await Client.connect(nodes[i % 3], token(f"gw-c{i}"))
        await c.send({"type": "join", "session": sid})
        await c.expect("joined")
        clients.append(c)
    g = await _giveaway(nodes[1].url, live, winners=3, duration_s=2, eligibility="viewers")
    for i, c in enumerate(clients):
        await c.expect("giveaway", id=g["id"])
        assert (await _enter(c, sid, g["id"], f"e{i}"))["type"] == "ack"
    ended = [await c.expect("giveaway_ended", timeout=10) for c in clients]
    assert all(e["offset"] == ended[0]["offset"] for e in ended)  # one event, one offset
    winners = ended[0]["winners"]
    assert len(winners) == 3
    for i, c in enumerate(clients):
        if f"gw-c{i}" in winners:
            await c.expect("order", ref=f"giveaway:{g['id']}")
    final = await _ended(nodes[2].url, g["id"])
    assert len(final["entrants"]) == 9
    assert _verify(nodes[2].url, g["id"]).returncode == 0
    async with httpx.AsyncClient(base_url=nodes[0].url) as http:
        mine = (await http.get("/api/me/orders", headers=headers(token(winners[0])))).json()
        assert [o["total_cents"] for o in mine] == [0]
    for c in clients:
        await c.close()
