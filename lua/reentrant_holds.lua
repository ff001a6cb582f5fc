-- Read how many live holds an owner has on a reentrant lock.
--
-- KEYS[1]  hash (see reentrant_acquire.lua)
-- ARGV[1]  owner id
-- Returns  {1, holds}: 0 when the owner does not hold the lock.
local live = reentrant_live(KEYS[1], server_ms())
if live > 0 and redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  return {1, live}
end
return {1, 0}
