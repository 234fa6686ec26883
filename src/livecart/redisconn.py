"""One way to reach Redis from a `REDIS_URL`: a single server (`redis://`, `rediss://`,
`unix://`) through redis-py's `redis.asyncio.Redis`, or a Redis Cluster
(`redis+cluster://HOST:PORT[,HOST:PORT…]`, optionally `user:password@` before the first
node) through `redis.asyncio.cluster.RedisCluster`, which discovers the other nodes and
follows slot moves and failovers.

Every key a Lua script touches carries one hash tag (`{room}`, `{user}`, `{rank:N}`), so a
script runs on the one shard that owns its slot. Pipelines of scripts run through
`eval_many`, which reloads a script a promoted replica has not seen (scripts are not
replicated). `Pipeliner` sends the commands many tasks ask for at once in one pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

CLUSTER_SCHEME = "redis+cluster://"


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """The startup nodes, user name and password of a `redis+cluster://` URL; raises
    ValueError when it names no node or a port is not a number."""
    rest = url[len(CLUSTER_SCHEME) :]
    rest = rest.split("/", 1)[0].split("?", 1)[0]
    username: str | None = None
    password: str | None = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        user, sep, pw = auth.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if sep else None
    nodes: list[tuple[str, int]] = []
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep:
            host, port = part, "6379"
        if not port.isdigit():
            raise ValueError(f"bad port in Redis Cluster URL: {part!r}")
        nodes.append((host.strip("[]") or "127.0.0.1", int(port)))
    if not nodes:
        raise ValueError("a redis+cluster:// URL needs at least one HOST:PORT")
    return nodes, username, password


def connect(url: str, **kwargs: Any) -> Any:
    """A `redis.asyncio` client for `url` (Redis or RedisCluster), bytes in and out.
    `kwargs` are connection options both clients take (timeouts, client_name,
    max_connections…)."""
    if is_cluster(url):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        nodes, username, password = cluster_nodes(url)
        # Its per-node pools raise instead of waiting when full: leave room for bursts.
        kwargs.setdefault("max_connections", 256)
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in nodes],
            username=username,
            password=password,
            **kwargs,
        )
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, **kwargs)


async def eval_many(
    client: Any, script: Any, calls: list[tuple[list[str], list[Any]]]
) -> list[Any]:
    """Run `script` once per (keys, args) in one pipeline (one per shard on a cluster);
    the replies in order."""
    if not calls:
        return []
    from redis.exceptions import NoScriptError

    for attempt in (0, 1):
        async with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await script(keys=keys, args=args, client=pipe)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt:
                    raise
                # A failover promoted a replica that never loaded the script.
                script.sha = await client.script_load(script.script)
    raise AssertionError("unreachable")


# Queues one command (or script call) on a pipeline; returns the pipeline (a command) or an
# awaitable that queues it (a script's `__call__` with `client=pipe`).
Queue = Callable[[Any], Any]


class Pipeliner:
    """Commands asked for by many tasks in one turn of the event loop go to Redis in one
    non-transactional pipeline: a burst of chat messages costs one write and one round
    trip per batch instead of one per command, and far less client CPU. One pipeline is in
    flight at a time; what is asked meanwhile goes in the next, so batches grow with the
    load. Each caller gets its own reply, or its own error (the whole batch's when the
    pipeline failed: Redis unreachable)."""

    def __init__(
        self, client: Any, *, max_batch: int = 1000, timeout_s: float | None = None
    ) -> None:
        self.client = client
        # One deadline for a whole batch (raised as redis-py's TimeoutError, like a socket
        # timeout): given a client without `socket_timeout`, redis-py does not arm a timer
        # for every reply it reads and every write, a cost a burst pays per command.
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._queue: list[tuple[Queue, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # pipelines sent (for tests and metrics)
        self._scripts: dict[str, Any] = {}  # the scripts run through `script`, by source

    async def call(self, queue: Queue) -> Any:
        """The reply of the command `queue` puts on the pipeline."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((queue, fut))
        if self._task is None:
            self._task = loop.create_task(self._run())
        return await fut

    async def script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        source = getattr(script, "script", None)  # a registered script (not a stand-in)
        if source is None:
            return await self.call(lambda pipe: script(keys=keys, args=args, client=pipe))
        self._scripts.setdefault(source, script)
        n = len(keys)
        # A bare EVALSHA, read at queue time (a reload after NOSCRIPT changes nothing but the
        # sha): queued through the script object, every pipeline would first ask Redis
        # `SCRIPT EXISTS` for its scripts, one more round trip per batch. A script Redis does
        # not have answers NOSCRIPT, and `_send` loads it and runs those calls again.
        return await self.call(
            lambda pipe: pipe.execute_command("EVALSHA", script.sha, n, *keys, *args)
        )

    async def _run(self) -> None:
        batch: list[tuple[Queue, asyncio.Future[Any]]] = []
        try:
            await asyncio.sleep(0)  # let the rest of this turn of the loop ask too
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                try:
                    replies = await self._send([queue for queue, _ in batch])
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                finally:
                    self.batches += 1
                for (_, fut), reply in zip(batch, replies, strict=True):
                    if fut.done():
                        continue
                    if isinstance(reply, Exception):
                        fut.set_exception(reply)
                    else:
                        fut.set_result(reply)
        except BaseException as exc:  # cancelled (shutdown): nobody is left waiting
            for _, fut in (*batch, *self._queue):  # the batch in flight too
                if not fut.done():
                    fut.cancel()
            self._queue.clear()
            if not isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._task = None

    async def _send(self, queues: list[Queue]) -> list[Any]:
        if self._timeout_s is None:
            return await self._send_all(queues)
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._send_all(queues)
        except TimeoutError:
            # Cancelled mid-pipeline, redis-py drops that connection (its replies unread).
            raise RedisTimeoutError(
                f"Redis did not answer a pipeline within {self._timeout_s} s"
            ) from None

    async def _send_all(self, queues: list[Queue]) -> list[Any]:
        from redis.exceptions import NoScriptError

        replies = await self._pipeline(queues)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            # A Redis (a cluster's shard, a replica promoted by a failover) that never loaded
            # a script: those calls did not run, so they run again once it is loaded.
            for used in self._scripts.values():
                used.sha = await self.client.script_load(used.script)
            again = await self._pipeline([queues[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, queues: list[Queue]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for queue in queues:
                queued = queue(pipe)
                # A command returns the pipeline itself, which must not be awaited: a cluster
                # pipeline's `__await__` starts it afresh, dropping what was queued.
                if queued is not pipe and inspect.isawaitable(queued):
                    await queued
            return list(await pipe.execute(raise_on_error=False))

    async def close(self) -> None:
        task = self._task
        if task is not None:
            with contextlib.suppress(Exception):
                await task
