-- Prelude: the helpers every script may use, written once. It is folded
-- onto the first line of each script when loaded (src/engine/scripts.rs),
-- so keep every comment here on a line of its own.
--
-- Conventions of all scripts:
-- * Replies are arrays whose first element is the status: 1 for yes (a
--   grant, a done extend or release, or any answer of a read), 0 for no
--   (held by someone else, not held by us).
-- * Acquire scripts end ARGV with the fencing tail: 1 to issue the token
--   here (one node) or 0 to report the counter (round one of two on several
--   nodes), then the counter's ttl in ms. They reply {1, fence, final,
--   granted...} (final 1: fence is a token already issued; granted: what a
--   majority must agree on, semaphore slots) or {0, pttl} (pttl: ms left on
--   the holder's lease, or until the earliest ends).
-- * Extend scripts take ARGV = {token, ttl ms, holding...} and release
--   scripts ARGV = {token, channel, holding...}; both reply {1} or {0}.
-- * State created with other parameters is refused with the error
--   QUORATE_MISMATCH.

-- Server time in milliseconds. Expiry scores use it, never a client clock.
local function server_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

-- The floor of fencing counters: server time in ms * 1024. A node that lost
-- its counter (a restart without persistence) still issues larger tokens,
-- unless its clock is behind the clock of the node that issued the last one
-- by more than the restart quarantine. Exact in Lua doubles until 2248.
local function fence_floor()
  return server_ms() * 1024
end

-- The fencing part of a grant (see the tail above): the counter, or the
-- clock's floor when the node has none, and when `issue` is '1' the next
-- token, stored. Returns the value and whether it is an issued token.
-- A counter that exists needs no floor: counters only rise, so it is at
-- least every token committed on this node; the floor stands in for a
-- counter the node lost (or let expire).
local function mint_fence(counter, issue, counter_ttl)
  local stored = redis.call('GET', counter)
  local fence = stored and tonumber(stored) or fence_floor()
  if issue ~= '1' then
    return fence, 0
  end
  fence = fence + 1
  redis.call('SET', counter, string.format('%d', fence), 'PX', counter_ttl)
  return fence, 1
end

-- Sets a key's TTL to `ms` unless it already has more left: extensions
-- never shorten a lease, so a guard's deadline, the latest any extension
-- reported, never lies past the key's expiry whatever order they land in.
local function extend_to(key, ms)
  if redis.call('PTTL', key) < tonumber(ms) then
    redis.call('PEXPIRE', key, ms)
  end
end

-- The reply about a decided barrier generation (see barrier_arrive.lua):
-- {1, generation, 1, the outcome, the party's index among the
-- members or -1, number of members (0: broken)}.
local function barrier_outcome(key, gen, party)
  local outcome = redis.call('HGET', key, 'o:' .. gen)
  local index, n = -1, 0
  if outcome ~= 'broken' then
    for id in string.gmatch(string.sub(outcome, 6), '[^,]+') do
      if id == party then
        index = n
      end
      n = n + 1
    end
  end
  return {1, gen, 1, outcome, index, n}
end

-- Decides a barrier generation on this node unless it is decided already:
-- the first outcome written stays. A decided generation's seats are
-- dropped, the node's current generation moves past it, and outcomes older
-- than 16 generations are forgotten. Wakes the waiters.
local function barrier_settle(key, gen, outcome, parties, channel)
  if redis.call('HSETNX', key, 'o:' .. gen, outcome) == 0 then
    return
  end
  for seat = 0, parties - 1 do
    local holder = redis.call('HGET', key, 's:' .. gen .. ':' .. seat)
    if holder then
      redis.call('HDEL', key, 's:' .. gen .. ':' .. seat, 'p:' .. gen .. ':' .. holder)
    end
  end
  local floor = tonumber(redis.call('HGET', key, 'floor') or '0')
  if gen - 15 > floor then
    for old = floor, gen - 16 do
      redis.call('HDEL', key, 'o:' .. old)
    end
    floor = gen - 15
    redis.call('HSET', key, 'floor', floor)
  end
  -- The current generation is only where arrivals that name none start: it
  -- moves past the one just decided (a node that missed earlier ones need
  -- not seat newcomers there), and clients name older ones explicitly.
  local current = math.max(tonumber(redis.call('HGET', key, 'gen') or '0'), floor, gen + 1)
  while redis.call('HEXISTS', key, 'o:' .. current) == 1 do
    current = current + 1
  end
  redis.call('HSET', key, 'gen', current)
  redis.call('PUBLISH', channel, '*')
end

-- The live holds of a reentrant lock (fields 'h:<hold id>' -> expiry in
-- server ms): drops the expired ones, deletes the lock when none is left,
-- and returns how many are left and the latest expiry among them.
local function reentrant_live(key, now)
  local fields = redis.call('HGETALL', key)
  local live, latest = 0, 0
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 2) == 'h:' then
      local expiry = tonumber(fields[i + 1])
      if expiry <= now then
        redis.call('HDEL', key, fields[i])
      else
        live = live + 1
        latest = math.max(latest, expiry)
      end
    end
  end
  if live == 0 then
    redis.call('DEL', key)
  end
  return live, latest
