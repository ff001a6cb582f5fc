-- Read the outcome of one barrier generation.
--
-- KEYS[1]  hash (see barrier_arrive.lua)
-- ARGV[1]  generation
-- Returns  {1, 0} while pending; {1, 1} when released; {1, 2} when broken.
local outcome = redis.call('HGET', KEYS[1], 'o:' .. ARGV[1])
if not outcome then
  return {1, 0}
end
if outcome == 'broken' then
  return {1, 2}
end
return {1, 1}
