//! Cancel safety of `lock()`: dropped at every millisecond from 0 to 30 ms
//! (before, during and after its scripts run, with and without a holder, on
//! 1 and 3 nodes, and with a frozen node keeping scripts in flight), it
//! leaves no lock behind: the lock is free again at once rather than after
//! the TTL, and no lock key is left on any node.

mod common;

use std::time::{Duration, Instant};

use quorate::testkit::ServerGroup;
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
