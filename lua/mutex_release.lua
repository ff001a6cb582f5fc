-- Release a mutex lease (compare and delete) and wake the waiters.
--
-- KEYS[1]  lock key
-- ARGV[1]  owner token
-- ARGV[2]  wake-up channel; the message names this release, so that its
--          copies from several nodes wake one waiter, not one each
-- Returns  {1} when deleted; {0} when the key is missing or belongs to
--          another owner (nothing is changed then).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], redis.sha1hex(ARGV[1]))
  return {1}
end
return {0}
