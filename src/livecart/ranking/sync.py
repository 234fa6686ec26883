"""Cluster-wide trending through Redis (docs/ranking.md, "Cluster"): each node sends its
increments and reads back the numerators of its live items, and hears of catalog changes and
of viewers whose cached state it must drop. The scripts are lua/ranking_sync.lua and
lua/ranking_forget.lua."""

from __future__ import annotations

from typing import Any

import msgspec
from redis.exceptions import NoScriptError

from ..lua import script
from ..redisconn import connect
from .core import Delta, TrendingIndex
from .core.shared import batch_deltas, ledger_period
from .core.trending import Scope

SYNC_EVERY_S = 0.1
"""How often a node sends its increments to Redis and reads the global numerators."""
FORGET_KEEP = 100_000
""""Forget this viewer" markers kept in Redis (a node reads new ones every sync)."""
UNSYNCED_MAX = 500_000
"""Deltas kept while Redis does not answer; older ones are dropped past this."""

_msgpack = msgspec.msgpack.Encoder()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SharedTrending:
    """The Redis side of cluster-wide trending. Every key carries the `{rank}` hash tag: one
    Redis Cluster slot."""

    def __init__(self, url: str, index: TrendingIndex, *, prefix: str = "lc:{rank}") -> None:
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

    async def _sync_pipeline(self, args: list[Any], forgotten_since: float | None) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._script(keys=[f"{self.prefix}:landmark"], args=args, client=pipe)
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
        batch = batch_deltas(deltas, self._rate)
        landmark = batch.landmark if deltas else self.index.decay.landmark
        batch.landmark = landmark
        args = [
            self.prefix,
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
                replies = await self._sync_pipeline(args, forgotten_since)
                break
            except NoScriptError:
                if attempt:
                    raise
                # A Redis Cluster failover promoted a replica that never loaded the script.
                self._script.sha = await self._redis.script_load(self._script.script)
        (store_landmark, *scores), version, *forgot = replies
        scopes: tuple[Scope, ...] = ("product", "session", "host")
        values: dict[Scope, list[float | None]] = {
            scope: [None if v is None else float(v) for v in part]
            for scope, part in zip(scopes, scores, strict=True)
        }
        forgotten = [(_text(u), float(t)) for u, t in forgot[0]] if forgot else []
        return float(store_landmark), values, int(version or 0), forgotten
