-- Extend one hold of a reentrant lock to at least ttl from now; never
-- shortens it, and never revives a hold that expired or changed hands.
--
-- KEYS[1]  hash (see reentrant_acquire.lua)
-- ARGV[1]  owner id
-- ARGV[2]  new ttl, milliseconds
-- ARGV[3]  hold id
-- Returns  {1} when extended; {0} when the hold is gone.
local now = server_ms()
reentrant_live(KEYS[1], now)
local hold = 'h:' .. ARGV[3]
local expiry = redis.call('HGET', KEYS[1], hold)
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or not expiry then
  return {0}
end
expiry = math.max(tonumber(expiry), now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], hold, string.format('%d', expiry))
local _, latest = reentrant_live(KEYS[1], now)
reentrant_cover(KEYS[1], latest, now)
return {1}
