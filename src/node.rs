//! One Redis deployment: its connection, per-request timeouts, and the
//! handshake run on every (re)connection, which loads the scripts and
//! decides whether the node's votes count yet.
//!
//! # Restart safety
//!
//! A node that restarts without durable persistence forgets the leases it
//! granted and could grant them again while their holders still act. The
//! Redlock specification's answer is a delayed restart: such a node must not
//! vote until every lease it may have forgotten has expired. No lease lives
//! longer than the deployment's `max_ttl` (every process records its own on
//! every node at connect, and each takes the largest recorded), so a node
//! presumed restarted sits out `max_ttl` plus drift from its start. Its
//! scripts still run; only its grants of new leases do not count. Its other
//! answers stand: a node that still holds our key (an extension) blocks
//! everyone else there, and a refusal is true whatever it forgot.
//!
//! A restart breaks every TCP connection, so it is detected when a
//! connection is (re)established, never in the scripts themselves. The
//! handshake reads the server's `run_id` and uptime, and a node is presumed
//! restarted when:
//!
//! - its `run_id` differs from the one this process saw before (a restart
//!   seen through a reconnect);
//! - at first contact, it started at least [`YOUTH`] after the oldest node of
//!   the quorum this process reached: a node much younger than the nodes
//!   beside it restarted, or joined late, and either way may have missed
//!   leases its peers granted;
//! - its own record says so: whoever quarantined it wrote the end of the
//!   quarantine onto the node, under its current `run_id`, so a client that
//!   reaches none of the older nodes still honours it.
//!
//! A node whose persistence cannot lose an acknowledged write (`appendonly
//! yes` with `appendfsync always`) is trusted at once. A fresh deployment,
//! whose nodes started together, locks at once: none is younger than
//! another.
//!
//! Interleavings considered, and what remains:
//!
//! - *Restart seen by this client*: the reconnect's handshake sees a new
//!   `run_id`: quarantined from the server's start (uptime counts in whole
//!   seconds, so the latest possible start is taken).
//! - *First contact after the restart, reaching an older peer*: younger by
//!   at least [`YOUTH`]: quarantined.
//! - *First contact reaching only nodes that restarted*: only a record on
//!   the node tells, if some client that saw the restart wrote one.
//! - *Limits.* A restart within about [`YOUTH`] of the oldest visible node's
//!   start (for instance the whole deployment restarting together), or one
//!   that no client saw and whose peers are out of reach, looks like a fresh
//!   start. A single node has no peers: only a restart this process saw
//!   counts. A proxy that hides a server restart behind a live connection
//!   hides it from quorate too. Uptime follows the server's wall clock, so a
//!   clock stepped forward can make a restarted node look older.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, InfoDict, Role, ScriptInvocation, Value};
use tokio::sync::Notify;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::quorum::Call;
use crate::scripts;

/// How much later than the oldest node of its quorum a node must have
/// started, at first contact, to be presumed restarted. Uptime is reported
/// in whole seconds, so two nodes started at the same instant may seem up
/// to a second apart, and a margin of 2 s never mistakes them.
pub(crate) const YOUTH: Duration = Duration::from_secs(2);

/// How long a node's record outlives the last handshake that refreshed it.
const RECORD_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Backoff between reconnection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(20);
const RECONNECT_MAX: Duration = Duration::from_millis(500);

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

const NO_SCRIPT: redis::ErrorKind = redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);

/// Error code of the scripts' "state created with other parameters" reply.
const MISMATCH: &str = "QUORATE_MISMATCH";

/// What the nodes of one quorum share for admission: when each started,
/// and the deployment's longest lease TTL.
pub(crate) struct Deployment {
    config: Config,
    /// The key of each node's record (see `lua/node_hello.lua`).
    record_key: String,
    /// The largest `max_ttl` recorded on any node seen, in ms.
    bound_ms: AtomicU64,
    /// Reference instant for the starts below.
    epoch: Instant,
    /// Each node's estimated start, in ms after `epoch` (negative: before).
    starts: Mutex<Vec<Option<i128>>>,
    nodes: OnceLock<Vec<Weak<Node>>>,
}

