"""Trending shared by several nodes through Redis: signals counted on any node, pushes and
reads identical everywhere, per-account caps across nodes, and the Redis script checked
against the core's reference (`SharedStore`)."""

from __future__ import annotations

import asyncio
import math
import random
import secrets
from typing import Any

import httpx

from livecart.ranking import SharedTrending
from livecart.ranking.core import ProductInfo, RankingConfig, SessionInfo, Signal, TrendingIndex
from livecart.ranking.core.shared import SharedStore, batch_deltas, ledger_period
from livecart.ranking.core.trending import Delta

from ..conftest import redis_url_or_skip
from .harness import Client, ServerProcess, headers, live_session, token

# Redis outlives a test run: names unique to this run keep earlier runs' scores out.
RUN = secrets.token_hex(3)



async def _engage(node: ServerProcess, sid: str, pid: str, users: list[str]) -> None:
    """Each user joins (1) and clicks (1) and adds to cart (3) the product: 4 for the product,
    5 for the host."""
    for user in users:
        c = await Client.connect(node, token(user))
        await c.send({"type": "join", "session": sid})
        await c.expect("joined")
        await c.send({"type": "signal", "session": sid, "name": "product_click", "product": pid})
        await c.send({"type": "signal", "session": sid, "name": "add_to_cart", "product": pid})
        await c.send({"type": "ping", "ref": "done"})
        await c.expect("pong")  # the frames before it were handled
        await c.close()


async def _trending(node: ServerProcess, **params: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=node.url) as http:
        r = await http.get("/api/trending", params={"limit": 50, **params})
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


