//! One Redis deployment: its connection, per-request timeouts, and the
//! handshake run on every (re)connection, which loads the scripts, records
//! this process's `max_ttl`, and reads what admission needs (see
//! `admission.rs`).
//!
//! A node keeps one multiplexed connection. A request whose connection
//! broke asks the quorum to reconnect it and is tried once more on the new
//! connection within its timeout; requests meanwhile wait for an attempt
//! under way, or fail at once between attempts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, InfoDict, Role, Value};
use tokio::sync::{Notify, mpsc};

use super::admission::{Seen, millis};
use super::scripts::{self, Invocation};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::observe;

/// How long a node's record outlives the last handshake that refreshed it.
const RECORD_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// One node's answer to one script.
///
/// Scripts reply with an array whose first element is a status: 1 for yes,
/// anything else for no. The rest is the payload.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// The script granted the request.
    Yes(Payload),
    /// The script refused.
    No(Payload),
    /// No usable answer.
    Failed(Failure),
    /// The node is presumed restarted and may have forgotten leases: its
    /// grant does not count until `until` (the script did run).
    Quarantined { until: Instant },
}

/// The elements of a script reply after its status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Payload(pub(crate) Vec<Value>);

impl Payload {
    /// The integer at `i`, if there is one.
    pub(crate) fn int(&self, i: usize) -> Option<i64> {
        match self.0.get(i)? {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The integers from `i` on.
    pub(crate) fn ints_from(&self, i: usize) -> Vec<i64> {
        (i..self.0.len()).filter_map(|j| self.int(j)).collect()
    }

    /// The string at `i`, if there is one.
    pub(crate) fn string(&self, i: usize) -> Option<String> {
        redis::from_redis_value_ref::<String>(self.0.get(i)?).ok()
    }

    /// The strings from `i` on.
    pub(crate) fn strings_from(&self, i: usize) -> Vec<String> {
        self.0
            .iter()
            .skip(i)
            .filter_map(|v| redis::from_redis_value_ref::<String>(v).ok())
            .collect()
    }
}

/// Why a node gave no usable answer.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) message: String,
    /// A timeout or a connection problem, as opposed to an error reply that
    /// will come back the same way every time (a key of the wrong type, a
    /// denied command).
    pub(crate) transient: bool,
    /// The script found state created with other parameters; the detail.
    pub(crate) mismatch: Option<String>,
}

impl Failure {
    /// No answer came within the per-node timeout (the message every
    /// deadline here gives).
    fn timed_out(&self) -> bool {
        self.message.starts_with("no answer within")
    }

    fn transient(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            transient: true,
            mismatch: None,
        }
    }
}

const NO_SCRIPT: redis::ErrorKind = redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);

/// Error code of the scripts' "state created with other parameters" reply.
const MISMATCH: &str = "QUORATE_MISMATCH";

/// A script invocation shared by the per-node requests of a round.
#[derive(Clone)]
pub(crate) struct Call {
    inv: std::sync::Arc<Invocation>,
    /// Its yes votes grant a lease: a node presumed restarted may have
    /// forgotten another holder's, so its yes does not count. Other yes
    /// votes (an extension, a release, a read) stand: an extension comes
    /// from a node that still holds our key, which blocks everyone there.
    grants: bool,
}

impl Call {
    pub(crate) fn new(inv: Invocation) -> Call {
        Call {
            inv: std::sync::Arc::new(inv),
            grants: false,
        }
    }

    /// An acquisition, whose yes votes grant a lease.
    pub(crate) fn grant(inv: Invocation) -> Call {
        Call {
            inv: std::sync::Arc::new(inv),
            grants: true,
        }
    }
}

/// A script invocation with its keys set.
pub(crate) fn invocation(lua: &'static scripts::Lua, keys: &[&str]) -> Invocation {
    Invocation::new(lua, keys)
}

