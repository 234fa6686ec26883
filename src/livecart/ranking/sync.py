"""Cluster-wide trending through Redis (docs/ranking.md, "Cluster"): each node sends its
increments and reads back the numerators of its live items, and hears of catalog changes and
of viewers whose cached state it must drop. The scripts are lua/ranking_sync.lua and
lua/ranking_forget.lua."""

from __future__ import annotations

import asyncio
import math
import zlib
from typing import Any

import msgspec
from redis.exceptions import NoScriptError

from ..lua import script
from ..redisconn import connect, is_cluster
from .core import Delta, TrendingIndex
from .core.shared import batch_deltas, ledger_period
from .core.trending import Scope

SYNC_EVERY_S = 0.1
"""How often a node sends its increments to Redis and reads the global numerators."""
FORGET_KEEP = 100_000
""""Forget this viewer" markers kept in Redis (a node reads new ones every sync)."""
UNSYNCED_MAX = 500_000
"""Deltas kept while Redis does not answer; older ones are dropped past this."""
CLUSTER_SHARDS = 8
"""Trending shards on a Redis Cluster (one hash slot each, `{rank:k}`); one on one Redis.
Every node of a deployment must use the same number (it is fixed, not a setting)."""

_msgpack = msgspec.msgpack.Encoder()


