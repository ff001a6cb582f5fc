//! The countdown latch on real servers, on one node and on three nodes with
//! one down: it opens after `count` distinct count-downs and not before,
//! repeated ids count once, it stays open, waiting is bounded and woken by
//! notification, and bad input and mismatched counts fail with typed errors
//! (bad input before any I/O).

mod common;

use std::time::{Duration, Instant};

use quorate::{Error, Latch};

/// How long a waiter may take to notice an open latch on a busy 2-core box.
const SOON: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_after_count_distinct_count_downs_and_not_before() {
    for setup in common::one_node_and_three_with_one_down().await {
        let latch = Latch::new(&setup.quorum, "boot", 3);
        // The waiter is another process: its own client.
        let waiter = {
            let latch = Latch::new(&setup.fast_client().await, "boot", 3);
            tokio::spawn(async move { latch.wait().await })
        };
        latch.count_down_as("shard-1").await.unwrap();
        latch.count_down_as("shard-2").await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!waiter.is_finished(), "{}: open after 2 of 3", setup.label);
        assert_eq!(latch.count().await.unwrap(), 1);
        latch.count_down().await.unwrap();
        tokio::time::timeout(SOON, waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(latch.count().await.unwrap(), 0, "{}", setup.label);
    }
}

#[tokio::test]
async fn a_repeated_count_down_with_the_same_id_counts_once() {
    for setup in common::one_node_and_three_with_one_down().await {
        let latch = Latch::new(&setup.quorum, "retried", 2);
        for _ in 0..3 {
            latch.count_down_as("shard-1").await.unwrap();
        }
        // Even from another client: the id, not the caller, is what counts.
        let other = Latch::new(&setup.fast_client().await, "retried", 2);
        other.count_down_as("shard-1").await.unwrap();
        assert_eq!(latch.count().await.unwrap(), 1, "{}", setup.label);
        let err = latch
            .wait_timeout(Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{}: {err:?}", setup.label);
        other.count_down_as("shard-2").await.unwrap();
        assert_eq!(latch.count().await.unwrap(), 0);
        latch.wait_timeout(SOON).await.unwrap();
    }
}

#[tokio::test]
async fn count_reports_what_is_missing_and_zero_once_open() {
    for setup in common::one_node_and_three_with_one_down().await {
        let latch = Latch::new(&setup.quorum, "gauge", 3);
        assert_eq!(latch.count().await.unwrap(), 3, "{}", setup.label);
        for missing in [2, 1, 0] {
            latch.count_down().await.unwrap();
            assert_eq!(latch.count().await.unwrap(), missing, "{}", setup.label);
        }
        // Count-downs past the count change nothing.
        latch.count_down().await.unwrap();
        assert_eq!(latch.count().await.unwrap(), 0);
        assert_eq!(latch.name(), "gauge");
    }
}

#[tokio::test]
async fn wait_timeout_times_out_while_closed() {
    for setup in common::one_node_and_three_with_one_down().await {
        let latch = Latch::new(&setup.quorum, "closed", 2);
        latch.count_down().await.unwrap();
        let wait = Duration::from_millis(200);
        let started = Instant::now();
        let err = latch.wait_timeout(wait).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, Error::Timeout(_)), "{}: {err:?}", setup.label);
        assert!(took >= wait, "{}: gave up after {took:?}", setup.label);
        assert!(
            took < wait + Duration::from_secs(1),
            "{}: {took:?}",
            setup.label
        );
        // Timing out changed nothing.
        assert_eq!(latch.count().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn once_open_it_stays_open() {
    for setup in common::one_node_and_three_with_one_down().await {
        let latch = Latch::new(&setup.quorum, "opened", 2);
        latch.count_down().await.unwrap();
        latch.count_down().await.unwrap();
        latch.wait().await.unwrap();
        // Later waiters, here or in another process, pass at once.
        let later = Latch::new(&setup.fast_client().await, "opened", 2);
        for latch in [&latch, &later] {
            let started = Instant::now();
            latch.wait().await.unwrap();
            latch.wait_timeout(Duration::from_millis(50)).await.unwrap();
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(500),
                "{}: {took:?}",
                setup.label
            );
        }
        latch.count_down().await.unwrap();
        assert_eq!(later.count().await.unwrap(), 0, "{}", setup.label);
        later.wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_woken_by_notification() {
    for setup in common::one_node_and_three_with_one_down().await {
        // Every backoff is a full second, so a waiter that returns much
        // sooner after the last count-down was woken by its message.
        let slow = common::builder(&setup.servers)
            .retry(Duration::from_secs(1), Duration::ZERO)
            .build()
            .await
            .unwrap();
        let latch = Latch::new(&setup.quorum, "wake", 2);
        latch.count_down_as("first").await.unwrap();
        let waiter = {
            let latch = Latch::new(&slow, "wake", 2);
            tokio::spawn(async move {
                latch.wait().await.unwrap();
                Instant::now()
            })
        };
        common::subscribed_on_live_servers(&setup.servers, "{wake}:ready").await;
        // Let the waiter look once more and fall asleep.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        let opened = Instant::now();
        latch.count_down_as("last").await.unwrap();
        let woke = tokio::time::timeout(SOON, waiter).await.unwrap().unwrap();
        let lag = woke.saturating_duration_since(opened);
        assert!(
            lag < Duration::from_millis(300),
            "{}: woke {lag:?} after the last count-down",
            setup.label
        );
    }
}

#[tokio::test]
async fn another_count_for_the_same_name_is_a_config_mismatch() {
    for setup in common::one_node_and_three_with_one_down().await {
        let latch = Latch::new(&setup.quorum, "sized", 3);
        latch.count_down().await.unwrap();
        let other = Latch::new(&setup.quorum, "sized", 4);
        let mismatch = |r: Result<(), Error>| match r {
            Err(Error::ConfigMismatch { resource, .. }) => assert_eq!(resource, "sized"),
            r => panic!("{}: expected ConfigMismatch, got {r:?}", setup.label),
        };
        mismatch(other.count_down().await);
        mismatch(other.count_down_as("shard-9").await);
        mismatch(other.count().await.map(drop));
        // Waiting must not go on over an error that retrying cannot fix.
        let waited = tokio::time::timeout(SOON, other.wait()).await.unwrap();
        mismatch(waited);
        mismatch(other.wait_timeout(Duration::from_secs(5)).await);
        // The latch as created is untouched.
        assert_eq!(latch.count().await.unwrap(), 2, "{}", setup.label);
    }
}

#[tokio::test]
async fn bad_input_is_refused_before_any_io() {
    for setup in common::one_node_and_three_with_one_down().await {
        let q = &setup.quorum;
        let latch = Latch::new(q, "strict", 2);
        // Closed, so that a refused wait that did wait would hang.
        latch.count_down().await.unwrap();
        let before = common::dbsizes(&setup.servers).await;

        for count in [0, Latch::MAX_COUNT + 1] {
            let bad = Latch::new(q, "strict", count);
            assert_eq!(common::refused_at_once(bad.count_down()).await, "count");
            assert_eq!(
                common::refused_at_once(bad.count_down_as("a")).await,
                "count"
            );
            assert_eq!(common::refused_at_once(bad.wait()).await, "count");
            let long = Duration::from_secs(30);
            assert_eq!(
                common::refused_at_once(bad.wait_timeout(long)).await,
                "count"
            );
            assert_eq!(common::refused_at_once(bad.count()).await, "count");
        }
        assert_eq!(common::refused_at_once(latch.count_down_as("")).await, "id");
        let huge = "x".repeat(1025);
        assert_eq!(
            common::refused_at_once(latch.count_down_as(&huge)).await,
            "id"
        );
        let unnamed = Latch::new(q, "", 2);
        assert_eq!(common::refused_at_once(unnamed.count_down()).await, "name");
        assert_eq!(common::refused_at_once(unnamed.wait()).await, "name");

        assert_eq!(
            common::dbsizes(&setup.servers).await,
            before,
            "{}",
            setup.label
        );
        assert_eq!(latch.count().await.unwrap(), 1);
    }
}
