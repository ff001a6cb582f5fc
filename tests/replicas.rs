//! Primaries with replicas and `wait_replicas`: writes confirmed, a
//! replica stopped, a replica promoted; and a primary that Sentinel fails
//! over.

use std::time::{Duration, Instant};

use quorate::testkit::{LocalSentinel, ReplicatedPrimary};
use quorate::{Error, Mutex, Quorum, Semaphore};

const WAIT: Duration = Duration::from_millis(200);

async fn exists(url: &str, key: &str) -> bool {
    let mut c = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut c)
        .await
        .unwrap()
        == 1
}

async fn waiting_quorum(url: &str) -> Quorum {
    Quorum::builder()
        .node(url)
        .wait_replicas(1, WAIT)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_replicas_confirm_grant_and_extend() {
    let group = ReplicatedPrimary::start(1).unwrap();
    let q = waiting_quorum(&group.primary_url()).await;
    let guard = Mutex::new(&q, "confirmed").lock().await.unwrap();
    guard.extend(Duration::from_secs(5)).await.unwrap();
    assert!(exists(&group.replica_urls()[0], "confirmed").await);
    guard.release().await.unwrap();
    let permit = Semaphore::new(&q, "confirmed:sem", 2)
        .acquire()
        .await
        .unwrap();
    permit.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_fails_acquires_cleanly_and_leaves_no_key() {
    let mut group = ReplicatedPrimary::start(1).unwrap();
    let q = waiting_quorum(&group.primary_url()).await;
    let held = Mutex::new(&q, "held").lock().await.unwrap();
    group.stop_replica(0);

    let failed = Mutex::new(&q, "unconfirmed").try_lock().await;
    match failed {
        Err(Error::Quorum(tally)) => {
            assert!(tally.to_string().contains("replicas confirmed"), "{tally}")
        }
        other => panic!("expected a quorum error, got {other:?}"),
    }
    assert!(!exists(&group.primary_url(), "unconfirmed").await);
    // An extension the replicas cannot confirm fails the same way.
    assert!(matches!(
        held.extend(Duration::from_secs(5)).await,
        Err(Error::Quorum(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_keeps_a_lease_the_replicas_confirmed() {
    let mut group = ReplicatedPrimary::start(1).unwrap();
    let q = waiting_quorum(&group.primary_url()).await;
    let mutex = Mutex::new(&q, "promoted").with_ttl(Duration::from_secs(10));
    let _held = mutex.lock().await.unwrap();
    let new_primary = group.promote(0).unwrap();

    let other = Quorum::connect([new_primary.as_str()]).await.unwrap();
    let contender = Mutex::new(&other, "promoted");
    assert!(contender.try_lock().await.unwrap().is_none());
}

#[tokio::test]
async fn a_replica_count_of_zero_is_refused_before_any_io() {
    let e = Quorum::builder()
        .node("redis://127.0.0.1:1")
        .wait_replicas(0, WAIT)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidConfig {
                field: "wait_replicas",
                ..
            }
        ),
        "{e}"
    );
}

fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_node_follows_a_failover_and_the_new_primary_sits_out_the_quarantine() {
    let group = ReplicatedPrimary::start(1).unwrap();
    let sentinel = LocalSentinel::start("locks", port(&group.primary_url())).unwrap();
    let builder = || {
        Quorum::builder()
            .sentinel_node([sentinel.url()], sentinel.service())
            .ttl(Duration::from_secs(3))
            .max_ttl(Duration::from_secs(3))
    };
    let confirming = builder().wait_replicas(1, WAIT).build().await.unwrap();
    let plain = builder().build().await.unwrap();
    assert!(
        confirming
            .node_addrs()
            .next()
            .unwrap()
            .starts_with("sentinel(locks@")
    );
    let _held = Mutex::new(&confirming, "confirmed")
        .auto_extend(false)
        .lock()
        .await
        .unwrap();
    let other = Mutex::new(&plain, "after-failover");
    other.lock().await.unwrap().release().await.unwrap();

    let promoted = sentinel.failover().unwrap();
    let new_primary = format!("redis://{promoted}");
    assert_eq!(new_primary, group.replica_urls()[0]);
    assert!(
        exists(&new_primary, "confirmed").await,
        "the replica confirmed it"
    );
    // Within a second the node asks the sentinel again and moves to the
    // new primary, a process it has not seen, whose grants count once
    // max_ttl and drift have passed since. (Until then the old primary,
    // not yet demoted, may still take writes: Sentinel's own window.)
    let failed_over = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deadline = failed_over + Duration::from_secs(10);
    let mut refused = false;
    let locked = loop {
        match other.try_lock().await {
            Ok(Some(guard)) => break guard,
            _ if Instant::now() < deadline => refused = true,
            other => panic!("the new primary never granted: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(refused, "granted at once by a promoted replica");
    assert!(
        failed_over.elapsed() >= Duration::from_secs(3),
        "{:?}",
        failed_over.elapsed()
    );
    assert!(exists(&new_primary, "after-failover").await);
    locked.release().await.unwrap();
}
