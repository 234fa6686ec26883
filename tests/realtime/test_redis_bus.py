"""RedisBus against a real Redis, as several nodes: one total order per room, recovery from any
node, a new epoch when Redis loses a room, reconnects that lose nothing, idempotent retries."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from livecart.realtime.bus.base import Publication, StreamPosition
from livecart.realtime.bus.redis import OnEpoch, RedisBus
from tests.conftest import redis_url_or_skip
from tests.realtime.test_bus_contract import Floors, Recorder, delete_prefix, eventually

pytestmark = pytest.mark.redis


class Cluster:
    """RedisBus nodes sharing one Redis under a key prefix of their own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"lctest-{secrets.token_hex(4)}"
        self.floors = Floors()
        self.raw = aioredis.Redis.from_url(url)
        self.buses: list[RedisBus] = []

    async def node(
        self,
        on_publication: Callable[[str, Publication], None] | None = None,
        *,
        on_epoch: OnEpoch | None = None,
        **options: Any,
    ) -> RedisBus:
        bus = RedisBus(
            self.url,
            self.floors,
            node_id=f"{self.prefix}-n{len(self.buses)}",
            key_prefix=self.prefix,
            on_epoch=on_epoch,
            **options,
        )
        await bus.start(on_publication or (lambda room, pub: None))
        self.buses.append(bus)
        return bus

    def keys(self, room: str) -> list[str]:
        return [f"{self.prefix}:{{{room}}}:{k}" for k in ("log", "epoch", "offset", "redacted")]

    async def kill(self, name: str) -> int:
        """Closes, server side, every connection whose client name is `name`."""
        killed = 0
        for client in await self.raw.client_list():
            if client.get("name") == name:
                killed += await self.raw.client_kill_filter(_id=client["id"])
        return killed

    async def close(self) -> None:
        for bus in self.buses:
            await bus.stop()
        await delete_prefix(self.url, self.prefix)
        await self.raw.aclose()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster(redis_url_or_skip())
    try:
        yield c
    finally:
        await c.close()


async def test_two_nodes_publishing_concurrently_share_one_order(cluster: Cluster) -> None:
    seen_a, seen_b = Recorder(), Recorder()
    a = await cluster.node(seen_a)
    b = await cluster.node(seen_b)
    await asyncio.gather(a.subscribe("room"), b.subscribe("room"))

    async def publish_many(bus: RedisBus, name: str) -> list[StreamPosition]:
        return await asyncio.gather(
            *(bus.publish("room", "chat", b"%s-%d" % (name.encode(), i)) for i in range(200))
        )

    from_a, from_b = await asyncio.gather(publish_many(a, "a"), publish_many(b, "b"))
    assert sorted(p.offset for p in from_a + from_b) == list(range(1, 401))
    assert len({p.epoch for p in from_a + from_b}) == 1
    await eventually(lambda: len(seen_a.got["room"]) >= 400 and len(seen_b.got["room"]) >= 400)
    assert seen_a.offsets("room") == list(range(1, 401))
    assert seen_a.got["room"] == seen_b.got["room"]
    by_offset = {p.offset: p.data for p in seen_a.got["room"]}
    assert all(by_offset[p.offset] == b"a-%d" % i for i, p in enumerate(from_a))


async def test_recovery_works_from_the_other_node(cluster: Cluster) -> None:
    a = await cluster.node()
    b = await cluster.node()
    for i in range(1, 21):
        last = await a.publish("room", "chat", b"m%d" % i)
    await a.redact("room", 15, b"gone")
    h = await b.history("room", StreamPosition(last.epoch, 12), 100)
    assert h.recovered and h.position == last
    assert [(p.offset, p.data) for p in h.publications] == [
        (13, b"m13"),
        (14, b"m14"),
        (15, b"gone"),
        *((i, b"m%d" % i) for i in range(16, 21)),
    ]
    assert await b.publish("room", "chat", b"from b") == StreamPosition(last.epoch, 21)


async def test_lost_keys_start_a_new_epoch_from_the_floor(cluster: Cluster) -> None:
    seen = Recorder()
    epochs: list[tuple[str, StreamPosition]] = []
    a = await cluster.node(seen, on_epoch=lambda room, p: epochs.append((room, p)))
    b = await cluster.node()
    await a.subscribe("room")
    for _ in range(5):
        old = await b.publish("room", "chat", b"old")
    await eventually(lambda: len(seen.got["room"]) == 5)

    # What a Redis restart without persistence looks like: keys and scripts gone.
    await cluster.raw.delete(*cluster.keys("room"))
    await cluster.raw.script_flush()
    cluster.floors.values["room"] = 5  # the durable archive's newest offset
    new = await b.publish("room", "chat", b"new")
    assert new.offset == 6 and new.epoch != old.epoch
    assert cluster.floors.calls["room"] == 2
    await eventually(lambda: len(seen.got["room"]) == 6)
    assert seen.offsets("room") == [1, 2, 3, 4, 5, 6]
    assert epochs == [("room", StreamPosition(new.epoch, 5))]

    h = await a.history("room", old, 10)
    assert not h.recovered and h.position == new and [p.data for p in h.publications] == [b"new"]
    assert (await a.history("room", StreamPosition(new.epoch, 5), 10)).recovered


