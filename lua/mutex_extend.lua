-- Extend a mutex lease. Never re-creates a key that has expired or changed
-- hands: a lease that is gone stays gone.
--
-- KEYS[1]  lock key
-- ARGV[1]  owner token
-- ARGV[2]  new ttl, milliseconds
-- Returns  {1, 0} when extended; {0, 0} when the key is missing or belongs to
--          another owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, 0}
end
return {0, 0}
