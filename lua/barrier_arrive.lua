-- Arrive at a cyclic barrier. The arrival joins the node's current
-- generation; the arrival that completes it (its party is the leader)
-- records the outcome, starts the next generation and wakes the waiters. A
-- retried arrival is recognised by its party id and not counted again.
--
-- KEYS[1]  hash: 'parties', 'gen' (current generation), 'a:<id>' ->
--          '<generation>:<arrivals counting this one>', 'o:<gen>' -> outcome
--          ('done' or 'broken'), 'm:<gen>' -> the ids of a completed
--          generation
-- KEYS[2]  set of the current generation's arrivals
-- ARGV[1]  party id
-- ARGV[2]  parties
-- ARGV[3]  state ttl, milliseconds
-- ARGV[4]  wake-up channel; the message '*' wakes every waiter
-- Returns  {1, generation, arrivals counting this one} (the same for a
--          retried arrival); error QUORATE_MISMATCH when the barrier was
--          created with another number of parties.
local parties = redis.call('HGET', KEYS[1], 'parties')
if parties and parties ~= ARGV[2] then
  return redis.error_reply('QUORATE_MISMATCH created with ' .. parties .. ' parties, opened with ' .. ARGV[2])
end
redis.call('HSET', KEYS[1], 'parties', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local before = redis.call('HGET', KEYS[1], 'a:' .. ARGV[1])
if before then
  local gen, arrived = string.match(before, '(%d+):(%d+)')
  return {1, tonumber(gen), tonumber(arrived)}
end
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local arrived = redis.call('SCARD', KEYS[2])
redis.call('HSET', KEYS[1], 'a:' .. ARGV[1], gen .. ':' .. arrived)
if arrived < tonumber(ARGV[2]) then
  return {1, gen, arrived}
end
local ids = redis.call('SMEMBERS', KEYS[2])
redis.call('HSET', KEYS[1], 'o:' .. gen, 'done', 'm:' .. gen, table.concat(ids, ','), 'gen', gen + 1)
-- Arrival records are kept one generation, for late retries, then dropped.
local old = redis.call('HGET', KEYS[1], 'm:' .. (gen - 1))
if old then
  for id in string.gmatch(old, '[^,]+') do
    redis.call('HDEL', KEYS[1], 'a:' .. id)
  end
end
redis.call('HDEL', KEYS[1], 'm:' .. (gen - 1), 'o:' .. (gen - 16))
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[4], '*')
return {1, gen, arrived}