async def test_an_idle_room_expires_and_comes_back_with_a_new_epoch(cluster: Cluster) -> None:
    bus = await cluster.node(history_ttl_s=0.2, room_ttl_s=0.3)
    first = await bus.publish("room", "chat", b"x")
    log_key, epoch_key = cluster.keys("room")[:2]
    assert 0 < await cluster.raw.pttl(log_key) <= 200
    assert 0 < await cluster.raw.pttl(epoch_key) <= 300
    await asyncio.sleep(0.45)
    assert await cluster.raw.exists(*cluster.keys("room")) == 0
    cluster.floors.values["room"] = 1
    again = await bus.publish("room", "chat", b"y")
    assert again.epoch != first.epoch and again.offset == 2


async def test_reconnect_after_the_connections_are_killed_loses_nothing(cluster: Cluster) -> None:
    seen = Recorder()
    a = await cluster.node(seen, reconnect_min_s=0.3)
    b = await cluster.node()
    await a.subscribe("room")
    await a.subscribe("quiet")
    for _ in range(10):
        await b.publish("room", "chat", b"before")
    await eventually(lambda: len(seen.got["room"]) == 10)

    assert await cluster.kill(f"{a.client_name}-sub") == 1
    assert await cluster.kill(f"{a.client_name}-cmd") >= 1
    # Published while `a` has no subscriber connection: it must read these from the stream.
    await asyncio.gather(*(b.publish("room", "chat", b"during") for _ in range(50)))
    for _ in range(10):  # its own pooled connections were killed too
        await a.publish("room", "chat", b"after")
    await b.publish("quiet", "chat", b"during")
    await eventually(lambda: len(seen.got["room"]) >= 70 and len(seen.got["quiet"]) >= 1)
    await asyncio.sleep(0.05)
    assert seen.offsets("room") == list(range(1, 71))
    assert [p.data for p in seen.got["room"]] == [b"before"] * 10 + [b"during"] * 50 + [
        b"after"
    ] * 10
    assert seen.offsets("quiet") == [1]
    assert a.reconnects == 1
    assert await a.ping()


