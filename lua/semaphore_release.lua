-- Release every slot an owner holds, and wake the waiters. Releasing by
-- owner token, not by slot, also frees slots a node granted when its reply
-- was lost (the owner token is unique to one lease). Only slots the owner
-- holds are touched.
--
-- KEYS[1]  sorted set: slot -> expiry (server ms)
-- KEYS[2]  hash: slot -> owner token, and 'permits' -> L
-- KEYS[3..4] fair mode only: the queue's order and entries; the waiters
--          whose turn the freed slots make are woken on their own channels
-- ARGV[1]  owner token
-- ARGV[2]  wake-up channel; the message names this release, so that its
--          copies from several nodes wake one waiter, not one each
-- Returns  {1} when some slot was released; {0} when none was held.
local owners = redis.call('HGETALL', KEYS[2])
local released = 0
for i = 1, #owners, 2 do
  if owners[i + 1] == ARGV[1] and owners[i] ~= 'permits' then
    redis.call('HDEL', KEYS[2], owners[i])
    redis.call('ZREM', KEYS[1], owners[i])
    released = released + 1
  end
end
if released == 0 then
  return {0}
end
local held = redis.call('ZCARD', KEYS[1])
if KEYS[3] then
  local permits = tonumber(redis.call('HGET', KEYS[2], 'permits') or '0')
  fair_wake(KEYS[3], KEYS[4], server_ms(), math.max(permits - held, 0), ARGV[2],
    redis.sha1hex(ARGV[1]))
end
if held == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
end
redis.call('PUBLISH', ARGV[2], redis.sha1hex(ARGV[1]))
return {1}
