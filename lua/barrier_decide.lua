-- Propose the outcome of a barrier generation on this node: the first
-- outcome written stays, so a waiter that reads the same outcome on a
-- majority of nodes knows the one outcome of the generation. Proposed are
-- 'done:' and the members in seat order, once every seat was seen won on a
-- majority, or 'broken', by a party that gave up waiting (or a copy of an
-- outcome seen on another node).
--
-- KEYS[1]  hash (see barrier_arrive.lua)
-- ARGV[1]  generation
-- ARGV[2]  outcome
-- ARGV[3]  party id whose membership the reply reports, or ''
-- ARGV[4]  parties
-- ARGV[5]  state ttl, milliseconds
-- ARGV[6]  wake-up channel; the message '*' wakes every waiter
-- Returns  the reply of barrier_outcome (see the prelude) for the outcome
--          now decided here; {1, gen, 2} when the generation is older than
--          this node remembers; error QUORATE_MISMATCH as barrier_arrive.
local refused = created_with(KEYS[1], 'parties', ARGV[4], ARGV[5])
if refused then
  return refused
end
local gen = tonumber(ARGV[1])
if gen < tonumber(redis.call('HGET', KEYS[1], 'floor') or '0') then
  return {1, gen, 2}
end
barrier_settle(KEYS[1], gen, ARGV[2], tonumber(ARGV[4]), ARGV[6])
return barrier_outcome(KEYS[1], gen, ARGV[3])