impl Deployment {
    pub(crate) fn new(config: &Config, nodes: usize) -> Deployment {
        Deployment {
            record_key: format!("{}{}", config.key_prefix, crate::key::NODE_RECORD),
            bound_ms: AtomicU64::new(millis(config.max_ttl)),
            config: config.clone(),
            epoch: Instant::now(),
            starts: Mutex::new(vec![None; nodes]),
            nodes: OnceLock::new(),
        }
    }

    pub(crate) fn attach(&self, nodes: &[Arc<Node>]) {
        let _ = self.nodes.set(nodes.iter().map(Arc::downgrade).collect());
    }

    /// How long a node presumed restarted sits out now.
    pub(crate) fn quarantine(&self) -> Option<Duration> {
        let bound = Duration::from_millis(self.bound_ms.load(Ordering::Relaxed));
        self.config.quarantine(bound)
    }

    fn raise_bound(&self, recorded: Duration) {
        self.bound_ms.fetch_max(millis(recorded), Ordering::Relaxed);
    }

    fn start_of(&self, hello: &Hello) -> i128 {
        let at = hello.at.saturating_duration_since(self.epoch).as_millis() as i128;
        at - hello.uptime.as_millis() as i128
    }

    fn note_start(&self, node: usize, hello: &Hello) {
        self.starts.lock().unwrap()[node] = Some(self.start_of(hello));
    }

    /// How much later than the oldest other node this one started, if it
    /// started later.
    fn younger_by(&self, node: usize, hello: &Hello) -> Option<Duration> {
        let mine = self.start_of(hello);
        let starts = self.starts.lock().unwrap();
        let oldest = starts
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != node)
            .filter_map(|(_, s)| *s)
            .min()?;
        u64::try_from(mine - oldest).ok().map(Duration::from_millis)
    }

    /// Reads the other nodes' records again, so a bound raised since this
    /// process connected counts for a quarantine decided now.
    async fn refresh_bound(&self, except: usize) {
        let Some(nodes) = self.nodes.get() else {
            return;
        };
        let timeout = self.config.connect_timeout;
        let reads = nodes
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != except)
            .filter_map(|(_, n)| n.upgrade())
            .map(|n| async move {
                let mut conn = n.current()?;
                let read = hello_record(&mut conn, &self.record_key, &self.config);
                tokio::time::timeout(timeout, read).await.ok()?.ok()
            });
        for (recorded, _) in join_all(reads).await.into_iter().flatten() {
            self.raise_bound(recorded);
        }
    }
}

/// What a node said about itself in the handshake.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    pub(crate) run_id: String,
    uptime: Duration,
    /// When the handshake's answers arrived.
    at: Instant,
    primary: bool,
    /// Its persistence cannot lose an acknowledged write.
    durable: bool,
    /// The largest `max_ttl` recorded on it (ours included).
    recorded_max_ttl: Duration,
    /// What is left of a quarantine recorded on it for its current process.
    recorded_quarantine: Option<Duration>,
}

/// Why a node's votes do not count yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suspicion {
    /// Its `run_id` changed since this process last saw it.
    Restarted,
    /// At first contact it had started this much later than the oldest
    /// other node.
    Younger(Duration),
    /// A client that quarantined it left a record on it.
    Recorded,
}

/// What the handshake tells about a node's incarnation, for
/// [`quarantine_until`].
#[derive(Debug, Clone)]
pub(crate) struct Seen<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) uptime: Duration,
    pub(crate) at: Instant,
    pub(crate) durable: bool,
    pub(crate) recorded: Option<Duration>,
}