/// What a node said about itself in the handshake.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    pub(crate) run_id: String,
    pub(crate) uptime: Duration,
    /// When the handshake's answers arrived.
    pub(crate) at: Instant,
    pub(crate) primary: bool,
    /// Its `redis_version`, as major and minor.
    pub(crate) version: (u32, u32),
    /// Its persistence cannot lose an acknowledged write.
    pub(crate) durable: bool,
    /// The largest `max_ttl` recorded on it (ours included).
    pub(crate) recorded_max_ttl: Duration,
    /// What is left of a quarantine recorded on it for its current process.
    pub(crate) recorded_quarantine: Option<Duration>,
}

impl Hello {
    pub(crate) fn seen(&self) -> Seen<'_> {
        Seen {
            run_id: &self.run_id,
            uptime: self.uptime,
            at: self.at,
            durable: self.durable,
            recorded: self.recorded_quarantine,
        }
    }
}

pub(crate) struct Node {
    pub(crate) addr: String,
    pub(crate) client: Client,
    index: usize,
    config: Config,
    /// The key of the node's record (see `lua/node_hello.lua`).
    record_key: String,
    /// Asks the quorum's supervisor to reconnect this node.
    reconnect: mpsc::UnboundedSender<usize>,
    link: Mutex<Link>,
    /// Wakes requests waiting for a reconnection attempt to end.
    attempted: Notify,
    incarnation: Mutex<Incarnation>,
}

#[derive(Default)]
struct Link {
    conn: Option<MultiplexedConnection>,
    /// Bumped at every new connection, so a failure on an old one does not
    /// tear down its successor.
    epoch: u64,
    reconnecting: bool,
    /// A connection attempt is under way (not a backoff pause).
    attempting: bool,
}

/// The server process a node's votes come from.
#[derive(Debug, Default)]
struct Incarnation {
    run_id: Option<String>,
    /// Grants count again from this instant.
    counts_from: Option<Instant>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

impl Node {
    /// Parses a URL; no I/O.
    pub(crate) fn open(
        url: &str,
        index: usize,
        config: &Config,
        reconnect: mpsc::UnboundedSender<usize>,
    ) -> Result<Node> {
        let client = Client::open(url)
            .map_err(|e| Error::config("nodes", format!("bad url {url:?}: {e}")))?;
        let info = client.get_connection_info();
        let addr = match info.redis_settings().db() {
            0 => info.addr().to_string(),
            db => format!("{}/{db}", info.addr()),
        };
        Ok(Node {
            addr,
            client,
            index,
            record_key: format!("{}{}", config.key_prefix, crate::key::NODE_RECORD),
            config: config.clone(),
            reconnect,
            link: Mutex::default(),
            attempted: Notify::new(),
            incarnation: Mutex::default(),
        })
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The `run_id` this process saw last, if any.
    pub(crate) fn known_run_id(&self) -> Option<String> {
        self.incarnation.lock().unwrap().run_id.clone()
    }

    /// Opens a connection and runs the handshake on it.
    pub(crate) async fn connect(&self) -> Result<(MultiplexedConnection, Hello)> {
        // Requests get their own deadline (the per-node timeout) in `invoke`.
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(None);
        let handshake = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&settings)
                .await?;
            let hello = handshake(&mut conn, &self.record_key, &self.config).await?;
            Ok::<_, redis::RedisError>((conn, hello))
        };
        tokio::time::timeout(self.config.connect_timeout * 2, handshake)
            .await
            .map_err(|_| self.connect_error(timeout_error()))?
            .map_err(|e| self.connect_error(e))
    }

    /// Reads the node's record again on its current connection: the
    /// largest `max_ttl` recorded there.
    pub(crate) async fn recorded_bound(&self) -> Option<Duration> {
        let mut conn = self.link.lock().unwrap().conn.clone()?;
        let read = hello_record(&mut conn, &self.record_key, &self.config);
        let (bound, _) = tokio::time::timeout(self.config.connect_timeout, read)
            .await
            .ok()?
            .ok()?;
        Some(bound)
    }

