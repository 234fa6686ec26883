"""Several nodes on one PostgreSQL and one Redis: one room log, recovery anywhere."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import httpx
import pytest

from ..conftest import redis_url_or_skip
from .harness import Client, ServerProcess, live_session, open_offer, token


async def test_every_node_sees_one_order_of_offsets(nodes: list[ServerProcess]) -> None:
    s = await live_session(nodes[0].url, creator="cluster-host")
    sid = s["session"]["id"]
    viewers = [await Client.connect(n, token(f"cv{i}")) for i, n in enumerate(nodes)]
    for v in viewers:
        await v.send({"type": "join", "session": sid})
        await v.expect("joined")
    writers = [await Client.connect(nodes[i % 3], token(f"cw{i}")) for i in range(6)]
    for round_ in range(3):
        await asyncio.gather(
            *(
                w.send(
                    {"type": "chat", "session": sid, "text": f"{i}-{round_}", "ref": f"r{round_}"}
                )
                for i, w in enumerate(writers)
            )
        )
    acked = sorted(
        [(await w.expect("ack", ref=f"r{r}"))["offset"] for w in writers for r in range(3)]
    )
    assert acked == list(range(acked[0], acked[0] + 18)), "contiguous offsets across nodes"
    seen = []
    for v in viewers:
        got = [await v.expect("chat", timeout=10) for _ in range(18)]
        seen.append([(m["offset"], m["text"]) for m in got])
    assert seen[0] == seen[1] == seen[2]
    assert [o for o, _ in seen[0]] == acked
    for c in viewers + writers:
        await c.close()


async def test_recovery_on_another_node(nodes: list[ServerProcess]) -> None:
    s = await live_session(nodes[1].url, creator="cluster-host2")
    sid = s["session"]["id"]
    v = await Client.connect(nodes[0], token("roamer"))
    await v.send({"type": "join", "session": sid})
    joined = await v.expect("joined")
    await v.close()
    w = await Client.connect(nodes[1], token("roam-writer"))
    offsets = []
    for i in range(4):
        await w.send({"type": "chat", "session": sid, "text": f"while away {i}", "ref": f"a{i}"})
        offsets.append((await w.expect("ack", ref=f"a{i}"))["offset"])
    back = await Client.connect(nodes[2], token("roamer"))
    await back.send(
        {
            "type": "join",
            "session": sid,
            "since": {"epoch": joined["epoch"], "offset": joined["offset"]},
        }
    )
    rejoined = await back.expect("joined")
    assert rejoined["recovered"] is True and rejoined["epoch"] == joined["epoch"]
    missed = [m for m in await back.drain(0.5) if m.get("type") == "chat"]
    assert [m["offset"] for m in missed] == offsets
    await back.close()
    await w.close()


async def test_flash_sale_split_across_nodes_sells_exactly_the_stock(
    nodes: list[ServerProcess],
) -> None:
    s = await live_session(nodes[0].url, creator="cluster-seller")
    sid = s["session"]["id"]
    offer = await open_offer(nodes[0].url, s, price_cents=100, quantity=10, per_user_limit=1)
    watcher = await Client.connect(nodes[2], token("cb-watch"))
    await watcher.send({"type": "join", "session": sid})
    await watcher.expect("joined")
    # Buyers on nodes 0 and 1 only: the watcher's node sells nothing itself.
    buyers = [await Client.connect(nodes[i % 2], token(f"cb{i}")) for i in range(60)]
    await asyncio.gather(
        *(
            b.send({"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": "x"})
            for b in buyers
        )
    )
    outcomes = [await b.expect(("order", "error"), ref="x", timeout=15) for b in buyers]
    assert sum(1 for o in outcomes if o["type"] == "order") == 10
    assert all(o["code"] == "sold_out" for o in outcomes if o["type"] == "error")
    # Coalesced stock reaches viewers on every node, not only where the sales were made.
    assert (await watcher.expect("stock", timeout=5, remaining=0))["offer"] == offer["id"]
    for b in [*buyers, watcher]:
        await b.close()


async def test_a_ban_on_one_node_holds_on_the_others(nodes: list[ServerProcess]) -> None:
    s = await live_session(nodes[0].url, creator="cluster-mod-host")
    sid = s["session"]["id"]
    async with httpx.AsyncClient(base_url=nodes[0].url) as http:
        r = await http.post(
            f"/api/sessions/{sid}/moderation",
            headers=s["headers"],
            json={"action": "ban", "user_id": "cluster-troll"},
        )
        assert r.status_code == 200, r.text
    troll = await Client.connect(nodes[2], token("cluster-troll"))
    deadline = asyncio.get_running_loop().time() + 5
    for i in range(5):
        await troll.send({"type": "chat", "session": sid, "text": f"let me in {i}", "ref": f"t{i}"})
        answer = await troll.expect(("ack", "error"), ref=f"t{i}")
        if answer["type"] == "error":
            assert answer["code"] == "banned"
            break
        await asyncio.sleep(1.1)
        assert asyncio.get_running_loop().time() < deadline
    else:
        raise AssertionError("the ban never reached the other node")
    await troll.close()


async def test_serve_with_workers_shares_one_port(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    redis_url = redis_url_or_skip()
    proc = ServerProcess(
        database_url, str(tmp_path), env={"REDIS_URL": redis_url}, extra_args=["--workers", "2"]
    ).start()
    try:
        s = await live_session(proc.url, creator="workers-host")
        sid = s["session"]["id"]
        # SO_REUSEPORT hashes each connection to a worker: 24 on one of two is a 2^-23 chance.
        clients = [await Client.connect(proc, token(f"wk{i}")) for i in range(24)]
        nodes = {(await c.expect("hello"))["node"] for c in clients}
        assert len(nodes) == 2, "both workers accept connections"
        for c in clients:
            await c.send({"type": "join", "session": sid})
            await c.expect("joined")
        await clients[0].send({"type": "chat", "session": sid, "text": "to all", "ref": "w"})
        for c in clients:
            assert (await c.expect("chat", timeout=5))["text"] == "to all"
        for c in clients:
            await c.close()
        assert proc.terminate() == 0
    finally:
        proc.kill()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal")
async def test_workers_end_when_their_supervisor_is_killed(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL gives the supervisor no chance to pass anything on: the workers still end
    (parent-death signal) instead of holding the port as orphans."""
    proc = ServerProcess(
        database_url,
        str(tmp_path),
        env={"REDIS_URL": redis_url_or_skip()},
        extra_args=["--workers", "2"],
    ).start()
    workers: list[int] = []
    try:
        workers = _children(proc.proc.pid)
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        proc.proc.kill()
        proc.proc.wait()
        deadline = time.monotonic() + 15
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not any(_alive(w) for w in workers), "a worker outlived its supervisor"
    finally:
        proc.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


