-- Steps 3–5 of `chat.rules.chat.decide_chat` for the whole cluster, in one round trip.
-- KEYS: the user's token bucket, slow-mode stamp (this session), duplicate-window entry.
-- ARGV: rate per s, burst, slow mode ms (0: off), duplicate window ms, mode, slow stamp ttl ms;
-- mode 0: exempt (rate limit only), 1: check and charge, 2: check only (a blocked message).
-- Returns {0, 0} to go on, {1, wait ms} rate limited, {2, wait ms} slow mode, {3, 0} duplicate.
-- Only a message that goes through charges slow mode and the window (the bucket, like the
-- per-node one, is charged by every attempt that passes it). Redis's clock is the only clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, ts = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - ts) / 1000 * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate * 1000) end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
if wait > 0 then return {1, wait} end
local mode = ARGV[5]
if mode == '0' then return {0, 0} end
local slow = tonumber(ARGV[3])
if slow > 0 then
  local last = tonumber(redis.call('GET', KEYS[2]))
  if last ~= nil and now - last < slow then return {2, last + slow - now} end
end
if redis.call('EXISTS', KEYS[3]) == 1 then return {3, 0} end
if mode == '1' then
  if slow > 0 then redis.call('SET', KEYS[2], now, 'PX', ARGV[6]) end
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[4])
end
return {0, 0}