    /// Refuses a node that is not a primary, or older than Redis 7.0
    /// (claims use `SET NX GET`).
    pub(crate) fn check_role(&self, hello: &Hello) -> Result<()> {
        if !hello.primary {
            return Err(Error::config(
                "nodes",
                format!("{} is a replica; locks need primaries", self.addr),
            ));
        }
        if hello.version < (7, 0) {
            let (major, minor) = hello.version;
            return Err(Error::config(
                "nodes",
                format!(
                    "{} runs Redis {major}.{minor}; quorate needs 7.0 or later",
                    self.addr
                ),
            ));
        }
        Ok(())
    }

    /// Puts a connection in service; the node's grants count from
    /// `counts_from` on (at once when `None`).
    pub(crate) fn install(
        &self,
        conn: MultiplexedConnection,
        hello: &Hello,
        counts_from: Option<Instant>,
    ) {
        {
            let mut incarnation = self.incarnation.lock().unwrap();
            incarnation.run_id = Some(hello.run_id.clone());
            incarnation.counts_from = counts_from;
        }
        let mut link = self.link.lock().unwrap();
        link.conn = Some(conn);
        link.epoch += 1;
        link.reconnecting = false;
        link.attempting = false;
        drop(link);
        self.attempted.notify_waiters();
    }

    /// Writes a quarantine onto the node, for clients that cannot tell.
    pub(crate) fn record_quarantine(
        &self,
        mut conn: MultiplexedConnection,
        run_id: &str,
        left: Duration,
    ) {
        let mut inv = invocation(&scripts::NODE_QUARANTINE, &[&self.record_key]);
        inv.arg(run_id).arg(millis(left)).arg(millis(RECORD_TTL));
        let timeout = self.config.connect_timeout;
        tokio::spawn(async move {
            let write = inv.run::<Value>(&mut conn);
            let _ = tokio::time::timeout(timeout, write).await;
        });
    }

    /// Asks for a reconnection, unless one is under way.
    pub(crate) fn start_reconnecting(&self) {
        {
            let mut link = self.link.lock().unwrap();
            if link.reconnecting {
                return;
            }
            link.reconnecting = true;
            // Set here, not later, so a request right after sees that an
            // attempt is coming and waits for it.
            link.attempting = true;
        }
        let _ = self.reconnect.send(self.index);
    }

    /// Notes the start (`true`) or the failed end (`false`) of an attempt.
    pub(crate) fn attempting(&self, on: bool) {
        self.link.lock().unwrap().attempting = on;
        if !on {
            self.attempted.notify_waiters();
        }
    }

    /// Until when the node's grants do not count, if they do not now.
    fn quarantined(&self) -> Option<Instant> {
        let until = self.incarnation.lock().unwrap().counts_from?;
        (Instant::now() < until).then_some(until)
    }

    /// The connection to use, waiting up to `timeout` for a reconnection
    /// attempt under way.
    async fn connection(&self, timeout: Duration) -> Option<(MultiplexedConnection, u64)> {
        let attempted = self.attempted.notified();
        tokio::pin!(attempted);
        // Registered before looking, so the end of an attempt is not missed.
        attempted.as_mut().enable();
        let attempting = {
            let link = self.link.lock().unwrap();
            if let Some(conn) = &link.conn {
                return Some((conn.clone(), link.epoch));
            }
            link.attempting
        };
        self.start_reconnecting();
        if !attempting {
            return None;
        }
        let _ = tokio::time::timeout(timeout, attempted).await;
        let link = self.link.lock().unwrap();
        link.conn.clone().map(|c| (c, link.epoch))
    }

    /// Drops a connection that broke, and asks for a new one.
    fn broken(&self, epoch: u64) {
        {
            let mut link = self.link.lock().unwrap();
            if link.epoch != epoch || link.conn.is_none() {
                return;
            }
            link.conn = None;
        }
        tracing::debug!(node = %self.addr, "connection lost; reconnecting");
        self.start_reconnecting();
    }

    /// Runs a script with a deadline. Never fails as a whole: a timeout or
    /// an error is this node's vote. A grant from a node presumed restarted
    /// is [`Reply::Quarantined`].
    pub(crate) async fn invoke(&self, call: &Call, timeout: Duration) -> Reply {
        let reply = self.request(call, timeout).await;
        self.observe(&reply);
        reply
    }

