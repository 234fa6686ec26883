"""State shared live across nodes through Redis. Viewer counts: each node reports its own
count per room with a heartbeat; counts of nodes silent for longer than the TTL are ignored
(and dropped). Like totals: each node adds the likes it took since its last sync to one
counter per room and reads the total back (PostgreSQL keeps the durable total)."""

from __future__ import annotations

import logging

log = logging.getLogger("livecart.presence")

_REPORT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local node, count, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if count > 0 then
  redis.call('HSET', KEYS[1], node, count)
  redis.call('HSET', KEYS[2], node, now_ms)
else
  redis.call('HDEL', KEYS[1], node)
  redis.call('HDEL', KEYS[2], node)
end
local total = 0
local seen = redis.call('HGETALL', KEYS[2])
for i = 1, #seen, 2 do
  if now_ms - tonumber(seen[i + 1]) <= ttl then
    total = total + tonumber(redis.call('HGET', KEYS[1], seen[i]) or '0')
  else
    redis.call('HDEL', KEYS[1], seen[i])
    redis.call('HDEL', KEYS[2], seen[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ttl * 4)
redis.call('PEXPIRE', KEYS[2], ttl * 4)
return total
"""


# KEYS[1]: the room's like counter. ARGV: likes taken since the last sync, and the total this
# node knew before them: it seeds a counter that Redis lost (a restart without persistence).
_LIKES = """
redis.call('SET', KEYS[1], ARGV[2], 'NX')
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 86400)
return total
"""


class RedisPresence:
    def __init__(self, url: str, node_id: str, *, ttl_s: float = 5.0) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url)
        self._script = self._redis.register_script(_REPORT)
        self._likes = self._redis.register_script(_LIKES)
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
