-- Mark a latch open on this node, once a reader has made count ids durable
-- on a majority: any later reader that meets this mark may trust it alone.
--
-- KEYS[1]  set of count-down ids
-- KEYS[2]  hash (see latch_count_down.lua)
-- ARGV[1]  count
-- ARGV[2]  state ttl, milliseconds
-- Returns  {1}; error QUORATE_MISMATCH as count_down.
local refused = created_with(KEYS[2], 'count', ARGV[1], ARGV[2])
if refused then
  return refused
end
redis.call('HSET', KEYS[2], 'open', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1}
