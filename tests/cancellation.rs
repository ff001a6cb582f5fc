//! Cancel safety of `lock()`: dropped at every millisecond from 0 to 30 ms
//! (before, during and after its scripts run, with and without a holder, on
//! 1 and 3 nodes, with a frozen node keeping scripts in flight, and with a
//! slow node still reloading its script when the fencing round is cut
//! short), it leaves no lock behind: the lock is free again at once rather
//! than after the TTL, and no lock key is left on any node. A waiter dropped
//! while it subscribes leaves no subscription behind.

mod common;

use std::time::{Duration, Instant};

use quorate::testkit::{FaultProxy, ServerGroup};
use quorate::{Mutex, Quorum};

/// Short, so a leftover key would expire soon, yet long enough that its
/// expiry cannot be mistaken for the undo (each round checks well within it).
const TTL: Duration = Duration::from_millis(500);

/// Cancels `lock()` at offsets 0, step, 2 step ... 30 ms, with the lock free
/// and then held by another client, and checks after each that nothing was
/// left behind on the `live` nodes.
async fn cancel_at_offsets(servers: &ServerGroup, q: &Quorum, live: &[usize], step: usize) {
    let other = Mutex::new(
        &common::builder(servers).build().await.unwrap(),
        "cancelled",
    )
    .with_ttl(TTL);
    let mutex = Mutex::new(q, "cancelled").with_ttl(TTL);
    for held in [false, true] {
        for ms in (0..=30).step_by(step) {
            let began = Instant::now();
            let holder = if held {
                Some(other.lock().await.unwrap())
            } else {
                None
            };
            if let Ok(won) = tokio::time::timeout(Duration::from_millis(ms), mutex.lock()).await {
                assert!(holder.is_none(), "{ms} ms: got a held lock");
                won.unwrap().release().await.unwrap();
            }
            if let Some(holder) = holder {
                holder.release().await.unwrap();
            }

            // Free within one TTL; a cancelled acquire that kept its key
            // would make this wait for the expiry.
            let fresh = other.lock_timeout(TTL).await.unwrap();
            fresh.release().await.unwrap();

            // Every key of this round was set after `began`, so one gone
            // before `began + TTL` was deleted, not expired.
            let clean = common::eventually(TTL.saturating_sub(began.elapsed()), || async {
                for &i in live {
                    if !common::lock_keys(servers, i).await.is_empty() {
                        return false;
                    }
                }
                true
            })
            .await;
            assert!(clean, "held={held}, {ms} ms: lock keys left behind");
            assert!(
                began.elapsed() < TTL,
                "held={held}, {ms} ms: round too slow to tell"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_lock_leaves_nothing_behind_on_one_node() {
    let (servers, q) = common::cluster(1).await;
    cancel_at_offsets(&servers, &q, &[0], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_lock_leaves_nothing_behind_on_three_nodes() {
    let (servers, q) = common::cluster(3).await;
    cancel_at_offsets(&servers, &q, &[0, 1, 2], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_lock_leaves_nothing_behind_with_a_paused_node() {
    let (servers, q) = common::cluster(3).await;
    // Scripts loaded before the freeze; afterwards every call to node 2
    // stays in flight until its per-node timeout.
    Mutex::new(&q, "cancelled")
        .lock()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    servers[2].pause();
    // Every other millisecond: with a frozen node each round waits out
    // several per-node timeouts (releases, undos, subscription acks).
    cancel_at_offsets(&servers, &q, &[0, 1], 2).await;
    servers[2].resume();
    // The frozen node runs its backlog in order: each acquire is followed
    // by the undo or release of the same owner.
    let clean = common::eventually(TTL, || async {
        common::lock_keys(&servers, 2).await.is_empty()
    })
    .await;
    assert!(clean, "lock keys left on the resumed node");
}

/// A lock dropped (or released) while a slow node is still reloading the
/// acquire script after a flush must not have its undo (or release)
/// overtake that acquire there: both wait for the acquire's answer. Here
/// the release script is loaded on that node, so an undo or release sent at
/// once would run first and the acquire land after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_dropped_or_released_while_a_node_reloads_leaves_no_key_there() {
    let servers = ServerGroup::start(3).unwrap();
    let mut proxies = Vec::new();
    for i in 0..3 {
        proxies.push(FaultProxy::start(servers[i].port()).await.unwrap());
    }
    let q = Quorum::builder()
        .nodes(proxies.iter().map(FaultProxy::url))
        .ttl(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let mutex = Mutex::new(&q, "reloading");
    let mut slow = common::conn(&servers, 2).await;
    for ms in 2..=8 {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut slow)
            .await
            .unwrap();
        let _: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(quorate::testkit::script_source("mutex_release").unwrap())
            .query_async(&mut slow)
            .await
            .unwrap();
        proxies[0].set_latency(Duration::from_millis(1), Duration::ZERO);
        proxies[1].set_latency(Duration::from_millis(1), Duration::ZERO);
        // Its two round trips of 14 ms (EVALSHA, then EVAL) fit the 50 ms
        // per-node timeout.
        proxies[2].set_latency(Duration::from_millis(7), Duration::ZERO);
        let attempt = tokio::time::timeout(Duration::from_millis(ms), mutex.lock()).await;
        if let Ok(guard) = attempt {
            guard.unwrap().release().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for p in &proxies {
            p.heal();
        }
        for i in 0..3 {
            let keys = common::lock_keys(&servers, i).await;
            assert!(
                keys.is_empty(),
                "dropped at {ms} ms: {keys:?} left on node {i}"
            );
        }
    }
}

/// A waiter dropped while its subscription is being confirmed unsubscribes:
/// nothing is left subscribed on the node afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_dropped_while_subscribing_leaves_no_subscription() {
    let servers = ServerGroup::start(1).unwrap();
    let holder_client = common::builder(&servers).build().await.unwrap();
    let holder = Mutex::new(&holder_client, "watched").lock().await.unwrap();
    let proxy = FaultProxy::start(servers[0].port()).await.unwrap();
    let q = Quorum::builder().node(proxy.url()).build().await.unwrap();
    // A 60 ms round trip: the subscription's confirmation takes longer than
    // the 50 ms a waiter gives it, so every drop below lands in or around
    // that wait.
    proxy.set_latency(Duration::from_millis(30), Duration::ZERO);
    let mutex = Mutex::new(&q, "watched");
    for ms in (40..=160).step_by(10) {
        let _ = tokio::time::timeout(Duration::from_millis(ms), mutex.lock()).await;
        let gone = common::eventually(Duration::from_secs(1), || async {
            common::subscribers(&servers, 0, "{watched}:ready").await == 0
        })
        .await;
        assert!(gone, "dropped at {ms} ms: still subscribed");
    }
    holder.release().await.unwrap();
}
