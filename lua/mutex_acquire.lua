-- Acquire a mutex lease. The lock key is a plain string holding the owner
-- token (SET NX PX), the layout of the Redlock reference implementations, so
-- locks taken by other Redlock clients and by quorate exclude each other.
--
-- Fencing counters are floored at the server clock; ARGV ends with the
-- fencing tail and the reply follows the acquire convention (prelude).
--
-- KEYS[1]  lock key
-- KEYS[2]  fencing counter key
-- ARGV[1]  owner token
-- ARGV[2]  lease ttl, milliseconds
-- ARGV[3..4] the fencing tail
-- Returns  {1, fence, final} when granted; {0, pttl} when another owner
--          holds the lock.
-- A retried acquire (the connection broke before its reply came back)
-- finds its own token: granted again.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
  and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0, redis.call('PTTL', KEYS[1])}
end
local fence, final = mint_fence(KEYS[2], ARGV[3], ARGV[4])
return {1, fence, final}
