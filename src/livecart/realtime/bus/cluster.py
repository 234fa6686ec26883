"""The Redis Cluster side of the Redis bus (docs/bus.md, "Redis Cluster").

A room's keys and its channel share the `{room}` hash tag, so one master owns all of them.

- `ClusterLink.eval_acked` runs the publish script on that master and, when the slot has a
  replica, `WAIT 1` on the same connection: an acknowledged publication is on a replica
  before the node answers, so a failover that promotes that replica keeps it.
- `ShardSubscriber` keeps one pub/sub connection per master that owns a followed room and
  `SSUBSCRIBE`s there (sharded pub/sub: `SPUBLISH` reaches only the owning shard and the
  connections subscribed on it, not every node of the cluster as `PUBLISH` does). When a
  connection fails or the server tells that a slot moved (`sunsubscribe`), it refreshes the
  topology and moves each room to its slot's current master; the bus then syncs the room
  from its stream, so nothing published meanwhile is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.crc import key_slot
from redis.exceptions import ClusterError, MovedError, NoScriptError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("livecart.bus")

# What a failover looks like to a client: the old master is gone, a replica not yet promoted
# or the client's slot map stale. All are worth a topology refresh and a retry.
RETRYABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterError,
    MovedError,
    TryAgainError,
)


def slot_of(key: str) -> int:
    return int(key_slot(key.encode()))


class ClusterLink:
    def __init__(self, cluster: RedisCluster, conn_kwargs: dict[str, Any], *, wait_ms: int) -> None:
        self.cluster = cluster
        self._conn_kwargs = conn_kwargs
        self._wait_ms = wait_ms
        self._free: dict[tuple[str, int], list[Connection]] = defaultdict(list)
        self._refreshing: asyncio.Task[None] | None = None
        self.unreplicated = 0  # publications no replica confirmed within wait_ms

    async def start(self) -> None:
        await self.cluster.initialize()

    async def close(self) -> None:
        for conns in self._free.values():
            for c in conns:
                with contextlib.suppress(Exception):
                    await c.disconnect()
        self._free.clear()
        await self.cluster.aclose()

    def owner(self, key: str) -> tuple[str, int, int]:
        """(host, port, replicas) of the master owning `key`'s slot, from the cached map."""
        nodes = self.cluster.nodes_manager.slots_cache.get(slot_of(key)) or []
        if not nodes:
            raise ClusterError(f"no node owns the slot of {key}")
        return nodes[0].host, int(nodes[0].port), len(nodes) - 1

    async def refresh(self) -> None:
        """Reload the slot map (one refresh at a time; concurrent callers share it)."""
        task = self._refreshing
        if task is None or task.done():
            task = asyncio.ensure_future(self.cluster.nodes_manager.initialize())
            self._refreshing = task
        try:
            await asyncio.shield(task)
        except Exception as exc:
            log.info("Redis Cluster topology refresh failed: %s", exc)

    def _acquire(self, addr: tuple[str, int]) -> Connection:
        free = self._free[addr]
        if free:
            return free.pop()
        return Connection(host=addr[0], port=addr[1], **self._conn_kwargs)

    def _release(self, addr: tuple[str, int], conn: Connection) -> None:
        self._free[addr].append(conn)

    async def eval_acked(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a registered script (`AsyncScript`) on the master owning `keys`, then wait
        until a replica has it (when the slot has one). Raises one of RETRYABLE when the
        master cannot be reached or no longer owns the slot."""
        host, port, replicas = self.owner(keys[0])
        addr = (host, port)
        conn = self._acquire(addr)
        healthy = False
        try:
            reply = await self._eval(conn, script, keys, args, replicas, use_sha=True)
            healthy = True
            return reply
        finally:
            if healthy:
                self._release(addr, conn)
            else:
                with contextlib.suppress(Exception):
                    await conn.disconnect()

    async def _eval(
        self,
        conn: Connection,
        script: Any,
        keys: list[str],
        args: list[Any],
        replicas: int,
        *,
        use_sha: bool,
    ) -> Any:
        head = ("EVALSHA", script.sha) if use_sha else ("EVAL", script.script)
        commands: list[tuple[Any, ...]] = [(*head, len(keys), *keys, *args)]
        if replicas:
            commands.append(("WAIT", 1, self._wait_ms))
        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        try:
            reply = await conn.read_response()
        except NoScriptError:
            if replicas:
                await conn.read_response()
            if not use_sha:
                raise
            # A promoted replica never saw the script (scripts are not replicated).
            return await self._eval(conn, script, keys, args, replicas, use_sha=False)
        if replicas:
            acked = await conn.read_response()
            if int(acked) < 1:
                self.unreplicated += 1
                log.warning("no replica confirmed a publication within %d ms", self._wait_ms)
        return reply


class _Shard:
    __slots__ = ("channels", "conn", "host", "live", "name", "port", "task")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.name = f"{host}:{port}"
        self.channels: set[bytes] = set()
        self.conn: AbstractConnection | None = None
        self.live = False
        self.task: asyncio.Task[None] | None = None


# Reads one shard's pub/sub connection until it fails (raises) or must be rerouted.
Listen = Callable[[AbstractConnection], Awaitable[None]]
# Called with the channels about to be (re)subscribed on a fresh connection.
OnConnected = Callable[[Iterable[bytes]], None]


class ShardSubscriber:
    def __init__(
        self,
        link: ClusterLink,
        conn_kwargs: dict[str, Any],
        listen: Listen,
        on_connected: OnConnected,
        *,
        reconnect_min_s: float,
        reconnect_max_s: float,
    ) -> None:
        self._link = link
        self._conn_kwargs = conn_kwargs
        self._listen = listen
        self._on_connected = on_connected
        self._min = reconnect_min_s
        self._max = reconnect_max_s
        self._shards: dict[str, _Shard] = {}
        self._owner: dict[bytes, _Shard] = {}
        self.reconnects = 0
        self._stopped = False

    @property
    def shards(self) -> dict[str, set[bytes]]:
        """The channels subscribed per master (for tests and metrics)."""
        return {name: set(s.channels) for name, s in self._shards.items() if s.live}

    async def add(self, channel: bytes) -> None:
        if channel in self._owner:
            return
        try:
            host, port, _ = self._link.owner(channel.decode())
        except ClusterError:
            await self._link.refresh()
            host, port, _ = self._link.owner(channel.decode())
        await self._assign(channel, host, port)

    async def remove(self, channel: bytes) -> None:
        shard = self._owner.pop(channel, None)
        if shard is None:
            return
        shard.channels.discard(channel)
        await self._send(shard, "SUNSUBSCRIBE", channel)

    async def stop(self) -> None:
        self._stopped = True
        tasks = [s.task for s in self._shards.values() if s.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._shards.clear()
        self._owner.clear()

    async def _assign(self, channel: bytes, host: str, port: int) -> None:
        name = f"{host}:{port}"
        shard = self._shards.get(name)
        if shard is None or shard.task is None or shard.task.done():
            shard = _Shard(host, port)
            self._shards[name] = shard
        shard.channels.add(channel)
        self._owner[channel] = shard
        if shard.task is None and not self._stopped:
            shard.task = asyncio.create_task(self._run(shard), name=f"redis-shard-{name}")
        else:
            await self._send(shard, "SSUBSCRIBE", channel)

    async def _send(self, shard: _Shard, command: str, channel: bytes) -> None:
        conn = shard.conn
        if not shard.live or conn is None or not conn.is_connected:
            return  # the shard's reader subscribes everything when it (re)connects
        try:
            await conn.send_command(command, channel, check_health=False)
        except Exception as exc:
            log.debug("%s on %s failed (%s); its reader resubscribes", command, shard.name, exc)

    async def _run(self, shard: _Shard) -> None:
        loop = asyncio.get_running_loop()
        delay = self._min
        first = True
        try:
            while shard.channels:
                conn = Connection(host=shard.host, port=shard.port, **self._conn_kwargs)
                connected_at: float | None = None
                try:
                    untyped: Any = conn  # redis-py leaves Connection.connect unannotated
                    await untyped.connect()
                    shard.conn = conn
                    channels = list(shard.channels)
                    self._on_connected(channels)
                    shard.live = True
                    by_slot: dict[int, list[bytes]] = defaultdict(list)
                    for ch in channels:
                        by_slot[slot_of(ch.decode())].append(ch)
                    # SSUBSCRIBE takes channels of one slot at a time.
                    for group in by_slot.values():
                        await conn.send_command("SSUBSCRIBE", *group, check_health=False)
                    if not first:
                        self.reconnects += 1
                        log.info("Redis shard %s: resubscribed %d rooms", shard.name, len(channels))
                    first = False
                    connected_at = loop.time()
                    await self._listen(conn)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("Redis shard %s subscriber connection lost: %s", shard.name, exc)
                finally:
                    shard.live = False
                    shard.conn = None
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)
                if connected_at is not None and loop.time() - connected_at > 5 * self._max:
                    delay = self._min
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._max)
                await self._reroute(shard)
        finally:
            if self._shards.get(shard.name) is shard:
                del self._shards[shard.name]

    async def _reroute(self, shard: _Shard) -> None:
        """Move the shard's channels whose slot another master owns now."""
        await self._link.refresh()
        for ch in list(shard.channels):
            try:
                host, port, _ = self._link.owner(ch.decode())
            except ClusterError:
                continue
            if (host, port) != (shard.host, shard.port):
                shard.channels.discard(ch)
                await self._assign(ch, host, port)
