-- Acquire permits of a counting semaphore. Permits are slots 0..L-1; a
-- holder must win the same slots on a majority of nodes, so one slot never
-- has two valid holders and at most L permits are ever held.
--
-- Slots are tried from ARGV[5] on, wrapping; nodes in the same state pick
-- the same slots. Expiry scores are server time (TIME), never client clocks,
-- and every call reaps expired slots first, so a crashed holder's permits
-- come back after its TTL.
--
-- KEYS[1]  sorted set: slot -> expiry (server ms)
-- KEYS[2]  hash: slot -> owner token, and 'permits' -> L
-- KEYS[3]  fencing counter key
-- KEYS[4..5] fair mode only: the queue's order and entries (prelude)
-- ARGV[1]  owner token
-- ARGV[2]  lease ttl, milliseconds
-- ARGV[3]  L, the number of permits
-- ARGV[4]  k, permits wanted
-- ARGV[5]  first slot to try
-- ARGV[6..7] the fencing tail (see the prelude)
-- ARGV[8..10] fair mode only: waiter id, ticket, entry ttl in ms (0: a try)
-- Returns  {1, fence, final, slot...} when granted; {0, ms} when fewer
--          than k slots are free, ms being the time until the earliest lease
--          ends, or when waiters ahead want them (ms: until the first
--          one's entry would expire); error QUORATE_MISMATCH when the set
--          was made with another L.
local ms = server_ms()
local refused = mismatch(KEYS[2], 'permits', ARGV[3])
if refused then
  return refused
end
semaphore_reap(KEYS[1], KEYS[2], ms)

local permits = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
-- A retried acquire (the connection broke before its reply came back)
-- finds the slots it took: granted again.
local got = {}
local owners = redis.call('HGETALL', KEYS[2])
for i = 1, #owners, 2 do
  if owners[i + 1] == ARGV[1] and owners[i] ~= 'permits' then
    got[#got + 1] = tonumber(owners[i])
  end
end
table.sort(got)
if #got == 0 then
  local free = permits - redis.call('ZCARD', KEYS[1])
  if KEYS[4] then
    local turn, wait = fair_turn(KEYS[4], KEYS[5], ARGV[8], ARGV[9], wanted, ARGV[10], ms,
      math.max(free, 0))
    if not turn and free >= wanted then
      return {0, wait}
    end
  end
  if free < wanted then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, tonumber(first[2]) - ms}
  end
  local expiry = ms + tonumber(ARGV[2])
  local start = tonumber(ARGV[5])
  for i = 0, permits - 1 do
    local slot = (start + i) % permits
    local name = string.format('%d', slot)
    if not redis.call('ZSCORE', KEYS[1], name) then
      redis.call('ZADD', KEYS[1], expiry, name)
      redis.call('HSET', KEYS[2], name, ARGV[1])
      got[#got + 1] = slot
      if #got == wanted then
        break
      end
    end
  end
end
redis.call('HSET', KEYS[2], 'permits', ARGV[3])
semaphore_keep(KEYS[1], KEYS[2], ms)
local fence, final = mint_fence(KEYS[3], ARGV[6], ARGV[7])
local reply = {1, fence, final}
for _, slot in ipairs(got) do
  reply[#reply + 1] = slot
end
return reply
