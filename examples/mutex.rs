//! The smallest useful program: only one process at a time runs the job.
//!
//! Run: `cargo run --example mutex` (starts a local redis-server), or
//! `QUORATE_NODES=redis://127.0.0.1:6379 cargo run --example mutex`.

mod common;

use quorate::Mutex;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nodes = common::nodes(1).await?;
    let job = Mutex::new(&nodes.quorum, "nightly-report");

    let guard = job.lock().await?;
    println!(
        "running the report with fencing token {}",
        guard.fencing_token().await?
    );
    guard.release().await?;
    Ok(())
}
