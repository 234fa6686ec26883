local function offset_of(id)
  return string.match(id, '^(%d+)')
end

local function field(entry, name)
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == name then return f[i + 1] end
  end
  return nil
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drop entries older than ttl_ms. The stream keeps its last id, so offsets stay increasing.
local function trim_expired(log, ttl_ms)
  if ttl_ms <= 0 then return end
  local cutoff = now_ms() - ttl_ms
  local head = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #head == 0 or tonumber(field(head[1], 'at')) >= cutoff then return end
  while true do
    local batch = redis.call('XRANGE', log, '-', '+', 'COUNT', 100)
    if #batch == 0 then return end
    for i = 1, #batch do
      if tonumber(field(batch[i], 'at')) >= cutoff then
        redis.call('XTRIM', log, 'MINID', batch[i][1])
        return
      end
    end
    local last = tonumber(offset_of(batch[#batch][1]))
    redis.call('XTRIM', log, 'MINID', string.format('%d-0', last + 1))
  end
end

-- Entries as a flat list offset, kind, data, with tombstones in place of redacted data.
local function flatten(entries, redacted)
  local out = {}
  local n = #entries
  if n == 0 then return out end
  local subs = {}
  if redis.call('EXISTS', redacted) == 1 then
    local i = 1
    while i <= n do
      local ids = {}
      local j = math.min(n, i + 499)
      for k = i, j do ids[#ids + 1] = offset_of(entries[k][1]) end
      local got = redis.call('HMGET', redacted, unpack(ids))
      for k = 1, #got do subs[i + k - 1] = got[k] end
      i = j + 1
    end
  end
  for i = 1, n do
    local e = entries[i]
    out[#out + 1] = offset_of(e[1])
    out[#out + 1] = field(e, 'kind')
    local data = subs[i]
    if not data then data = field(e, 'data') end
    out[#out + 1] = data
  end
  return out
end
