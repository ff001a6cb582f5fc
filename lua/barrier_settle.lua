-- Decide a barrier generation on this node unless it is decided already
-- (the first decision stands): 'broken' when a party gave up waiting, or
-- the majority's 'done' on a node that fell behind. A node still in that
-- generation moves to the next one with no arrivals; the parties that had
-- arrived there may arrive again.
--
-- A party that gave up before it knew its generation (its arrival's
-- replies were lost) names itself instead: the generation its arrival
-- joined here is decided.
--
-- KEYS[1]  hash (see barrier_arrive.lua)
-- KEYS[2]  set of the current generation's arrivals
-- ARGV[1]  generation, or '' to take the party's
-- ARGV[2]  outcome: 'broken' or 'done'
-- ARGV[3]  wake-up channel; the message '*' wakes every waiter
-- ARGV[4]  state ttl, milliseconds
-- ARGV[5]  party id, or ''
-- Returns  {1, generation, 1 released | 2 broken, the party's arrival count
--          (0 when unknown)}; {0} when the generation is unknown here (the
--          party's arrival did not land on this node).
local gen = tonumber(ARGV[1])
local arrived = 0
local record = ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'a:' .. ARGV[5])
if record then
  local g, n = string.match(record, '(%d+):(%d+)')
  gen = gen or tonumber(g)
  arrived = tonumber(n)
end
if not gen then
  return {0}
end
local decided = redis.call('HGET', KEYS[1], 'o:' .. gen)
if not decided then
  decided = ARGV[2]
  redis.call('HSET', KEYS[1], 'o:' .. gen, decided)
  if tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') <= gen then
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
      redis.call('HDEL', KEYS[1], 'a:' .. id)
    end
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'gen', gen + 1)
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PUBLISH', ARGV[3], '*')
end
if decided == 'broken' then
  return {1, gen, 2, arrived}
end
return {1, gen, 1, arrived}
