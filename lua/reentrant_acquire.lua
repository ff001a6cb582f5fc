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
-- ARGV[4..5] the fencing tail
-- Returns  {1, fence, final} when held (a re-entry returns the stored token
--          with final = 1); {0, pttl} when another owner holds it.
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
local fence, final = mint_fence(KEYS[2], ARGV[4], ARGV[5])
if final == 1 then
  redis.call('HSET', KEYS[1], 'fence', string.format('%d', fence))
end
return {1, fence, final}
