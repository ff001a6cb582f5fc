-- Take (or read) a seat in a barrier generation. Each generation has seats
-- 0..parties-1; a party must win the same seat on a majority of nodes, so
-- a generation seats at most `parties` parties. A node gives a seat to one
-- party at a time and keeps each party in at most one seat per generation.
-- The client proposes the outcome (barrier_decide.lua) once every seat has
-- a winner.
--
-- KEYS[1]  hash: 'parties', 'gen' (the lowest undecided generation here),
--          'floor' (older generations are forgotten), 's:<gen>:<seat>' ->
--          party, 'p:<gen>:<party>' -> seat, 'o:<gen>' -> outcome
--          ('broken', or 'done:' and the members in seat order)
-- ARGV[1]  party id
-- ARGV[2]  parties
-- ARGV[3]  generation, or '' for this node's current one
-- ARGV[4]  seat wanted, or '' to keep the party's seat or take the first
--          free one, or -1 to leave its seat; a party asking for another
--          seat leaves its old one
-- ARGV[5]  state ttl, milliseconds
-- ARGV[6]  wake-up channel; the message '*' wakes every waiter
-- ARGV[7]  1: this node decides alone (a quorum of one node), so a full
--          seating is decided 'done' here at once
-- Returns  {1, gen, 0, the party's seat or -1, holder of each seat or ''}
--          while the generation is open here; the reply of barrier_outcome
--          (see the prelude) once it is decided here; {1, gen, 2} when it is
--          older than this node remembers; error QUORATE_MISMATCH when the
--          barrier was created with another number of parties.
local refused = created_with(KEYS[1], 'parties', ARGV[2], ARGV[5])
if refused then
  return refused
end
local parties = tonumber(ARGV[2])
local floor = tonumber(redis.call('HGET', KEYS[1], 'floor') or '0')
local gen = tonumber(ARGV[3]) or math.max(tonumber(redis.call('HGET', KEYS[1], 'gen') or '0'), floor)
if gen < floor then
  return {1, gen, 2}
end
if redis.call('HEXISTS', KEYS[1], 'o:' .. gen) == 1 then
  return barrier_outcome(KEYS[1], gen, ARGV[1])
end

local function holder(seat)
  return redis.call('HGET', KEYS[1], 's:' .. gen .. ':' .. seat)
end
local function sit(seat)
  redis.call('HSET', KEYS[1], 's:' .. gen .. ':' .. seat, ARGV[1], 'p:' .. gen .. ':' .. ARGV[1], seat)
end

local mine = tonumber(redis.call('HGET', KEYS[1], 'p:' .. gen .. ':' .. ARGV[1]))
local wanted = tonumber(ARGV[4])
if wanted and wanted ~= mine then
  if mine then
    -- A seat came free: parties waiting for one look again.
    redis.call('HDEL', KEYS[1], 's:' .. gen .. ':' .. mine, 'p:' .. gen .. ':' .. ARGV[1])
    redis.call('PUBLISH', ARGV[6], '*')
    mine = nil
  end
  if wanted >= 0 and wanted < parties and not holder(wanted) then
    sit(wanted)
    mine = wanted
  end
elseif not mine and not wanted then
  for seat = 0, parties - 1 do
    if not holder(seat) then
      sit(seat)
      mine = seat
      break
    end
  end
end

local reply = {1, gen, 0, mine or -1}
local full = true
for seat = 0, parties - 1 do
  local h = holder(seat) or ''
  full = full and h ~= ''
  reply[#reply + 1] = h
end
if ARGV[7] == '1' and full then
  local members = {}
  for seat = 0, parties - 1 do
    members[#members + 1] = holder(seat)
  end
  barrier_settle(KEYS[1], gen, 'done:' .. table.concat(members, ','), parties, ARGV[6])
  return barrier_outcome(KEYS[1], gen, ARGV[1])
end
return reply
