-- Records a restart quarantine on the node itself, for clients that cannot
-- tell it restarted (they reach none of its older peers). The record names
-- the server process it is about, so it means nothing after a restart.
--
-- KEYS[1]  the record (see node_hello.lua)
-- ARGV[1]  the node's run_id
-- ARGV[2]  ms left of the quarantine
-- ARGV[3]  the record's ttl, ms
-- Returns  1
local untilms = server_ms() + tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'q_run_id') == ARGV[1] then
  untilms = math.max(untilms, tonumber(redis.call('HGET', KEYS[1], 'q_until') or '0'))
end
redis.call('HSET', KEYS[1], 'q_run_id', ARGV[1], 'q_until', string.format('%d', untilms))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
