//! The testkit's replicated topologies: a local Redis Cluster that fails over
//! and migrates slots on demand, and a standalone primary with replicas.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use quorate::testkit::{LocalCluster, ReplicatedPrimary};
use redis::{ErrorKind, ServerErrorKind};

const SETTLE: Duration = Duration::from_secs(20);

/// Tests that overlap share one cluster, and the last of them drops it: a
/// plain `static` is never dropped, so its servers would outlive the run.
static SHARED: Mutex<Weak<Mutex<LocalCluster>>> = Mutex::new(Weak::new());

fn shared_cluster() -> Arc<Mutex<LocalCluster>> {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(Mutex::new(LocalCluster::start(3, 1).unwrap()));
    *shared = Arc::downgrade(&cluster);
    cluster
}

/// A test that failed mid-change may leave the cluster settling, or the
/// mutex poisoned; each test starts from a settled cluster either way.
fn settled(cluster: &Mutex<LocalCluster>) -> MutexGuard<'_, LocalCluster> {
    let guard = cluster.lock().unwrap_or_else(PoisonError::into_inner);
    guard.wait_ok(SETTLE).unwrap();
    guard
}

fn connect(addr: &str) -> redis::Connection {
    let url = if addr.starts_with("redis://") {
        addr.to_owned()
    } else {
        format!("redis://{addr}")
    };
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn keyslot(cluster: &LocalCluster, key: &str) -> u16 {
    let mut conn = connect(&cluster.seeds()[0]);
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut conn)
        .unwrap()
}

fn set(conn: &mut redis::Connection, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(conn)
        .unwrap();
}

fn get(conn: &mut redis::Connection, key: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query(conn)
}

fn acks(conn: &mut redis::Connection, replicas: usize, timeout_ms: u64) -> usize {
    redis::cmd("WAIT")
        .arg(replicas)
        .arg(timeout_ms)
        .query(conn)
        .unwrap()
}

fn role(addr: &str) -> String {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut connect(addr))
        .unwrap();
    let line = info.lines().find(|l| l.starts_with("role:")).unwrap();
    line["role:".len()..].to_owned()
}

#[test]
fn a_cluster_spreads_all_slots_over_its_primaries() {
    let shared = shared_cluster();
    let cluster = settled(&shared);
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    assert_eq!(cluster.primary_of_slot(0), primaries[0]);
    let seeds = cluster.seeds();
    assert_eq!(seeds.len(), 6);
    assert!(
        primaries
            .iter()
            .all(|p| seeds.contains(&format!("redis://{p}")))
    );
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut connect(&seeds[5]))
        .unwrap();
    for field in [
        "cluster_state:ok",
        "cluster_slots_assigned:16384",
        "cluster_size:3",
        "cluster_known_nodes:6",
    ] {
        assert!(info.lines().any(|l| l == field), "{field} in {info}");
    }
}

#[test]
fn a_migrated_slot_keeps_its_keys_and_changes_primary() {
    let shared = shared_cluster();
    let cluster = settled(&shared);
    let slot = keyslot(&cluster, "{migrated}");
    let source = cluster.primary_of_slot(slot);
    let mut from = connect(&source);
    // More keys than one GETKEYSINSLOT batch.
    for i in 0..150 {
        set(&mut from, &format!("{{migrated}}:{i}"), &i.to_string());
    }
    let target = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != source)
        .unwrap();
    cluster.migrate_slot(slot, &target).unwrap();
    assert_eq!(cluster.primary_of_slot(slot), target);
    let mut to = connect(&target);
    for i in 0..150 {
        let value = get(&mut to, &format!("{{migrated}}:{i}")).unwrap();
        assert_eq!(value, Some(i.to_string()));
    }
    let moved = get(&mut from, "{migrated}:0").unwrap_err();
    assert_eq!(moved.kind(), ErrorKind::Server(ServerErrorKind::Moved));
}

#[test]
fn failover_promotes_a_replica_that_has_the_data() {
    let shared = shared_cluster();
    let cluster = settled(&shared);
    let slot = keyslot(&cluster, "{failover}");
    let old = cluster.primary_of_slot(slot);
    let mut conn = connect(&old);
    set(&mut conn, "{failover}", "kept");
    let new = cluster.failover(&old).unwrap();
    assert_ne!(new, old);
    assert_eq!(cluster.primary_of_slot(slot), new);
    assert_eq!(
        get(&mut connect(&new), "{failover}").unwrap().as_deref(),
        Some("kept")
    );
    assert_eq!(role(&old), "slave");
}

#[test]
fn failover_of_a_paused_primary_is_forced_and_it_rejoins_as_a_replica() {
    let shared = shared_cluster();
    let cluster = settled(&shared);
    let slot = keyslot(&cluster, "{paused}");
    let old = cluster.primary_of_slot(slot);
    let mut conn = connect(&old);
    set(&mut conn, "{paused}", "kept");
    assert_eq!(acks(&mut conn, 1, 1000), 1);
    cluster.pause_node(&old);
    let new = cluster.failover(&old).unwrap();
    assert_eq!(cluster.primary_of_slot(slot), new);
    assert_eq!(
        get(&mut connect(&new), "{paused}").unwrap().as_deref(),
        Some("kept")
    );
    cluster.resume_node(&old);
    cluster.wait_ok(SETTLE).unwrap();
    assert_eq!(role(&old), "slave");
}

#[test]
fn failover_refuses_a_node_that_is_not_a_primary() {
    let shared = shared_cluster();
    let cluster = settled(&shared);
    let primaries = cluster.primaries();
    let replica = cluster
        .seeds()
        .into_iter()
        .map(|url| url["redis://".len()..].to_owned())
        .find(|addr| !primaries.contains(addr))
        .unwrap();
    let err = cluster.failover(&replica).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn a_replica_acknowledges_writes_until_it_is_stopped() {
    let mut group = ReplicatedPrimary::start(1).unwrap();
    let mut primary = connect(&group.primary_url());
    set(&mut primary, "k", "v1");
    assert_eq!(acks(&mut primary, 1, 1000), 1);
    let mut replica = connect(&group.replica_urls()[0]);
    assert_eq!(get(&mut replica, "k").unwrap().as_deref(), Some("v1"));
    group.stop_replica(0);
    set(&mut primary, "k", "v2");
    assert_eq!(acks(&mut primary, 1, 200), 0);
}

#[test]
fn a_promoted_replica_takes_writes_and_the_old_primary_is_gone() {
    let mut group = ReplicatedPrimary::start(2).unwrap();
    let mut primary = connect(&group.primary_url());
    set(&mut primary, "k", "v1");
    assert_eq!(acks(&mut primary, 2, 1000), 2);
    let url = group.promote(1).unwrap();
    assert_eq!(url, group.replica_urls()[1]);
    assert!(!group.primary_mut().is_running());
    let mut promoted = connect(&url);
    set(&mut promoted, "k", "v2");
    assert_eq!(get(&mut promoted, "k").unwrap().as_deref(), Some("v2"));
}
