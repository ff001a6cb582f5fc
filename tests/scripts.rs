//! Servers that forget the Lua scripts: `SCRIPT FLUSH` between calls and
//! while tasks contend, and restarts (which come back empty, without
//! scripts), must be invisible to callers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use quorate::Mutex;
use quorate::testkit::ServerGroup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_between_calls_is_invisible() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        let mutex = Mutex::new(&q, "flushed");
        // Every script (acquire, fencing, extend, release) meets a flushed
        // cache at least once.
        for _ in 0..3 {
            common::script_flush_all(&servers).await;
            let guard = mutex.lock().await.unwrap();
            common::script_flush_all(&servers).await;
            guard.extend(Duration::from_secs(5)).await.unwrap();
            common::script_flush_all(&servers).await;
            assert!(mutex.try_lock().await.unwrap().is_none());
            common::script_flush_all(&servers).await;
            guard.release().await.unwrap();
        }
        // A waiter that retries on a flushed server.
        let guard = mutex.lock().await.unwrap();
        let waiter = tokio::spawn({
            let mutex = mutex.clone();
            async move { mutex.lock_timeout(Duration::from_secs(2)).await }
        });
        common::waiter_subscribed(&servers, "flushed").await;
        common::script_flush_all(&servers).await;
        guard.release().await.unwrap();
        waiter.await.unwrap().unwrap().release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_while_tasks_contend_is_invisible() {
    let servers = ServerGroup::start(3).unwrap();
    let q = common::builder(&servers).build().await.unwrap();
    let other = common::builder(&servers).build().await.unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let flusher = tokio::spawn({
        let conns = common::conns(&servers).await;
        let done = done.clone();
        async move {
            let mut flushes = 0;
            while !done.load(Ordering::SeqCst) {
                for mut c in conns.clone() {
                    let flush = redis::cmd("SCRIPT")
                        .arg("FLUSH")
                        .query_async::<()>(&mut c)
                        .await;
                    // Fails only once a failed test has dropped the servers;
                    // the count below shows the flushes did happen.
                    if flush.is_err() {
                        return flushes;
                    }
                }
                flushes += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            flushes
        }
    });
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let mutex = Mutex::new(if t % 2 == 0 { &q } else { &other }, "busy");
            let counter = counter.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    let guard = mutex.lock().await.unwrap();
                    let v = counter.load(Ordering::SeqCst);
                    guard.extend(Duration::from_millis(800)).await.unwrap();
                    counter.store(v + 1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let flushes = flusher.await.unwrap();
    assert_eq!(counter.load(Ordering::SeqCst), 160);
    // The flushes really interleaved with the work.
    assert!(flushes > 10, "only {flushes} flushes");
}

#[tokio::test]
async fn first_lock_after_a_flush_lands_on_every_node() {
    let (servers, q) = common::cluster(3).await;
    let mutex = Mutex::new(&q, "everywhere");
    for round in 0..20 {
        common::script_flush_all(&servers).await;
        let guard = mutex.lock().await.unwrap();
        // A majority decides, but the script went to every node, and a node
        // without the key leaves the lease one failure away from being lost.
        // The slowest node gets time to answer before its key is looked for.
        let everywhere = common::eventually(Duration::from_millis(500), || async {
            let mut all = true;
            for i in 0..3 {
                all &= common::get(&servers, i, "everywhere").await.is_some();
            }
            all
        })
        .await;
        let mut present = Vec::new();
        for i in 0..3 {
            present.push(common::get(&servers, i, "everywhere").await.is_some());
        }
        assert!(everywhere, "round {round}: key on nodes {present:?}");
        guard.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restart_is_invisible_on_three_nodes() {
    let mut servers = ServerGroup::start(3).unwrap();
    // A restarted node sits out max_ttl (restart quarantine); short TTLs
    // keep the rotation through the nodes quick.
    let q = common::builder(&servers)
        .ttl(Duration::from_millis(500))
        .max_ttl(Duration::from_millis(800))
        .build()
        .await
        .unwrap();
    let mutex = Mutex::new(&q, "restarted");
    for victim in 0..3 {
        common::blocking(|| servers[victim].restart().unwrap());
        // The restarted node (new connection, no scripts) takes part again
        // while callers see nothing.
        for _ in 0..10 {
            let guard = mutex.lock().await.unwrap();
            assert!(mutex.try_lock().await.unwrap().is_none());
            guard.extend(Duration::from_millis(800)).await.unwrap();
            guard.release().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_held_across_a_node_restart_stays_extendable() {
    let mut servers = ServerGroup::start(3).unwrap();
    // A restarted node sits out max_ttl (restart quarantine); short TTLs
    // keep the rotation through the nodes quick.
    let q = common::builder(&servers)
        .ttl(Duration::from_millis(500))
        .max_ttl(Duration::from_millis(800))
        .build()
        .await
        .unwrap();
    let mutex = Mutex::new(&q, "across");
    for victim in 0..3 {
        let guard = mutex.lock().await.unwrap();
        // Taken on all three nodes, the lease keeps a majority when one
        // comes back empty.
        common::blocking(|| servers[victim].restart().unwrap());
        guard.extend(Duration::from_millis(800)).await.unwrap();
        assert!(guard.is_valid());
        guard.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restart_between_locks_is_invisible_on_one_node() {
    let mut servers = ServerGroup::start(1).unwrap();
    // A restarted node sits out max_ttl (restart quarantine); a short one
    // keeps that short.
    let q = common::builder(&servers)
        .ttl(Duration::from_millis(500))
        .max_ttl(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let mutex = Mutex::new(&q, "restarted");
    for _ in 0..3 {
        mutex.lock().await.unwrap().release().await.unwrap();
        common::blocking(|| servers[0].restart().unwrap());
        // A waiting lock rides out the broken connection, the missing
        // scripts and the quarantine.
        let guard = mutex.lock_timeout(Duration::from_secs(2)).await.unwrap();
        guard.release().await.unwrap();
    }
}
