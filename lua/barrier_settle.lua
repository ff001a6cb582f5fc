-- Decide a barrier generation on this node unless it is decided already
-- (the first decision stands): 'broken' when a party gave up waiting, or
-- the majority's 'done' on a node that fell behind. A node still in that
-- generation moves to the next one with no arrivals; the parties that had
-- arrived there may arrive again.
--
-- KEYS[1]  hash (see barrier_arrive.lua)
-- KEYS[2]  set of the current generation's arrivals
-- ARGV[1]  generation
-- ARGV[2]  outcome: 'broken' or 'done:'
-- ARGV[3]  wake-up channel; the message '*' wakes every waiter
-- ARGV[4]  state ttl, milliseconds
-- Returns  {1, 1} when this call decided it; {1, 0} when it was decided.
local gen = tonumber(ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'o:' .. gen) == 1 then
  return {1, 0}
end
redis.call('HSET', KEYS[1], 'o:' .. gen, ARGV[2])
if tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') <= gen then
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    redis.call('HDEL', KEYS[1], 'a:' .. id)
  end
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'gen', gen + 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[3], '*')
return {1, 1}
