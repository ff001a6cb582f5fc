-- Record latch count-downs by operation id: the ids are a grow-only set, so
-- a retried count-down counts once. Also used to repair: a reader about to
-- report the latch open first writes every id it relies on. Wakes the
-- waiters.
--
-- KEYS[1]  set of count-down ids
-- KEYS[2]  hash: 'count' -> the latch's count as created, 'open' -> 1 once
--          a majority is known to hold count ids (see latch_seal.lua)
-- ARGV[1]  count
-- ARGV[2]  state ttl, milliseconds (refreshed by every count-down)
-- ARGV[3]  wake-up channel; the message '*' wakes every waiter
-- ARGV[4..] operation ids
-- Returns  {1, distinct count-downs on this node}; error QUORATE_MISMATCH
--          when the latch was created with another count.
local refused = created_with(KEYS[2], 'count', ARGV[1], ARGV[2])
if refused then
  return refused
end
for i = 4, #ARGV do
  redis.call('SADD', KEYS[1], ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], '*')
return {1, redis.call('SCARD', KEYS[1])}
