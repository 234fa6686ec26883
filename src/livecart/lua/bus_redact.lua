local log, redacted = KEYS[1], KEYS[2]
local offset, data = ARGV[1], ARGV[2]
local id = offset .. '-0'
if #redis.call('XRANGE', log, id, id) == 0 then return 0 end
redis.call('HSET', redacted, offset, data)
-- Forget tombstones of entries that have left the stream.
local first = tonumber(offset_of(redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1][1]))
local fields = redis.call('HKEYS', redacted)
for i = 1, #fields do
  if tonumber(fields[i]) < first then redis.call('HDEL', redacted, fields[i]) end
end
local ttl = redis.call('PTTL', log)
if ttl > 0 then redis.call('PEXPIRE', redacted, ttl) end
return 1
