-- Extend a semaphore lease: push the expiry of each of its slots to at
-- least ttl from now (never shorter), provided the owner still holds every
-- one of them and none has expired. An expired slot is never revived.
--
-- KEYS[1]  sorted set: slot -> expiry (server ms)
-- KEYS[2]  hash: slot -> owner token
-- ARGV[1]  owner token
-- ARGV[2]  new ttl, milliseconds
-- ARGV[3..] the lease's slots
-- Returns  {1} when extended; {0} when any slot is no longer held.
local ms = server_ms()
for i = 3, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[1] or not score or tonumber(score) <= ms then
    return {0}
  end
end
local expiry = ms + tonumber(ARGV[2])
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', 'GT', expiry, ARGV[i])
end
semaphore_keep(KEYS[1], KEYS[2], ms)
return {1}
