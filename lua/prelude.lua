-- Prelude: prepended to every script when it is loaded (src/scripts.rs), so
-- the helpers below are written once.

-- Server time in milliseconds. Expiry scores use it, never a client clock.
local function server_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

-- The floor of fencing counters: server time in ms * 1024. A node that lost
-- its counter (a restart without persistence) still issues larger tokens,
-- unless its clock went back. Exact in Lua doubles until the year 2248.
local function fence_floor()
  return server_ms() * 1024
end

-- The server's run_id and uptime in seconds. Grant votes carry them so the
-- client can tell a node that restarted, and may have forgotten leases.
local function incarnation()
  local info = redis.call('INFO', 'server')
  return string.match(info, 'run_id:(%w+)'), tonumber(string.match(info, 'uptime_in_seconds:(%d+)'))
end

