"""The Redis bus on a real Redis Cluster (3 masters, 3 replicas): a room's keys and its
channel in one slot, sharded pub/sub on the room's master only, and a master failover that
loses no acknowledged publication."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from livecart.realtime.bus.base import Publication
from livecart.realtime.bus.redis import RedisBus
from livecart.redisconn import cluster_nodes, connect

from ..redis_cluster import RedisCluster6


async def _zero(room: str) -> int:
    return 0


def _cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    ).stdout


class Collect:
    def __init__(self) -> None:
        self.got: dict[str, list[Publication]] = {}

    def __call__(self, room: str, pub: Publication) -> None:
        self.got.setdefault(room, []).append(pub)

    def offsets(self, room: str) -> list[int]:
        return [p.offset for p in self.got.get(room, [])]


async def _until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_cluster_url_parsing() -> None:
    nodes, user, pw = cluster_nodes("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001")
    assert nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001)] and user == "u" and pw == "p@ss"
    with pytest.raises(ValueError):
        cluster_nodes("redis+cluster://")
    with pytest.raises(ValueError):
        cluster_nodes("redis+cluster://host:port")


async def test_two_nodes_share_rooms_over_sharded_pubsub(redis_cluster: RedisCluster6) -> None:
    seen_a, seen_b = Collect(), Collect()
    a = RedisBus(redis_cluster.url, _zero, node_id="a", key_prefix="t1")
    b = RedisBus(redis_cluster.url, _zero, node_id="b", key_prefix="t1")
    await a.start(seen_a)
    await b.start(seen_b)
    try:
        rooms = [f"r{i}" for i in range(9)]
        for r in rooms:
            await b.subscribe(r)
        for _ in range(5):
            for r in rooms:
                await a.publish(r, "chat", b"{}")
        await _until(lambda: all(seen_b.offsets(r) == [1, 2, 3, 4, 5] for r in rooms))
        assert seen_a.got == {}  # a follows nothing, so it receives nothing

        # Every room is subscribed on the master owning its slot and on no other master.
        subs = b.shard_subscriptions
        assert len(subs) >= 2, "nine rooms should spread over more than one shard"
        for r in rooms:
            channel = f"t1:{{{r}}}:pub"
            owner = redis_cluster.master_of(channel)
            for port in redis_cluster.masters():
                n = _cli(port, "PUBSUB", "SHARDNUMSUB", channel).split()[1]
                assert int(n) == (1 if port == owner else 0), (r, port, owner)
            # ... and all the room's keys live in that slot.
            keys = _cli(owner, "KEYS", f"t1:{{{r}}}:*").split()
            assert {k.rsplit(":", 1)[1] for k in keys} >= {"log", "epoch", "offset"}
            slots = {_cli(owner, "CLUSTER", "KEYSLOT", k).strip() for k in [*keys, channel]}
            assert len(slots) == 1

        # History and unsubscribe work per room.
        h = await b.history("r3", None, 10)
        assert [p.offset for p in h.publications] == [1, 2, 3, 4, 5]
        await b.unsubscribe("r3")
        await a.publish("r3", "chat", b"{}")
        await asyncio.sleep(0.3)
        assert seen_b.offsets("r3") == [1, 2, 3, 4, 5]
    finally:
        await a.stop()
        await b.stop()


async def test_cluster_clients_for_shared_state(redis_cluster: RedisCluster6) -> None:
    """Presence, likes and chat limits run their scripts on a cluster (one slot per room or
    user), pipelined across shards."""
    from livecart.realtime.presence import RedisPresence

    p1 = RedisPresence(redis_cluster.url, "n1")
    p2 = RedisPresence(redis_cluster.url, "n2")
    try:
        rooms = {f"pres{i}": i + 1 for i in range(8)}
        await p1.report(rooms)
        totals = await p2.report({r: 10 for r in rooms})
        assert totals == {r: n + 10 for r, n in rooms.items()}
        likes = await p1.add_likes({r: (3, 0) for r in rooms})
        likes = await p2.add_likes({r: (2, 0) for r in rooms})
        assert likes == {r: 5 for r in rooms}
    finally:
        await p1.close()
        await p2.close()
    client = connect(redis_cluster.url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_master_failover_loses_no_acknowledged_publication(
    redis_cluster: RedisCluster6,
) -> None:
    """Publications flow from two nodes while the room's master is killed: every publication
    acknowledged before, during or after the failover is in the room's log afterwards, in one
    epoch with contiguous offsets, and a subscriber on a third node receives all of them."""
    room = "failover-room"
    seen = Collect()
    pubs = [
        RedisBus(redis_cluster.url, _zero, node_id=f"p{i}", key_prefix="t2", history_size=100_000)
        for i in (1, 2)
    ]
    sub = RedisBus(redis_cluster.url, _zero, node_id="s", key_prefix="t2", history_size=100_000)
    for bus in pubs:
        await bus.start(Collect())
    await sub.start(seen)
    await sub.subscribe(room)
    acked: list[tuple[int, bytes]] = []
    epochs: set[str] = set()
    stop = asyncio.Event()
    first_ack_after_kill: list[float] = []
    killed_at: list[float] = []

    async def writer(bus: RedisBus, name: str) -> None:
        i = 0
        while not stop.is_set():
            data = f'"{name}-{i}"'.encode()
            try:
                pos = await bus.publish(room, "chat", data)
            except Exception:
                await asyncio.sleep(0.05)  # not acknowledged: the client would retry
                continue
            acked.append((pos.offset, data))
            epochs.add(pos.epoch)
            if killed_at and not first_ack_after_kill:
                first_ack_after_kill.append(time.monotonic() - killed_at[0])
            i += 1
            await asyncio.sleep(0.01)

    port = redis_cluster.master_of(f"t2:{{{room}}}:log")
    tasks = [asyncio.create_task(writer(b, f"w{i}")) for i, b in enumerate(pubs)]
    try:
        await asyncio.sleep(1.0)
        before = len(acked)
        killed_at.append(time.monotonic())
        await asyncio.to_thread(redis_cluster.kill, port)
        await _until(lambda: len(acked) > before + 50, timeout=30)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
        assert first_ack_after_kill and first_ack_after_kill[0] < 20.0
        assert redis_cluster.master_of(f"t2:{{{room}}}:log") != port

        assert len(epochs) == 1, "the promoted replica kept the room's epoch"
        offsets = sorted(o for o, _ in acked)
        assert offsets == list(range(1, len(offsets) + 1)), "no offset lost or reused"
        h = await sub.history(room, None, 100_000)
        assert h.position.epoch in epochs
        log = {p.offset: p.data for p in h.publications}
        assert all(log.get(o) == d for o, d in acked), "every acknowledged publication kept"
        await _until(lambda: seen.offsets(room)[-1:] == [offsets[-1]], timeout=20)
        assert seen.offsets(room) == offsets, "the subscriber got everything, in order"
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        for bus in [*pubs, sub]:
            await bus.stop()
        await asyncio.to_thread(redis_cluster.restart, port)


async def test_a_burst_beyond_the_connection_limit_waits_instead_of_failing(
    redis_cluster: RedisCluster6,
) -> None:
    """The cluster client's pools raise when full; the bus makes callers wait (a join storm
    must not answer `unavailable`)."""
    bus = RedisBus(redis_cluster.url, _zero, node_id="burst", key_prefix="t3", max_connections=4)
    await bus.start(Collect())
    try:
        rooms = [f"burst{i % 9}" for i in range(300)]
        histories = await asyncio.gather(*(bus.history(r, None, 10) for r in rooms))
        assert all(h.position.offset == 0 for h in histories)
        positions = await asyncio.gather(*(bus.publish(r, "chat", b"{}") for r in rooms))
        assert sorted(p.offset for p in positions) == sorted(
            n for r in set(rooms) for n in range(1, rooms.count(r) + 1)
        )
    finally:
        await bus.stop()
