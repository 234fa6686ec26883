-- Viewer counts: this node reports its count for one room with a heartbeat; returns the total
-- over nodes heard from within the TTL (counts of silent nodes are dropped).
-- KEYS[1] the room's counts per node, KEYS[2] when each node last reported.
-- ARGV: node id, its count, ttl (ms).
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
