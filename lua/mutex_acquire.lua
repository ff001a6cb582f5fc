-- Acquire a mutex lease in fair mode. (The default mode claims with plain
-- commands, `SET NX PX GET` and friends: see `Invocation::set_nx` in
-- src/engine/scripts.rs.) The lock key is a plain string holding the owner
-- token, the layout of the Redlock reference implementations, so locks
-- taken by other Redlock clients and by quorate exclude each other; the
-- lock goes only to the waiter first in line (see the prelude's fair
-- queues).
--
-- Fencing counters are floored at the server clock; ARGV ends with the
-- fencing tail and the reply follows the acquire convention (prelude).
--
-- KEYS[1]  lock key
-- KEYS[2]  fencing counter key
-- KEYS[3..4] the queue's order and entries
-- ARGV[1]  owner token
-- ARGV[2]  lease ttl, milliseconds
-- ARGV[3..4] the fencing tail
-- ARGV[5..7] waiter id, ticket, entry ttl in ms (0: a try)
-- Returns  {1, fence, final} when granted; {0, pttl} when another owner
--          holds the lock, or {0, ms} when another waiter is first in line
--          (ms: until its entry would expire).
-- A retried acquire (the connection broke before its reply came back)
-- finds its own token: granted again.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  fair_turn(KEYS[3], KEYS[4], ARGV[5], ARGV[6], 1, ARGV[7], server_ms(), 0)
  return {0, redis.call('PTTL', KEYS[1])}
end
if not holder then
  local turn, wait = fair_turn(KEYS[3], KEYS[4], ARGV[5], ARGV[6], 1, ARGV[7], server_ms(), 1)
  if not turn then
    return {0, wait}
  end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
local fence, final = mint_fence(KEYS[2], ARGV[3], ARGV[4])
return {1, fence, final}
