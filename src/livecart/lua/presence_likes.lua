-- KEYS[1]: the room's like counter. ARGV: likes taken since the last sync, and the total this
-- node knew before them: it seeds a counter that Redis lost (a restart without persistence).
redis.call('SET', KEYS[1], ARGV[2], 'NX')
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 86400)
return total
