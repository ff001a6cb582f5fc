-- Extend one hold of a reentrant lock. Never revives a lock that expired or
-- changed hands.
--
-- KEYS[1]  hash (see reentrant_acquire.lua)
-- ARGV[1]  owner id
-- ARGV[2]  new ttl, milliseconds
-- ARGV[3]  hold id
-- Returns  {1} when extended; {0} when the hold is gone.
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1]
  and redis.call('HEXISTS', KEYS[1], 'h:' .. ARGV[3]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1}
end
return {0}
