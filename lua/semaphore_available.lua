-- List the slots held on this node, reaping expired ones first. The client
-- counts the slots free on a majority of nodes: only those can be granted.
--
-- KEYS[1]  sorted set: slot -> expiry (server ms)
-- KEYS[2]  hash: slot -> owner token, and 'permits' -> L
-- ARGV[1]  L, the number of permits
-- Returns  {1, slot...}: the slots held; error QUORATE_MISMATCH when made
--          with another L.
local refused = mismatch(KEYS[2], 'permits', ARGV[1])
if refused then
  return refused
end
semaphore_reap(KEYS[1], KEYS[2], server_ms())
local reply = {1}
for _, slot in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  reply[#reply + 1] = tonumber(slot)
end
return reply