async def _eventually(check: Any, timeout: float = 8.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {getattr(check, 'last', None)}")
        await asyncio.sleep(0.2)


async def test_signals_on_two_nodes_trend_on_a_third(nodes: list[ServerProcess]) -> None:
    a, b, c = nodes
    host = f"cluster-rank-host-{RUN}"
    s = await live_session(a.url, creator=host)
    sid, pid = s["session"]["id"], s["product"]["id"]
    watcher = await Client.connect(c, token("cluster-rank-watcher"))
    await watcher.send({"type": "feed", "on": True})
    first = await watcher.expect("trending")
    assert pid not in [p["id"] for p in first["products"]]
    # One node's share alone (3 × 4 = 12 for the product, 3 × 5 = 15 for the host) stays at
    # the noise floor (12 and 20): only both nodes' signals together make it trend.
    await _engage(a, sid, pid, [f"crank-a{i}-{RUN}" for i in range(3)])
    await _engage(b, sid, pid, [f"crank-b{i}-{RUN}" for i in range(3)])
    while True:  # a push may come with part of the signals: wait for the one with both
        pushed = await watcher.expect("trending", timeout=8)
        hosts = [h["id"] for h in pushed["hosts"]]
        if pid in [p["id"] for p in pushed["products"]] and host in hosts:
            break

    async def same_everywhere() -> list[float] | None:
        reads = [await _trending(n) for n in nodes]
        same_everywhere.last = reads  # type: ignore[attr-defined]
        ids = [([p["id"] for p in r["products"]], [h["id"] for h in r["hosts"]]) for r in reads]
        if pid not in ids[0][0] or not ids[0] == ids[1] == ids[2]:
            return None
        scores = [next(p["score"] for p in r["products"] if p["id"] == pid) for r in reads]
        # Every node has all 6 viewers × 4 (a push may come earlier, with part of them).
        return scores if min(scores) > 22.0 else None

    scores = await _eventually(same_everywhere)
    assert max(scores) <= 24.0 and max(scores) - min(scores) < 0.01 * max(scores)
    per_category = [await _trending(n, kind="products", category="home") for n in nodes]
    assert all(pid in [p["id"] for p in r["products"]] for r in per_category)
    await watcher.close()


async def test_one_account_on_every_node_cannot_make_a_product_trend(
    nodes: list[ServerProcess],
) -> None:
    s = await live_session(nodes[0].url, creator=f"cluster-rank-bot-host-{RUN}")
    sid, pid = s["session"]["id"], s["product"]["id"]
    # Two accounts, each on all three nodes: each node alone allows an account 6, so without
    # a shared cap they would reach 2 × 3 × 6 = 36, far above the noise floor of 12.
    for bot in (f"cluster-rank-bot1-{RUN}", f"cluster-rank-bot2-{RUN}"):
        for node in nodes:
            c = await Client.connect(node, token(bot))
            for _ in range(3):
                await c.send(
                    {"type": "signal", "session": sid, "name": "add_to_cart", "product": pid}
                )
            await c.send({"type": "ping", "ref": "done"})
            await c.expect("pong")
            await c.close()
    await asyncio.sleep(1.0)  # several syncs
    for node in nodes:
        listed = [p["id"] for p in (await _trending(node, kind="products"))["products"]]
        assert pid not in listed


async def test_erasure_and_opt_out_through_one_node_hold_on_the_others(
    nodes: list[ServerProcess],
) -> None:
    a, b, _ = nodes
    s = await live_session(a.url, creator=f"cluster-privacy-host-{RUN}")
    sid, pid = s["session"]["id"], s["product"]["id"]
    me = f"cluster-privacy-{RUN}"
    mine = headers(token(me))
    await _engage(b, sid, pid, [me])  # the profile lives in node B's memory
    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        assert (await on_b.get("/api/me/export", headers=mine)).json()["profile"] is not None
        await _engage(b, sid, pid, [me])  # B's copy changed again, not yet written
        assert (await on_a.delete("/api/me/profile", headers=mine)).json()["erased"] is True
        # B neither writes its copy back nor keeps using it.
        assert (await on_b.get("/api/me/export", headers=mine)).json()["profile"] is None
        r = await on_a.patch("/api/me/settings", headers=mine, json={"personalization": False})
        assert r.status_code == 200
        await _engage(b, sid, pid, [me])
        assert (await on_b.get("/api/me/export", headers=mine)).json()["profile"] is None
        assert (await on_a.get("/api/me/export", headers=mine)).json()["profile"] is None


def _stream(n: int, seed: int, landmark_every: float) -> list[Signal]:
    rng = random.Random(seed)
    out = []
    t = 1_000_000.0
    for _ in range(n):
        t += rng.expovariate(1.0) * landmark_every / 300
        kind = rng.choice(["product_click", "add_to_cart", "share", "join", "purchase"])
        product = None if kind == "join" else f"p{rng.randrange(4)}"
        out.append(
            Signal(
                kind,  # type: ignore[arg-type]
                f"u{rng.randrange(5)}",
                t,
                session=f"s{rng.randrange(2)}",
                product=product,
                value_cents=rng.randrange(100, 10_000),
            )
        )
    return out


CONFIG = RankingConfig(half_life_s=30.0, landmark_period_s=200.0, cap_memory_s=150.0)
LIVE = (["p0", "p1", "p2", "p3"], ["s0", "s1"], ["cr0", "cr1"])


def three_indexes() -> list[TrendingIndex]:
    """Three "nodes": each its own index (own per-node caps), the same catalogue."""
    indexes = []
    for _ in range(3):
        index = TrendingIndex(CONFIG, landmark=0.0)
        for i in range(4):
            index.put_product(ProductInfo(f"p{i}", f"cr{i % 2}", "c"))
        index.start_session(SessionInfo("s0", "cr0", "c"), ["p0", "p2"])
        index.start_session(SessionInfo("s1", "cr1", "c"), ["p1", "p3"])
        indexes.append(index)
    return indexes


async def replay_against_reference(
    indexes: list[TrendingIndex], shared: list[SharedTrending], signals: int, seed: int
) -> tuple[SharedStore, int]:
    """A signal stream spread over the nodes (mostly in turn), each node syncing its deltas
    to the shared store: every sync's landmark and values must be the pure reference's.
    Returns the reference and how many values were compared."""
    period = ledger_period(CONFIG.cap_memory_s, indexes[0].landmark_period)
    reference = SharedStore(indexes[0].decay.rate, period, CONFIG.forget_below)
    rng = random.Random(seed)
    checked = 0
    for chunk_no, signal in enumerate(_stream(signals, 5, CONFIG.landmark_period)):
        i = chunk_no % 3 if rng.random() < 0.8 else rng.randrange(3)
        deltas: list[Delta] = []
        indexes[i].ingest(signal, deltas)
        if not deltas:
            continue
        landmark, values, _, _ = await shared[i].sync(deltas, LIVE)
        assert landmark == reference.apply(batch_deltas(deltas, indexes[i].decay.rate))
        for scope, members in zip(("product", "session", "host"), LIVE, strict=True):
            want = reference.read(scope, members)  # type: ignore[arg-type]
            got = values[scope]  # type: ignore[index]
            for g, w in zip(got, want, strict=True):
                assert (g is None) == (w is None)
                if g is not None and w is not None:
                    assert math.isclose(g, w, rel_tol=1e-9), (scope, g, w)
                    checked += 1
    return reference, checked


async def test_the_redis_script_does_what_the_reference_does() -> None:
    url = redis_url_or_skip()
    indexes = three_indexes()
    prefix = f"lc-test-{secrets.token_hex(4)}:{{rank}}"
    shared = [SharedTrending(url, index, prefix=prefix) for index in indexes]
    try:
        reference, _ = await replay_against_reference(indexes, shared, 600, seed=3)
        assert reference.landmark is not None and reference.landmark > 1_000_000.0, (
            "the landmark moved during the stream"
        )
    finally:
        redis = shared[0]._redis
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
        for s in shared:
            await s.close()
