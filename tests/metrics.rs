//! The metrics move as the operations happen: one in-memory recorder for
//! the whole file, resource names as labels, and servers of their own per
//! test, so the tests running side by side never count each other's work.

mod common;

use std::sync::{Mutex as StdMutex, OnceLock};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use quorate::metrics as m;
use quorate::{Latch, Mutex, Quorum};

use common::{blocking, builder, cluster, eventually};

fn recorder() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::set_global_recorder(recorder).unwrap();
        m::label_resources(true);
        m::describe();
        snapshotter
    })
}

/// Every series with its value now. A snapshot resets what it reads (the
/// gauges' increments too), and the tests share the recorder, so every
/// snapshot is added up here.
fn series<T>(read: impl FnOnce(&[(CompositeKey, DebugValue)]) -> T) -> T {
    static TOTALS: StdMutex<Vec<(CompositeKey, DebugValue)>> = StdMutex::new(Vec::new());
    let mut totals = TOTALS.lock().unwrap();
    for (key, _, _, value) in recorder().snapshot().into_vec() {
        match totals.iter_mut().find(|(k, _)| *k == key) {
            Some((_, total)) => add(total, value),
            None => totals.push((key, value)),
        }
    }
    read(&totals)
}

fn add(total: &mut DebugValue, more: DebugValue) {
    match (total, more) {
        (DebugValue::Counter(t), DebugValue::Counter(n)) => *t += n,
        (DebugValue::Gauge(t), DebugValue::Gauge(g)) => {
            *t = (t.into_inner() + g.into_inner()).into()
        }
        (DebugValue::Histogram(t), DebugValue::Histogram(h)) => t.extend(h),
        (total, more) => panic!("{more:?} added to {total:?}"),
    }
}

fn matches(key: &CompositeKey, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> bool {
    key.kind() == kind
        && key.key().name() == name
        && labels
            .iter()
            .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
}

/// The sum of the counters called `name` carrying `labels`.
fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    series(|all| {
        all.iter()
            .filter(|(k, _)| matches(k, MetricKind::Counter, name, labels))
            .map(|(_, v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    })
}

fn gauge(name: &str, labels: &[(&str, &str)]) -> f64 {
    series(|all| {
        all.iter()
            .filter(|(k, _)| matches(k, MetricKind::Gauge, name, labels))
            .map(|(_, v)| match v {
                DebugValue::Gauge(g) => g.into_inner(),
                _ => 0.0,
            })
            .sum()
    })
}

/// The samples of the histograms called `name` carrying `labels`.
fn samples(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    series(|all| {
        all.iter()
            .filter(|(k, _)| matches(k, MetricKind::Histogram, name, labels))
            .flat_map(|(_, v)| match v {
                DebugValue::Histogram(h) => h.iter().map(|f| f.into_inner()).collect(),
                _ => Vec::new(),
            })
            .collect()
    })
}

async fn soon(what: &str, check: impl Fn() -> bool) {
    let seen = eventually(Duration::from_secs(5), || {
        let ok = check();
        async move { ok }
    })
    .await;
    assert!(seen, "{what} never moved");
}

#[tokio::test]
async fn acquisitions_contention_waits_and_holds_are_counted() {
    recorder();
    let (_servers, q) = cluster(1).await;
    let name = "metrics:acquire";
    let labels = [("primitive", "mutex"), ("resource", name)];
    let lock = Mutex::new(&q, name);
    let guard = lock.lock().await.unwrap();
    assert!(lock.try_lock().await.unwrap().is_none());
    let waited = lock.lock_timeout(Duration::from_millis(30)).await;
    assert!(waited.unwrap_err().is_timeout());
    tokio::time::sleep(Duration::from_millis(20)).await;
    guard.release().await.unwrap();

    let attempts = |outcome| {
        counter(
            m::ACQUIRE_ATTEMPTS,
            &[labels[0], labels[1], ("outcome", outcome)],
        )
    };
    assert_eq!(attempts("granted"), 1);
    assert!(attempts("contended") >= 2, "{}", attempts("contended"));
    let acquired = samples(m::ACQUIRE_SECONDS, &labels);
    assert_eq!(acquired.len(), 1);
    assert!(acquired[0] > 0.0 && acquired[0] < 1.0, "{acquired:?}");
    let held = samples(m::HOLD_SECONDS, &labels);
    assert!(held.len() == 1 && held[0] >= 0.02, "{held:?}");
    let timeouts = samples(
        m::WAIT_SECONDS,
        &[labels[0], labels[1], ("outcome", "timeout")],
    );
    assert!(timeouts.len() == 1 && timeouts[0] >= 0.03, "{timeouts:?}");
}

#[tokio::test]
async fn queued_waiters_are_gauged_until_they_get_the_lease() {
    recorder();
    let (_servers, q) = cluster(1).await;
    let name = "metrics:queue";
    let labels = [("primitive", "mutex"), ("resource", name)];
    let lock = Mutex::new(&q, name);
    let guard = lock.lock().await.unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let lock = lock.clone();
            tokio::spawn(async move { lock.lock().await.unwrap().release().await.unwrap() })
        })
        .collect();
    soon("the waiters gauge", || gauge(m::WAITERS, &labels) == 2.0).await;
    guard.release().await.unwrap();
    for w in waiters {
        w.await.unwrap();
    }
    assert_eq!(gauge(m::WAITERS, &labels), 0.0);
    // The holder's own lock() and the two waiters'.
    let done = samples(
        m::WAIT_SECONDS,
        &[labels[0], labels[1], ("outcome", "done")],
    );
    assert_eq!(done.len(), 3, "{done:?}");
}

