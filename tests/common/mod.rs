//! Shared setup for the integration tests: real servers, quorums over them.
#![allow(dead_code)]

use std::time::Duration;

use quorate::testkit::ServerGroup;
use quorate::{Quorum, QuorumBuilder};
use redis::AsyncCommands;

/// Starts `n` servers and a quorum over them.
pub async fn cluster(n: usize) -> (ServerGroup, Quorum) {
    let servers = ServerGroup::start(n).unwrap();
    let quorum = builder(&servers).build().await.unwrap();
    (servers, quorum)
}

/// A builder over the servers, with the default settings.
pub fn builder(servers: &ServerGroup) -> QuorumBuilder {
    Quorum::builder().nodes(servers.urls())
}

/// A plain connection to one server.
pub async fn conn(servers: &ServerGroup, i: usize) -> redis::aio::MultiplexedConnection {
    servers[i]
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The value of a key on one server.
pub async fn get(servers: &ServerGroup, i: usize, key: &str) -> Option<String> {
    conn(servers, i).await.get(key).await.unwrap()
}

/// Number of keys on each server.
pub async fn dbsizes(servers: &ServerGroup) -> Vec<i64> {
    let mut sizes = Vec::new();
    for i in 0..servers.len() {
        if !servers[i].is_running() {
            sizes.push(-1);
            continue;
        }
        let mut c = conn(servers, i).await;
        sizes.push(redis::cmd("DBSIZE").query_async(&mut c).await.unwrap());
    }
    sizes
}

/// The key of quorate's record on every node (the deployment's longest
/// lease TTL, a restart quarantine).
pub const NODE_RECORD: &str = "quorate:node";

/// Keys on one server other than fencing counters and the node's record.
pub async fn lock_keys(servers: &ServerGroup, i: usize) -> Vec<String> {
    let mut c = conn(servers, i).await;
    let keys: Vec<String> = c.keys("*").await.unwrap();
    keys.into_iter()
        .filter(|k| !k.ends_with(":fence") && !k.ends_with(NODE_RECORD))
        .collect()
}

/// Polls `f` until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f().await
}

/// A quorum over the servers with short backoffs, so contention tests spend
/// their time in critical sections rather than in 50-100 ms retry sleeps.
pub async fn fast_quorum(servers: &ServerGroup) -> Quorum {
    builder(servers)
        .retry(Duration::from_millis(2), Duration::from_millis(3))
        .build()
        .await
        .unwrap()
}

/// Plain connections to every server, in index order.
pub async fn conns(servers: &ServerGroup) -> Vec<redis::aio::MultiplexedConnection> {
    let mut all = Vec::new();
    for i in 0..servers.len() {
        all.push(conn(servers, i).await);
    }
    all
}

/// `SET key value NX PX ms` on one server: true when it was set.
pub async fn set_nx_px(servers: &ServerGroup, i: usize, key: &str, value: &str, ms: u64) -> bool {
    let mut c = conn(servers, i).await;
    let reply: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("NX")
        .arg("PX")
        .arg(ms)
        .query_async(&mut c)
        .await
        .unwrap();
    reply.is_some()
}

/// The PTTL of a key on one server (-2 when missing, -1 without expiry).
pub async fn pttl(servers: &ServerGroup, i: usize, key: &str) -> i64 {
    let mut c = conn(servers, i).await;
    c.pttl(key).await.unwrap()
}

/// Deletes a key on every running server.
pub async fn del_everywhere(servers: &ServerGroup, key: &str) {
    for i in 0..servers.len() {
        if servers[i].is_running() {
            let _: i64 = conn(servers, i).await.del(key).await.unwrap();
        }
    }
}

/// `SCRIPT FLUSH` on every running server.
pub async fn script_flush_all(servers: &ServerGroup) {
    for i in 0..servers.len() {
        if servers[i].is_running() {
            let mut c = conn(servers, i).await;
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut c)
                .await
                .unwrap();
        }
    }
}

/// Number of subscribers of a channel on one server.
pub async fn subscribers(servers: &ServerGroup, i: usize, channel: &str) -> i64 {
    let mut c = conn(servers, i).await;
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut c)
        .await
        .unwrap();
    n
}

