//! What the benches share: a runtime, local servers, and spreading work
//! over contending tasks.

use std::future::Future;
use std::time::{Duration, Instant};

use quorate::Quorum;
use quorate::testkit::ServerGroup;
use tokio::runtime::Runtime;

pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `n` local servers and a quorum over them.
pub fn setup(rt: &Runtime, n: usize) -> (ServerGroup, Quorum) {
    let servers = ServerGroup::start(n).unwrap();
    let quorum = rt.block_on(Quorum::connect(servers.urls())).unwrap();
    (servers, quorum)
}

/// Runs `iters` units of work split over `tasks` tasks, each task getting
/// its share from `work(share)`; returns the total time.
#[allow(dead_code, reason = "the peers bench runs for a time, not a count")]
pub async fn spread<F, Fut>(tasks: u64, iters: u64, work: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| tokio::spawn(work(iters / tasks + u64::from(t < iters % tasks))))
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    started.elapsed()
}
