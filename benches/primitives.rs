//! Semaphore and barrier latency against local redis-servers: semaphore
//! acquire + release uncontended and at capacity (16 tasks on 4 permits),
//! and one barrier round of 4 parties.
//!
//! Run: `cargo bench --bench primitives`.

mod support;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use quorate::{Barrier, Semaphore};
use support::{runtime, setup, spread};

fn semaphore(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("semaphore");
    for n in [1, 3] {
        let (_servers, q) = setup(&rt, n);
        let free = Semaphore::new(&q, "bench:sem:free", 4);
        group.bench_function(format!("acquire_release/{n}_nodes"), |b| {
            b.to_async(&rt).iter(|| async {
                free.acquire().await.unwrap().release().await.unwrap();
            })
        });
        group.bench_function(format!("at_capacity_16_tasks/{n}_nodes"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let full = Semaphore::new(&q, "bench:sem:full", 4);
                spread(16, iters, move |mine| {
                    let full = full.clone();
                    async move {
                        for _ in 0..mine {
                            full.acquire().await.unwrap().release().await.unwrap();
                        }
                    }
                })
            })
        });
    }
    group.finish();
}

fn barrier(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("barrier");
    for n in [1, 3] {
        let (_servers, q) = setup(&rt, n);
        let phase = Barrier::new(&q, "bench:barrier", 4);
        group.bench_function(format!("round_4_parties/{n}_nodes"), |b| {
            // Each of the 4 parties waits `iters` times: `iters` rounds.
            b.to_async(&rt).iter_custom(|iters| {
                let phase = phase.clone();
                spread(4, iters * 4, move |rounds| {
                    let phase = phase.clone();
                    async move {
                        for _ in 0..rounds {
                            phase.wait().await.unwrap();
                        }
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = semaphore, barrier
}
criterion_main!(benches);
