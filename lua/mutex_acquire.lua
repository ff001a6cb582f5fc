-- Acquire a mutex lease. The lock key is a plain string holding the owner
-- token (SET NX PX), the layout of the Redlock reference implementations, so
-- locks taken by other Redlock clients and by quorate exclude each other.
--
-- Fencing counters are floored at the server clock (see the prelude).
--
-- KEYS[1]  lock key
-- KEYS[2]  fencing counter key
-- ARGV[1]  owner token
-- ARGV[2]  lease ttl, milliseconds
-- ARGV[3]  1: issue the fencing token here (one node); 0: only report the
--          counter (round one of two on several nodes)
-- ARGV[4]  fencing counter ttl, milliseconds
-- Returns  {1, fence, final} when granted: the new token and 1 (ARGV[3] =
--          1), or the counter's current value and 0 (ARGV[3] = 0);
--          {0, pttl} when another owner holds the lock, pttl being the
--          milliseconds left on its lease.
-- A retried acquire (the connection broke before its reply came back)
-- finds its own token: granted again.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
  and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0, redis.call('PTTL', KEYS[1])}
end
local fence = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), fence_floor())
if ARGV[3] == '1' then
  fence = fence + 1
  redis.call('SET', KEYS[2], string.format('%d', fence), 'PX', ARGV[4])
  return {1, fence, 1}
end
return {1, fence, 0}
