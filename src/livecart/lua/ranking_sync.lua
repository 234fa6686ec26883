-- Cluster trending: one atomic step per node and sync. Move the landmark if this batch is the
-- first of a new period, apply the increments (the capped ones against the shared per-user
-- ledger), and read back the numerators of the node's live items. `SharedStore` in
-- ranking/core/shared.py is the same in Python. Every key carries the `{rank}` hash tag: one
-- Redis Cluster slot.
--
-- KEYS[1] <prefix>:landmark   the store's landmark, as the decimal string used in key names
-- ARGV    prefix, landmark (string), rate lambda, key ttl (ms), ledger period (s), forget_below,
--         batch (MessagePack SyncBatch), live members to read (MessagePack [[products],
--         [sessions], [hosts]])
-- returns {landmark string, product scores, session scores, host scores}
local prefix, landmark_s = ARGV[1], ARGV[2]
local rate, ttl, period = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local forget_below = tonumber(ARGV[6])
local batch = cmsgpack.unpack(ARGV[7])
local read = cmsgpack.unpack(ARGV[8])
local landmark = tonumber(landmark_s)
local current_s = redis.call('GET', KEYS[1])
if (not current_s) or tonumber(current_s) < landmark then
  if current_s then
    -- The first batch of a new period: carry every numerator over, rescaled.
    local factor = math.exp(-rate * (landmark - tonumber(current_s)))
    for _, scope in ipairs({'p', 's', 'h'}) do
      local old = prefix .. ':' .. scope .. ':' .. current_s
      local new = prefix .. ':' .. scope .. ':' .. landmark_s
      if redis.call('EXISTS', old) == 1 then
        redis.call('ZUNIONSTORE', new, 2, new, old, 'WEIGHTS', 1, factor)
        redis.call('ZREMRANGEBYSCORE', new, '-inf', '(' .. forget_below)
      end
    end
  end
  redis.call('SET', KEYS[1], landmark_s)
  current_s = landmark_s
end
redis.call('PEXPIRE', KEYS[1], ttl)
local current = tonumber(current_s)
local scale = 1
if landmark < current then scale = math.exp(-rate * (current - landmark)) end

-- Per-user caps. Each ledger field occurs once in a batch: one HMGET and one HSET per
-- generation. An entry is a numerator against the start of its generation.
local groups, kinds, gens, by_gen = {}, {}, {}, {}
for _, e in ipairs(batch.products) do groups[#groups + 1] = e; kinds[#groups] = 'p' end
for _, e in ipairs(batch.hosts) do groups[#groups + 1] = e; kinds[#groups] = 'h' end
for i, e in ipairs(groups) do
  local gen = math.floor(e[6] / period)
  gens[i] = gen
  local list = by_gen[gen]
  if not list then list = {}; by_gen[gen] = list end
  list[#list + 1] = i
end
local function ledger(gen) return prefix .. ':cap:' .. string.format('%d', gen) end
local function read_fields(key, idx)
  local out = {}
  for first = 1, #idx, 500 do
    local fields = {}
    for j = first, math.min(first + 499, #idx) do fields[#fields + 1] = groups[idx[j]][1] end
    local part = redis.call('HMGET', key, unpack(fields))
    for j = 1, #part do out[first + j - 1] = part[j] end
  end
  return out
end
local stored = {}
local carry = math.exp(-rate * period)
for gen, idx in pairs(by_gen) do
  local found = read_fields(ledger(gen), idx)
  local missing = {}
  for j, i in ipairs(idx) do
    if found[j] then stored[i] = tonumber(found[j]) else missing[#missing + 1] = i end
  end
  if #missing > 0 then
    local older = read_fields(ledger(gen - 1), missing)
    for j, i in ipairs(missing) do
      if older[j] then stored[i] = tonumber(older[j]) * carry end
    end
  end
end

local sums = {p = {}, s = {}, h = {}}
local function add(scope, member, inc)
  if inc > 0 then
    local t = sums[scope]
    t[member] = (t[member] or 0) + inc
  end
end
for _, e in ipairs(batch.free) do add(e[1], e[2], e[3]) end
for gen, idx in pairs(by_gen) do
  local base = gen * period
  local values = {}
  for _, i in ipairs(idx) do
    local e = groups[i]
    local weight, cap = e[4], e[5]
    local numerator = stored[i] or 0
    local grow = math.exp(rate * (e[6] - base))
    local left = cap - numerator / grow
    local grant = 0
    if left > 0 then grant = math.min(weight, left) end
    values[#values + 1] = e[1]
    values[#values + 1] = numerator + grant * grow
    local share = 0
    if weight > 0 then share = grant / weight end
    add(kinds[i], e[2], e[3] * share)
    if kinds[i] == 'h' then
      for _, s in ipairs(e[7]) do add('s', s[1], s[2] * share) end
    end
  end
  local key = ledger(gen)
  for first = 1, #values, 1000 do
    redis.call('HSET', key, unpack(values, first, math.min(first + 999, #values)))
  end
  redis.call('PEXPIRE', key, math.floor(2 * period * 1000))
end
for scope, members in pairs(sums) do
  local key = prefix .. ':' .. scope .. ':' .. current_s
  local touched = false
  for member, inc in pairs(members) do
    redis.call('ZINCRBY', key, inc * scale, member)
    touched = true
  end
  if touched then redis.call('PEXPIRE', key, ttl) end
end

local out = {current_s}
for i, scope in ipairs({'p', 's', 'h'}) do
  local key = prefix .. ':' .. scope .. ':' .. current_s
  local members = read[i]
  local scores = {}
  -- unpack() is limited by the Lua stack: read in slices
  for first = 1, #members, 1000 do
    local part = redis.call('ZMSCORE', key, unpack(members, first, math.min(first + 999, #members)))
    for j = 1, #part do scores[first + j - 1] = part[j] end
  end
  out[i + 1] = scores
end
return out
