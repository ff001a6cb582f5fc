//! A Redis Cluster node next to one standalone server, in the same run:
//! W1 (one task, lock + release for 3 s: p50 and p99 of a cycle) and W2
//! (64 tasks, a key each, lock + release for 5 s: cycles/s), and how W2's
//! commands spread over the cluster's primaries.
//!
//! Run: `cargo bench --bench cluster`. `CLUSTER_SECONDS_SCALE=0.2`
//! shortens every duration. The table goes to stdout and, as Markdown, to
//! `target/cluster.md`.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use quorate::testkit::LocalCluster;
use quorate::{Mutex, Quorum};

const TASKS: usize = 64;

fn main() {
    let scale: f64 = std::env::var("CLUSTER_SECONDS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let w1_for = Duration::from_secs_f64(3.0 * scale);
    let w2_for = Duration::from_secs_f64(5.0 * scale);
    let rt = support::runtime();
    let (_server, alone) = support::setup(&rt, 1);
    let cluster = LocalCluster::start(3, 0).unwrap();
    let primaries = cluster.primaries();
    let sharded = rt
        .block_on(Quorum::connect_cluster(cluster.seeds()))
        .unwrap();
    let mut rows = Vec::new();
    let mut spread = Vec::new();
    for (label, q) in [
        ("standalone server", &alone),
        ("cluster, 3 primaries", &sharded),
    ] {
        let (p50, p99) = rt.block_on(w1(q, w1_for));
        let before = rt.block_on(commands(&primaries));
        let rate = rt.block_on(w2(q, w2_for));
        if label.starts_with("cluster") {
            let after = rt.block_on(commands(&primaries));
            spread = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        }
        rows.push((label, p50, p99, rate));
    }
    let base = rows[0].3;
    let mut table = String::from(
        "| node | W1 p50 | W1 p99 | W2 cycles/s | W2 vs standalone |\n|---|---|---|---|---|\n",
    );
    for (label, p50, p99, rate) in &rows {
        table.push_str(&format!(
            "| {label} | {p50:.0?} | {p99:.0?} | {rate:.0} | {:.2}x |\n",
            rate / base
        ));
    }
    let total: i64 = spread.iter().sum();
    let shares: Vec<String> = primaries
        .iter()
        .zip(&spread)
        .map(|(p, n)| format!("{p}: {:.1} %", 100.0 * *n as f64 / total.max(1) as f64))
        .collect();
    table.push_str(&format!(
        "\nW2 commands per primary: {}\n",
        shares.join(", ")
    ));
    print!("{table}");
    let _ = std::fs::write("target/cluster.md", &table);
}

async fn w1(q: &Quorum, run_for: Duration) -> (Duration, Duration) {
    let lock = Mutex::new(q, "w1");
    let deadline = Instant::now() + run_for;
    let mut cycles = Vec::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        lock.lock().await.unwrap().release().await.unwrap();
        cycles.push(started.elapsed());
    }
    cycles.sort();
    let at = |p: f64| cycles[((cycles.len() - 1) as f64 * p) as usize];
    (at(0.5), at(0.99))
}

async fn w2(q: &Quorum, run_for: Duration) -> f64 {
    let deadline = Instant::now() + run_for;
    let tasks = (0..TASKS).map(|i| {
        let lock = Mutex::new(q, format!("w2:{i}"));
        tokio::spawn(async move {
            let mut cycles = 0_u64;
            loop {
                lock.lock().await.unwrap().release().await.unwrap();
                if Instant::now() >= deadline {
                    return cycles;
                }
                cycles += 1;
            }
        })
    });
    let cycles: u64 = join_all(tasks).await.into_iter().map(Result::unwrap).sum();
    cycles as f64 / run_for.as_secs_f64()
}

/// `total_commands_processed` of each primary.
async fn commands(primaries: &[String]) -> Vec<i64> {
    let mut counts = Vec::new();
    for p in primaries {
        let mut c = redis::Client::open(format!("redis://{p}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let info: redis::InfoDict = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut c)
            .await
            .unwrap();
        counts.push(info.get("total_commands_processed").unwrap_or(0));
    }
    counts
}
