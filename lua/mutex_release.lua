-- Release a mutex lease (compare and delete) and wake the waiters.
--
-- KEYS[1]  lock key
-- KEYS[2..3] fair mode only: the queue's order and entries; the waiter
--          first in line is woken on its own channel
-- ARGV[1]  owner token
-- ARGV[2]  wake-up channel; the message names this release, so that its
--          copies from several nodes wake one waiter, not one each
-- Returns  {1} when deleted; {0} when the key is missing or belongs to
--          another owner (nothing is changed then).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], redis.sha1hex(ARGV[1]))
  if KEYS[2] then
    fair_wake(KEYS[2], KEYS[3], server_ms(), 1, ARGV[2], redis.sha1hex(ARGV[1]))
  end
  return {1}
end
return {0}
