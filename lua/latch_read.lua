-- Read a latch on this node. The client unions the ids a majority returns:
-- every finished count-down reached a majority, so the union holds them all.
--
-- KEYS[1]  set of count-down ids
-- KEYS[2]  the latch's count, as created
-- ARGV[1]  count
-- Returns  {1, n} when this node alone has seen n >= count count-downs;
--          {1, n, id...} otherwise; error QUORATE_MISMATCH as count_down.
local count = redis.call('GET', KEYS[2])
if count and count ~= ARGV[1] then
  return redis.error_reply('QUORATE_MISMATCH created with count ' .. count .. ', opened with ' .. ARGV[1])
end
local n = redis.call('SCARD', KEYS[1])
if n >= tonumber(ARGV[1]) then
  return {1, n}
end
local reply = {1, n}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  reply[#reply + 1] = id
end
return reply
