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

/// Keys on one server other than fencing counters.
pub async fn lock_keys(servers: &ServerGroup, i: usize) -> Vec<String> {
    let mut c = conn(servers, i).await;
    let keys: Vec<String> = c.keys("*").await.unwrap();
    keys.into_iter().filter(|k| !k.ends_with(":fence")).collect()
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
