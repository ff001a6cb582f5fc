//! A pool of workers throttled to 3 concurrent jobs across processes.
//!
//! Run: `cargo run --example semaphore`; start it in several terminals with
//! the same `QUORATE_NODES` and the limit holds across all of them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quorate::Semaphore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nodes = common::nodes(3).await?;
    let exports = Semaphore::new(&nodes.quorum, "exports", 3);
    let running = Arc::new(AtomicUsize::new(0));

    let mut workers = Vec::new();
    for job in 0..10 {
        let exports = exports.clone();
        let running = running.clone();
        workers.push(tokio::spawn(async move {
            let permit = exports.acquire().await?;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            println!(
                "job {job:2} runs on slot {:?} ({now} running)",
                permit.slots()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            permit.release().await
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(())
}
