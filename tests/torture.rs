//! A short seeded torture run, part of every `cargo test`: workers on all
//! five primitives through fault proxies, a planned nemesis killing,
//! pausing, restarting and partitioning nodes and giving clients their own
//! partial views, newcomers connecting mid-run, guards' claims compared
//! with the servers' keys, and the history checked at the end. The README
//! shows how to run a long one.

use std::time::Duration;

use quorate::testkit::torture::{self, Torture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_torture_run_finds_no_violation() {
    let report = torture::run(Torture {
        duration: Duration::from_secs(45),
        seed: 20261127,
        ..Torture::default()
    })
    .await
    .unwrap();
    println!("{report}");
    assert!(report.violations.is_empty(), "{report}\n{}", report.history);
    assert!(report.total_faults() >= 20, "the nemesis ran: {report}");
    for op in ["mutex", "semaphore", "reentrant", "latch", "barrier"] {
        assert!(
            report.ops.get(op).copied().unwrap_or(0) > 10,
            "{op} made progress: {report}"
        );
    }
}
