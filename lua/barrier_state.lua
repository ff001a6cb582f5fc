-- Read the outcome of one barrier generation for one party.
--
-- KEYS[1]  hash (see barrier_arrive.lua)
-- ARGV[1]  generation
-- ARGV[2]  party id
-- Returns  {1, 0, 0} while pending; {1, 1, leader} when released, leader
--          being 1 for the leader; {1, 2, 0} when broken.
local outcome = redis.call('HGET', KEYS[1], 'o:' .. ARGV[1])
if not outcome then
  return {1, 0, 0}
end
if outcome == 'broken' then
  return {1, 2, 0}
end
if outcome == 'done:' .. ARGV[2] then
  return {1, 1, 1}
end
return {1, 1, 0}