/// Until when a node's votes do not count, and why; `None` when they count
/// at once.
///
/// `previous` is the `run_id` this process saw before (none at first
/// contact), `younger_by` how much later than the oldest other node it
/// started, and `period` the quarantine (none when switched off).
pub(crate) fn quarantine_until(
    seen: &Seen<'_>,
    previous: Option<&str>,
    younger_by: Option<Duration>,
    period: Option<Duration>,
) -> Option<(Instant, Suspicion)> {
    let period = period?;
    if seen.durable {
        return None;
    }
    let suspicion = match previous {
        Some(known) if known != seen.run_id => Some(Suspicion::Restarted),
        Some(_) => None,
        None => younger_by.filter(|&d| d >= YOUTH).map(Suspicion::Younger),
    };
    // Uptime is a difference of whole wall-clock seconds: the server may
    // have started up to a second later than it says. Count from the latest
    // start, so the quarantine never ends early.
    let from_start = suspicion.and_then(|s| {
        let left = (period + Duration::from_secs(1)).checked_sub(seen.uptime)?;
        Some((seen.at + left, s))
    });
    let recorded = seen
        .recorded
        .filter(|left| !left.is_zero())
        .map(|left| (seen.at + left, Suspicion::Recorded));
    let end = match (from_start, recorded) {
        (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
        (a, b) => a.or(b),
    };
    end.filter(|(until, _)| *until > seen.at)
}

pub(crate) struct Node {
    pub(crate) addr: String,
    pub(crate) client: Client,
    index: usize,
    deployment: Arc<Deployment>,
    me: Weak<Node>,
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
    /// Votes count again from this instant.
    counts_from: Option<Instant>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

impl Node {
    /// Parses a URL; no I/O.
    pub(crate) fn open(url: &str, index: usize, deployment: Arc<Deployment>) -> Result<Arc<Node>> {
        let client = Client::open(url)
            .map_err(|e| Error::config("nodes", format!("bad url {url:?}: {e}")))?;
        let info = client.get_connection_info();
        let addr = match info.redis_settings().db() {
            0 => info.addr().to_string(),
            db => format!("{}/{db}", info.addr()),
        };
        Ok(Arc::new_cyclic(|me| Node {
            addr,
            client,
            index,
            deployment,
            me: me.clone(),
            link: Mutex::default(),
            attempted: Notify::new(),
            incarnation: Mutex::default(),
        }))
    }

    /// Opens a connection and runs the handshake on it.
    pub(crate) async fn connect(&self) -> Result<(MultiplexedConnection, Hello)> {
        let config = &self.deployment.config;
        // Requests get their own deadline (the per-node timeout) in `invoke`.
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(None);
        let handshake = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&settings)
                .await?;
            let hello = handshake(&mut conn, &self.deployment.record_key, config).await?;
            Ok::<_, redis::RedisError>((conn, hello))
        };
        tokio::time::timeout(config.connect_timeout * 2, handshake)
            .await
            .map_err(|_| self.connect_error(timeout_error()))?
            .map_err(|e| self.connect_error(e))
    }

    /// Refuses a node that is not a primary.
    pub(crate) fn check_role(&self, hello: &Hello) -> Result<()> {
        if hello.primary {
            return Ok(());
        }
        Err(Error::config(
            "nodes",
            format!("{} is a replica; locks need primaries", self.addr),
        ))
    }

    /// Notes what a handshake at build time said, before any node is
    /// admitted: admission compares every node's start with the others'.
    pub(crate) fn note(&self, hello: &Hello) {
        self.deployment.note_start(self.index, hello);
        self.deployment.raise_bound(hello.recorded_max_ttl);
    }

    /// Decides whether the node's votes count, and puts the connection in
    /// service.
    pub(crate) fn install(&self, conn: MultiplexedConnection, hello: &Hello) {
        let previous = self.incarnation.lock().unwrap().run_id.clone();
        let seen = Seen {
            run_id: &hello.run_id,
            uptime: hello.uptime,
            at: hello.at,
            durable: hello.durable,
            recorded: hello.recorded_quarantine,
        };
        let younger = self.deployment.younger_by(self.index, hello);
        let quarantine = self.deployment.quarantine();
        let decision = quarantine_until(&seen, previous.as_deref(), younger, quarantine);
        if let Some((until, why)) = decision {
            let left = until.saturating_duration_since(Instant::now());
            tracing::warn!(node = %self.addr, ?why, quarantine = ?left, "node presumed restarted; its votes do not count for a while");
            if why != Suspicion::Recorded {
                self.record_quarantine(conn.clone(), &hello.run_id, left);
            }
        }
        {
            let mut incarnation = self.incarnation.lock().unwrap();
            incarnation.run_id = Some(hello.run_id.clone());
            incarnation.counts_from = decision.map(|(until, _)| until);
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
    fn record_quarantine(&self, mut conn: MultiplexedConnection, run_id: &str, left: Duration) {
        let mut inv = scripts::NODE_QUARANTINE.prepare_invoke();
        inv.key(&self.deployment.record_key)
            .arg(run_id)
            .arg(millis(left))
            .arg(millis(RECORD_TTL));
        let timeout = self.deployment.config.connect_timeout;
        tokio::spawn(async move {
            let write = inv.invoke_async::<Value>(&mut conn);
            let _ = tokio::time::timeout(timeout, write).await;
        });
    }

    /// Connects in the background until it succeeds (a node unreachable at
    /// build, or one whose connection broke).
    pub(crate) fn start_reconnecting(&self) {
        {
            let mut link = self.link.lock().unwrap();
            if link.reconnecting {
                return;
            }
            link.reconnecting = true;
            // Set here, not in the task, so a request right after sees that
            // an attempt is coming and waits for it.
            link.attempting = true;
        }
        tokio::spawn(reconnect(self.me.clone()));
    }

    /// Until when the node's votes do not count, if they do not now.
    fn quarantined(&self) -> Option<Instant> {
        let until = self.incarnation.lock().unwrap().counts_from?;
        (Instant::now() < until).then_some(until)
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.link.lock().unwrap().conn.clone()
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

    /// Drops a connection that broke, and reconnects in the background.
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
        let deadline = tokio::time::Instant::now() + timeout;
        let mut retried = false;
        let reply = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((mut conn, epoch)) = self.connection(left).await else {
                return Reply::Failed(Failure {
                    message: "not connected".into(),
                    transient: true,
                    mismatch: None,
                });
            };
            let run = invoke_reloading(&mut conn, call.invocation());
            match tokio::time::timeout_at(deadline, run).await {
                Err(_) => {
                    return Reply::Failed(Failure {
                        message: format!("no answer within {timeout:?}"),
                        transient: true,
                        mismatch: None,
                    });
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
        let mut values = reply.into_iter();
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
            Some(until) if call.grants() => Reply::Quarantined { until },
            _ => Reply::Yes(payload),
        }
    }

    fn connect_error(&self, source: redis::RedisError) -> Error {
        Error::Connect {
            node: self.addr.clone(),
            source,
        }
    }
}

/// Reconnects a node until it answers, then admits it. A restart seen here
/// (a new `run_id`) first reads the other nodes' records again.
async fn reconnect(me: Weak<Node>) {
    let mut pause = RECONNECT_MIN;
    loop {
        let Some(node) = me.upgrade() else { return };
        node.link.lock().unwrap().attempting = true;
        match node.connect().await {
            Ok((_, hello)) if !hello.primary => {
                node.link.lock().unwrap().attempting = false;
                node.attempted.notify_waiters();
                tracing::warn!(node = %node.addr, "node is a replica now; locks need primaries");
            }
            Ok((conn, hello)) => {
                let previous = node.incarnation.lock().unwrap().run_id.clone();
                if previous.as_ref().is_some_and(|p| *p != hello.run_id) {
                    node.deployment.refresh_bound(node.index).await;
                }
                node.deployment.raise_bound(hello.recorded_max_ttl);
                if previous.is_none() {
                    node.deployment.note_start(node.index, &hello);
                }
                node.install(conn, &hello);
                return;
            }
            Err(e) => {
                node.link.lock().unwrap().attempting = false;
                node.attempted.notify_waiters();
                tracing::debug!(node = %node.addr, error = %e, "reconnect failed");
            }
        }
        drop(node);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RECONNECT_MAX);
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

/// Records our `max_ttl` on the node and reads its record: the largest
/// `max_ttl` recorded, and a quarantine recorded for some `run_id`.
async fn hello_record(
    conn: &mut MultiplexedConnection,
    record_key: &str,
    config: &Config,
) -> redis::RedisResult<(Duration, Option<(String, Duration)>)> {
    let (max_ttl, run_id, left, server_ms): (u64, String, u64, i64) = scripts::NODE_HELLO
        .key(record_key)
        .arg(millis(config.max_ttl))
        .arg(millis(RECORD_TTL))
        .invoke_async(conn)
        .await?;
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
        .query_async::<Vec<redis::RedisResult<std::collections::HashMap<String, String>>>>(conn)
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

/// EVALSHA, loading the script on NOSCRIPT (after `SCRIPT FLUSH`; scripts
/// are loaded at every connection). Loading and the retried EVALSHA are two
/// commands, so a flush may land between them: try a few times (the
/// caller's timeout bounds it).
async fn invoke_reloading(
    conn: &mut MultiplexedConnection,
    inv: &ScriptInvocation<'_>,
) -> redis::RedisResult<Vec<Value>> {
    let mut tries = 0;
    loop {
        match inv.invoke_async::<Vec<Value>>(conn).await {
            Err(e) if e.kind() == NO_SCRIPT && tries < 3 => tries += 1,
            other => return other,
        }
    }
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

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn seen(run_id: &str, uptime_s: u64, at: Instant) -> Seen<'_> {
        Seen {
            run_id,
            uptime: Duration::from_secs(uptime_s),
            at,
            durable: false,
            recorded: None,
        }
    }

    #[test]
    fn a_known_run_id_counts_at_once() {
        let at = Instant::now();
        let s = seen("a", 0, at);
        assert_eq!(quarantine_until(&s, Some("a"), None, Some(MINUTE)), None);
    }

    #[test]
    fn a_new_run_id_sits_out_the_period_from_the_latest_possible_start() {
        let at = Instant::now();
        let s = seen("b", 3, at);
        let (until, why) = quarantine_until(&s, Some("a"), None, Some(MINUTE)).unwrap();
        assert_eq!(why, Suspicion::Restarted);
        // Up 3 s in whole seconds: it may have started 2 s ago.
        assert_eq!(until, at + MINUTE - Duration::from_secs(2));
    }

    #[test]
    fn a_restart_long_ago_counts_at_once() {
        let at = Instant::now();
        let s = seen("b", 120, at);
        assert_eq!(quarantine_until(&s, Some("a"), None, Some(MINUTE)), None);
    }

    #[test]
    fn at_first_contact_a_node_younger_than_its_peers_sits_out() {
        let at = Instant::now();
        let s = seen("b", 1, at);
        let younger = Some(Duration::from_secs(3));
        let (_, why) = quarantine_until(&s, None, younger, Some(MINUTE)).unwrap();
        assert_eq!(why, Suspicion::Younger(Duration::from_secs(3)));
    }

    #[test]
    fn nodes_started_together_count_at_once() {
        let at = Instant::now();
        let s = seen("b", 0, at);
        let younger = Some(Duration::from_millis(1999));
        assert_eq!(quarantine_until(&s, None, younger, Some(MINUTE)), None);
        assert_eq!(quarantine_until(&s, None, None, Some(MINUTE)), None);
    }

    #[test]
    fn a_recorded_quarantine_is_honoured_and_may_only_lengthen_one() {
        let at = Instant::now();
        let mut s = seen("b", 1, at);
        s.recorded = Some(Duration::from_secs(5));
        let (until, why) = quarantine_until(&s, None, None, Some(MINUTE)).unwrap();
        assert_eq!(
            (until, why),
            (at + Duration::from_secs(5), Suspicion::Recorded)
        );
        let (until, why) = quarantine_until(&s, Some("a"), None, Some(MINUTE)).unwrap();
        assert_eq!((until, why), (at + MINUTE, Suspicion::Restarted));
    }

    #[test]
    fn durable_nodes_and_a_switched_off_quarantine_count_at_once() {
        let at = Instant::now();
        let mut s = seen("b", 0, at);
        assert_eq!(quarantine_until(&s, Some("a"), None, None), None);
        s.durable = true;
        s.recorded = Some(MINUTE);
        assert_eq!(quarantine_until(&s, Some("a"), None, Some(MINUTE)), None);
    }
}