    /// Reports a failed request.
    pub(crate) fn observe(&self, reply: &Reply) {
        if let Reply::Failed(f) = reply {
            observe::node_failed(&self.addr, &f.message, f.timed_out());
        }
    }

    async fn request(&self, call: &Call, timeout: Duration) -> Reply {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut retried = false;
        let reply = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((mut conn, epoch)) = self.connection(left).await else {
                return Reply::Failed(Failure::transient("not connected"));
            };
            let run = call.inv.run::<Vec<Value>>(&mut conn);
            match tokio::time::timeout_at(deadline, run).await {
                Err(_) => {
                    let message = format!("no answer within {timeout:?}");
                    return Reply::Failed(Failure::transient(message));
                }
                // The connection broke (a restart, a reset): try once more on
                // a new one within the timeout. Every script may run twice
                // harmlessly (a retried acquire finds its own token; others
                // are keyed by operation or owner), should the first have
                // landed after all.
                Ok(Err(e)) if e.is_unrecoverable_error() || e.is_connection_dropped() => {
                    self.broken(epoch);
                    if retried {
                        return Reply::Failed(failure(e));
                    }
                    retried = true;
                }
                Ok(Err(e)) => return Reply::Failed(failure(e)),
                Ok(Ok(reply)) => break reply,
            }
        };
        self.reply(call, reply)
    }

    /// A script's reply as a vote.
    fn reply(&self, call: &Call, values: Vec<Value>) -> Reply {
        let mut values = values.into_iter();
        let Some(status) = values.next() else {
            return Reply::Failed(Failure {
                message: "empty script reply".into(),
                transient: false,
                mismatch: None,
            });
        };
        let payload = Payload(values.collect());
        if status != Value::Int(1) {
            return Reply::No(payload);
        }
        // A node that may have forgotten leases could say yes where it
        // should not; its refusals are true all the same.
        match self.quarantined() {
            Some(until) if call.grants => Reply::Quarantined { until },
            _ => Reply::Yes(payload),
        }
    }

    /// Runs several scripts in one pipelined request, with one deadline;
    /// one reply each. A script the node lost is run again with EVAL.
    pub(crate) async fn invoke_batch(&self, calls: &[Call], timeout: Duration) -> Vec<Reply> {
        let deadline = tokio::time::Instant::now() + timeout;
        let failed =
            |message: String| vec![Reply::Failed(Failure::transient(message)); calls.len()];
        let Some((mut conn, epoch)) = self.connection(timeout).await else {
            return failed("not connected".into());
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for call in calls {
            pipe.add_command(call.inv.evalsha());
        }
        let sent = pipe.query_async::<Vec<redis::RedisResult<Vec<Value>>>>(&mut conn);
        let results = match tokio::time::timeout_at(deadline, sent).await {
            Err(_) => return failed(format!("no answer within {timeout:?}")),
            Ok(Err(e)) => {
                if e.is_unrecoverable_error() || e.is_connection_dropped() {
                    self.broken(epoch);
                }
                return failed(e.to_string());
            }
            Ok(Ok(results)) => results,
        };
        let mut replies = Vec::with_capacity(calls.len());
        for (call, result) in calls.iter().zip(results) {
            let result = match result {
                Err(e) if e.kind() == scripts::NO_SCRIPT => {
                    let again = call.inv.run::<Vec<Value>>(&mut conn);
                    match tokio::time::timeout_at(deadline, again).await {
                        Ok(result) => result,
                        Err(_) => Err(timeout_error()),
                    }
                }
                other => other,
            };
            replies.push(match result {
                Ok(values) => self.reply(call, values),
                Err(e) => Reply::Failed(failure(e)),
            });
        }
        replies
    }

    fn connect_error(&self, source: redis::RedisError) -> Error {
        Error::Connect {
            node: self.addr.clone(),
            source,
        }
    }
}

