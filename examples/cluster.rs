//! quorate on a Redis Cluster: one quorum member that is a whole cluster,
//! resources spread over its shards, wake-ups over sharded pub/sub.
//!
//! Run: `cargo run --example cluster` (starts a throwaway local cluster of
//! three primaries), or point it at yours with
//! `QUORATE_CLUSTER=redis://10.0.0.1:7000,redis://10.0.0.2:7000 cargo run --example cluster`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use quorate::testkit::LocalCluster;
use quorate::{Mutex, Quorum, Semaphore};
use redis::cluster::ClusterClient;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (seeds, _local) = match std::env::var("QUORATE_CLUSTER") {
        Ok(list) => (list.split(',').map(|s| s.trim().to_owned()).collect(), None),
        Err(_) => {
            let cluster = LocalCluster::start(3, 0)?;
            println!(
                "started a throwaway cluster: {}",
                cluster.primaries().join(", ")
            );
            (cluster.seeds(), Some(cluster))
        }
    };
    let q = Quorum::connect_cluster(&seeds).await?;

    // Each resource's keys share a hash slot, so each lock is one shard's.
    let mut guards = Vec::new();
    for i in 0..300 {
        guards.push(Mutex::new(&q, format!("job:{i}")).lock().await?);
    }
    println!(
        "300 locks held; keys per primary: {:?}",
        keys_per_primary(&seeds).await?
    );
    for guard in guards {
        guard.release().await?;
    }

    // A waiter is woken by the release's SPUBLISH on its shard.
    let report = Mutex::new(&q, "nightly-report");
    let held = report.lock().await?;
    let waiter = report.clone();
    let waiting = tokio::spawn(async move {
        let guard = waiter.lock().await?;
        let got = Instant::now();
        guard.release().await?;
        Ok::<_, quorate::Error>(got)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let released = Instant::now();
    held.release().await?;
    println!("handed over in {:?}", waiting.await?? - released);

    let exports = Semaphore::new(&q, "exports", 8);
    let permit = exports.acquire().await?;
    println!(
        "an export permit, fencing token {}",
        permit.fencing_token().await?
    );
    permit.release().await?;
    Ok(())
}

/// `DBSIZE` of every primary, by address.
async fn keys_per_primary(seeds: &[String]) -> redis::RedisResult<BTreeMap<String, i64>> {
    let mut c = ClusterClient::new(seeds.to_vec())?
        .get_async_connection()
        .await?;
    let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let sizes = c.route_command(redis::cmd("DBSIZE"), all).await?;
    redis::from_redis_value(sizes).map_err(redis::RedisError::from)
}
