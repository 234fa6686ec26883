"""State shared live across nodes through Redis. Viewer counts: each node reports its own
count per room with a heartbeat; counts of nodes silent for longer than the TTL are ignored
(and dropped). Like totals: each node adds the likes it took since its last sync to one
counter per room and reads the total back (PostgreSQL keeps the durable total)."""

from __future__ import annotations

import logging

from ..lua import script
from ..redisconn import connect, eval_many

log = logging.getLogger("livecart.presence")


class RedisPresence:
    def __init__(self, url: str, node_id: str, *, ttl_s: float = 5.0) -> None:
        self._redis = connect(url)
        self._script = self._redis.register_script(script("presence_report"))
        self._likes = self._redis.register_script(script("presence_likes"))
        self._node = node_id
        self._ttl_ms = int(ttl_s * 1000)

    async def report(self, counts: dict[str, int]) -> dict[str, int]:
        """Report this node's count per room; returns the total over live nodes per room."""
        totals: dict[str, int] = {}
        try:
            ttl = self._ttl_ms
            calls = [
                ([f"lc:{{{room}}}:viewers", f"lc:{{{room}}}:viewers_seen"], [self._node, n, ttl])
                for room, n in counts.items()
            ]
            results = await eval_many(self._redis, self._script, calls)
            totals = {room: int(n) for room, n in zip(counts, results, strict=True)}
        except Exception as exc:  # the local counts stand in until Redis answers again
            log.warning("viewer count sync failed: %s", exc)
        return totals

    async def add_likes(self, rooms: dict[str, tuple[int, int]]) -> dict[str, int]:
        """`rooms`: room -> (likes taken here since the last sync, the total known before
        them). Returns the total over all nodes per room; raises when Redis fails."""
        calls = [([f"lc:{{{room}}}:likes"], [delta, known]) for room, (delta, known) in rooms.items()]
        results = await eval_many(self._redis, self._likes, calls)
        return {room: int(n) for room, n in zip(rooms, results, strict=True)}

    async def close(self) -> None:
        await self._redis.aclose()
