//! Emulated wall-clock jumps of one Redis server.
//!
//! Redlock's safety assumes that node clocks do not jump. Redis stores every
//! expiry as an absolute wall-clock time, so when an administrator or NTP
//! steps a server's clock forward by Δ, every key on it expires Δ sooner in
//! real time; quorate's semaphores store lease ends as absolute server
//! milliseconds too (sorted set scores from `TIME`), which a jump moves the
//! same way. Changing a real server's clock needs root and would hit every
//! process on the machine, so [`jump_clock`] moves the deadlines instead of
//! the clock: in real time the data then expires exactly as after the jump.
//!
//! [`jump_clock`] lists what this does not emulate.

use std::time::Duration;

/// Atomic on the server: one script sees and changes every key at once, so
/// nothing can run between two shifted keys, as with a real jump.
///
/// `KEYS` (not `SCAN`) because one call must cover the whole keyspace; it
/// is fine in scripts since Redis replicates script effects, not scripts.
/// Scores are formatted with `%.17g` because Lua's default number format
/// keeps only 14 significant digits.
const JUMP_SCRIPT: &str = r"
local delta = tonumber(ARGV[1])
for _, key in ipairs(redis.call('KEYS', '*')) do
  if redis.call('TYPE', key).ok == 'zset' then
    local entries = redis.call('ZRANGEBYSCORE', key, '(' .. ARGV[2], '+inf', 'WITHSCORES')
    for i = 1, #entries, 2 do
      local score = tonumber(entries[i + 1]) - delta
      redis.call('ZADD', key, 'XX', string.format('%.17g', score), entries[i])
    end
  end
  local ttl = redis.call('PTTL', key)
  if ttl > 0 then
    local left = ttl - delta
    if left <= 0 then
      redis.call('DEL', key)
    else
      redis.call('PEXPIRE', key, left)
    end
  end
end
return 0
";

/// Scores above this are taken for absolute times in milliseconds.
const TIMESTAMP_FLOOR_MS: &str = "1000000000000";

/// Bounds the call, so a test against a frozen server fails instead of
/// hanging.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Emulates a jump of the wall clock of the server at `server_url` by
/// `delta_ms` milliseconds (forward if positive, back if negative), as far
/// as stored data is concerned.
///
/// In one atomic script: every key with a TTL gets `PTTL - delta_ms` (and
/// is deleted if that is not positive), and every sorted set score above
/// 10¹² (quorate's semaphore lease ends, in server milliseconds) is lowered
/// by `delta_ms`. A negative `delta_ms` lengthens TTLs and raises scores.
///
/// Meant for test servers: it walks the whole keyspace with `KEYS *`.
///
/// # What it does not emulate
///
/// - The server's `TIME` does not change. Anything computed from it after
///   the call is on the old time base: lease ends written later (consistent
///   with the shifted ones, as all are relative to the same clock), and the
///   time-derived floor of fencing tokens, which a real forward jump would
///   raise and a backward jump lower.
/// - Only keys that exist at the call are moved; nothing keeps moving.
/// - Sorted sets are recognised by their scores alone: every score above
///   10¹² (a millisecond timestamp after 2001) is shifted, in any sorted
///   set, whoever wrote it. Timestamps in seconds, in hashes or in strings
///   are left alone, and so are hash-field TTLs (Redis 7.4+).
/// - Keys that the jump expires are deleted by the script, so keyspace
///   notifications report `del`, not `expired`.
/// - Clients' clocks and quorate's own timing are untouched.
///
/// # Errors
///
/// Fails if the URL does not parse, the server cannot be reached or does
/// not answer within 10 s, or the script fails.
///
/// # Cancel safety
///
/// Dropped before it returns, the clock may or may not have moved: the
/// script runs in one piece on the server once sent.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = quorate::testkit::RedisServer::start()?;
/// // Every expiry on the server comes 5 s sooner, as if its clock jumped.
/// quorate::testkit::jump_clock(&server.url(), 5_000).await?;
/// # Ok(()) }
/// ```
pub async fn jump_clock(server_url: &str, delta_ms: i64) -> redis::RedisResult<()> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let mut conn = redis::Client::open(server_url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::Script::new(JUMP_SCRIPT)
        .arg(delta_ms)
        .arg(TIMESTAMP_FLOOR_MS)
        .invoke_async(&mut conn)
        .await
}
