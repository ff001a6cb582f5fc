-- Release a semaphore lease's slots and wake the waiters. Only slots the
-- owner holds are touched.
--
-- KEYS[1]  sorted set: slot -> expiry (server ms)
-- KEYS[2]  hash: slot -> owner token
-- ARGV[1]  owner token
-- ARGV[2]  wake-up channel; the message names this release, so that its
--          copies from several nodes wake one waiter, not one each
-- ARGV[3..] the slots to release; none: every slot the owner holds (the
--          undo of an acquisition whose slots are unknown)
-- Returns  {1, n} when n > 0 slots were released; {0, 0} when none was held.
local slots = {}
if #ARGV > 2 then
  for i = 3, #ARGV do
    slots[#slots + 1] = ARGV[i]
  end
else
  local owners = redis.call('HGETALL', KEYS[2])
  for i = 1, #owners, 2 do
    if owners[i + 1] == ARGV[1] then
      slots[#slots + 1] = owners[i]
    end
  end
end
local released = 0
for _, slot in ipairs(slots) do
  if redis.call('HGET', KEYS[2], slot) == ARGV[1] then
    redis.call('HDEL', KEYS[2], slot)
    redis.call('ZREM', KEYS[1], slot)
    released = released + 1
  end
end
if released == 0 then
  return {0, 0}
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
end
redis.call('PUBLISH', ARGV[2], redis.sha1hex(ARGV[1]))
return {1, released}
