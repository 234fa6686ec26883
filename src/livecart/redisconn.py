"""One way to reach Redis from a `REDIS_URL`: a single server (`redis://`, `rediss://`,
`unix://`) through redis-py's `redis.asyncio.Redis`, or a Redis Cluster
(`redis+cluster://HOST:PORT[,HOST:PORT…]`, optionally `user:password@` before the first
node) through `redis.asyncio.cluster.RedisCluster`, which discovers the other nodes and
follows slot moves and failovers.

Every key a Lua script touches carries one hash tag (`{room}`, `{user}`, `{rank:N}`), so a
script runs on the one shard that owns its slot. Pipelines of scripts run through
`eval_many`, which reloads a script a promoted replica has not seen (scripts are not
replicated)."""

from __future__ import annotations

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
