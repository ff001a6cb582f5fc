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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, InfoDict, ProtocolVersion, Role, Value};
use tokio::sync::{Notify, mpsc};

use super::admission::{Seen, millis};
use super::cluster::{self, Conn, Primary, Shards};
use super::scripts::{self, Flavor, Invocation};
use crate::config::{Config, WaitReplicas};
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
const READ_ONLY: redis::ErrorKind = redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);

/// Error code of the scripts' "state created with other parameters" reply.
const MISMATCH: &str = "QUORATE_MISMATCH";

/// A script invocation shared by the per-node requests of a round.
#[derive(Clone)]
pub(crate) struct Call {
    inv: std::sync::Arc<Invocation>,
    kind: Kind,
}

/// What a call's yes votes mean, for restart safety and `wait_replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Votes that stand whatever the node forgot: a release, an
    /// extension (it comes from a node that still holds our key, which
    /// blocks everyone there), a latch's count-down (the node holds it
    /// now).
    Plain,
    /// It grants a lease: a node presumed restarted may have forgotten
    /// another holder's, so its yes does not count.
    Grant,
    /// It moves a lease's expiry, which replicas confirm.
    Extension,
    /// It reports or decides on state (a latch's count-downs, a barrier's
    /// generation) that a node presumed restarted may have forgotten: its
    /// answer does not count, lest it hide what a majority recorded.
    Recall,
}

impl Call {
    pub(crate) fn new(inv: Invocation) -> Call {
        Call::of(inv, Kind::Plain)
    }

    /// An acquisition, whose yes votes grant a lease.
    pub(crate) fn grant(inv: Invocation) -> Call {
        Call::of(inv, Kind::Grant)
    }

    /// An extension, whose yes votes move a lease's expiry.
    pub(crate) fn extension(inv: Invocation) -> Call {
        Call::of(inv, Kind::Extension)
    }

    /// A read of, or a decision on, state a restart loses.
    pub(crate) fn recall(inv: Invocation) -> Call {
        Call::of(inv, Kind::Recall)
    }

    fn of(inv: Invocation, kind: Kind) -> Call {
        Call {
            inv: std::sync::Arc::new(inv),
            kind,
        }
    }

    /// Whether a node presumed restarted has no say in its answer.
    fn needs_memory(&self) -> bool {
        matches!(self.kind, Kind::Grant | Kind::Recall)
    }

    /// Whether a reply is a yes that replicas must confirm.
    fn confirms(&self, values: &[Value]) -> bool {
        matches!(self.kind, Kind::Grant | Kind::Extension) && values.first() == Some(&Value::Int(1))
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
    /// It runs in cluster mode.
    pub(crate) cluster_enabled: bool,
    /// Its `redis_version`, as major and minor.
    pub(crate) version: (u32, u32),
    /// Its persistence cannot lose an acknowledged write.
    pub(crate) durable: bool,
    /// The largest `max_ttl` recorded on it (ours included).
    pub(crate) recorded_max_ttl: Duration,
    /// What is left of a quarantine recorded on it for its current process.
    pub(crate) recorded_quarantine: Option<Duration>,
    /// A cluster's primaries that answered (none for a standalone server).
    pub(crate) primaries: Vec<Primary>,
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
    pub(crate) target: Target,
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
    /// A cluster's primaries, as last read.
    shards: Mutex<Shards>,
    /// The server a Sentinel node is connected to, `host:port`.
    server: Mutex<Option<String>>,
    /// `WAIT`s sent on the server's connections, and the last one's
    /// outcome (see `replicated`).
    waits_sent: AtomicU64,
    last_wait: tokio::sync::Mutex<LastWait>,
}

/// The outcome of the last `WAIT` on a server, which confirms every write
/// finished on that connection before it was sent. Round 0 is none.
struct LastWait {
    epoch: u64,
    round: u64,
    outcome: std::result::Result<(), Failure>,
}

/// What a node is.
#[derive(Clone)]
pub(crate) enum Target {
    Server(Box<Client>),
    Cluster {
        client: Box<ClusterClient>,
        seeds: Vec<String>,
    },
    /// A primary that Sentinel fails over: found anew at every connect.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl Target {
    /// The server to connect to now: a Sentinel service's current primary.
    pub(crate) async fn server(&self) -> redis::RedisResult<Client> {
        match self {
            Target::Server(client) => Ok((**client).clone()),
            Target::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
            Target::Cluster { .. } => {
                Err(std::io::Error::other("a cluster has no one server").into())
            }
        }
    }
}

#[derive(Default)]
struct Link {
    conn: Option<Conn>,
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
        let bad = |e: redis::RedisError| Error::config("nodes", format!("bad url {url:?}: {e}"));
        if let Some((service, list)) = cluster::sentinels(url) {
            let sentinel = SentinelClient::build(
                list.clone(),
                service.clone(),
                None,
                SentinelServerType::Master,
            )
            .map_err(bad)?;
            let addrs: Vec<String> = list.iter().map(|s| server_addr(s)).collect();
            return Ok(Node::with(
                format!("sentinel({service}@{})", addrs.join(",")),
                Target::Sentinel(Arc::new(tokio::sync::Mutex::new(sentinel))),
                index,
                config,
                reconnect,
            ));
        }
        let (addr, target) = match cluster::seeds(url) {
            Some(seeds) => {
                let client = ClusterClientBuilder::new(seeds.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(config.connect_timeout)
                    .build()
                    .map_err(bad)?;
                let addrs: Vec<String> = seeds.iter().map(|s| server_addr(s)).collect();
                let addr = format!("cluster({})", addrs.join(","));
                (
                    addr,
                    Target::Cluster {
                        client: Box::new(client),
                        seeds,
                    },
                )
            }
            None => {
                let client = Client::open(url).map_err(bad)?;
                let info = client.get_connection_info();
                let addr = match info.redis_settings().db() {
                    0 => info.addr().to_string(),
                    db => format!("{}/{db}", info.addr()),
                };
                (addr, Target::Server(Box::new(client)))
            }
        };
        Ok(Node::with(addr, target, index, config, reconnect))
    }

