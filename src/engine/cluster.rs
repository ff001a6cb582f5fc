//! A quorum member that is a whole Redis Cluster: its connection, and what
//! the handshake and the shard watch learn from its primaries.
//!
//! Every key of a resource shares one hash slot (`key.rs`), so each
//! operation is one script on one shard, routed by redis-rs's cluster
//! client by the first key. Scripts run on a cluster node in a variant
//! that publishes wake-ups with `SPUBLISH` (`scripts.rs`), which the
//! notifier receives with `SSUBSCRIBE`: a message goes to the subscribers
//! of its shard only.
//!
//! *Restart and failover safety.* A shard whose primary changed, by a
//! restart or by a failover to a replica that had not received every write,
//! may have forgotten leases its predecessor granted. The handshake and a
//! watch every [`SHARD_WATCH`] read each reachable primary's `run_id`; a
//! shard whose primary has a `run_id` this process has not seen for it
//! makes the whole cluster node's grants sit out the restart quarantine,
//! as a restarted standalone node does, counted from when the change was
//! seen. A primary out of reach keeps its last known `run_id`, so a shard
//! that is merely down changes nothing; the slots of the other shards keep
//! working. What remains: a change counts from when the watch sees it, up
//! to [`SHARD_WATCH`] late, and grants in that window count.
//! `wait_replicas` closes the failover case: a lease every replica
//! confirmed survives the promotion of any of them.
//!
//! A Sentinel-managed primary's node-list entry is parsed here too: it is
//! one server, connected through `node.rs`, that the same watch follows to
//! a new primary after a failover.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, InfoDict, Pipeline, RedisFuture, RedisResult, Value};

/// How often a cluster node's primaries are read for a change of process.
pub(crate) const SHARD_WATCH: Duration = Duration::from_secs(1);

/// A node's connection: one server's, or a whole cluster's.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Parses `cluster:URL|URL|...`, a cluster node's form in a node list; the
/// seeds, when `entry` is one.
pub(crate) fn seeds(entry: &str) -> Option<Vec<String>> {
    let list = entry.strip_prefix(PREFIX)?;
    Some(list.split('|').map(str::to_owned).collect())
}

/// A cluster node's entry in a node list.
pub(crate) fn entry<I, U>(seeds: I) -> String
where
    I: IntoIterator<Item = U>,
    U: AsRef<str>,
{
    let seeds: Vec<String> = seeds.into_iter().map(|s| s.as_ref().to_owned()).collect();
    format!("{PREFIX}{}", seeds.join("|"))
}

const PREFIX: &str = "cluster:";

/// Parses `sentinel:SERVICE@URL|URL|...`, a Sentinel-managed primary's
/// form in a node list: the service and the sentinels, when `entry` is one.
pub(crate) fn sentinels(entry: &str) -> Option<(String, Vec<String>)> {
    let (service, list) = entry.strip_prefix(SENTINEL)?.split_once('@')?;
    Some((
        service.to_owned(),
        list.split('|').map(str::to_owned).collect(),
    ))
}

/// A Sentinel-managed primary's entry in a node list.
pub(crate) fn sentinel_entry<I, U>(sentinels: I, service: &str) -> String
where
    I: IntoIterator<Item = U>,
    U: AsRef<str>,
{
    let list: Vec<String> = sentinels
        .into_iter()
        .map(|s| s.as_ref().to_owned())
        .collect();
    format!("{SENTINEL}{service}@{}", list.join("|"))
}

const SENTINEL: &str = "sentinel:";

/// One primary as the handshake or the watch read it.
#[derive(Debug, Clone)]
pub(crate) struct Primary {
    pub(crate) addr: String,
    pub(crate) run_id: String,
    pub(crate) uptime: Duration,
    pub(crate) version: String,
}

impl Primary {
    fn of(addr: String, info: &InfoDict) -> Primary {
        Primary {
            addr,
            run_id: info.get("run_id").unwrap_or_default(),
            uptime: Duration::from_secs(info.get("uptime_in_seconds").unwrap_or(0)),
            version: info.get("redis_version").unwrap_or_default(),
        }
    }
}

