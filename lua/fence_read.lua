-- Fencing round one for a mutex whose claim read no counter (the default
-- mode's plain-command claim): the counter, or the clock's floor when the
-- node has none, but only where the owner holds the lock, so that every
-- token committed before this lease began on the node is counted.
--
-- KEYS[1]  lock key (a string holding the owner token)
-- KEYS[2]  fencing counter key
-- ARGV[1]  owner token
-- Returns  {1, counter} when the owner holds the lock here; {0} otherwise.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0}
end
local stored = redis.call('GET', KEYS[2])
return {1, stored and tonumber(stored) or fence_floor()}
