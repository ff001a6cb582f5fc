-- Release one hold of a reentrant lock; the last hold frees the lock and
-- wakes the waiters. Only the owner's holds are touched.
--
-- KEYS[1]  hash (see reentrant_acquire.lua)
-- ARGV[1]  owner id
-- ARGV[2]  wake-up channel; the message names this release, so that its
--          copies from several nodes wake one waiter, not one each
-- ARGV[3]  hold id
-- Returns  {1, holds left} when the hold was released; {0, 0} when it was
--          not held.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1]
  or redis.call('HDEL', KEYS[1], 'h:' .. ARGV[3]) == 0 then
  return {0, 0}
end
local left = redis.call('HINCRBY', KEYS[1], 'holds', -1)
if left <= 0 then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], redis.sha1hex(ARGV[1] .. ':' .. ARGV[3]))
end
return {1, left}