async def test_missed_notifications_are_read_from_the_stream(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Recorder()
    a = await cluster.node(seen, history_size=10)
    b = await cluster.node(history_size=10)
    await a.subscribe("room")
    await a.subscribe("other")
    for _ in range(5):
        await b.publish("room", "chat", b"x")
    await eventually(lambda: len(seen.got["room"]) == 5)

    # Notifications lost on the way: the entries are in the stream, `a` hears nothing.
    monkeypatch.setattr(b, "_channel", lambda room: f"{cluster.prefix}:nowhere")
    for _ in range(3):
        await b.publish("room", "chat", b"missed")
    monkeypatch.undo()
    await b.publish("room", "chat", b"heard")
    await eventually(lambda: seen.offsets("room")[-1] == 9)
    assert seen.offsets("room") == list(range(1, 10))
    assert [p.data for p in seen.got["room"][5:]] == [b"missed"] * 3 + [b"heard"]

    # So many lost that the stream no longer has them: what it has is delivered, in order.
    monkeypatch.setattr(b, "_channel", lambda room: f"{cluster.prefix}:nowhere")
    for _ in range(300):
        await b.publish("room", "chat", b"missed")
    monkeypatch.undo()
    await b.publish("room", "chat", b"heard")
    await b.publish("other", "chat", b"unaffected")
    await eventually(lambda: seen.offsets("room")[-1] == 310 and len(seen.got["other"]) == 1)
    offsets = seen.offsets("room")
    assert offsets[:9] == list(range(1, 10))
    assert offsets == sorted(set(offsets))  # in order, no duplicates
    assert offsets[-10:] == list(range(301, 311))
    assert len(offsets) < 310  # the consumer resynchronises this gap from history
    assert a.reconnects == 0


async def test_a_retried_publish_is_applied_once(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = Recorder()
    bus = await cluster.node(seen)
    await bus.subscribe("room")
    await bus.publish("room", "chat", b"first")
    script = bus._publish_script
    calls = 0

    async def reply_lost(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await script(*args, **kwargs)
        if calls == 1:
            raise RedisConnectionError("connection lost before the reply")
        return result

    monkeypatch.setattr(bus, "_publish_script", reply_lost)
    assert (await bus.publish("room", "chat", b"second")).offset == 2
    assert calls == 2
    monkeypatch.undo()
    assert (await bus.publish("room", "chat", b"third")).offset == 3
    await eventually(lambda: len(seen.got["room"]) == 3)
    h = await bus.history("room", None, 10)
    assert [(p.offset, p.data) for p in h.publications] == [
        (1, b"first"),
        (2, b"second"),
        (3, b"third"),
    ]


async def test_keys_share_the_room_hash_tag(cluster: Cluster) -> None:
    bus = await cluster.node()
    await bus.publish("s-1", "chat", b"x")
    await bus.redact("s-1", 1, b"t")
    keys = sorted([k.decode() async for k in cluster.raw.scan_iter(match=f"{cluster.prefix}:*")])
    assert keys == sorted(cluster.keys("s-1"))
    assert all(k.split("{", 1)[1].split("}", 1)[0] == "s-1" for k in keys)
    assert all([await cluster.raw.pttl(k) > 0 for k in keys])


async def test_throughput_two_thousand_publishes(cluster: Cluster) -> None:
    seen = Recorder()
    a = await cluster.node()
    b = await cluster.node(seen)
    await b.subscribe("room")
    data = (
        b'{"type":"chat","session":"room","user":"u1","name":"Viewer","text":"' + b"x" * 60 + b'"}'
    )
    started = time.perf_counter()
    for _ in range(20):
        await asyncio.gather(*(a.publish("room", "chat", data) for _ in range(100)))
    published = time.perf_counter() - started
    await eventually(lambda: len(seen.got["room"]) >= 2000, timeout=10)
    delivered = time.perf_counter() - started
    assert seen.offsets("room") == list(range(1, 2001))
    print(
        f"\n2000 publishes in {published:.2f}s, all delivered to the other node in {delivered:.2f}s"
    )
    assert published < 10


async def test_ping_and_stop(cluster: Cluster) -> None:
    bus = await cluster.node()
    await bus.subscribe("room")
    assert await bus.ping()
    names = {c.get("name") for c in await cluster.raw.client_list()}
    assert f"{bus.client_name}-sub" in names
    await bus.stop()
    cluster.buses.remove(bus)
    names = {c.get("name") for c in await cluster.raw.client_list()}
    assert not {f"{bus.client_name}-sub", f"{bus.client_name}-cmd"} & names

    unreachable = RedisBus("redis://127.0.0.1:1/0", cluster.floors)
    try:
        assert not await unreachable.ping()
    finally:
        await unreachable.stop()


class PrivateRedis:
    """A redis-server of this test's own, without persistence, that can be restarted."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", *args, stdout=asyncio.subprocess.DEVNULL
        )
        client = aioredis.Redis.from_url(self.url)
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    await client.ping()
                    return
                except RedisConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            await self.proc.wait()
            self.proc = None


async def test_redis_restart_without_persistence() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis()
    await server.start()
    floors = Floors()
    seen = Recorder()
    epochs: list[StreamPosition] = []
    a = RedisBus(
        server.url,
        floors,
        node_id="a",
        on_epoch=lambda room, p: epochs.append(p),
        reconnect_max_s=0.2,
    )
    b = RedisBus(server.url, floors, node_id="b")
    try:
        await a.start(seen)
        await b.start(lambda room, pub: None)
        await a.subscribe("room")
        for _ in range(5):
            old = await b.publish("room", "chat", b"old")
        await eventually(lambda: len(seen.got["room"]) == 5)

        await server.stop()
        with pytest.raises(RedisConnectionError):
            await b.publish("room", "chat", b"lost")
        assert not await a.ping()
        await asyncio.sleep(0.3)  # the subscriber retries meanwhile
        await server.start()

        await eventually(lambda: a.reconnects >= 1, what="the subscriber to reconnect")
        floors.values["room"] = 5
        new = await b.publish("room", "chat", b"new")
        assert new.epoch != old.epoch and new.offset == 6
        await eventually(lambda: len(seen.got["room"]) == 6)
        assert seen.offsets("room") == [1, 2, 3, 4, 5, 6]
        assert epochs == [StreamPosition(new.epoch, 5)]
        assert (await a.history("room", old, 10)).recovered is False
    finally:
        await a.stop()
        await b.stop()
        await server.stop()