end

-- Sets a reentrant lock's TTL to cover its latest hold.
local function reentrant_cover(key, latest, now)
  redis.call('PEXPIRE', key, math.max(latest - now, 1))
end

-- Refuses state created with other parameters: nothing when `field` of the
-- hash `key` is unset or holds `value`, else the QUORATE_MISMATCH error the
-- client reports as a configuration mismatch.
local function mismatch(key, field, value)
  local stored = redis.call('HGET', key, field)
  if stored and stored ~= value then
    return redis.error_reply('QUORATE_MISMATCH created with ' .. field .. ' ' .. stored .. ', opened with ' .. value)
  end
end

-- As mismatch, and when the state matches records `value` in it and keeps
-- the hash `ttl` ms more: every write of latch and barrier state does this.
local function created_with(key, field, value, ttl)
  local refused = mismatch(key, field, value)
  if not refused then
    redis.call('HSET', key, field, value)
    redis.call('PEXPIRE', key, ttl)
  end
  return refused
end

-- Drops a semaphore's expired slots (sorted set `slots`: slot -> expiry in
-- server ms; hash `owners`: slot -> owner token).
local function semaphore_reap(slots, owners, now)
  for _, slot in ipairs(redis.call('ZRANGEBYSCORE', slots, '-inf', now)) do
    redis.call('HDEL', owners, slot)
  end
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
end

-- Keeps a semaphore's keys as long as its longest lease, which covers
-- every slot's expiry (the slots are the leases).
local function semaphore_keep(slots, owners, now)
  local last = redis.call('ZRANGE', slots, -1, -1, 'WITHSCORES')
  local keep = math.max(tonumber(last[2]) - now, 1)
  redis.call('PEXPIRE', slots, keep)
  redis.call('PEXPIRE', owners, keep)
end


-- Fair queues. A sorted set `order` ranks the waiters by ticket (arrival
-- time on the waiter's clock: the same score on every node, so the nodes
-- agree on who is first) and a hash `entries` maps each to
-- 'expiry ms,permits wanted'. A waiter renews its entry on every attempt;
-- a dead waiter's entry expires and is dropped when met.

-- The live waiters at the front of the queue whose wants fit in `room`, in
-- order; drops the expired entries it meets.
local function fair_front(order, entries, now, room)
  local front, used, start = {}, 0, 0
  while used < room do
    local batch = redis.call('ZRANGE', order, start, start + 15)
    if #batch == 0 then
      break
    end
    for _, id in ipairs(batch) do
      local expiry, wanted = string.match(redis.call('HGET', entries, id) or '0,0', '(%d+),(%d+)')
      if tonumber(expiry) <= now then
        redis.call('ZREM', order, id)
        redis.call('HDEL', entries, id)
      else
        start = start + 1
        used = used + tonumber(wanted)
        if used > room then
          return front
        end
        front[#front + 1] = id
      end
    end
  end
  return front
end

-- Whether waiter `id` (ticket `ticket`, wanting `wanted` of `room` free)
-- may take its turn now. With `ttl` above 0 it first joins the queue or
-- renews its entry for `ttl` ms; with 0 (one try, no wait) it may only
-- when nobody waits. A waiter whose turn it is leaves the queue. When it
-- may not, also returns the ms until the first entry expires.
local function fair_turn(order, entries, id, ticket, wanted, ttl, now, room)
  ttl = tonumber(ttl)
  if ttl > 0 then
    redis.call('ZADD', order, 'NX', ticket, id)
    redis.call('HSET', entries, id, string.format('%d,%d', now + ttl, wanted))
    extend_to(order, ttl)
    extend_to(entries, ttl)
  end
  local front = fair_front(order, entries, now, room)
  if ttl == 0 and #front == 0 and redis.call('EXISTS', order) == 0 then
    return true
  end
  for _, first in ipairs(front) do
    if first == id then
      redis.call('ZREM', order, id)
      redis.call('HDEL', entries, id)
      return true
    end
  end
  local head = redis.call('ZRANGE', order, 0, 0)[1]
  local expiry = head and string.match(redis.call('HGET', entries, head) or '0', '^(%d+)')
  return false, math.max(tonumber(expiry or now) - now, 1)
end

-- Wakes the waiters whose turn it is now that `room` is free, each on its
-- own channel `channel:id`, so that nobody else stirs. `message` names the
-- event, so that its copies from several nodes wake a waiter once.
local function fair_wake(order, entries, now, room, channel, message)
  for _, id in ipairs(fair_front(order, entries, now, room)) do
    redis.call('PUBLISH', channel .. ':' .. id, message)
  end
end
