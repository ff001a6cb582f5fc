-- Round two of fencing on several nodes: raise the counter to the token the
-- client chose (the highest counter of round one, plus one), but only where
-- the owner still holds the lease, so that any later quorum reads it back.
--
-- KEYS[1]  lease key: a string holding the owner token (mutex) or a hash
--          with a field naming the owner (semaphore, reentrant lock)
-- KEYS[2]  fencing counter key
-- ARGV[1]  owner token
-- ARGV[2]  fencing token, decimal
-- ARGV[3]  fencing counter ttl, milliseconds
-- ARGV[4]  for a hash: the field whose value must be the owner token
-- ARGV[5]  for a hash: a field to keep the token in, or ''
-- Returns  {1} when the counter is at least the token now; {0} when the
--          owner no longer holds the lease on this node.
local kind = redis.call('TYPE', KEYS[1]).ok
local held = false
if kind == 'string' then
  held = redis.call('GET', KEYS[1]) == ARGV[1]
elseif kind == 'hash' then
  held = redis.call('HGET', KEYS[1], ARGV[4]) == ARGV[1]
end
if not held then
  return {0}
end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[5], ARGV[2])
end
return {1}
