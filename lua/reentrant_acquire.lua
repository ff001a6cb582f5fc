-- Acquire (or re-enter) a reentrant lock. The hash names one owner, chosen
-- by the caller, and one field per hold holding that hold's expiry, so a
-- retried or undone hold counts once, and every hold keeps its own TTL: the
-- key lives as long as the latest hold, and a short hold never cuts a long
-- one. A re-entry returns the owner's token.
--
-- KEYS[1]  hash: 'owner' -> owner id, 'fence' -> token, 'h:<hold id>' ->
--          that hold's expiry (server ms)
-- KEYS[2]  fencing counter key
-- ARGV[1]  owner id
-- ARGV[2]  lease ttl, milliseconds
-- ARGV[3]  hold id
-- ARGV[4]  1: issue the fencing token here (one node); 0: report the counter
-- ARGV[5]  fencing counter ttl, milliseconds
-- Returns  {1, fence, final} when held (see mutex_acquire.lua; a re-entry
--          returns the stored token with final = 1); {0, pttl} when another
--          owner holds it.
local now = server_ms()
local live = reentrant_live(KEYS[1], now)
local owner = redis.call('HGET', KEYS[1], 'owner')
if live > 0 and owner ~= ARGV[1] then
  return {0, redis.call('PTTL', KEYS[1])}
end
local hold = 'h:' .. ARGV[3]
local expiry = math.max(tonumber(redis.call('HGET', KEYS[1], hold) or '0'), now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'owner', ARGV[1], hold, string.format('%d', expiry))
local _, latest = reentrant_live(KEYS[1], now)
reentrant_cover(KEYS[1], latest, now)
local stored = redis.call('HGET', KEYS[1], 'fence')
if stored then
  return {1, tonumber(stored), 1}
end
local fence = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), fence_floor())
if ARGV[4] == '1' then
  fence = fence + 1
  redis.call('SET', KEYS[2], string.format('%d', fence), 'PX', ARGV[5])
  redis.call('HSET', KEYS[1], 'fence', string.format('%d', fence))
  return {1, fence, 1}
end
return {1, fence, 0}
