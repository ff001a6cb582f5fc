-- Count a latch down once per operation id: the ids are a grow-only set, so
-- a retried count-down counts once. Wakes the waiters.
--
-- KEYS[1]  set of count-down ids
-- KEYS[2]  the latch's count, as created
-- ARGV[1]  operation id
-- ARGV[2]  count
-- ARGV[3]  state ttl, milliseconds (refreshed by every count-down)
-- ARGV[4]  wake-up channel; the message '*' wakes every waiter
-- Returns  {1, distinct count-downs on this node}; error QUORATE_MISMATCH
--          when the latch was created with another count.
local count = redis.call('GET', KEYS[2])
if count and count ~= ARGV[2] then
  return redis.error_reply('QUORATE_MISMATCH created with count ' .. count .. ', opened with ' .. ARGV[2])
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], '*')
return {1, redis.call('SCARD', KEYS[1])}
