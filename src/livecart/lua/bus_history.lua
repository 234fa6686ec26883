local log, epoch_key, offset_key, redacted = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local since_epoch = ARGV[1]
local since = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local size = tonumber(ARGV[4])
local ttl_ms = tonumber(ARGV[5])
local floor, new_epoch = ARGV[6], ARGV[7]
local meta_ttl_ms = tonumber(ARGV[8])

local epoch = redis.call('GET', epoch_key)
local current = redis.call('GET', offset_key)
if not epoch or not current then
  if floor == '' then return {''} end
  epoch = new_epoch
  current = floor
  redis.call('DEL', log, redacted)
  redis.call('SET', epoch_key, epoch, 'PX', meta_ttl_ms)
  redis.call('SET', offset_key, floor, 'PX', meta_ttl_ms)
end
current = tonumber(current)
trim_expired(log, ttl_ms)

-- The window is the newest `size` offsets, whatever the approximate MAXLEN left behind.
local first = current + 1
local head = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
if #head > 0 then first = tonumber(offset_of(head[1][1])) end
if first < current - size + 1 then first = current - size + 1 end

if since_epoch == epoch and since <= current and since >= first - 1 then
  local entries = redis.call('XRANGE', log, string.format('%d-0', since + 1), '+')
  return {epoch, current, 1, flatten(entries, redacted)}
end
if limit <= 0 then return {epoch, current, 0, {}} end
local newest = redis.call('XREVRANGE', log, '+', string.format('%d-0', first), 'COUNT', limit)
local entries = {}
for i = #newest, 1, -1 do entries[#entries + 1] = newest[i] end
return {epoch, current, 0, flatten(entries, redacted)}
