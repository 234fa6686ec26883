"""Redis bus for a cluster of nodes: each room's log is a Redis Stream, appended and announced
by one Lua script, so every node sees one total order per room.

Keys per room (the `{room}` hash tag keeps them in one Redis Cluster slot):

    <prefix>:{room}:log       stream, entry id `<offset>-0`, fields at (ms), kind, data, pid
    <prefix>:{room}:epoch     the room's epoch; missing means its history was lost
    <prefix>:{room}:offset    the room's newest offset
    <prefix>:{room}:redacted  hash offset -> tombstone, served instead of the stream entry
    <prefix>:{room}:pub       pub/sub channel: "<offset>\\n<epoch>\\n<kind>\\n<data>"

With a `redis+cluster://` URL the channel is a sharded one (`SPUBLISH`/`SSUBSCRIBE`) and
publications wait for a replica (bus/cluster.py).

See docs/bus.md for the protocol, the recovery rules and how consumers learn of a new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError

from ...lua import script
from ...redisconn import Pipeliner, cluster_nodes, connect, is_cluster
from .base import Bus, History, OffsetFloor, OnPublication, Publication, StreamPosition
from .cluster import RETRYABLE, ClusterLink, ShardSubscriber

log = logging.getLogger("livecart.bus")

# Called before the first publication of a room's new epoch is delivered, with the new epoch and
# the offset just before that publication. Offsets may not follow on from the old epoch's.
OnEpoch = Callable[[str, StreamPosition], None]

_PRELUDE = script("bus_prelude")

# KEYS log, epoch, offset, redacted
# ARGV kind, data, size, ttl_ms, log_ttl_ms, meta_ttl_ms, floor, new_epoch, channel, pid, dedupe,
#      publish command (PUBLISH, or SPUBLISH on a cluster)
# -> {epoch, offset}; {'', 0} when the epoch is missing and no floor was given.
_PUBLISH = _PRELUDE + script("bus_publish")

# KEYS log, epoch, offset, redacted
# ARGV since_epoch ('' = none), since_offset, limit, size, ttl_ms, floor, new_epoch, meta_ttl_ms
# -> {epoch, offset, recovered, {offset, kind, data, ...}}; {''} when the epoch is missing and
# no floor was given.
_HISTORY = _PRELUDE + script("bus_history")

# KEYS log, epoch, offset, redacted
# ARGV expected_epoch, after (-1 = position only)
# -> {epoch ('' when missing), offset, {offset, kind, data, ...}}: everything after `after` when
# the epoch is the expected one, else the whole stream of the current epoch.
_FOLLOW = _PRELUDE + script("bus_follow")

# KEYS log, redacted; ARGV offset, data -> 1 when the entry is in the stream, else 0.
_REDACT = _PRELUDE + script("bus_redact")

_CONNECTION_ERRORS = RETRYABLE


class _Follow:
    """A subscribed room: the position of the last publication handed to `on_publication`."""

    __slots__ = ("epoch", "offset", "ready", "synced")

    def __init__(self, ready: asyncio.Future[None]) -> None:
        self.epoch = ""  # "" while unknown, or when the room had no epoch at subscription time
        self.offset: int | None = None  # None until the first sync
        self.synced = False  # synced on the current pub/sub connection
        self.ready = ready


class RedisBus(Bus):
    def __init__(
        self,
        url: str,
        floor: OffsetFloor,
        *,
        history_size: int = 1000,
        history_ttl_s: float = 600.0,
        node_id: str = "",
        key_prefix: str = "lc",
        room_ttl_s: float = 86400.0,
        on_epoch: OnEpoch | None = None,
        ping_interval_s: float = 5.0,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 2.0,
        subscribe_timeout_s: float = 5.0,
        max_connections: int = 32,
        failover_s: float = 15.0,
        replica_wait_ms: int = 1000,
    ) -> None:
        if "{" in key_prefix or "}" in key_prefix:
            raise ValueError("key_prefix must not contain braces (they mark the room hash tag)")
        self._floor = floor
        self._size = max(1, history_size)
        self._ttl_ms = max(0, int(history_ttl_s * 1000))
        # Idle rooms expire; the meta keys outlive the log so an idle room keeps its epoch.
        self._meta_ttl_ms = max(int(room_ttl_s * 1000), self._ttl_ms, 1)
        self._log_ttl_ms = self._ttl_ms or self._meta_ttl_ms
        self._prefix = key_prefix
        self.node_id = node_id or secrets.token_hex(4)
        self.on_epoch = on_epoch
        self._ping_interval = ping_interval_s
        self._reconnect_min = reconnect_min_s
        self._reconnect_max = reconnect_max_s
        self._subscribe_timeout = subscribe_timeout_s
        name = re.sub(r"[^A-Za-z0-9_.:-]", "_", self.node_id)
        self.client_name = f"livecart-bus-{name}"
        common: dict[str, Any] = {
            "socket_connect_timeout": 2.0,
            # Retries are ours: a publish is retried once, idempotently (see `publish`).
            "retry": Retry(NoBackoff(), 0),
        }
        self._failover_s = failover_s
        # The cluster client's per-node pools do not wait for a free connection (they raise
        # MaxConnectionsError): calls wait here instead, as BlockingConnectionPool does.
        self._gate = asyncio.Semaphore(max_connections)
        self._link: ClusterLink | None = None
        self._shards: ShardSubscriber | None = None
        self._pool: BlockingConnectionPool | None = None
        self._sub_pool: ConnectionPool | None = None
        self._client: Any
        if is_cluster(url):
            _, username, password = cluster_nodes(url)
            auth = {"username": username, "password": password}
            self._client = connect(
                url,
                max_connections=max_connections,
                socket_timeout=5.0,
                client_name=f"{self.client_name}-cmd",
                socket_connect_timeout=2.0,
            )
            self._link = ClusterLink(
                self._client,
                {**auth, **common, "socket_timeout": 5.0, "client_name": f"{self.client_name}-pub"},
                wait_ms=replica_wait_ms,
            )
            self._shards = ShardSubscriber(
                self._link,
                {
                    **auth,
                    **common,
                    "socket_timeout": None,
                    "client_name": f"{self.client_name}-sub",
                },
                self._listen,
                self._unsync,
                reconnect_min_s=reconnect_min_s,
                reconnect_max_s=reconnect_max_s,
            )
            self._publish_command = "SPUBLISH"
        else:
            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=10,
                socket_timeout=5.0,
                client_name=f"{self.client_name}-cmd",
                **common,
            )
            self._pool = pool
            self._client = aioredis.Redis(connection_pool=pool)
            self._sub_pool = ConnectionPool.from_url(
                url, socket_timeout=None, client_name=f"{self.client_name}-sub", **common
            )
            self._publish_command = "PUBLISH"
        self._publish_script = self._client.register_script(_PUBLISH)
        # Publications asked for at once (a burst of chat) go out in one pipeline, on
        # connections of its own without a socket timeout: the pipeline keeps one 5 s
        # deadline per batch instead of a timer per reply (`Pipeliner`'s `timeout_s`).
        self._batch_pool: BlockingConnectionPool | None = None
        if self._link is None:
            self._batch_pool = BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=10,
                socket_timeout=None,
                client_name=f"{self.client_name}-cmd",
                **common,
            )
            self._pipeline = Pipeliner(
                aioredis.Redis(connection_pool=self._batch_pool), timeout_s=5.0
            )
        else:
            self._pipeline = Pipeliner(self._client)
        self._history_script = self._client.register_script(_HISTORY)
        self._follow_script = self._client.register_script(_FOLLOW)
        self._redact_script = self._client.register_script(_REDACT)
        self._control_channel = f"{key_prefix}:node:{self.node_id}"
        self._on_publication: OnPublication | None = None
        self._follows: dict[str, _Follow] = {}
        self._channels: dict[bytes, str] = {}
        self._sub_conn: AbstractConnection | None = None
        self._live = False  # the pub/sub connection is up and has sent its SUBSCRIBE
        self._reader: asyncio.Task[None] | None = None
        self.reconnects = 0

    # ------------------------------------------------------------ keys

    def _keys(self, room: str) -> list[str]:
        base = f"{self._prefix}:{{{room}}}:"
        return [base + "log", base + "epoch", base + "offset", base + "redacted"]

    def _channel(self, room: str) -> str:
        return f"{self._prefix}:{{{room}}}:pub"

    @staticmethod
    def _new_epoch() -> str:
        return secrets.token_hex(6)

    # ------------------------------------------------------------ lifecycle

    @property
    def cluster(self) -> bool:
        return self._link is not None

    @property
    def shard_subscriptions(self) -> dict[str, set[bytes]]:
        """Channels subscribed per Redis Cluster master (empty on one Redis)."""
        return {} if self._shards is None else self._shards.shards

    async def start(self, on_publication: OnPublication) -> None:
        self._on_publication = on_publication
        if self._link is not None:
            try:
                await self._link.start()
            except Exception as exc:
                log.warning("Redis Cluster is not answering yet (%s); the bus keeps retrying", exc)
            return
        if not await self.ping():
            log.warning("Redis is not answering yet; the bus keeps retrying")
        self._reader = asyncio.create_task(self._read_loop(), name="redis-bus-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._sub_conn is not None:
            with contextlib.suppress(Exception):
                await self._sub_conn.disconnect(nowait=True)
            self._sub_conn = None
        if self._shards is not None:
            await self._shards.stop()
        for f in self._follows.values():
            if not f.ready.done():
                f.ready.set_result(None)
        self._on_publication = None
        if self._link is not None:
            await self._link.close()
            return
        await self._pipeline.close()
        await self._pipeline.client.aclose()
        if self._batch_pool is not None:
            await self._batch_pool.disconnect()
        await self._client.aclose()
        if self._pool is not None:
            await self._pool.disconnect()  # a pool passed in is not closed by the client
        if self._sub_pool is not None:
            await self._sub_pool.disconnect()

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:
            return False

    # ------------------------------------------------------------ log

    async def publish(self, room: str, kind: str, data: bytes) -> StreamPosition:
        pid = secrets.token_hex(6)
        floor = ""
        new_epoch = ""
        dedupe = False
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._failover_s
        pause = self._reconnect_min
        while True:
            keys = self._keys(room)
            args = [
                kind,
                data,
                self._size,
                self._ttl_ms,
                self._log_ttl_ms,
                self._meta_ttl_ms,
                floor,
                new_epoch,
                self._channel(room),
                pid,
                "1" if dedupe else "0",
                self._publish_command,
            ]
            try:
                if self._link is not None:
                    async with self._gate:
                        reply = await self._link.eval_acked(self._publish_script, keys, args)
                else:
                    reply = await self._pipeline.script(self._publish_script, keys, args)
            except _CONNECTION_ERRORS:
                if self._link is None:
                    if dedupe:
                        raise
                    # The script may have run with its reply lost: retry once, skipping it
                    # if it did.
                    dedupe = True
                    continue
                # A cluster failover: retry (deduplicated) on the slot's next master until it
                # is promoted, for up to failover_s.
                dedupe = True
                if loop.time() > give_up:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._reconnect_max)
                await self._link.refresh()
                continue
            epoch = reply[0].decode()
            if epoch:
                return StreamPosition(epoch, int(reply[1]))
            if floor:
                raise RuntimeError("publish script refused a floor")  # cannot happen
            # Only now is the floor worth a database query: the room has no epoch in Redis.
            floor = str(await self._floor(room))
            new_epoch = self._new_epoch()

    async def history(self, room: str, since: StreamPosition | None, limit: int) -> History:
        since_epoch, since_offset = ("", 0) if since is None else (since.epoch, since.offset)
        floor = ""
        new_epoch = ""
        while True:
            reply = await self._run(
                self._history_script,
                keys=self._keys(room),
                args=[
                    since_epoch,
                    since_offset,
                    limit,
                    self._size,
                    self._ttl_ms,
                    floor,
                    new_epoch,
                    self._meta_ttl_ms,
                ],
            )
            epoch = reply[0].decode()
            if epoch:
                break
            floor = str(await self._floor(room))
            new_epoch = self._new_epoch()
        position = StreamPosition(epoch, int(reply[1]))
        return History(_publications(reply[3]), position, bool(reply[2]))

    async def redact(self, room: str, offset: int, data: bytes) -> None:
        if offset < 1:
            return
        keys = self._keys(room)
        await self._run(self._redact_script, keys=[keys[0], keys[3]], args=[offset, data])

    async def _run(self, script: AsyncScript, *, keys: list[str], args: list[Any]) -> Any:
        """Runs a script that is safe to repeat, retrying once on a broken connection (a pooled
        connection may have died with the server since it was last used)."""
        if self._link is None:
            try:
                return await script(keys=keys, args=args)
            except _CONNECTION_ERRORS:
                return await script(keys=keys, args=args)
        async with self._gate:
            try:
                return await script(keys=keys, args=args)
            except _CONNECTION_ERRORS:
                await self._link.refresh()
                return await script(keys=keys, args=args)

    # ------------------------------------------------------------ subscriptions

    async def subscribe(self, room: str) -> None:
        f = self._follows.get(room)
        if f is None:
            f = _Follow(asyncio.get_running_loop().create_future())
            self._follows[room] = f
            channel = self._channel(room)
            self._channels[channel.encode()] = room
            if self._shards is not None:
                await self._shards.add(channel.encode())
            else:
                await self._send_subscription("SUBSCRIBE", channel)
        if not f.ready.done():
            # Returns once Redis has the subscription and this node knows the room's position,
            # so everything published afterwards reaches `on_publication`.
            try:
                await asyncio.wait_for(asyncio.shield(f.ready), self._subscribe_timeout)
            except TimeoutError:
                log.warning("subscription to %s not confirmed yet; it completes on reconnect", room)

    async def unsubscribe(self, room: str) -> None:
        f = self._follows.pop(room, None)
        if f is None:
            return
        channel = self._channel(room)
        self._channels.pop(channel.encode(), None)
        if not f.ready.done():
            f.ready.set_result(None)
        if self._shards is not None:
            await self._shards.remove(channel.encode())
        else:
            await self._send_subscription("UNSUBSCRIBE", channel)

    async def _send_subscription(self, command: str, channel: str) -> None:
        conn = self._sub_conn
        # Checked in the same step as the send: a dropped connection must not be silently
        # reopened here (the reader reconnects and resubscribes every room itself).
        if not self._live or conn is None or not conn.is_connected:
            return
        try:
            await conn.send_command(command, channel, check_health=False)
        except Exception as exc:
            log.debug("%s %s failed (%s); the reader resubscribes", command, channel, exc)

    # ------------------------------------------------------------ reader

    async def _read_loop(self) -> None:
        delay = self._reconnect_min
        first = True
        loop = asyncio.get_running_loop()
        while True:
            conn: AbstractConnection | None = None
            connected_at: float | None = None
            try:
                pool = self._sub_pool
                assert pool is not None
                conn = pool.connection_class(**pool.connection_kwargs)
                await _connect(conn)
                self._sub_conn = conn
                for f in self._follows.values():
                    f.synced = False
                # Snapshot and flag in one step: later subscribe() calls send their own command.
                channels = [self._control_channel, *self._channels]
                self._live = True
                await conn.send_command("SUBSCRIBE", *channels, check_health=False)
                if not first:
                    self.reconnects += 1
                    log.info("Redis bus reconnected; resubscribed %d rooms", len(channels) - 1)
                first = False
                connected_at = loop.time()
                await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("Redis bus subscriber connection lost: %s", exc)
            finally:
                self._live = False
                self._sub_conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)
            if connected_at is not None and loop.time() - connected_at > 5 * self._reconnect_max:
                delay = self._reconnect_min  # that connection was healthy: start the backoff over
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._reconnect_max)

    async def _listen(self, conn: AbstractConnection) -> None:
        awaiting_pong = False
        while True:
            reply = await conn.read_response(
                timeout=self._ping_interval, disconnect_on_error=True, push_request=True
            )
            if reply is None:
                # Idle: a half-open connection would block forever, so probe it.
                if awaiting_pong:
                    raise RedisConnectionError("Redis did not answer a ping on the bus connection")
                await conn.send_command("PING", check_health=False)
                awaiting_pong = True
                continue
            awaiting_pong = False
            if not isinstance(reply, list) or len(reply) < 3:
                continue
            kind = reply[0]
            if kind in (b"message", b"smessage"):
                room = self._channels.get(reply[1])
                if room is not None and not self._on_message(room, reply[2]):
                    await self._sync_or_log(room)
            elif kind in (b"subscribe", b"ssubscribe"):
                room = self._channels.get(reply[1])
                if room is not None:
                    await self._sync_or_log(room)
            elif kind == b"sunsubscribe" and reply[1] in self._channels:
                # Not asked for: the room's slot moved to another master (a failover, a
                # reshard). Reconnecting moves every room to its slot's current owner.
                raise RedisConnectionError("a followed room's slot moved")

    def _unsync(self, channels: Iterable[bytes]) -> None:
        """Rooms about to be resubscribed on a fresh shard connection: each syncs from its
        stream when its subscription is confirmed."""
        for ch in channels:
            room = self._channels.get(ch)
            f = None if room is None else self._follows.get(room)
            if f is not None:
                f.synced = False

    async def _sync_or_log(self, room: str) -> None:
        try:
            await self._sync(room)
        except RedisResponseError:
            # Not a connection problem, so reconnecting would not help; the next notification
            # for the room retries.
            log.exception("reading room %s from its stream failed", room)

    def _on_message(self, room: str, payload: bytes) -> bool:
        """Deliver the next publication of a room; False when the room needs a sync instead (a
        gap, an unexpected epoch)."""
        f = self._follows.get(room)
        if f is None or not f.synced or f.offset is None:
            return True  # its subscription's sync is still to come and will cover this
        try:
            offset_s, epoch_b, kind, data = payload.split(b"\n", 3)
            offset = int(offset_s)
        except ValueError:
            log.warning("ignoring a malformed notification in room %s", room)
            return True
        if epoch_b.decode() != f.epoch:
            return False
        if offset <= f.offset:
            return True
        if offset != f.offset + 1:
            return False
        f.offset = offset
        self._deliver(room, Publication(offset, kind.decode(), data))
        return True

    async def _sync(self, room: str) -> None:
        """Bring a room up to date from its stream: the position on a fresh subscription, else
        every entry after the last delivered one (or the whole stream of a new epoch)."""
        f = self._follows.get(room)
        if f is None:
            return
        after = -1 if f.offset is None else f.offset
        reply = await self._run(self._follow_script, keys=self._keys(room), args=[f.epoch, after])
        if self._follows.get(room) is not f:
            return  # unsubscribed meanwhile
        epoch = reply[0].decode()
        current = int(reply[1])
        if f.offset is None:
            f.epoch, f.offset = epoch, current
        elif epoch:
            pubs = _publications(reply[2])
            if epoch != f.epoch:
                previous, f.epoch = f.epoch, epoch
                start = pubs[0].offset - 1 if pubs else current
                if previous:
                    log.info("room %s lost its history: new epoch %s", room, epoch)
                if previous and self.on_epoch is not None:
                    try:
                        self.on_epoch(room, StreamPosition(epoch, start))
                    except Exception:
                        log.exception("on_epoch failed for room %s", room)
            for pub in pubs:
                self._deliver(room, pub)
            f.offset = current
        # else: the room lost its keys and has no new epoch yet; its next publication brings one.
        f.synced = True
        if not f.ready.done():
            f.ready.set_result(None)

    def _deliver(self, room: str, pub: Publication) -> None:
        on_publication = self._on_publication
        if on_publication is None:
            return
        try:
            on_publication(room, pub)
        except Exception:
            log.exception("on_publication failed for room %s at offset %d", room, pub.offset)


async def _connect(conn: AbstractConnection) -> None:
    untyped: Any = conn  # redis-py leaves Connection.connect unannotated
    await untyped.connect()


def _publications(flat: list[bytes]) -> list[Publication]:
    return [
        Publication(int(flat[i]), flat[i + 1].decode(), flat[i + 2]) for i in range(0, len(flat), 3)
    ]
