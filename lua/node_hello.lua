-- A node's record, read at every handshake: the deployment's longest lease
-- TTL (each process raises it to its own max_ttl) and a restart quarantine
-- some client recorded for the node's current server process.
--
-- KEYS[1]  the record (hash): 'max_ttl' -> ms, 'q_run_id' -> run_id,
--          'q_until' -> end of the quarantine, server ms
-- ARGV[1]  this process's max_ttl, ms
-- ARGV[2]  the record's ttl, ms
-- Returns  {max_ttl recorded (after raising it), run_id of the recorded
--          quarantine or '', ms left of it (0: none), server time in ms}
local now = server_ms()
local recorded = tonumber(redis.call('HGET', KEYS[1], 'max_ttl') or '0')
if recorded < tonumber(ARGV[1]) then
  recorded = tonumber(ARGV[1])
  redis.call('HSET', KEYS[1], 'max_ttl', ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local left = tonumber(redis.call('HGET', KEYS[1], 'q_until') or '0') - now
return {recorded, redis.call('HGET', KEYS[1], 'q_run_id') or '', math.max(left, 0), now}
