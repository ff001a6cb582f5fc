//! Crowds in one process: ten thousand tasks waiting on one held lock, and
//! ten thousand leases renewing themselves, on 1 and 3 throwaway local
//! nodes. It prints what each costs the process and the nodes.
//!
//! Run: `cargo run --release --example crowd` (`CROWD=2000` for a smaller
//! crowd, `CROWD_HOLD_SECS` for how long the leases are held).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quorate::testkit::ServerGroup;
use quorate::{Mutex, Quorum};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let crowd = env("CROWD", 10_000);
    let hold = Duration::from_secs(env("CROWD_HOLD_SECS", 20) as u64);
    println!("| measure | 1 node | 3 nodes |\n|---|---:|---:|");
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    for n in [1, 3] {
        let waiters = waiters(n, crowd).await?;
        let leases = leases(n, crowd, hold).await?;
        for (i, (name, value)) in waiters.into_iter().chain(leases).enumerate() {
            if rows.len() <= i {
                rows.push((name, Vec::new()));
            }
            rows[i].1.push(value);
        }
    }
    for (name, values) in rows {
        println!("| {name} | {} |", values.join(" | "));
    }
    Ok(())
}

/// `crowd` tasks wait on a lock held for 3 s, then take it in turn.
async fn waiters(
    n: usize,
    crowd: usize,
) -> Result<Vec<(String, String)>, Box<dyn std::error::Error>> {
    let servers = ServerGroup::start(n)?;
    let q = Quorum::connect(servers.urls()).await?;
    let mutex = Mutex::new(&q, "crowd");
    let holder = mutex.lock().await?;
    let rss = rss_mb();
    let before = stats(&servers).await?;
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..crowd)
        .map(|_| {
            let (mutex, done) = (mutex.clone(), done.clone());
            tokio::spawn(async move {
                let guard = mutex.lock().await?;
                done.fetch_add(1, Ordering::SeqCst);
                guard.release().await
            })
        })
        .collect();
    let held = Duration::from_secs(3);
    tokio::time::sleep(held).await;
    let during = stats(&servers).await?;
    let grown = rss_mb() - rss;
    let released = holder.release().await;
    let started = Instant::now();
    let mut failed = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let all = started.elapsed();
    let attempts: Vec<String> = before
        .iter()
        .zip(&during)
        .map(|(b, d)| {
            format!(
                "{:.0}",
                (d.commands - b.commands) as f64 / held.as_secs_f64()
            )
        })
        .collect();
    let clients: Vec<String> = during.iter().map(|d| (d.clients - 1).to_string()).collect();
    Ok(vec![
        (
            format!("{crowd} waiters: connections per node (ours)"),
            clients.join(" / "),
        ),
        (
            format!("{crowd} waiters: memory growth"),
            format!("{grown:.1} MB"),
        ),
        (
            format!("{crowd} waiters: commands/s per node while held"),
            attempts.join(" / "),
        ),
        (
            "holder's release".into(),
            if released.is_ok() {
                "ok, first try".into()
            } else {
                format!("{released:?}")
            },
        ),
        (
            format!("{crowd} waiters: all acquired in turn"),
            format!(
                "{all:.2?} ({:.0} µs per handoff, {failed} failed)",
                all.as_micros() as f64 / crowd as f64
            ),
        ),
    ])
}

/// `crowd` leases (TTL 10 s) held for `hold`, renewing themselves.
async fn leases(
    n: usize,
    crowd: usize,
    hold: Duration,
) -> Result<Vec<(String, String)>, Box<dyn std::error::Error>> {
    let servers = ServerGroup::start(n)?;
    let q = Quorum::connect(servers.urls()).await?;
    let rss = rss_mb();
    let mut guards = Vec::with_capacity(crowd);
    for i in 0..crowd {
        guards.push(
            Mutex::new(&q, format!("lease:{i}"))
                .with_ttl(Duration::from_secs(10))
                .lock()
                .await?,
        );
    }
    let before = stats(&servers).await?;
    tokio::time::sleep(hold).await;
    let after = stats(&servers).await?;
    let grown = rss_mb() - rss;
    let valid = guards.iter().filter(|g| g.is_valid()).count();
    let secs = hold.as_secs_f64();
    let per_node = |f: fn(&Stats) -> u64| -> String {
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| format!("{:.1}", (f(a) - f(b)) as f64 / secs))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let row = vec![
        (
            format!("{crowd} leases: requests/s per node (reads)"),
            per_node(|s| s.reads),
        ),
        (
            format!("{crowd} leases: renewals/s per node (scripts)"),
            per_node(|s| s.scripts),
        ),
        (
            format!("{crowd} leases: memory growth"),
            format!("{grown:.1} MB"),
        ),
        (
            format!("{crowd} leases: still valid after {hold:?}"),
            valid.to_string(),
        ),
    ];
    for g in guards {
        g.release().await?;
    }
    Ok(row)
}

struct Stats {
    commands: u64,
    scripts: u64,
    reads: u64,
    clients: u64,
}

/// Each node's command and read-event counters and client count. Reads
/// are the requests as the server sees them: one pipelined batch arrives
/// in one read.
async fn stats(servers: &ServerGroup) -> redis::RedisResult<Vec<Stats>> {
    let mut all = Vec::new();
    for s in servers.iter() {
        let mut c = s.client().get_multiplexed_async_connection().await?;
        let info: redis::InfoDict = redis::cmd("INFO").arg("all").query_async(&mut c).await?;
        let scripts: redis::InfoDict = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await?;
        let calls = |name: &str| -> u64 {
            let stat: String = scripts.get(name).unwrap_or_default();
            stat.split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        // The INFO command itself is not counted yet when it runs.
        all.push(Stats {
            // Commands from clients: scripts count once, not each call they
            // make inside.
            commands: info.get::<u64>("total_commands_processed").unwrap_or(0)
                - calls("cmdstat_get")
                - calls("cmdstat_pttl")
                - calls("cmdstat_pexpire"),
            scripts: calls("cmdstat_evalsha"),
            reads: info.get("total_reads_processed").unwrap_or(0),
            clients: info.get("connected_clients").unwrap_or(0),
        });
    }
    Ok(all)
}

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / 1e6
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
