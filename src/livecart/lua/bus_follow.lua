local log, epoch_key, offset_key, redacted = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local expected = ARGV[1]
local after = tonumber(ARGV[2])
local epoch = redis.call('GET', epoch_key)
local current = redis.call('GET', offset_key)
if not epoch or not current then return {'', 0, {}} end
current = tonumber(current)
if after < 0 then return {epoch, current, {}} end
local start = '-'
if epoch == expected then
  if after >= current then return {epoch, current, {}} end
  start = string.format('%d-0', after + 1)
end
return {epoch, current, flatten(redis.call('XRANGE', log, start, '+'), redacted)}