#[tokio::test]
async fn renewals_and_lost_leases_are_counted() {
    recorder();
    let (servers, q) = cluster(1).await;
    let name = "metrics:renew";
    let labels = [("primitive", "mutex"), ("resource", name)];
    let guard = Mutex::new(&q, name)
        .with_ttl(Duration::from_millis(300))
        .lock()
        .await
        .unwrap();
    let extended = || {
        counter(
            m::EXTENSIONS,
            &[labels[0], labels[1], ("outcome", "extended")],
        )
    };
    soon("the extensions counter", || extended() >= 1).await;
    common::del_everywhere(&servers, name).await;
    tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .unwrap();
    assert_eq!(counter(m::LEASES_LOST, &labels), 1);
    assert!(guard.release().await.unwrap_err().is_not_held());
}

#[tokio::test]
async fn latch_waits_are_timed() {
    recorder();
    let (_servers, q) = cluster(1).await;
    let name = "metrics:latch";
    let latch = Latch::new(&q, name, 1);
    latch.count_down().await.unwrap();
    latch.wait().await.unwrap();
    let labels = [
        ("primitive", "latch"),
        ("resource", name),
        ("outcome", "done"),
    ];
    // The count-down and the wait.
    assert_eq!(samples(m::WAIT_SECONDS, &labels).len(), 2);
}

#[tokio::test]
async fn node_errors_timeouts_and_script_reloads_are_counted_per_node() {
    recorder();
    let (mut servers, q) = cluster(3).await;
    let addrs: Vec<String> = q.node_addrs().map(str::to_owned).collect();
    let lock = Mutex::new(&q, "metrics:nodes");
    common::script_flush_all(&servers).await;
    // A plain claim is a SET, so the release is the first script to miss.
    lock.lock().await.unwrap().release().await.unwrap();
    assert!(counter(m::SCRIPT_RELOADS, &[("script", "mutex_release")]) >= 1);

    servers[0].kill();
    servers[1].pause();
    let _ = lock.try_lock().await;
    servers[1].resume();
    assert!(counter(m::NODE_ERRORS, &[("node", &addrs[0])]) >= 1);
    assert!(counter(m::NODE_TIMEOUTS, &[("node", &addrs[1])]) >= 1);
    assert_eq!(counter(m::NODE_ERRORS, &[("node", &addrs[2])]), 0);
    assert_eq!(counter(m::NODE_TIMEOUTS, &[("node", &addrs[2])]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_gauged_while_it_sits_out() {
    recorder();
    let servers = quorate::testkit::ServerGroup::start(3).unwrap();
    let q: Quorum = builder(&servers)
        .max_ttl(Duration::from_millis(600))
        .ttl(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let addr = q.node_addrs().next().unwrap().to_owned();
    let quarantined = || gauge(m::NODES_QUARANTINED, &[("node", &addr)]);
    assert_eq!(quarantined(), 0.0);
    let mut servers = servers;
    blocking(|| servers[0].restart().unwrap());
    let lock = Mutex::new(&q, "metrics:quarantine");
    // A request meets the broken connection; the reconnect sees the restart.
    let _ = lock.try_lock().await;
    soon("the quarantine gauge", || quarantined() == 1.0).await;
    soon("the end of the quarantine", || quarantined() == 0.0).await;
}
