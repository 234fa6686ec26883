-- Viewers whose cached state every node must drop: scored by a sequence number (not a clock,
-- so nodes with skewed clocks never miss one); the newest ARGV[2] markers are kept.
-- KEYS[1] the forgotten set, KEYS[2] its sequence; ARGV[1] the viewer. Returns the marker.
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
return seq
