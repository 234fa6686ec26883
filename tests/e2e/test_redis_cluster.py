"""Two nodes on a real Redis Cluster (3 masters, 3 replicas): one room log across nodes, and
the room's master killed while chats, bids and orders flow."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from ..redis_cluster import RedisCluster6
from .harness import Client, ServerProcess, cluster, live_session, open_offer, token


@pytest.fixture(scope="module")
def cluster_nodes(
    database_url: str, redis_cluster: RedisCluster6, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    env = {"REDIS_URL": redis_cluster.url}
    with cluster(database_url, tmp_path_factory, 2, name="cnode", env=env) as procs:
        yield procs


async def test_one_room_log_over_two_nodes_on_a_cluster(
    cluster_nodes: list[ServerProcess], redis_cluster: RedisCluster6
) -> None:
    s = await live_session(cluster_nodes[0].url, creator="rc-host")
    sid = s["session"]["id"]
    viewers = [await Client.connect(n, token(f"rcv{i}")) for i, n in enumerate(cluster_nodes)]
    for v in viewers:
        await v.send({"type": "join", "session": sid})
        await v.expect("joined")
    writers = [await Client.connect(cluster_nodes[i % 2], token(f"rcw{i}")) for i in range(4)]
    for i, w in enumerate(writers):
        await w.send({"type": "chat", "session": sid, "text": f"hello {i}", "ref": "r"})
    acked = sorted([(await w.expect("ack", ref="r"))["offset"] for w in writers])
    assert acked == list(range(acked[0], acked[0] + 4))
    for v in viewers:
        got = [await v.expect("chat", timeout=10) for _ in range(4)]
        assert [m["offset"] for m in got] == acked
    # The room's channel is subscribed on its slot's master only (sharded pub/sub).
    owner = redis_cluster.master_of(f"lc:{{{sid}}}:pub")
    assert redis_cluster.shard_subscribers(f"lc:{{{sid}}}:pub") == {owner: 2}
    for c in viewers + writers:
        await c.close()


class Actor:
    """One user sending one kind of frame on a loop, retrying a frame with the same ref
    until it gets a final answer (as a client does after `unavailable` or a lost socket)."""

    def __init__(self, node: ServerProcess, user: str) -> None:
        self.node = node
        self.user = user
        self.client: Client | None = None
        self.acked: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[dict[str, Any]] = []
        self.ack_times: list[float] = []

    async def request(self, frame: dict[str, Any], answer: tuple[str, ...]) -> dict[str, Any]:
        while True:
            try:
                if self.client is None:
                    self.client = await Client.connect(self.node, token(self.user))
                    await self.client.send({"type": "join", "session": frame["session"]})
                    await self.client.expect("joined", timeout=10)
                await self.client.send(frame)
                reply = await self.client.expect((*answer, "error"), timeout=10, ref=frame["ref"])
            except Exception:
                if self.client is not None:
                    with contextlib.suppress(Exception):
                        await self.client.close()
                self.client = None
                await asyncio.sleep(0.2)
                continue
            if reply["type"] == "error" and reply["code"] == "unavailable":
                await asyncio.sleep(0.2)
                continue
            if reply["type"] == "error":
                self.refused.append(reply)
            else:
                self.acked.append((frame["ref"], reply))
                self.ack_times.append(time.monotonic())
            return reply


async def test_killing_the_rooms_master_loses_no_acknowledged_chat_bid_or_order(
    cluster_nodes: list[ServerProcess], redis_cluster: RedisCluster6, database_url: str
) -> None:
    live = await live_session(cluster_nodes[0].url, creator="rc-failover")
    sid, pid = live["session"]["id"], live["product"]["id"]
    offer = await open_offer(
        cluster_nodes[0].url, live, price_cents=100, quantity=90, per_user_limit=90
    )
    async with httpx.AsyncClient(base_url=cluster_nodes[0].url) as http:
        r = await http.post(
            f"/api/sessions/{sid}/auctions",
            headers=live["headers"],
            json={"product_id": pid, "start_cents": 100, "min_increment_cents": 1,
                  "duration_s": 600},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        auction = r.json()["id"]
    watcher = await Client.connect(cluster_nodes[1], token("rc-watch"))
    await watcher.send({"type": "join", "session": sid})
    first = await watcher.expect("joined")

    stop = asyncio.Event()
    chatters = [Actor(cluster_nodes[i % 2], f"rc-chat{i}") for i in range(4)]
    bidder = Actor(cluster_nodes[1], "rc-bidder")
    buyer = Actor(cluster_nodes[0], "rc-buyer")

    async def chat(a: Actor) -> None:
        i = 0
        while not stop.is_set():
            ref = f"c{i}"
            frame = {"type": "chat", "session": sid, "text": f"{a.user} says {i}", "ref": ref}
            await a.request(frame, ("ack",))
            i += 1
            await asyncio.sleep(1.1)  # within the chat rate limit

    async def bid() -> None:
        amount = 200
        while not stop.is_set():
            frame = {"type": "bid", "session": sid, "auction": auction,
                     "amount_cents": amount, "ref": f"b{amount}"}  # fmt: skip
            await bidder.request(frame, ("ack",))
            amount += 10
            await asyncio.sleep(0.2)

    async def buy() -> None:
        i = 0
        while not stop.is_set():
            frame = {"type": "buy", "session": sid, "offer": offer["id"], "qty": 1,
                     "ref": f"o{i}"}  # fmt: skip
            await buyer.request(frame, ("order",))
            i += 1
            await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(chat(a)) for a in chatters]
    tasks += [asyncio.create_task(bid()), asyncio.create_task(buy())]
    port = redis_cluster.master_of(f"lc:{{{sid}}}:log")
    try:
        await asyncio.sleep(3)
        killed_at = time.monotonic()
        await asyncio.to_thread(redis_cluster.kill, port)
        # Until every chatter has had a message acknowledged after the kill, then a bit more.
        deadline = killed_at + 30
        while not all(any(t > killed_at for t in a.ack_times) for a in chatters):
            assert time.monotonic() < deadline, "chat not acknowledged again within 30 s"
            await asyncio.sleep(0.1)
        recovered_in = max(min(t for t in a.ack_times if t > killed_at) for a in chatters)
        recovered_in -= killed_at
        await asyncio.sleep(2)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
    assert recovered_in < 20.0, f"chat acknowledged again only after {recovered_in:.1f} s"
    assert redis_cluster.master_of(f"lc:{{{sid}}}:log") != port

    chats = {r["offset"]: f"{a.user} says {ref[1:]}" for a in chatters for ref, r in a.acked}
    bids = {ref for ref, _ in bidder.acked}
    orders = {r["order"]["id"] for _, r in buyer.acked}
    assert len(chats) >= 8 and len(bids) >= 10 and len(orders) >= 10
    assert not [r for a in chatters for r in a.refused], "no chat refused"

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            'SELECT "offset", text FROM room_events WHERE session = $1 AND type = $2',
            sid, "chat",
        )  # fmt: skip
        archived = {r["offset"]: r["text"] for r in rows}
        stored_bids = {
            r["ref"]
            for r in await conn.fetch(
                "SELECT ref FROM bids WHERE auction = $1 AND user_id = $2", auction, "rc-bidder"
            )
        }
        stored_orders = {
            r["id"]
            for r in await conn.fetch("SELECT id FROM orders WHERE user_id = $1", "rc-buyer")
        }
    finally:
        await conn.close()
    assert all(archived.get(o) == t for o, t in chats.items()), "acked chat in PostgreSQL"
    assert bids <= stored_bids, "every acknowledged bid in PostgreSQL"
    assert orders <= stored_orders, "every acknowledged order in PostgreSQL"

    # The room log in Redis (served by recovery from the first position) kept them too.
    late = await Client.connect(cluster_nodes[0], token("rc-late"))
    await late.send(
        {"type": "join", "session": sid, "since": {"epoch": first["epoch"], "offset": 0}}
    )
    joined = await late.expect("joined", timeout=10)
    assert joined["recovered"] is True and joined["epoch"] == first["epoch"]
    replay = {m["offset"]: m for m in await late.drain(1.0) if m.get("type") == "chat"}
    assert all(replay[o]["text"] == t for o, t in chats.items()), "acked chat in the room log"
    # The watcher on the other node saw every acknowledged chat live, in offset order.
    seen = [m["offset"] for m in watcher.inbox if m.get("type") == "chat"]
    while not set(chats) <= set(seen):
        got = await watcher.expect("chat", timeout=10)
        seen.append(got["offset"])
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    for c in [late, watcher, *(a.client for a in [*chatters, bidder, buyer] if a.client)]:
        await c.close()
    await asyncio.to_thread(redis_cluster.restart, port)


async def test_serve_with_workers_on_a_cluster(
    database_url: str, redis_cluster: RedisCluster6, tmp_path: Any
) -> None:
    """`serve --workers 2` on a Redis Cluster: both workers accept on one port and share the
    room over sharded pub/sub; SIGTERM stops all of them cleanly."""
    proc = ServerProcess(
        database_url,
        str(tmp_path),
        env={"REDIS_URL": redis_cluster.url},
        extra_args=["--workers", "2"],
    ).start()
    try:
        s = await live_session(proc.url, creator="rc-workers")
        sid = s["session"]["id"]
        # SO_REUSEPORT hashes each connection to a worker: 24 on one of two is a 2^-23 chance.
        clients = [await Client.connect(proc, token(f"rcwk{i}")) for i in range(24)]
        nodes = [(await c.expect("hello"))["node"] for c in clients]
        assert len(set(nodes)) == 2, "both workers accept connections"
        assert min(nodes.count(n) for n in set(nodes)) >= 3, "spread, not one worker taking most"
        for c in clients:
            await c.send({"type": "join", "session": sid})
            await c.expect("joined")
        await clients[0].send({"type": "chat", "session": sid, "text": "to all", "ref": "w"})
        for c in clients:
            assert (await c.expect("chat", timeout=5))["text"] == "to all"
        assert redis_cluster.shard_subscribers(f"lc:{{{sid}}}:pub") == {
            redis_cluster.master_of(f"lc:{{{sid}}}:pub"): 2
        }
        for c in clients:
            await c.close()
        assert proc.terminate() == 0
    finally:
        proc.kill()


def test_workers_without_redis_are_refused(tmp_path: Any) -> None:
    """More than one worker needs Redis: the in-process bus cannot share rooms."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    out = subprocess.run(
        [sys.executable, "-m", "livecart", "serve", "--workers", "2", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert "redis_url" in (out.stdout + out.stderr)
