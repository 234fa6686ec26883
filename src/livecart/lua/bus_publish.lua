local log, epoch_key, offset_key, redacted = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local kind, data = ARGV[1], ARGV[2]
local size = tonumber(ARGV[3])
local ttl_ms = tonumber(ARGV[4])
local log_ttl_ms = tonumber(ARGV[5])
local meta_ttl_ms = tonumber(ARGV[6])
local floor, new_epoch, channel, pid, dedupe = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
-- PUBLISH on one Redis; SPUBLISH (sharded: only the slot's shard) on a Redis Cluster.
local publish = ARGV[12]

local epoch = redis.call('GET', epoch_key)
local current = redis.call('GET', offset_key)
if not epoch or not current then
  if floor == '' then return {'', 0} end
  -- History was lost (Redis restarted, or the room expired): a new epoch from the floor.
  epoch = new_epoch
  redis.call('DEL', log, redacted)
  redis.call('SET', epoch_key, epoch)
  redis.call('SET', offset_key, floor)
elseif dedupe == '1' then
  -- A retry after a lost reply: the first attempt may have been applied already.
  local recent = redis.call('XREVRANGE', log, '+', '-', 'COUNT', size)
  for i = 1, #recent do
    if field(recent[i], 'pid') == pid then
      return {epoch, tonumber(offset_of(recent[i][1]))}
    end
  end
end

local offset = redis.call('INCR', offset_key)
local offset_s = string.format('%d', offset)
redis.call('XADD', log, 'MAXLEN', '~', size, offset_s .. '-0',
  'at', string.format('%d', now_ms()), 'kind', kind, 'data', data, 'pid', pid)
trim_expired(log, ttl_ms)
redis.call('PEXPIRE', log, log_ttl_ms)
redis.call('PEXPIRE', redacted, log_ttl_ms)
redis.call('PEXPIRE', epoch_key, meta_ttl_ms)
redis.call('PEXPIRE', offset_key, meta_ttl_ms)
redis.call(publish, channel, offset_s .. '\n' .. epoch .. '\n' .. kind .. '\n' .. data)
return {epoch, offset}