    fn with(
        addr: String,
        target: Target,
        index: usize,
        config: &Config,
        reconnect: mpsc::UnboundedSender<usize>,
    ) -> Node {
        Node {
            addr,
            target,
            index,
            record_key: format!("{}{}", config.key_prefix, crate::key::NODE_RECORD),
            config: config.clone(),
            reconnect,
            link: Mutex::default(),
            attempted: Notify::new(),
            incarnation: Mutex::default(),
            shards: Mutex::default(),
            server: Mutex::default(),
            waits_sent: AtomicU64::new(0),
            last_wait: tokio::sync::Mutex::new(LastWait {
                epoch: 0,
                round: 0,
                outcome: Ok(()),
            }),
        }
    }

    /// Its server may be replaced by a promoted replica, whose new
    /// `run_id` counts as a restart from when it is seen.
    pub(crate) fn fails_over(&self) -> bool {
        matches!(self.target, Target::Sentinel(_))
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The form of the scripts this node runs.
    pub(crate) fn flavor(&self) -> Flavor {
        match self.target {
            Target::Server(_) | Target::Sentinel(_) => Flavor::Plain,
            Target::Cluster { .. } => Flavor::Sharded,
        }
    }

    /// The `run_id` this process saw last, if any.
    pub(crate) fn known_run_id(&self) -> Option<String> {
        self.incarnation.lock().unwrap().run_id.clone()
    }

    /// Opens a connection and runs the handshake on it.
    pub(crate) async fn connect(&self) -> Result<(Conn, Hello)> {
        let handshake = async {
            let mut conn = match &self.target {
                Target::Server(_) | Target::Sentinel(_) => {
                    let client = self.target.server().await?;
                    *self.server.lock().unwrap() =
                        Some(client.get_connection_info().addr().to_string());
                    // Requests get their own deadline (the per-node
                    // timeout) in `invoke`.
                    let settings = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.config.connect_timeout))
                        .set_response_timeout(None);
                    let conn = client
                        .get_multiplexed_async_connection_with_config(&settings)
                        .await?;
                    Conn::Single(conn)
                }
                Target::Cluster { client, .. } => {
                    Conn::Cluster(client.get_async_connection().await?)
                }
            };
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
        let read = hello_record(&mut conn, &self.record_key, &self.config, self.flavor());
        let (bound, _) = tokio::time::timeout(self.config.connect_timeout, read)
            .await
            .ok()?
            .ok()?;
        Some(bound)
    }

