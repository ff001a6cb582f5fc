-- A fair-mode waiter gives up (its wait timed out or was dropped): it
-- leaves the queue at once rather than block it until its entry expires,
-- and when it was first in line the next waiter is woken to take its turn.
--
-- KEYS[1]  the queue's order (sorted set: waiter id -> ticket)
-- KEYS[2]  the queue's entries (hash: waiter id -> 'expiry ms,wanted')
-- ARGV[1]  waiter id
-- ARGV[2]  wake-up channel of the resource
-- Returns  {1} when it was queued here; {0} otherwise.
local first = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return {0}
end
redis.call('HDEL', KEYS[2], ARGV[1])
if first == ARGV[1] then
  fair_wake(KEYS[1], KEYS[2], server_ms(), 1, ARGV[2], 'left:' .. ARGV[1])
end
return {1}
