//! Redlock voting over independent nodes: a dead or frozen minority is
//! tolerated at a bounded cost, a lost majority fails with a tally and leaves
//! nothing behind, foreign keys decide votes without being touched, and
//! connect refuses node lists that would let one server vote twice.

mod common;

use std::time::{Duration, Instant};

use quorate::testkit::ServerGroup;
use quorate::{Error, Mutex, Quorum};

/// The default per-node timeout with the default 10 s TTL, min(50 ms, ttl/20),
/// plus slack for a shared 2-core machine.
const ONE_NODE_TIMEOUT: Duration = Duration::from_millis(50 + 250);

#[tokio::test]
async fn lock_survives_one_node_down() {
    let (mut servers, q) = common::cluster(3).await;
    servers[1].kill();
    let mutex = Mutex::new(&q, "survivor");
    let guard = mutex.lock().await.unwrap();
    assert!(guard.is_valid());
    assert!(mutex.try_lock().await.unwrap().is_none());
    guard.release().await.unwrap();
    let again = mutex.try_lock().await.unwrap().unwrap();
    again.release().await.unwrap();
}

#[tokio::test]
async fn lock_fails_with_a_tally_when_two_nodes_are_down() {
    let (mut servers, q) = common::cluster(3).await;
    servers[0].kill();
    servers[1].kill();
    let err = Mutex::new(&q, "minority")
        .lock_timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    let Error::Quorum(tally) = &err else {
        panic!("expected a quorum error, got {err:?}");
    };
    assert_eq!(tally.needed(), 2);
    assert!(tally.granted() < 2, "{tally}");
    assert!(!tally.expired());
    assert_eq!(tally.nodes().len(), 3);
    assert!(tally.failed() >= 1, "{tally}");
    assert!(err.to_string().contains("of 2 needed"), "{err}");
    // A vote the live node gave was undone before the error came back.
    assert!(common::lock_keys(&servers, 2).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_node_costs_at_most_one_node_timeout() {
    let (servers, q) = common::cluster(3).await;
    // Scripts loaded and connections open before the freeze, so what is
    // measured is the frozen node alone.
    Mutex::new(&q, "warm")
        .lock()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    servers[2].pause();

    let mutex = Mutex::new(&q, "frozen");
    let start = Instant::now();
    let guard = mutex.lock().await.unwrap();
    let lock = start.elapsed();

    let start = Instant::now();
    assert!(mutex.try_lock().await.unwrap().is_none());
    let busy = start.elapsed();

    let start = Instant::now();
    let free = Mutex::new(&q, "frozen-free")
        .try_lock()
        .await
        .unwrap()
        .unwrap();
    let try_free = start.elapsed();

    let start = Instant::now();
    guard.release().await.unwrap();
    let release = start.elapsed();
    free.release().await.unwrap();

    servers[2].resume();
    for (op, took) in [
        ("lock", lock),
        ("try_lock held", busy),
        ("try_lock free", try_free),
        ("release", release),
    ] {
        assert!(took < ONE_NODE_TIMEOUT, "{op} took {took:?}");
    }
    // Back to full strength after the resume.
    let guard = mutex.lock().await.unwrap();
    guard.release().await.unwrap();
}

/// For every set of nodes holding a foreign lock: try_lock succeeds exactly
/// when the free nodes are a majority, and never touches the foreign keys.
async fn foreign_subsets(n: usize) {
    let (servers, q) = common::cluster(n).await;
    let majority = n / 2 + 1;
    for mask in 0u32..(1 << n) {
        let name = format!("subset:{mask}");
        let held: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
        for &i in &held {
            assert!(common::set_nx_px(&servers, i, &name, "foreign", 10_000).await);
        }
        let expect = n - held.len() >= majority;
        let guard = Mutex::new(&q, &name).try_lock().await.unwrap();
        assert_eq!(guard.is_some(), expect, "n={n} foreign on {held:?}");
        let foreign_untouched = || async {
            for &i in &held {
                assert_eq!(
                    common::get(&servers, i, &name).await.as_deref(),
                    Some("foreign"),
                    "n={n} foreign on {held:?}: node {i}"
                );
                let pttl = common::pttl(&servers, i, &name).await;
                assert!(pttl > 0 && pttl <= 10_000, "node {i}: pttl {pttl}");
            }
        };
        foreign_untouched().await;
        if let Some(guard) = guard {
            guard.release().await.unwrap();
            foreign_untouched().await;
        }
        // Whether it won or lost, no quorate key is left on the free nodes.
        for i in (0..n).filter(|i| !held.contains(i)) {
            assert_eq!(common::get(&servers, i, &name).await, None, "node {i}");
        }
    }
}

#[tokio::test]
async fn try_lock_wins_exactly_when_free_nodes_are_a_majority_of_three() {
    foreign_subsets(3).await;
}

#[tokio::test]
async fn try_lock_wins_exactly_when_free_nodes_are_a_majority_of_five() {
    foreign_subsets(5).await;
}

fn assert_nodes_refused(result: quorate::Result<Quorum>) {
    match result {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "nodes"),
        other => panic!("expected InvalidConfig for nodes, got {other:?}"),
    }
}

#[tokio::test]
async fn connect_refuses_duplicate_urls() {
    let servers = ServerGroup::start(2).unwrap();
    let (a, b) = (servers[0].url(), servers[1].url());
    assert_nodes_refused(Quorum::connect([&a, &b, &a]).await);
}

#[tokio::test]
async fn connect_refuses_one_server_behind_two_urls() {
    let servers = ServerGroup::start(2).unwrap();
    // Same server, different address strings: only its run_id tells.
    let alias = format!("redis://localhost:{}", servers[0].port());
    assert_nodes_refused(Quorum::connect([servers[0].url(), alias, servers[1].url()]).await);
}

#[tokio::test]
async fn connect_refuses_an_even_node_count_unless_allowed() {
    let servers = ServerGroup::start(2).unwrap();
    assert_nodes_refused(Quorum::connect(servers.urls()).await);
    let q = common::builder(&servers)
        .allow_even_nodes(true)
        .build()
        .await
        .unwrap();
    // Two nodes need both.
    assert_eq!(q.majority(), 2);
    Mutex::new(&q, "even")
        .lock()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn connect_refuses_a_replica() {
    let servers = ServerGroup::start(2).unwrap();
    let mut replica = common::conn(&servers, 1).await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(servers[0].port())
        .query_async(&mut replica)
        .await
        .unwrap();
    assert_nodes_refused(Quorum::connect([servers[1].url()]).await);
    assert_nodes_refused(
        common::builder(&servers)
            .allow_even_nodes(true)
            .build()
            .await,
    );
}

#[tokio::test]
async fn connect_refuses_an_empty_node_list() {
    assert_nodes_refused(Quorum::connect(Vec::<String>::new()).await);
    assert_nodes_refused(Quorum::builder().build().await);
}

#[tokio::test]
async fn connect_needs_a_majority_of_reachable_nodes() {
    let mut servers = ServerGroup::start(3).unwrap();
    servers[0].kill();
    let q = common::builder(&servers).build().await.unwrap();
    Mutex::new(&q, "one-down")
        .lock()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    servers[1].kill();
    match common::builder(&servers).build().await {
        Err(Error::Connect { .. }) => {}
        other => panic!("expected a connect error, got {other:?}"),
    }
}
