-- Round two of fencing on several nodes: raise the counter to the token the
-- client chose (the highest counter of round one, plus one), but only where
-- the owner still holds the lease, so that any later quorum reads it back.
--
-- KEYS[1]  lease key: a string (mutex), sorted set (semaphore) or hash
--          (reentrant lock) that names the owner
-- KEYS[2]  fencing counter key
-- ARGV[1]  owner token: the string value, set member or hash field
-- ARGV[2]  fencing token, decimal
-- ARGV[3]  fencing counter ttl, milliseconds
-- Returns  {1, 0} when the counter is at least the token now; {0, 0} when the
--          owner no longer holds the lease on this node.
local kind = redis.call('TYPE', KEYS[1]).ok
local held = false
if kind == 'string' then
  held = redis.call('GET', KEYS[1]) == ARGV[1]
elseif kind == 'zset' then
  held = redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= false
elseif kind == 'hash' then
  held = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1
end
if not held then
  return {0, 0}
end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return {1, 0}
