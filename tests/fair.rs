//! Fair mode on real nodes: waiters of several processes are served in
//! arrival order, a waiter for many permits is not overtaken, exclusion
//! still holds, a dead waiter blocks the line only until its entry expires,
//! and a waiter that gives up leaves the line.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quorate::testkit::ServerGroup;
use quorate::{Mutex, Quorum, Semaphore};
use redis::AsyncCommands;
use tokio::sync::Mutex as Log;

/// Clients as separate processes would be: one quorum each.
async fn clients(servers: &ServerGroup, n: usize) -> Vec<Quorum> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(common::fast_quorum(servers).await);
    }
    all
}

async fn arrival_order_across_clients(nodes: usize) {
    let servers = ServerGroup::start(nodes).unwrap();
    let clients = clients(&servers, 3).await;
    let holder = Mutex::new(&clients[0], "line").fair().lock().await.unwrap();
    let served = Arc::new(Log::new(Vec::new()));
    let mut waiters = Vec::new();
    for w in 0..6 {
        let mutex = Mutex::new(&clients[w % 3], "line").fair();
        let served = served.clone();
        waiters.push(tokio::spawn(async move {
            let guard = mutex.lock().await.unwrap();
            served.lock().await.push(w);
            tokio::time::sleep(Duration::from_millis(5)).await;
            guard.release().await.unwrap();
        }));
        // Each is in line on every node before the next arrives.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    holder.release().await.unwrap();
    for w in waiters {
        w.await.unwrap();
    }
    assert_eq!(*served.lock().await, vec![0, 1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_several_processes_get_the_lock_in_arrival_order_on_one_node() {
    arrival_order_across_clients(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_several_processes_get_the_lock_in_arrival_order_on_three_nodes() {
    arrival_order_across_clients(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_mode_keeps_mutual_exclusion_and_shares_the_lock_evenly() {
    let servers = ServerGroup::start(3).unwrap();
    let clients = clients(&servers, 2).await;
    let inside = Arc::new(AtomicU64::new(0));
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..8).map(|_| AtomicU64::new(0)).collect());
    let until = Instant::now() + Duration::from_secs(2);
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let mutex = Mutex::new(&clients[w % 2], "shared").fair();
            let (inside, counts) = (inside.clone(), counts.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let guard = mutex.lock().await.unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    counts[w].fetch_add(1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let counts: Vec<u64> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    let (least, most) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    assert!(least > 0, "{counts:?}");
    // Each worker goes back to the end of the line after its turn.
    assert!(most - least <= 2, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_for_several_permits_is_not_overtaken_by_later_smaller_ones() {
    let servers = ServerGroup::start(3).unwrap();
    let clients = clients(&servers, 2).await;
    let sem = |c: usize| Semaphore::new(&clients[c], "exports", 2).fair();
    let first = sem(0).acquire().await.unwrap();
    let second = sem(1).acquire().await.unwrap();
    let served = Arc::new(Log::new(Vec::new()));
    let big = {
        let (sem, served) = (sem(0), served.clone());
        tokio::spawn(async move {
            let permits = sem.acquire_many(2).await.unwrap();
            served.lock().await.push("two");
            permits.release().await.unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let small = {
        let (sem, served) = (sem(1), served.clone());
        tokio::spawn(async move {
            let permit = sem.acquire().await.unwrap();
            served.lock().await.push("one");
            permit.release().await.unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // One permit is free now, but the waiter ahead wants two.
    first.release().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(served.lock().await.is_empty());
    second.release().await.unwrap();
    big.await.unwrap();
    small.await.unwrap();
    assert_eq!(*served.lock().await, vec!["two", "one"]);
}

/// Puts a waiter in line on every node as a process would that then died:
/// first in line, its entry expiring in `ms`.
async fn dead_waiter(servers: &ServerGroup, name: &str, ms: u64) {
    for mut c in common::conns(servers).await {
        let now: (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
        let expiry = now.0 * 1000 + now.1 / 1000 + ms;
        let _: () = c
            .zadd(format!("{{{name}}}:queue"), "ghost", 1)
            .await
            .unwrap();
        let _: () = c
            .hset(
                format!("{{{name}}}:waiters"),
                "ghost",
                format!("{expiry},1"),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_waiter_blocks_the_line_only_until_its_entry_expires() {
    let servers = ServerGroup::start(3).unwrap();
    let q = common::fast_quorum(&servers).await;
    let mutex = Mutex::new(&q, "ghosted").fair();
    dead_waiter(&servers, "ghosted", 600).await;
    // Free, but someone is first in line.
    assert!(mutex.try_lock().await.unwrap().is_none());
    let started = Instant::now();
    let guard = mutex.lock_timeout(Duration::from_secs(5)).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    guard.release().await.unwrap();
    // The default mode does not queue.
    dead_waiter(&servers, "ghosted", 60_000).await;
    let plain = Mutex::new(&q, "ghosted").try_lock().await.unwrap();
    plain.unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_leaves_the_line_at_once() {
    let servers = ServerGroup::start(3).unwrap();
    let q = common::fast_quorum(&servers).await;
    let mutex = Mutex::new(&q, "impatient").fair();
    let guard = mutex.lock().await.unwrap();
    let timed_out = mutex.lock_timeout(Duration::from_millis(100)).await;
    assert!(matches!(timed_out, Err(quorate::Error::Timeout(_))));
    let dropped = tokio::time::timeout(Duration::from_millis(100), mutex.lock()).await;
    assert!(dropped.is_err());
    let empty = common::eventually(Duration::from_secs(1), || async {
        let mut all_empty = true;
        for mut c in common::conns(&servers).await {
            let queued: i64 = c.zcard("{impatient}:queue").await.unwrap();
            all_empty &= queued == 0;
        }
        all_empty
    })
    .await;
    assert!(empty, "the line still holds a waiter that gave up");
    guard.release().await.unwrap();
    // Nobody waits: the next caller gets it at once.
    mutex
        .try_lock()
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
}
