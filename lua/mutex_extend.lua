-- Extend a mutex lease to at least ttl from now; never shortens it, and
-- never re-creates a key that has expired or changed hands.
--
-- KEYS[1]  lock key
-- ARGV[1]  owner token
-- ARGV[2]  new ttl, milliseconds
-- Returns  {1} when the lease lasts at least ttl now; {0} when the key is
--          missing or belongs to another owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  extend_to(KEYS[1], ARGV[2])
  return {1}
end
return {0}
