-- Read a latch on this node. The client unions the ids a majority returns:
-- every finished count-down reached a majority, so the union holds them all.
--
-- KEYS[1]  set of count-down ids
-- KEYS[2]  hash (see latch_count_down.lua)
-- ARGV[1]  count
-- Returns  {1, 1} when the latch is sealed open here; {1, 0, id...}
--          otherwise; error QUORATE_MISMATCH as count_down.
local refused = mismatch(KEYS[2], 'count', ARGV[1])
if refused then
  return refused
end
if redis.call('HGET', KEYS[2], 'open') == '1' then
  return {1, 1}
end
local reply = {1, 0}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  reply[#reply + 1] = id
end
return reply
