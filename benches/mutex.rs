//! Mutex latency: uncontended lock + release on 1 and 3 nodes, and the
//! handoff between 16 contending tasks (release on one task to acquire on
//! the next), against local redis-servers.
//!
//! Run: `cargo bench --bench mutex`.

mod support;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use quorate::Mutex;
use support::{runtime, setup, spread};

fn uncontended(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("uncontended");
    for n in [1, 3] {
        let (_servers, q) = setup(&rt, n);
        let lock = Mutex::new(&q, "bench:uncontended");
        group.bench_function(format!("lock_release/{n}_nodes"), |b| {
            b.to_async(&rt).iter(|| async {
                lock.lock().await.unwrap().release().await.unwrap();
            })
        });
    }
    group.finish();
}

fn contended(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("contended");
    for n in [1, 3] {
        let (_servers, q) = setup(&rt, n);
        group.bench_function(format!("handoff_16_tasks/{n}_nodes"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let lock = Mutex::new(&q, "bench:contended");
                spread(16, iters, move |mine| {
                    let lock = lock.clone();
                    async move {
                        for _ in 0..mine {
                            lock.lock().await.unwrap().release().await.unwrap();
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
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = uncontended, contended
}
criterion_main!(benches);