/// The handshake: role, incarnation, persistence, the scripts loaded, and
/// the node's record read and our `max_ttl` recorded.
async fn handshake(
    conn: &mut MultiplexedConnection,
    record_key: &str,
    config: &Config,
) -> redis::RedisResult<Hello> {
    let mut pipe = redis::pipe();
    pipe.cmd("ROLE").cmd("INFO").arg("server");
    let (role, info) = pipe.query_async::<(Role, InfoDict)>(conn).await?;
    let mut hello = Hello {
        run_id: info.get("run_id").unwrap_or_default(),
        uptime: Duration::from_secs(info.get("uptime_in_seconds").unwrap_or(0)),
        at: Instant::now(),
        primary: matches!(role, Role::Primary { .. }),
        version: version(&info.get::<String>("redis_version").unwrap_or_default()),
        durable: false,
        recorded_max_ttl: Duration::ZERO,
        recorded_quarantine: None,
    };
    if !hello.primary {
        // Refused by the caller; a replica takes no writes anyway.
        return Ok(hello);
    }
    hello.durable = durable(conn).await;
    scripts::load_all(conn).await?;
    let (recorded_max_ttl, quarantine) = hello_record(conn, record_key, config).await?;
    hello.recorded_max_ttl = recorded_max_ttl;
    hello.recorded_quarantine = quarantine
        .filter(|(run, _)| *run == hello.run_id)
        .map(|(_, left)| left);
    Ok(hello)
}

/// Major and minor of a `redis_version` such as `7.0.15`; (0, 0) when
/// unreadable.
fn version(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Records our `max_ttl` on the node and reads its record: the largest
/// `max_ttl` recorded, and a quarantine recorded for some `run_id`.
async fn hello_record(
    conn: &mut MultiplexedConnection,
    record_key: &str,
    config: &Config,
) -> redis::RedisResult<(Duration, Option<(String, Duration)>)> {
    let mut inv = invocation(&scripts::NODE_HELLO, &[record_key]);
    inv.arg(millis(config.max_ttl)).arg(millis(RECORD_TTL));
    let (max_ttl, run_id, left, server_ms): (u64, String, u64, i64) = inv.run(conn).await?;
    warn_on_skew(server_ms, config);
    let quarantine = (!run_id.is_empty()).then(|| (run_id, Duration::from_millis(left)));
    Ok((Duration::from_millis(max_ttl), quarantine))
}

/// Fencing tokens stay monotonic while node clocks differ by less than the
/// restart quarantine; a node far from this machine's clock is worth a
/// warning.
fn warn_on_skew(server_ms: i64, config: &Config) {
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return;
    };
    let skew = server_ms - now.as_millis() as i64;
    if skew.unsigned_abs() > millis(config.max_ttl) / 2 {
        tracing::warn!(
            skew_ms = skew,
            "a node's clock is far from this machine's; fencing tokens assume node clocks within max_ttl of each other"
        );
    }
}

/// Whether the node persists every write before acknowledging it. Servers
/// that refuse `CONFIG` (managed services often do) count as not durable.
async fn durable(conn: &mut MultiplexedConnection) -> bool {
    let mut pipe = redis::pipe();
    pipe.ignore_errors()
        .cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync");
    let Ok(replies) = pipe
        .query_async::<Vec<redis::RedisResult<HashMap<String, String>>>>(conn)
        .await
    else {
        return false;
    };
    let value = |i: usize, name: &str| {
        replies
            .get(i)
            .and_then(|r| r.as_ref().ok())
            .and_then(|m| m.get(name).cloned())
    };
    value(0, "appendonly").as_deref() == Some("yes")
        && value(1, "appendfsync").as_deref() == Some("always")
}

fn failure(e: redis::RedisError) -> Failure {
    Failure {
        transient: e.is_timeout()
            || e.is_io_error()
            || e.is_connection_dropped()
            || e.kind() == NO_SCRIPT,
        mismatch: (e.code() == Some(MISMATCH)).then(|| e.detail().unwrap_or("").to_owned()),
        message: e.to_string(),
    }
}

fn timeout_error() -> redis::RedisError {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer within the connect timeout",
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_major_and_minor() {
        assert_eq!(version("7.0.15"), (7, 0));
        assert_eq!(version("7.2.4"), (7, 2));
        assert!(version("6.2.14") < (7, 0));
        assert_eq!(version(""), (0, 0));
    }
}