async def test_a_burst_from_one_user_over_three_nodes_is_rate_limited_globally(
    nodes: list[ServerProcess],
) -> None:
    s = await live_session(nodes[0].url, creator="cluster-rate-host")
    sid = s["session"]["id"]
    same_user = [await Client.connect(n, token("cluster-burster")) for n in nodes]
    frames = [
        # Refs of their own: the same ref from the same user is one message (idempotent).
        c.send({"type": "chat", "session": sid, "text": f"burst {i}-{j}", "ref": f"b{i}-{j}"})
        for i, c in enumerate(same_user)
        for j in range(3)
    ]
    await asyncio.gather(*frames)
    replies = [
        await c.expect(("ack", "error"), ref=f"b{i}-{j}")
        for i, c in enumerate(same_user)
        for j in range(3)
    ]
    acked = [r for r in replies if r["type"] == "ack"]
    limited = [r for r in replies if r["type"] == "error"]
    # Each node alone would accept all three (burst 5); together the user gets one budget.
    assert 5 <= len(acked) <= 6, replies
    assert limited and all(r["code"] == "rate_limited" and r["retry_after_ms"] > 0 for r in limited)
    for c in same_user:
        await c.close()


async def test_viewer_counts_are_summed_over_nodes(nodes: list[ServerProcess]) -> None:
    s = await live_session(nodes[0].url, creator="cluster-count-host")
    sid = s["session"]["id"]
    viewers = [await Client.connect(nodes[i % 3], token(f"cc{i}")) for i in range(6)]
    for v in viewers:
        await v.send({"type": "join", "session": sid})
        await v.expect("joined")
    # Two viewers per node; each node reports once a second and gets the total back.
    counts = [(await v.expect("viewers", timeout=5, count=6))["count"] for v in viewers]
    assert counts == [6] * 6
    for v in viewers[:3]:
        await v.close()
    assert (await viewers[3].expect("viewers", timeout=5, count=3))["count"] == 3
    for v in viewers[3:]:
        await v.close()


async def test_like_totals_are_shared_live_over_nodes(nodes: list[ServerProcess]) -> None:
    s = await live_session(nodes[0].url, creator="cluster-like-host")
    sid = s["session"]["id"]
    viewers = [await Client.connect(nodes[i], token(f"cl{i}")) for i in range(3)]
    for v in viewers:
        await v.send({"type": "join", "session": sid})
        await v.expect("joined")
    for i, v in enumerate(viewers):
        await v.send({"type": "like", "session": sid, "count": 10 * (i + 1)})
    # Every node shows the total of all three within a few coalescing intervals.
    for v in viewers:
        assert (await v.expect("likes", timeout=5, total=60))["total"] == 60
    await viewers[2].send({"type": "like", "session": sid, "count": 5})
    for v in viewers[:2]:
        assert (await v.expect("likes", timeout=5, total=65))["total"] == 65
    # A newcomer's snapshot on a node that took none of the last likes has the same total.
    late = await Client.connect(nodes[1], token("cl-late"))
    await late.send({"type": "join", "session": sid})
    assert (await late.expect("joined"))["state"]["likes"] == 65
    for v in [*viewers, late]:
        await v.close()