class PartialSync(Exception):
    """A sharded sync where some shards took their increments and others failed: `unsent`
    are the deltas of the failed shards, to send again (resending the whole batch would
    count the others twice)."""

    def __init__(self, unsent: list[Delta], cause: BaseException) -> None:
        super().__init__(f"{len(unsent)} increments not synced: {cause}")
        self.unsent = unsent


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SharedTrending:
    """The Redis side of cluster-wide trending. On one Redis every key carries the `{rank}`
    hash tag. On a Redis Cluster the store is split into CLUSTER_SHARDS shards, one slot each
    (`{rank}`, `{rank:1}`, …), so trending spreads over the cluster's masters: a node sends
    each account's increments to the account's shard (so per-account caps stay exact, one
    ledger per account) and reads its live items' numerators from every shard, rescaled to
    the newest shard's landmark and summed (merged on read). Catalog versions and "forget
    this viewer" markers stay on the first shard."""

    def __init__(
        self,
        url: str,
        index: TrendingIndex,
        *,
        prefix: str = "lc:{rank}",
        shards: int | None = None,
    ) -> None:
        n = shards if shards is not None else CLUSTER_SHARDS if is_cluster(url) else 1
        if n > 1 and "{rank}" not in prefix:
            raise ValueError("a sharded trending store needs {rank} in its key prefix")
        self.shard_prefixes = [prefix] + [
            prefix.replace("{rank}", f"{{rank:{k}}}") for k in range(1, n)
        ]
        self._redis = connect(url)
        self._script = self._redis.register_script(script("ranking_sync"))
        self._forget = self._redis.register_script(script("ranking_forget"))
        self.prefix = prefix
        self.index = index
        c = index.config
        self._rate = index.decay.rate
        # A landmark's sorted sets outlive their period by one more: the next landmark's first
        # batch carries them over, whenever it comes.
        self._ttl_ms = int(2 * index.landmark_period * 1000)
        self._ledger_period = ledger_period(c.cap_memory_s, index.landmark_period)
        self._forget_below = c.forget_below

    async def close(self) -> None:
        await self._redis.aclose()

    async def catalog_changed(self) -> None:
        await self._redis.incr(f"{self.prefix}:catalog")

    async def forget_viewer(self, user: str) -> None:
        """Tell every node to drop what it caches of this viewer (erasure, settings)."""
        keys = [f"{self.prefix}:forgotten", f"{self.prefix}:forgotten_seq"]
        await self._forget(keys=keys, args=[user, FORGET_KEEP])

    async def forgotten(self, since: float) -> list[tuple[str, float]]:
        """Viewers forgotten after marker `since` (from an earlier answer), in order."""
        rows: list[Any] = await self._redis.zrangebyscore(
            f"{self.prefix}:forgotten", f"({since!r}", "+inf", withscores=True
        )
        return [(_text(user), float(at)) for user, at in rows]

    async def _sync_pipeline(
        self, prefix: str, args: list[Any], forgotten_since: float | None, *, meta: bool = True
    ) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._script(keys=[f"{prefix}:landmark"], args=args, client=pipe)
            if not meta:
                return list(await pipe.execute())
            pipe.get(f"{self.prefix}:catalog")
            if forgotten_since is not None:
                pipe.zrangebyscore(
                    f"{self.prefix}:forgotten", f"({forgotten_since!r}", "+inf", withscores=True
                )
            return list(await pipe.execute())

    async def sync(
        self,
        deltas: list[Delta],
        live: tuple[list[str], list[str], list[str]],
        forgotten_since: float | None = None,
    ) -> tuple[float, dict[Scope, list[float | None]], int, list[tuple[str, float]]]:
        """Send `deltas`, read the store's numerators of `live` (products, sessions, hosts):
        returns the store's landmark, the numerators per scope, the catalog version, and the
        viewers forgotten after `forgotten_since`."""
        if len(self.shard_prefixes) > 1:
            return await self._sync_sharded(deltas, live, forgotten_since)
        return await self._sync_shard(self.prefix, deltas, live, forgotten_since, meta=True)

    def _shard(self, d: Delta) -> int:
        key = d.user if d.user is not None else d.member
        return zlib.crc32(key.encode()) % len(self.shard_prefixes)

    async def _sync_sharded(
        self,
        deltas: list[Delta],
        live: tuple[list[str], list[str], list[str]],
        forgotten_since: float | None,
    ) -> tuple[float, dict[Scope, list[float | None]], int, list[tuple[str, float]]]:
        parts: list[list[Delta]] = [[] for _ in self.shard_prefixes]
        for d in deltas:
            parts[self._shard(d)].append(d)
        results = await asyncio.gather(
            *(
                self._sync_shard(prefix, part, live, forgotten_since, meta=k == 0)
                for k, (prefix, part) in enumerate(zip(self.shard_prefixes, parts, strict=True))
            ),
            return_exceptions=True,
        )
        failed = [k for k, r in enumerate(results) if isinstance(r, BaseException)]
        if failed:
            cause = results[failed[0]]
            assert isinstance(cause, BaseException)
            if len(failed) == len(results):
                raise cause
            raise PartialSync([d for k in failed for d in parts[k]], cause)
        replies = [r for r in results if not isinstance(r, BaseException)]
        top = max(r[0] for r in replies)
        merged: dict[Scope, list[float | None]] = {}
        for scope in ("product", "session", "host"):
            columns = [(math.exp(-self._rate * (top - r[0])), r[1][scope]) for r in replies]
            out: list[float | None] = []
            for i in range(len(columns[0][1])):
                values = [factor * v[i] for factor, v in columns if v[i] is not None]  # type: ignore[operator]
                out.append(sum(values) if values else None)
            merged[scope] = out  # type: ignore[index]
        _, _, version, forgotten = replies[0]
        return top, merged, version, forgotten

    async def _sync_shard(
        self,
        prefix: str,
        deltas: list[Delta],
        live: tuple[list[str], list[str], list[str]],
        forgotten_since: float | None,
        *,
        meta: bool,
    ) -> tuple[float, dict[Scope, list[float | None]], int, list[tuple[str, float]]]:
        batch = batch_deltas(deltas, self._rate)
        landmark = batch.landmark if deltas else self.index.decay.landmark
        batch.landmark = landmark
        args = [
            prefix,
            repr(landmark),
            repr(self._rate),
            self._ttl_ms,
            repr(self._ledger_period),
            repr(self._forget_below),
            _msgpack.encode(batch),
            _msgpack.encode(live),
        ]
        for attempt in (0, 1):
            try:
                replies = await self._sync_pipeline(prefix, args, forgotten_since, meta=meta)
                break
            except NoScriptError:
                if attempt:
                    raise
                # A Redis Cluster failover promoted a replica that never loaded the script.
                self._script.sha = await self._redis.script_load(self._script.script)
        (store_landmark, *scores), *rest = replies
        version, *forgot = rest if meta else (0,)
        scopes: tuple[Scope, ...] = ("product", "session", "host")
        values: dict[Scope, list[float | None]] = {
            scope: [None if v is None else float(v) for v in part]
            for scope, part in zip(scopes, scores, strict=True)
        }
        forgotten = [(_text(u), float(t)) for u, t in forgot[0]] if forgot else []
        return float(store_landmark), values, int(version or 0), forgotten
