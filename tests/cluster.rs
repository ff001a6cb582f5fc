//! Redis Cluster nodes, on real local clusters (`redis-cli --cluster
//! create`): every primitive, the spread of resources over the primaries,
//! a slot moved while locks are held and waited on, a primary killed, a
//! failover, and a quorum of three clusters with one down.
//!
//! The tests that leave a cluster as they found it share one; those that
//! break a cluster start their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use quorate::testkit::{LocalCluster, RedisServer};
use quorate::{Barrier, Config, Error, Latch, Mutex, Quorum, ReentrantLock, Semaphore};

/// How long a waiter may take to notice a change on a busy 2-core box.
const SOON: Duration = Duration::from_secs(2);

/// The healthy cluster the non-destructive tests share while they
/// overlap; the last of them drops it (a plain `static` is never dropped,
/// and its servers would outlive the run).
static SHARED: StdMutex<Weak<StdMutex<LocalCluster>>> = StdMutex::new(Weak::new());

fn shared() -> Arc<StdMutex<LocalCluster>> {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(StdMutex::new(LocalCluster::start(3, 0).unwrap()));
    *shared = Arc::downgrade(&cluster);
    cluster
}

fn lock(cluster: &StdMutex<LocalCluster>) -> MutexGuard<'_, LocalCluster> {
    cluster.lock().unwrap_or_else(PoisonError::into_inner)
}

fn seeds(cluster: &StdMutex<LocalCluster>) -> Vec<String> {
    lock(cluster).seeds()
}

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A task that waits for `mutex`, releases it, and returns when it got it.
fn waiter(mutex: &Mutex) -> tokio::task::JoinHandle<Instant> {
    let mutex = mutex.clone();
    tokio::spawn(async move {
        let guard = mutex.lock().await.unwrap();
        let got = Instant::now();
        guard.release().await.unwrap();
        got
    })
}