/// Waits until a waiter of mutex `name` has subscribed to its wake-up
/// channel on every server: from then on a release wakes it.
pub async fn waiter_subscribed(servers: &ServerGroup, name: &str) {
    let channel = format!("{{{name}}}:ready");
    let subscribed = eventually(Duration::from_secs(2), || async {
        for i in 0..servers.len() {
            if subscribers(servers, i, &channel).await == 0 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(subscribed, "no waiter subscribed to {channel}");
}

/// The compare-and-delete release of redis-py `Lock` and redsync.
pub const RAW_RELEASE: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

/// Runs [`RAW_RELEASE`] on one server; returns the number of keys deleted.
pub async fn raw_release(servers: &ServerGroup, i: usize, key: &str, token: &str) -> i64 {
    let mut c = conn(servers, i).await;
    redis::cmd("EVAL")
        .arg(RAW_RELEASE)
        .arg(1)
        .arg(key)
        .arg(token)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// Runs a blocking testkit call (restart) without stalling the runtime's
/// other tasks. Needs the multi-thread runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// One server setup a scenario runs on, with a quorum over it.
pub struct Setup {
    /// What the setup is, for assertion messages.
    pub label: &'static str,
    pub servers: ServerGroup,
    pub quorum: Quorum,
}

impl Setup {
    /// Another client over the same servers (as if another process), with
    /// short backoffs so contention tests spend their time holding.
    pub async fn fast_client(&self) -> Quorum {
        fast_quorum(&self.servers).await
    }
}

/// The two setups every primitive is tested on: one node, and three nodes of
/// which one is killed after connecting, so every operation needs both
/// survivors to agree.
pub async fn one_node_and_three_with_one_down() -> Vec<Setup> {
    let (servers, quorum) = cluster(1).await;
    let single = Setup {
        label: "1 node",
        servers,
        quorum,
    };
    let (mut servers, quorum) = cluster(3).await;
    servers[0].kill();
    let degraded = Setup {
        label: "3 nodes, 1 down",
        servers,
        quorum,
    };
    vec![single, degraded]
}

/// Waits until something of this process has subscribed to `channel` on
/// every running server: from then on a publish there wakes it.
pub async fn subscribed_on_live_servers(servers: &ServerGroup, channel: &str) {
    let subscribed = eventually(Duration::from_secs(2), || async {
        for i in 0..servers.len() {
            if servers[i].is_running() && subscribers(servers, i, channel).await == 0 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(subscribed, "nobody subscribed to {channel}");
}

/// Awaits a call that must be refused for bad input before any I/O: it must
/// fail with `Error::InvalidArgument` at once, even where a valid call would
/// wait. Returns the name of the argument refused.
pub async fn refused_at_once<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = quorate::Result<T>>,
) -> &'static str {
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .unwrap_or_else(|_| panic!("bad input was not refused at once"));
    match result {
        Err(quorate::Error::InvalidArgument { name, .. }) => {
            assert!(started.elapsed() < Duration::from_millis(500));
            name
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// The value of a key on every server, in index order.
pub async fn values(servers: &ServerGroup, key: &str) -> Vec<Option<String>> {
    let mut all = Vec::new();
    for i in 0..servers.len() {
        all.push(get(servers, i, key).await);
    }
    all
}

/// The value a majority of the servers hold under `key`, which is what a
/// lease needs (a node may legitimately lack it); panics if there is none.
pub async fn majority_value(servers: &ServerGroup, key: &str) -> String {
    let all = values(servers, key).await;
    let majority = servers.len() / 2 + 1;
    all.iter()
        .flatten()
        .find(|v| all.iter().flatten().filter(|w| w == v).count() >= majority)
        .cloned()
        .unwrap_or_else(|| panic!("no value of {key} on a majority: {all:?}"))
}

/// Retries a one-shot call (`try_lock`, `count`, `available_permits`...)
/// while it fails for want of a quorum. On a loaded 2-core box a node can
/// miss the 50 ms default node timeout: an answer such calls may give, and
/// not what the tests using this are about. Other errors panic.
pub async fn despite_slow_nodes<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = quorate::Result<T>>,
{
    for _ in 0..50 {
        match call().await {
            Err(e) if e.is_quorum() => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other.unwrap(),
        }
    }
    call().await.unwrap()
}
