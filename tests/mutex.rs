//! The mutex's core promises on 1 and 3 real nodes: mutual exclusion under
//! contention, non-blocking and bounded acquisition, handoff to waiters,
//! strictly increasing fencing tokens (also while nodes die and come back
//! empty), guard accessors, a Debug that hides the owner token, and release
//! on drop.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quorate::testkit::ServerGroup;
use quorate::{Error, Mutex};

const TASKS: usize = 16;
const SECTIONS: usize = 50;

/// Runs TASKS x SECTIONS read-sleep-write increments of a shared counter
/// under the lock, from two clients (as if two processes): any overlap of
/// two critical sections loses an increment.
async fn contend(n: usize) {
    let servers = ServerGroup::start(n).unwrap();
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(common::builder(&servers).build().await.unwrap());
    }
    // Plain load and store rather than fetch_add: the lock is what must
    // make read-modify-write safe.
    let counter = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let mutex = Mutex::new(&clients[t % clients.len()], "contended");
            let counter = counter.clone();
            tokio::spawn(async move {
                for _ in 0..SECTIONS {
                    let guard = mutex.lock().await.unwrap();
                    let v = counter.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    counter.store(v + 1, Ordering::SeqCst);
                    guard.release().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), (TASKS * SECTIONS) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_under_contention_on_one_node() {
    contend(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_under_contention_on_three_nodes() {
    contend(3).await;
}

#[tokio::test]
async fn try_lock_returns_none_while_held() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        let other = common::builder(&servers).build().await.unwrap();
        let guard = Mutex::new(&q, "held").try_lock().await.unwrap().unwrap();
        // Neither the same client nor another one gets it.
        assert!(Mutex::new(&q, "held").try_lock().await.unwrap().is_none());
        assert!(
            Mutex::new(&other, "held")
                .try_lock()
                .await
                .unwrap()
                .is_none()
        );
        guard.release().await.unwrap();
        let again = Mutex::new(&other, "held").try_lock().await.unwrap();
        again.unwrap().release().await.unwrap();
    }
}

#[tokio::test]
async fn lock_timeout_times_out_while_held_by_another() {
    for n in [1, 3] {
        let (_servers, q) = common::cluster(n).await;
        let guard = Mutex::new(&q, "held").lock().await.unwrap();
        let timeout = Duration::from_millis(200);
        let start = Instant::now();
        let err = Mutex::new(&q, "held")
            .lock_timeout(timeout)
            .await
            .unwrap_err();
        let took = start.elapsed();
        assert!(matches!(err, Error::Timeout(t) if t == timeout), "{err:?}");
        assert!(err.is_timeout());
        assert!(took >= timeout, "gave up early, after {took:?}");
        assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
        // The holder was not disturbed.
        assert!(guard.is_valid());
        guard.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_gets_the_lock_soon_after_release() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        let mutex = Mutex::new(&q, "handoff");
        let guard = mutex.lock().await.unwrap();
        let waiter = tokio::spawn({
            let mutex = mutex.clone();
            async move {
                let guard = mutex.lock().await.unwrap();
                (Instant::now(), guard)
            }
        });
        // Once subscribed, the waiter is woken by the release itself; the
        // default backoff (50-100 ms) and the 10 s TTL are far slower.
        common::waiter_subscribed(&servers, "handoff").await;
        let released = Instant::now();
        guard.release().await.unwrap();
        let (acquired, second) = waiter.await.unwrap();
        let handoff = acquired - released;
        assert!(handoff < Duration::from_secs(1), "handoff took {handoff:?}");
        second.release().await.unwrap();
    }
}

#[tokio::test]
async fn fencing_tokens_strictly_increase() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        // Two clients alternate, so the order is not one client's counter.
        let other = common::builder(&servers).build().await.unwrap();
        let mutexes = [Mutex::new(&q, "fenced"), Mutex::new(&other, "fenced")];
        let mut last = 0;
        for i in 0..100 {
            let guard = mutexes[i % 2].lock().await.unwrap();
            let token = guard.fencing_token().await.unwrap();
            assert!(token > last, "n={n} cycle {i}: token {token} after {last}");
            last = token;
            guard.release().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_stay_monotonic_while_nodes_come_and_go() {
    let mut servers = ServerGroup::start(3).unwrap();
    // A restarted node sits out max_ttl (restart quarantine), and the
    // per-node timeout (ttl / 20) is what a release waits for on a dead node:
    // a short TTL keeps both short.
    let q = common::builder(&servers)
        .ttl(Duration::from_millis(500))
        .max_ttl(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let mutex = Mutex::new(&q, "churn").with_ttl(Duration::from_millis(500));
    let mut last = 0;
    for cycle in 0..300 {
        // Restarted nodes come back empty: their fencing counters are gone
        // and only the clock floor keeps tokens increasing. A majority is up
        // at every step; from cycle 240 both live nodes are restarted ones.
        // Dead-node phases are short because each release waits one per-node
        // timeout for the dead node.
        match cycle {
            80 => servers[0].kill(),
            90 => common::blocking(|| servers[0].restart().unwrap()),
            160 => servers[2].kill(),
            170 => common::blocking(|| servers[2].restart().unwrap()),
            240 => servers[1].kill(),
            250 => common::blocking(|| servers[1].restart().unwrap()),
            _ => {}
        }
        let guard = mutex.lock().await.unwrap();
        let token = guard.fencing_token().await.unwrap();
        assert!(token > last, "cycle {cycle}: token {token} after {last}");
        last = token;
        guard.release().await.unwrap();
    }
}

#[tokio::test]
async fn guard_accessors_describe_the_lease() {
    let servers = ServerGroup::start(3).unwrap();
    let q = common::builder(&servers)
        .key_prefix("app:")
        .build()
        .await
        .unwrap();
    let ttl = Duration::from_secs(2);
    let before = Instant::now();
    let guard = Mutex::new(&q, "orders").with_ttl(ttl).lock().await.unwrap();
    let after = Instant::now();

    // The name is the caller's, without the prefix; the key has it.
    assert_eq!(guard.name(), "orders");
    common::majority_value(&servers, "app:orders").await;

    assert!(guard.is_valid());
    let remaining = guard.remaining();
    assert!(remaining <= ttl, "{remaining:?}");
    // Drift allowance: 1 % of the ttl plus 2 ms, and a little scheduling slack.
    assert!(
        remaining > ttl - Duration::from_millis(200),
        "{remaining:?}"
    );

    // The deadline counts from the first send, less the drift allowance.
    let deadline = guard.deadline();
    let drift = ttl.mul_f64(0.01) + Duration::from_millis(2);
    assert!(deadline >= before + ttl - drift, "deadline too early");
    assert!(deadline <= after + ttl, "deadline past the key's expiry");
    let now = Instant::now();
    let left = guard.remaining();
    assert!(left <= deadline - now && deadline - now - left < Duration::from_millis(50));
    guard.release().await.unwrap();
}

#[tokio::test]
async fn guard_debug_hides_the_owner_token() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        let guard = Mutex::new(&q, "secret").lock().await.unwrap();
        // Anyone who has the owner token can release someone else's lock.
        let token = common::majority_value(&servers, "secret").await;
        assert!(!token.is_empty());
        let debug = format!("{guard:?}");
        assert!(debug.contains("secret"), "{debug}");
        assert!(!debug.contains(&token), "{debug} shows {token}");
        let pretty = format!("{guard:#?}");
        assert!(!pretty.contains(&token), "{pretty} shows {token}");
        guard.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_guard_frees_the_lock_soon() {
    for n in [1, 3] {
        let (servers, q) = common::cluster(n).await;
        let mutex = Mutex::new(&q, "dropped");
        let guard = mutex.lock().await.unwrap();
        drop(guard);
        // The spawned release frees it long before the 10 s TTL would.
        let start = Instant::now();
        let next = mutex.lock_timeout(Duration::from_secs(1)).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
        next.release().await.unwrap();
        for i in 0..n {
            assert!(common::lock_keys(&servers, i).await.is_empty());
        }
    }
}

/// `run` holds the lock for the body, returns its value and releases.
#[tokio::test]
async fn run_holds_the_lock_for_the_body_and_releases_it() {
    let (_servers, q) = common::cluster(3).await;
    let mutex = Mutex::new(&q, "ran");
    let token = mutex
        .run(async |guard| {
            assert!(guard.is_valid());
            assert!(mutex.try_lock().await.unwrap().is_none());
            guard.fencing_token().await.unwrap()
        })
        .await
        .unwrap();
    assert!(token > 0);
    // Released: free at once.
    assert!(mutex.try_lock().await.unwrap().is_some());
}

/// When the lease is lost during `run` (here its key is deleted behind the
/// holder's back, and the next renewal finds it gone), the body is
/// cancelled and `run` returns `Error::LeaseLost`.
#[tokio::test]
async fn run_cancels_the_body_and_reports_a_lost_lease() {
    let (servers, q) = common::cluster(1).await;
    let mutex = Mutex::new(&q, "lost-run").with_ttl(Duration::from_millis(300));
    let reached_the_end = std::sync::atomic::AtomicBool::new(false);
    let result = mutex
        .run(async |_| {
            common::del_everywhere(&servers, "lost-run").await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            reached_the_end.store(true, Ordering::SeqCst);
        })
        .await;
    assert!(matches!(result, Err(Error::LeaseLost)), "{result:?}");
    assert!(!reached_the_end.load(Ordering::SeqCst));
}

/// Calls of `command` a server has run so far (its `INFO commandstats`).
async fn calls(servers: &ServerGroup, i: usize, command: &str) -> u64 {
    let mut c = common::conn(servers, i).await;
    let stats: redis::InfoDict = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let stat: String = stats.get(&format!("cmdstat_{command}")).unwrap_or_default();
    stat.split(',')
        .find_map(|f| f.strip_prefix("calls="))
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_waiters_in_one_process_costs_the_nodes_what_one_does() {
    const CROWD: usize = 500;
    let servers = ServerGroup::start(3).unwrap();
    let q = common::builder(&servers).build().await.unwrap();
    let mutex = Mutex::new(&q, "crowded");
    let holder = mutex.lock().await.unwrap();
    let before = calls(&servers, 0, "set").await;
    let done = Arc::new(AtomicU64::new(0));
    let waiters: Vec<_> = (0..CROWD)
        .map(|_| {
            let (mutex, done) = (mutex.clone(), done.clone());
            tokio::spawn(async move {
                let guard = mutex.lock().await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
                guard.release().await.unwrap();
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The first waiter tries, then retries with backoff; the rest queue here.
    let attempts = calls(&servers, 0, "set").await - before;
    assert!(
        attempts <= 12,
        "{attempts} attempts in 1 s from {CROWD} waiters"
    );
    assert_eq!(done.load(Ordering::SeqCst), 0);
    holder.release().await.unwrap();
    for w in waiters {
        w.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), CROWD as u64);
}
