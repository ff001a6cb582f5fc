-- Release one hold of a reentrant lock; the last hold frees the lock and
-- wakes the waiters. Only the owner's holds are touched; the key's TTL then
-- covers the latest hold left.
--
-- KEYS[1]  hash (see reentrant_acquire.lua)
-- ARGV[1]  owner id
-- ARGV[2]  wake-up channel; the message names this release, so that its
--          copies from several nodes wake one waiter, not one each
-- ARGV[3]  hold id
-- Returns  {1} when the hold was released; {0} when it was not held.
local now = server_ms()
reentrant_live(KEYS[1], now)
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1]
  or redis.call('HDEL', KEYS[1], 'h:' .. ARGV[3]) == 0 then
  return {0}
end
local left, latest = reentrant_live(KEYS[1], now)
if left == 0 then
  redis.call('PUBLISH', ARGV[2], redis.sha1hex(ARGV[1] .. ':' .. ARGV[3]))
else
  reentrant_cover(KEYS[1], latest, now)
end
return {1}
