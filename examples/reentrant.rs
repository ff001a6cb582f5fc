//! A job that takes its own lock again in a nested step, while another job
//! waits for it.
//!
//! Run: `cargo run --example reentrant`.

mod common;

use std::time::Duration;

use quorate::ReentrantLock;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nodes = common::nodes(1).await?;
    let ledger = ReentrantLock::new(&nodes.quorum, "ledger", "job-17");
    let other = ReentrantLock::new(&nodes.quorum, "ledger", "job-18");

    let outer = ledger.lock().await?;
    let inner = ledger.lock().await?; // same owner: no wait
    println!(
        "job-17 holds the ledger {} times, token {} both times: {}",
        ledger.hold_count().await?,
        outer.fencing_token().await?,
        outer.fencing_token().await? == inner.fencing_token().await?
    );
    let waiter = tokio::spawn(async move { other.lock().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    inner.release().await?;
    println!(
        "job-17 released once; job-18 still waits: {}",
        !waiter.is_finished()
    );
    outer.release().await?;
    let theirs = waiter.await??;
    println!(
        "job-18 got the ledger, token {}",
        theirs.fencing_token().await?
    );
    theirs.release().await?;
    Ok(())
}
