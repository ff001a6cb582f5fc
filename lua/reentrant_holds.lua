-- Read how many holds an owner has on a reentrant lock.
--
-- KEYS[1]  hash (see reentrant_acquire.lua)
-- ARGV[1]  owner id
-- Returns  {1, holds}: 0 when the owner does not hold the lock.
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  return {1, tonumber(redis.call('HGET', KEYS[1], 'holds') or '0')}
end
return {1, 0}