    /// Refuses a node that is not a primary, or older than Redis 7.0
    /// (claims use `SET NX GET`).
    pub(crate) fn check_role(&self, hello: &Hello) -> Result<()> {
        if hello.cluster_enabled && matches!(self.target, Target::Server(_)) {
            return Err(Error::config(
                "nodes",
                format!(
                    "{} is a Redis Cluster node; give the cluster as one node with cluster_node",
                    self.addr
                ),
            ));
        }
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
    pub(crate) fn install(&self, conn: Conn, hello: &Hello, counts_from: Option<Instant>) {
        self.shards.lock().unwrap().changed(&hello.primaries);
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
    pub(crate) fn record_quarantine(&self, mut conn: Conn, run_id: &str, left: Duration) {
        let mut inv = invocation(&scripts::NODE_QUARANTINE, &[&self.record_key]);
        inv.arg(run_id).arg(millis(left)).arg(millis(RECORD_TTL));
        let timeout = self.config.connect_timeout;
        let flavor = self.flavor();
        tokio::spawn(async move {
            let write = inv.run_as::<Value>(&mut conn, flavor);
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

    /// Reads a cluster's primaries again; whether a shard's primary is a
    /// process not seen in its place before (see `cluster.rs`). Never for
    /// a standalone server, whose restarts break its connection.
    pub(crate) async fn shards_changed(&self) -> bool {
        let Some(Conn::Cluster(mut conn)) = self.link.lock().unwrap().conn.clone() else {
            return false;
        };
        match cluster::primaries(&mut conn, self.config.connect_timeout).await {
            Ok(read) => self.shards.lock().unwrap().changed(&read),
            Err(_) => false,
        }
    }

    /// Asks Sentinel for the service's primary; when it is another server
    /// than the one connected (a failover), drops the connection, so the
    /// next one goes to the new primary. The old one may take writes until
    /// Sentinel demotes it.
    pub(crate) async fn follow_primary(&self) {
        let Ok(client) = self.target.server().await else {
            return;
        };
        let now = client.get_connection_info().addr().to_string();
        let moved = self
            .server
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|s| *s != now);
        if moved {
            let epoch = self.link.lock().unwrap().epoch;
            tracing::info!(node = %self.addr, primary = %now, "sentinel names a new primary");
            self.broken(epoch);
        }
    }

    /// Makes the node's grants sit out until `until`, or longer if they
    /// already do.
    pub(crate) fn sit_out(&self, until: Instant) {
        let mut incarnation = self.incarnation.lock().unwrap();
        incarnation.counts_from = Some(incarnation.counts_from.map_or(until, |u| u.max(until)));
    }

    /// Until when the node's grants do not count, if they do not now.
    fn quarantined(&self) -> Option<Instant> {
        let until = self.incarnation.lock().unwrap().counts_from?;
        (Instant::now() < until).then_some(until)
    }

    /// The connection to use, waiting up to `timeout` for a reconnection
    /// attempt under way.
    async fn connection(&self, timeout: Duration) -> Option<(Conn, u64)> {
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

    /// Drops a connection that broke, and asks for a new one. A cluster's
    /// connection stays: its client reconnects its shards itself, and the
    /// shards that answer must go on serving their slots.
    fn broken(&self, epoch: u64) {
        {
            let mut link = self.link.lock().unwrap();
            if link.epoch != epoch || link.conn.as_ref().is_none_or(Conn::is_cluster) {
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
        let (reply, mut conn, epoch) = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((mut conn, epoch)) = self.connection(left).await else {
                return Reply::Failed(Failure::transient("not connected"));
            };
            let run = call.inv.run_as::<Vec<Value>>(&mut conn, self.flavor());
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
                // A server turned replica (a failover) answers READONLY:
                // connecting again finds the service's new primary.
                Ok(Err(e))
                    if e.is_unrecoverable_error()
                        || e.is_connection_dropped()
                        || e.kind() == READ_ONLY =>
                {
                    self.broken(epoch);
                    if retried {
                        return Reply::Failed(failure(e));
                    }
                    retried = true;
                }
                Ok(Err(e)) => return Reply::Failed(failure(e)),
                Ok(Ok(reply)) => break (reply, conn, epoch),
            }
        };
        if call.confirms(&reply)
            && let Err(f) = Box::pin(self.replicated(&mut conn, epoch, &call.inv, timeout)).await
        {
            return Reply::Failed(f);
        }
        self.reply(call, reply)
    }

    /// With `wait_replicas`, waits for the replicas to confirm the writes
    /// sent so far on this connection. `WAIT` blocks the connection it is
    /// sent on, so a server's writers share waits: a wait sent after a
    /// write finished confirms it, and at most one is under way; a write
    /// thus waits for at most two. A cluster waits on the shard of `inv`,
    /// per call.
    async fn replicated(
        &self,
        conn: &mut Conn,
        epoch: u64,
        inv: &Invocation,
        timeout: Duration,
    ) -> std::result::Result<(), Failure> {
        let Some(wait) = self.config.wait_replicas else {
            return Ok(());
        };
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(wait.replicas).arg(millis(wait.timeout));
        let confirmed = async {
            match conn {
                Conn::Single(c) => {
                    let before = self.waits_sent.load(Ordering::SeqCst);
                    let mut last = self.last_wait.lock().await;
                    if last.epoch == epoch && last.round > before {
                        return last.outcome.clone();
                    }
                    let round = self.waits_sent.fetch_add(1, Ordering::SeqCst) + 1;
                    let outcome = confirmation(cmd.query_async::<u32>(c).await, wait);
                    *last = LastWait {
                        epoch,
                        round,
                        outcome: outcome.clone(),
                    };
                    outcome
                }
                Conn::Cluster(c) => {
                    let shard = Route::with_key(inv.first_key(), SlotAddr::Master);
                    let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(shard));
                    let reply = c.route_command(cmd, to).await;
                    confirmation(reply.and_then(|v| Ok(redis::from_redis_value(v)?)), wait)
                }
            }
        };
        tokio::time::timeout(wait.timeout * 2 + timeout, confirmed)
            .await
            .unwrap_or_else(|_| {
                Err(Failure::transient(format!(
                    "no answer within {:?} of waiting for replicas",
                    wait.timeout
                )))
            })
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
            Some(until) if call.needs_memory() => Reply::Quarantined { until },
            _ => Reply::Yes(payload),
        }
    }

    /// Runs several scripts in one pipelined request, with one deadline;
    /// one reply each. A script the node lost is run again with EVAL.
    pub(crate) async fn invoke_batch(&self, calls: &[Call], timeout: Duration) -> Vec<Reply> {
        if self.flavor() == Flavor::Sharded {
            // A cluster sends a pipeline to one shard, and these calls
            // are for resources all over the slots.
            let requests = calls.iter().map(|call| self.request(call, timeout));
            return futures::future::join_all(requests).await;
        }
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
        let mut values = Vec::with_capacity(calls.len());
        for (call, result) in calls.iter().zip(results) {
            values.push(match result {
                Err(e) if e.kind() == scripts::NO_SCRIPT => {
                    let again = call.inv.run_as::<Vec<Value>>(&mut conn, Flavor::Plain);
                    match tokio::time::timeout_at(deadline, again).await {
                        Ok(result) => result,
                        Err(_) => Err(timeout_error()),
                    }
                }
                other => other,
            });
        }
        // One wait confirms every write of the batch.
        let writes = calls
            .iter()
            .zip(&values)
            .find(|(call, v)| v.as_ref().is_ok_and(|v| call.confirms(v)));
        let unconfirmed = match writes {
            Some((call, _)) => {
                let confirmed = Box::pin(self.replicated(&mut conn, epoch, &call.inv, timeout));
                confirmed.await.err()
            }
            None => None,
        };
        calls
            .iter()
            .zip(values)
            .map(|(call, result)| match (result, &unconfirmed) {
                (Ok(v), Some(f)) if call.confirms(&v) => Reply::Failed(f.clone()),
                (Ok(v), _) => self.reply(call, v),
                (Err(e), _) => Reply::Failed(failure(e)),
            })
            .collect()
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
    conn: &mut Conn,
    record_key: &str,
    config: &Config,
) -> redis::RedisResult<Hello> {
    let (mut hello, flavor) = match conn {
        Conn::Single(c) => (server_hello(c).await?, Flavor::Plain),
        Conn::Cluster(c) => (
            cluster_hello(c, config.connect_timeout).await?,
            Flavor::Sharded,
        ),
    };
    if !hello.primary || (hello.cluster_enabled && flavor == Flavor::Plain) {
        // Refused by the caller: a replica takes no writes, and a cluster
        // node alone serves only its own slots.
        return Ok(hello);
    }
    scripts::load_all(conn, flavor).await?;
    let (recorded_max_ttl, quarantine) = hello_record(conn, record_key, config, flavor).await?;
    hello.recorded_max_ttl = recorded_max_ttl;
    hello.recorded_quarantine = quarantine
        .filter(|(run, _)| *run == hello.run_id)
        .map(|(_, left)| left);
    Ok(hello)
}

async fn server_hello(conn: &mut MultiplexedConnection) -> redis::RedisResult<Hello> {
    let mut pipe = redis::pipe();
    pipe.cmd("ROLE").cmd("INFO").arg("server").arg("cluster");
    let (role, info) = pipe.query_async::<(Role, InfoDict)>(conn).await?;
    let primary = matches!(role, Role::Primary { .. });
    Ok(Hello {
        run_id: info.get("run_id").unwrap_or_default(),
        uptime: Duration::from_secs(info.get("uptime_in_seconds").unwrap_or(0)),
        at: Instant::now(),
        primary,
        cluster_enabled: info.get::<i64>("cluster_enabled") == Some(1),
        version: version(&info.get::<String>("redis_version").unwrap_or_default()),
        durable: primary && durable(conn).await,
        recorded_max_ttl: Duration::ZERO,
        recorded_quarantine: None,
        primaries: Vec::new(),
    })
}

/// A cluster as one node: its incarnation is its primaries' (a change of
/// any is a change of the node), its start the latest of theirs, its
/// version the oldest. Its persistence counts as not durable: a failover
/// loses what a replica had not received, whatever the primary kept.
async fn cluster_hello(
    conn: &mut redis::cluster_async::ClusterConnection,
    timeout: Duration,
) -> redis::RedisResult<Hello> {
    let primaries = cluster::primaries(conn, timeout).await?;
    let mut ids: Vec<String> = primaries
        .iter()
        .map(|p| format!("{}={}", p.addr, p.run_id))
        .collect();
    ids.sort();
    Ok(Hello {
        run_id: ids.join(","),
        uptime: primaries.iter().map(|p| p.uptime).min().unwrap_or_default(),
        at: Instant::now(),
        primary: true,
        cluster_enabled: true,
        version: primaries
            .iter()
            .map(|p| version(&p.version))
            .min()
            .unwrap_or_default(),
        durable: false,
        recorded_max_ttl: Duration::ZERO,
        recorded_quarantine: None,
        primaries,
    })
}

/// A seed's `host:port`, for the node's name.
fn server_addr(url: &str) -> String {
    Client::open(url).map_or_else(
        |_| url.to_owned(),
        |c| c.get_connection_info().addr().to_string(),
    )
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
    conn: &mut Conn,
    record_key: &str,
    config: &Config,
    flavor: Flavor,
) -> redis::RedisResult<(Duration, Option<(String, Duration)>)> {
    let mut inv = invocation(&scripts::NODE_HELLO, &[record_key]);
    inv.arg(millis(config.max_ttl)).arg(millis(RECORD_TTL));
    let (max_ttl, run_id, left, server_ms): (u64, String, u64, i64) =
        inv.run_as(conn, flavor).await?;
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

/// A `WAIT` reply as the outcome for the writes it covers.
fn confirmation(
    reply: redis::RedisResult<u32>,
    wait: WaitReplicas,
) -> std::result::Result<(), Failure> {
    match reply {
        Ok(n) if n >= wait.replicas => Ok(()),
        Ok(n) => Err(Failure::transient(format!(
            "{n} of {} replicas confirmed the write within {:?}",
            wait.replicas, wait.timeout
        ))),
        Err(e) => Err(failure(e)),
    }
}

fn failure(e: redis::RedisError) -> Failure {
    Failure {
        // A cluster's errors (a shard down, a slot moving, no connection
        // to the shard) pass with the cluster's repair.
        transient: e.is_timeout()
            || e.is_io_error()
            || e.is_connection_dropped()
            || e.is_cluster_error()
            || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
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