/// `CLUSTER KEYSLOT key`, asked of any node.
async fn slot_of(seed: &str, key: &str) -> u16 {
    let mut c = connection(seed).await;
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_primitive_works_on_a_cluster_node() {
    let shared = shared();
    let q = Quorum::connect_cluster(seeds(&shared)).await.unwrap();
    assert_eq!(q.node_count(), 1);

    let mutex = Mutex::new(&q, "every:mutex");
    let guard = mutex.lock().await.unwrap();
    let first = guard.fencing_token().await.unwrap();
    assert!(mutex.try_lock().await.unwrap().is_none());
    guard.release().await.unwrap();
    let again = mutex.lock().await.unwrap();
    assert!(again.fencing_token().await.unwrap() > first);
    again.release().await.unwrap();

    let fair = Mutex::new(&q, "every:fair").fair();
    fair.lock().await.unwrap().release().await.unwrap();

    let sem = Semaphore::new(&q, "every:sem", 2);
    let a = sem.acquire().await.unwrap();
    let b = sem.acquire().await.unwrap();
    assert!(sem.try_acquire().await.unwrap().is_none());
    a.release().await.unwrap();
    b.release().await.unwrap();

    let lock = ReentrantLock::new(&q, "every:reentrant", "owner-1");
    let outer = lock.lock().await.unwrap();
    let inner = lock.lock().await.unwrap();
    inner.release().await.unwrap();
    let other = ReentrantLock::new(&q, "every:reentrant", "owner-2");
    assert!(other.try_lock().await.unwrap().is_none());
    outer.release().await.unwrap();
    other.lock().await.unwrap().release().await.unwrap();

    let latch = Latch::new(&q, "every:latch", 2);
    latch.count_down_as("a").await.unwrap();
    assert_eq!(latch.count().await.unwrap(), 1);
    latch.count_down_as("b").await.unwrap();
    latch.wait_timeout(SOON).await.unwrap();

    let barrier = Barrier::new(&q, "every:barrier", 2);
    let other = barrier.clone();
    let party = tokio::spawn(async move { other.wait_timeout(SOON).await });
    let mine = barrier.wait_timeout(SOON).await.unwrap();
    let theirs = party.await.unwrap().unwrap();
    assert_ne!(mine.is_leader(), theirs.is_leader());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_by_a_sharded_message_not_by_its_retry() {
    let shared = shared();
    // Retries a second apart: a handoff well under that was a push.
    let slow_retries = Config {
        retry_delay: Duration::from_secs(1),
        max_retry_delay: Duration::from_secs(1),
        ..Config::default()
    };
    let q = Quorum::builder()
        .config(slow_retries)
        .cluster_node(seeds(&shared))
        .build()
        .await
        .unwrap();
    let mutex = Mutex::new(&q, "woken");
    let held = mutex.lock().await.unwrap();
    let waiting = waiter(&mutex);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released = Instant::now();
    held.release().await.unwrap();
    let got = waiting.await.unwrap();
    assert!(
        got - released < Duration::from_millis(500),
        "{:?}",
        got - released
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_lock_names_spread_a_third_to_each_primary() {
    let shared = shared();
    let seeds = seeds(&shared);
    let mut slots = Vec::new();
    for i in 0..1000 {
        slots.push(slot_of(&seeds[0], &format!("spread:{i}")).await);
    }
    let mut per_primary: HashMap<String, usize> = HashMap::new();
    for slot in slots {
        let primary = lock(&shared).primary_of_slot(slot);
        *per_primary.entry(primary).or_default() += 1;
    }
    assert_eq!(per_primary.len(), 3, "{per_primary:?}");
    for (primary, n) in &per_primary {
        assert!((317..=350).contains(n), "{primary} holds {n} of 1000");
    }

    // And the locks land where the slots say.
    let q = Quorum::connect_cluster(&seeds).await.unwrap();
    let mut guards = Vec::new();
    for i in 0..1000 {
        let guard = Mutex::new(&q, format!("spread:{i}")).lock().await.unwrap();
        guards.push(guard);
    }
    for (primary, n) in &per_primary {
        let mut c = connection(&format!("redis://{primary}")).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("spread:*")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(keys.len(), *n, "{primary}");
    }
    for guard in guards {
        guard.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_while_locks_are_held_and_waited_on_loses_nothing() {
    let shared = shared();
    let seeds = seeds(&shared);
    let q = Quorum::builder()
        .cluster_node(&seeds)
        .ttl(Duration::from_millis(600))
        .build()
        .await
        .unwrap();
    let name = "moving";
    let mutex = Mutex::new(&q, name);
    let held = mutex.lock().await.unwrap();
    let sem = Semaphore::new(&q, "{moving}:permits", 1);
    let permit = sem.acquire().await.unwrap();
    let waiting = waiter(&mutex);
    let slot = slot_of(&seeds[0], name).await;
    let from = lock(&shared).primary_of_slot(slot);
    let to = {
        let cluster = lock(&shared);
        let to = cluster
            .primaries()
            .into_iter()
            .find(|p| *p != from)
            .unwrap();
        cluster.migrate_slot(slot, &to).unwrap();
        to
    };
    assert_eq!(lock(&shared).primary_of_slot(slot), to);
    // Renewals (every 200 ms) ran across the move and after it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(held.is_valid() && permit.is_valid());
    held.extend(Duration::from_millis(600)).await.unwrap();
    let released = Instant::now();
    held.release().await.unwrap();
    let got = waiting.await.unwrap();
    assert!(got - released < SOON, "{:?}", got - released);
    permit.release().await.unwrap();
    // Put the slot back for the other tests' expectations of the spread.
    lock(&shared).migrate_slot(slot, &from).unwrap();
}

/// A name whose slot `primary` serves.
async fn name_on(cluster: &LocalCluster, primary: &str, prefix: &str) -> String {
    let seed = cluster.seeds()[0].clone();
    for i in 0.. {
        let name = format!("{prefix}:{i}");
        if cluster.primary_of_slot(slot_of(&seed, &name).await) == primary {
            return name;
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_its_slots_in_bounded_time_and_spares_the_others() {
    let mut cluster = LocalCluster::start(3, 0).unwrap();
    let q = Quorum::connect_cluster(cluster.seeds()).await.unwrap();
    let primaries = cluster.primaries();
    let doomed = name_on(&cluster, &primaries[0], "doomed").await;
    let spared = name_on(&cluster, &primaries[1], "spared").await;
    cluster.kill_node(&primaries[0]);

    let started = Instant::now();
    let failed = Mutex::new(&q, &doomed).try_lock().await;
    assert!(matches!(failed, Err(Error::Quorum(_))), "{failed:?}");
    assert!(started.elapsed() < SOON, "{:?}", started.elapsed());

    for _ in 0..20 {
        let guard = Mutex::new(&q, &spared).lock().await.unwrap();
        guard.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_sits_the_cluster_node_out_for_the_quarantine_then_it_grants_again() {
    let cluster = LocalCluster::start(3, 1).unwrap();
    let q = Quorum::builder()
        .cluster_node(cluster.seeds())
        .ttl(Duration::from_millis(200))
        .max_ttl(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let primary = cluster.primaries()[0].clone();
    let name = name_on(&cluster, &primary, "failover").await;
    let mutex = Mutex::new(&q, &name);
    mutex.lock().await.unwrap().release().await.unwrap();

    cluster.failover(&primary).unwrap();
    // The shard watch sees the new primary within a second or so.
    let mut refused = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !refused {
        refused = matches!(mutex.try_lock().await, Err(Error::Quorum(_)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "grants kept counting after the failover");
    // Then, after max_ttl and drift, it counts again.
    let guard = mutex
        .lock_timeout(Duration::from_secs(4))
        .await
        .expect("grants count again after the quarantine");
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_three_clusters_locks_with_one_down() {
    let mut clusters: Vec<LocalCluster> =
        (0..3).map(|_| LocalCluster::start(3, 0).unwrap()).collect();
    // Clusters started seconds apart look restarted at first contact (see
    // the README's restart safety); this test is about one that is down.
    let mut builder = Quorum::builder().restart_quarantine(false);
    for c in &clusters {
        builder = builder.cluster_node(c.seeds());
    }
    let q = builder.build().await.unwrap();
    assert_eq!((q.node_count(), q.majority()), (3, 2));
    let mutex = Mutex::new(&q, "three");
    let guard = mutex.lock().await.unwrap();
    let token = guard.fencing_token().await.unwrap();
    guard.release().await.unwrap();

    for primary in clusters[2].primaries() {
        clusters[2].kill_node(&primary);
    }
    for _ in 0..5 {
        let guard = mutex.lock().await.unwrap();
        assert!(guard.fencing_token().await.unwrap() > token);
        assert!(mutex.try_lock().await.unwrap().is_none());
        guard.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_given_as_a_standalone_server_is_refused() {
    let shared = shared();
    let seed = seeds(&shared).remove(0);
    let e = Quorum::connect([seed]).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidConfig { field: "nodes", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("cluster_node"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_beside_standalone_servers_votes_once() {
    let shared = shared();
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start().unwrap()).collect();
    let q = Quorum::builder()
        .restart_quarantine(false)
        .node(servers[0].url())
        .cluster_node(seeds(&shared))
        .node(servers[1].url())
        .build()
        .await
        .unwrap();
    assert_eq!(q.node_count(), 3);
    let mutex = Mutex::new(&q, "mixed");
    let guard = mutex.lock().await.unwrap();
    assert!(mutex.try_lock().await.unwrap().is_none());
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_flushed_on_every_shard_are_sent_again_on_each() {
    let shared = shared();
    let seeds = seeds(&shared);
    let q = Quorum::connect_cluster(&seeds).await.unwrap();
    let primaries = lock(&shared).primaries();
    for primary in &primaries {
        let mut c = connection(&format!("redis://{primary}")).await;
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    // Names on every shard: each one's first script meets NOSCRIPT there.
    for primary in &primaries {
        let name = {
            let mut found = None;
            for i in 0.. {
                let name = format!("flushed:{i}");
                let slot = slot_of(&seeds[0], &name).await;
                if lock(&shared).primary_of_slot(slot) == *primary {
                    found = Some(name);
                    break;
                }
            }
            found.unwrap()
        };
        let sem = Semaphore::new(&q, name, 1);
        let permit = sem.acquire().await.unwrap();
        permit.release().await.unwrap();
    }
}
