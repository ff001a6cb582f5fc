//! `quorate bench`: what this deployment does for lock + release, run
//! through the library as a service would.
//!
//! - W1: one task, one key, lock + release for `--duration`: the latency of
//!   a cycle (p50, p99).
//! - W2: `--tasks` tasks, a key each, lock + release for `--duration`:
//!   cycles per second in total.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::report::Output;
use super::{Outcome, Status, args};
use crate::config::Config;
use crate::{Mutex, Quorum};

#[derive(Debug, Serialize)]
struct Results {
    nodes: usize,
    w1: Latency,
    w2: Throughput,
}

#[derive(Debug, Serialize)]
struct Latency {
    cycles: usize,
    p50_us: u128,
    p99_us: u128,
}

#[derive(Debug, Serialize)]
struct Throughput {
    tasks: usize,
    cycles: u64,
    per_second: f64,
}

pub(super) async fn run(config: &Config, bench: &args::Bench, out: Output) -> Outcome {
    // Its leases are the benchmark's alone: record no longer a bound on the
    // nodes than they need, which would lengthen the deployment's restart
    // quarantine.
    let config = Config {
        ttl: bench.ttl,
        max_ttl: bench.ttl,
        ..config.clone()
    };
    let q = Quorum::from_config(&config).await?;
    let prefix = format!("quorate-bench:{}", std::process::id());
    let w1 = w1(&q, &format!("{prefix}:w1"), bench.duration).await?;
    let w2 = w2(&q, &prefix, bench.tasks.max(1), bench.duration).await?;
    let results = Results {
        nodes: q.node_count(),
        w1,
        w2,
    };
    out.print(&results, || text(&results));
    Ok(Status::Ok)
}

async fn w1(q: &Quorum, key: &str, duration: Duration) -> crate::Result<Latency> {
    let lock = Mutex::new(q, key);
    let mut cycles = Vec::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let started = Instant::now();
        lock.lock_timeout(duration).await?.release().await?;
        cycles.push(started.elapsed());
    }
    cycles.sort_unstable();
    let at = |q: f64| {
        cycles
            .get(((cycles.len() as f64 * q) as usize).min(cycles.len().saturating_sub(1)))
            .map_or(0, Duration::as_micros)
    };
    Ok(Latency {
        cycles: cycles.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
    })
}

async fn w2(
    q: &Quorum,
    prefix: &str,
    tasks: usize,
    duration: Duration,
) -> crate::Result<Throughput> {
    let started = Instant::now();
    let end = started + duration;
    let workers: Vec<_> = (0..tasks)
        .map(|i| {
            let lock = Mutex::new(q, format!("{prefix}:w2:{i}"));
            tokio::spawn(async move {
                let mut cycles = 0u64;
                while Instant::now() < end {
                    lock.lock_timeout(duration).await?.release().await?;
                    cycles += 1;
                }
                Ok::<_, crate::Error>(cycles)
            })
        })
        .collect();
    let mut cycles = 0;
    for worker in workers {
        cycles += worker
            .await
            .map_err(|e| crate::Error::argument("tasks", e.to_string()))??;
    }
    Ok(Throughput {
        tasks,
        cycles,
        per_second: cycles as f64 / started.elapsed().as_secs_f64(),
    })
}

fn text(r: &Results) -> String {
    format!(
        "{} nodes\nW1 lock+release, 1 task:   p50 {} µs, p99 {} µs ({} cycles)\nW2 lock+release, {} tasks: {:.0} cycles/s ({} cycles)\n",
        r.nodes, r.w1.p50_us, r.w1.p99_us, r.w1.cycles, r.w2.tasks, r.w2.per_second, r.w2.cycles
    )
}
