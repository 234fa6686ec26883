"""State shared live across nodes through Redis. Viewer counts: each node reports its own
count per room with a heartbeat; counts of nodes silent for longer than the TTL are ignored
(and dropped). Like totals: each node adds the likes it took since its last sync to one
counter per room and reads the total back (PostgreSQL keeps the durable total)."""

from __future__ import annotations

import logging

from ..lua import script

log = logging.getLogger("livecart.presence")


class RedisPresence:
    def __init__(self, url: str, node_id: str, *, ttl_s: float = 5.0) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url)
        self._script = self._redis.register_script(script("presence_report"))
        self._likes = self._redis.register_script(script("presence_likes"))
        self._node = node_id
        self._ttl_ms = int(ttl_s * 1000)

    async def report(self, counts: dict[str, int]) -> dict[str, int]:
        """Report this node's count per room; returns the total over live nodes per room."""
        totals: dict[str, int] = {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for room, count in counts.items():
                    await self._script(
                        keys=[f"lc:{{{room}}}:viewers", f"lc:{{{room}}}:viewers_seen"],
                        args=[self._node, count, self._ttl_ms],
                        client=pipe,
                    )
                results = await pipe.execute()
            totals = {room: int(n) for room, n in zip(counts, results, strict=True)}
        except Exception as exc:  # the local counts stand in until Redis answers again
            log.warning("viewer count sync failed: %s", exc)
        return totals

    async def add_likes(self, rooms: dict[str, tuple[int, int]]) -> dict[str, int]:
        """`rooms`: room -> (likes taken here since the last sync, the total known before
        them). Returns the total over all nodes per room; raises when Redis fails."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for room, (delta, known) in rooms.items():
                await self._likes(keys=[f"lc:{{{room}}}:likes"], args=[delta, known], client=pipe)
            results = await pipe.execute()
        return {room: int(n) for room, n in zip(rooms, results, strict=True)}

    async def close(self) -> None:
        await self._redis.aclose()
