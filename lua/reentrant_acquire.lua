-- Acquire (or re-enter) a reentrant lock. The hash names one owner, chosen
-- by the caller, and one field per hold, so a retried or undone hold counts
-- once. A re-entry refreshes the TTL and returns the owner's token.
--
-- KEYS[1]  hash: 'owner' -> owner id, 'fence' -> token, 'holds' -> count,
--          'h:<hold id>' -> 1 for each hold
-- KEYS[2]  fencing counter key
-- ARGV[1]  owner id
-- ARGV[2]  lease ttl, milliseconds
-- ARGV[3]  hold id
-- ARGV[4]  1: issue the fencing token here (one node); 0: report the counter
-- ARGV[5]  fencing counter ttl, milliseconds
-- Returns  {1, run_id, uptime, fence, final} when held (see
--          mutex_acquire.lua; a re-entry returns the stored token with
--          final = 1); {0, run_id, uptime, pttl} when another owner holds it.
local run_id, uptime = incarnation()
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then
  return {0, run_id, uptime, redis.call('PTTL', KEYS[1])}
end
if redis.call('HSETNX', KEYS[1], 'h:' .. ARGV[3], 1) == 1 then
  redis.call('HINCRBY', KEYS[1], 'holds', 1)
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local stored = redis.call('HGET', KEYS[1], 'fence')
if stored then
  return {1, run_id, uptime, tonumber(stored), 1}
end
local fence = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), fence_floor())
if ARGV[4] == '1' then
  fence = fence + 1
  redis.call('SET', KEYS[2], string.format('%d', fence), 'PX', ARGV[5])
  redis.call('HSET', KEYS[1], 'fence', string.format('%d', fence))
  return {1, run_id, uptime, fence, 1}
end
return {1, run_id, uptime, fence, 0}