/// Reads `INFO server` from every primary that answers within `timeout`;
/// fails only when none does.
pub(crate) async fn primaries(
    conn: &mut ClusterConnection,
    timeout: Duration,
) -> RedisResult<Vec<Primary>> {
    let slots = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").to_owned(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let addrs = primary_addrs(&slots);
    let reads = addrs.into_iter().map(|(host, port)| {
        let mut conn = conn.clone();
        async move {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            let read = conn.route_command(redis::cmd("INFO").arg("server").to_owned(), route);
            let reply = tokio::time::timeout(timeout, read).await.ok()?.ok()?;
            let info: InfoDict = redis::from_redis_value(reply).ok()?;
            Some(Primary::of(format!("{host}:{port}"), &info))
        }
    });
    let read: Vec<Primary> = futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect();
    if read.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no primary of the cluster answered",
        )
        .into());
    }
    Ok(read)
}

/// The distinct primaries of a `CLUSTER SLOTS` reply, as host and port.
fn primary_addrs(slots: &Value) -> Vec<(String, u16)> {
    let Value::Array(ranges) = slots else {
        return Vec::new();
    };
    let mut addrs: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let Some(Value::Array(node)) = parts.get(2) else {
            continue;
        };
        let host = node
            .first()
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
        let port = node
            .get(1)
            .and_then(|v| redis::from_redis_value_ref::<u16>(v).ok());
        if let (Some(host), Some(port)) = (host, port)
            && !addrs.iter().any(|(h, p)| *h == host && *p == port)
        {
            addrs.push((host, port));
        }
    }
    addrs
}

/// The `run_id` each shard's primary had when this process last read it,
/// keyed by address.
#[derive(Debug, Default)]
pub(crate) struct Shards {
    run_ids: HashMap<String, String>,
}

impl Shards {
    /// Takes in what the primaries said; whether a shard's primary is a
    /// process not seen before in its place (a restart or a failover).
    /// The first reading only records.
    pub(crate) fn changed(&mut self, read: &[Primary]) -> bool {
        let first = self.run_ids.is_empty();
        let mut changed = false;
        for p in read {
            // A promoted replica is a primary at a new address; a restarted
            // one is a new process at its old address. A primary added to
            // the cluster counts too: telling it from a promotion would take
            // the whole history of the topology.
            let before = self.run_ids.insert(p.addr.clone(), p.run_id.clone());
            changed |= before.as_ref() != Some(&p.run_id);
        }
        !first && changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(addr: &str, run_id: &str) -> Primary {
        Primary {
            addr: addr.into(),
            run_id: run_id.into(),
            uptime: Duration::ZERO,
            version: "7.0.15".into(),
        }
    }

    #[test]
    fn node_entries_round_trip_their_seeds() {
        let e = entry(["redis://a:1", "redis://b:2"]);
        assert_eq!(e, "cluster:redis://a:1|redis://b:2");
        assert_eq!(seeds(&e).unwrap(), ["redis://a:1", "redis://b:2"]);
        assert_eq!(seeds("redis://a:1"), None);
    }

    #[test]
    fn sentinel_entries_round_trip_their_service_and_sentinels() {
        let e = sentinel_entry(["redis://s1:26379", "redis://s2:26379"], "locks");
        assert_eq!(e, "sentinel:locks@redis://s1:26379|redis://s2:26379");
        let (service, list) = sentinels(&e).unwrap();
        assert_eq!(service, "locks");
        assert_eq!(list, ["redis://s1:26379", "redis://s2:26379"]);
        assert_eq!(sentinels("redis://a:1"), None);
    }

    #[test]
    fn a_new_process_in_a_shard_is_a_change_and_a_shard_out_of_reach_is_not() {
        let mut shards = Shards::default();
        assert!(!shards.changed(&[primary("a:1", "r1"), primary("b:2", "r2")]));
        assert!(!shards.changed(&[primary("a:1", "r1"), primary("b:2", "r2")]));
        assert!(!shards.changed(&[primary("a:1", "r1")]), "b is down");
        assert!(shards.changed(&[primary("a:1", "r1"), primary("c:3", "r3")]));
        assert!(shards.changed(&[primary("a:1", "r9")]), "a restarted");
        assert!(!shards.changed(&[primary("a:1", "r9"), primary("c:3", "r3")]));
    }

    #[test]
    fn cluster_slots_replies_give_their_primaries_once() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |a: i64, b: i64, host: &str, port: i64| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                node(host, port),
                node("r", 9),
            ])
        };
        let reply = Value::Array(vec![
            range(0, 10, "h", 1),
            range(11, 20, "h", 2),
            range(21, 30, "h", 1),
        ]);
        assert_eq!(
            primary_addrs(&reply),
            [("h".to_owned(), 1), ("h".to_owned(), 2)]
        );
    }
}
